"""OpenNMT-py, JoeyNMT and fairseq, the RNN toolkits users pick instead of ours, trained and
decoded side by side on Multi30k De->En with the same subword data and model sizes.

    python bench/peers.py --data-dir DIR [--minutes 2] [--threads 2] [--smoke] [--peers ...]

Each toolkit is installed by this script into its own virtual environment under a cache
folder (default ``bench/.cache/``, about 1.3 GB each; delete it to reinstall), with the CPU
torch this project uses. All read the same pre-tokenized files: one joint 8k SentencePiece
model is trained here (or an existing one is used: see :func:`prepare_data`), and their
output is detokenized here before sacreBLEU scores it.

Every hyperparameter a peer's training and decoding uses is a field of :class:`PeerSetup`;
:data:`SETUPS` names the set-ups in use, and :data:`PEERS` says which toolkit runs which.
The default set-up, ``bench``: embeddings 256, a one-layer bidirectional encoder of 2 x 256
(its concatenated states are 512 wide: OpenNMT-py's and fairseq's decoders start from them,
so it must be 512), a one-layer decoder of 512 with attention and input feeding, untied
embeddings. OpenNMT-py uses LSTMs and MLP/Bahdanau attention, JoeyNMT GRUs and Bahdanau
attention, fairseq LSTMs and its own bilinear (Luong "general") attention. ``bench_noattn``
drops the attention (OpenNMT-py and fairseq; JoeyNMT has no such variant): the peers of our
context-vector model (see :func:`opennmt_config` and :func:`fairseq_args`). ``recipe`` is
OpenNMT-py as near our attention recipe as it goes (embeddings 512, GRUs, Luong's "general"
score), for bench/gpu.py, which also runs it on a GPU. Training follows
recipes/multi30k: Adam 0.002 held constant, dropout 0.3, label smoothing 0.1, clipping at
norm 1, loss normalised by target tokens, batches of 4000 tokens (as each toolkit counts
them: the longer side, padding included) and pairs of up to 80 subwords. Decoding: beam 5,
64 sentences a batch, length penalty 1.0 (GNMT's for OpenNMT-py and JoeyNMT; fairseq divides
by the length).

Speeds are the toolkits' own figures: training target tokens/s from the rates they log per
window of steps (the first window dropped), decoding time as they report it (model loading
excluded). ``--minutes`` counts from the start of each training loop, as ours does; then the
peer is interrupted and its last checkpoint decodes the test set. Threads: OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import sacrebleu
import sentencepiece as spm
import yaml

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
TORCH = "torch==2.13.0"  # the CPU build this machine serves; every peer runs on it
OPENNMT_PACKAGES = [TORCH, "OpenNMT-py==3.0.4"]  # 3.5 needs torch<2.3
JOEYNMT_PACKAGES = [TORCH, "joeynmt==2.3.0", "importlib_metadata"]  # imported, not declared
# fairseq 0.12.2 fails to import on Python 3.11; this fork of it runs unchanged on torch 2.13
FAIRSEQ_PACKAGES = [TORCH, "fairseq-fixed==0.12.3.1"]
# it is an sdist whose build requires an unpinned torch, which pip's isolated build takes as
# the newest, a CUDA one (2.14.1 here, with 2 GB of NVIDIA libraries), and compiles fairseq's
# torch extensions against it: they are built in the venv instead, against these, first
FAIRSEQ_BUILD = [TORCH, "numpy", "cython", "setuptools", "wheel"]

OPENNMT_SAVE_EVERY = 20  # steps between checkpoints against the clock (each ~0.2 s, ~1%)
FAIRSEQ_SAVE_EVERY = 20  # the same for fairseq (each ~0.3 s: 152 MB, Adam state included)


@dataclass(frozen=True)
class PeerSetup:
    """Every hyperparameter of a peer's training and decoding, in one value that names can be
    given to (:data:`SETUPS`); the defaults are the bench's set-up."""

    emb_dim: int = 256
    enc_dir_dim: int = 256  # per direction: the two directions side by side are 512
    hidden_dim: int = 512  # the decoder's; it starts from the encoder's 512-wide final states
    attention: bool = True  # False: the source reaches the decoder through its first state only
    batch_size: int = 4000
    batch_type: str = "tokens"  # tokens (the longer side, padding included) | sents
    learning_rate: float = 0.002  # Adam, held constant
    dropout: float = 0.3
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_len: int = 80  # subwords per side; longer training pairs are dropped
    vocab_size: int = 8000  # of the SentencePiece model trained when none is given
    decode_batch: int = 64  # sentences
    beam: int = 5
    length_penalty: float = 1.0
    seed: int = 1234
    # OpenNMT-py's cell and attention score (JoeyNMT always runs GRUs with Bahdanau's score,
    # fairseq LSTMs with Luong's "general" one): LSTM | GRU, mlp (Bahdanau) | general (Luong)
    opennmt_rnn: str = "LSTM"
    opennmt_attention: str = "mlp"

    def __post_init__(self) -> None:
        if self.batch_type not in ("tokens", "sents"):
            raise ValueError(f"batch_type must be tokens or sents, not {self.batch_type!r}")
        if self.opennmt_rnn not in ("LSTM", "GRU"):
            raise ValueError(f"opennmt_rnn must be LSTM or GRU, not {self.opennmt_rnn!r}")
        if self.opennmt_attention not in ("mlp", "general"):
            raise ValueError(
                f"opennmt_attention must be mlp or general, not {self.opennmt_attention!r}"
            )


BENCH = PeerSetup()
SETUPS: dict[str, PeerSetup] = {
    "bench": BENCH,
    "bench_noattn": replace(BENCH, attention=False),  # the peer of our context-vector model
    # one change each from "bench": OpenNMT-py's sweep at equal wall-clock (SWEEP)
    "sents64": replace(BENCH, batch_size=64, batch_type="sents"),
    "sents128": replace(BENCH, batch_size=128, batch_type="sents"),
    "lr0.001": replace(BENCH, learning_rate=0.001),
    "dropout0.2": replace(BENCH, dropout=0.2),
    "smoothing0": replace(BENCH, label_smoothing=0.0),
    # the sweep's winning batches without attention, for the context-vector pair's rerun
    "sents64_noattn": replace(BENCH, attention=False, batch_size=64, batch_type="sents"),
    # OpenNMT-py as near our attention recipe as its encoder-decoder allows (bench/gpu.py):
    # embeddings 512, GRUs, Luong's "general" score. Its decoder starts from the encoder's
    # concatenated final states, so a 512-wide decoder takes a 2 x 256 encoder (ours: 2 x 512)
    "recipe": replace(BENCH, emb_dim=512, opennmt_rnn="GRU", opennmt_attention="general"),
    # the same at recipes/tatoeba's sizes: its pairs are short, so its max_len is 64
    "tatoeba": replace(
        BENCH, emb_dim=512, opennmt_rnn="GRU", opennmt_attention="general", max_len=64
    ),
}
# and with the sweep's winning batches, for the Tatoeba lead against OpenNMT-py at its best
SETUPS["tatoeba_sents64"] = replace(SETUPS["tatoeba"], batch_size=64, batch_type="sents")
SWEEP = ["bench", "sents64", "sents128", "lr0.001", "dropout0.2", "smoothing0"]
# the sweep's winner (README, Time to quality: each set-up 10 minutes, dev BLEU of the last
# checkpoint): time_to_bleu.py's OpenNMT-py rows are this set-up, then the bench's as before
SWEEP_WINNER = "sents64"
TIME_TO_QUALITY = [SWEEP_WINNER, "bench"]


def changes(setup: PeerSetup, base: PeerSetup = BENCH) -> str:
    """How ``setup`` differs from ``base``, e.g. ``batch_size=64 batch_type=sents``, so a table
    row says what it measured; ``-`` when it does not."""
    diffs = [
        f"{f.name}={getattr(setup, f.name)}"
        for f in fields(setup)
        if getattr(setup, f.name) != getattr(base, f.name)
    ]
    return " ".join(diffs) or "-"


def shared_vocab_size(setups: list[PeerSetup]) -> int:
    """The one vocabulary size of set-ups that train on the same prepared data."""
    sizes = {setup.vocab_size for setup in setups}
    if len(sizes) != 1:
        raise ValueError(f"set-ups that share data need one vocab_size, not {sorted(sizes)}")
    return sizes.pop()


@dataclass(frozen=True)
class Corpus:
    """The split names of a corpus: files ``{split}.de`` and ``{split}.en``, plain or .gz."""

    train: str
    dev: str
    test: str | None = None


CORPORA = {
    "multi30k": Corpus("train", "val", "test_2016_flickr"),
    "tatoeba": Corpus("train", "valid"),  # no test split
}


class PeerError(RuntimeError):
    """A peer toolkit failed; the message ends with the tail of its log."""


# --- installation ---------------------------------------------------------------------------


def setup_venv(folder: Path, packages: list[str], build: list[str] | None = None) -> Path:
    """Create ``folder`` as a virtual environment holding ``packages`` and return its python.
    With ``build``, those are installed first and ``packages`` built against them, without
    pip's isolated build environments. A file listing the packages marks a finished install,
    so a second call returns at once."""
    python = folder / "bin" / "python"
    marker = folder / "installed.txt"
    wanted = "\n".join([*(build or []), *packages]) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    if build:
        subprocess.run([*pip, *build], check=True)
        pip.append("--no-build-isolation")
    subprocess.run([*pip, *packages], check=True)
    marker.write_text(wanted)
    return python


def setup_opennmt(cache: Path = DEFAULT_CACHE) -> Path:
    """Install OpenNMT-py 3.0.4 with the CPU torch into ``cache/opennmt``; its python."""
    return setup_venv(Path(cache) / "opennmt", OPENNMT_PACKAGES)


def setup_joeynmt(cache: Path = DEFAULT_CACHE) -> Path:
    """Install JoeyNMT 2.3.0 with the CPU torch into ``cache/joeynmt``; its python."""
    return setup_venv(Path(cache) / "joeynmt", JOEYNMT_PACKAGES)


def setup_fairseq(cache: Path = DEFAULT_CACHE) -> Path:
    """Install fairseq (the fairseq-fixed 0.12.3.1 fork) with the CPU torch into
    ``cache/fairseq``, compiling its C extensions (7 minutes on two cores); its python."""
    return setup_venv(Path(cache) / "fairseq", FAIRSEQ_PACKAGES, build=FAIRSEQ_BUILD)


# --- shared subword data --------------------------------------------------------------------


@dataclass
class PeerData:
    """Pre-tokenized files (space-separated SentencePiece pieces) that all peers read."""

    folder: Path

    @property
    def spm_model(self) -> Path:
        return self.folder / "spm.model"

    @property
    def vocab(self) -> Path:
        """One piece a line, no specials: each toolkit adds its own."""
        return self.folder / "vocab.txt"

    @property
    def train(self) -> Path:
        """Prefix of ``train.de`` / ``train.en``."""
        return self.folder / "train"

    @property
    def val(self) -> Path:
        return self.folder / "val"

    @property
    def val_ref(self) -> Path:
        """The untokenized English references of ``val.de``."""
        return reference_of(self.val.with_suffix(".de"))

    @property
    def test_src(self) -> Path:
        return self.folder / "test.de"

    @property
    def test_ref(self) -> Path:
        """The untokenized English references of ``test_src``."""
        return reference_of(self.test_src)


def reference_of(src_file: Path) -> Path:
    """Where :func:`prepare_data` puts the raw reference of a pieces file: ``test.de`` ->
    ``test.ref.en``."""
    return Path(src_file).with_suffix(".ref.en")


def read_lines(data_dir: Path, name: str) -> list[str]:
    """Lines of ``data_dir/name.gz`` or, failing that, ``data_dir/name``."""
    path = Path(data_dir) / f"{name}.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as file:
            return file.read().splitlines()
    return (Path(data_dir) / name).read_text(encoding="utf-8").splitlines()


def prepare_data(
    data_dir: Path,
    workdir: Path,
    test_sentences: int | None = None,
    threads: int = 2,
    *,
    corpus: Corpus = CORPORA["multi30k"],
    spm_model: Path | None = None,
    vocab_size: int = BENCH.vocab_size,
) -> PeerData:
    """Write the train, dev and test (its first ``test_sentences``; none when ``corpus`` has
    no test split) splits of ``corpus`` in ``data_dir`` as pieces of one joint SentencePiece
    model: ``spm_model`` when given (e.g. our experiment's ``spm.model``, so that a peer trains
    on the same pieces as ours), else one of ``vocab_size`` trained here on the training data.
    The dev split becomes ``val`` whatever its name. Skipped when ``workdir/data`` already
    holds the same preparation."""
    data = PeerData(Path(workdir) / "data")
    marker = data.folder / "prepared.json"
    recipe = json.dumps(
        {
            "data_dir": str(data_dir),
            "splits": asdict(corpus),
            "spm": file_digest(spm_model) if spm_model else None,
            "vocab": None if spm_model else vocab_size,
            "test": test_sentences,
            "refs": 2,
        }
    )
    if marker.is_file() and marker.read_text() == recipe:
        return data
    data.folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    train = {lang: read_lines(data_dir, f"{corpus.train}.{lang}") for lang in ("de", "en")}
    if spm_model:
        shutil.copyfile(spm_model, data.spm_model)
    else:
        train_spm(train["de"] + train["en"], data.folder / "spm", vocab_size, threads)
    processor = spm.SentencePieceProcessor(model_file=str(data.spm_model))
    data.vocab.write_text("".join(f"{piece}\n" for piece in plain_pieces(processor)), "utf-8")
    splits = {corpus.train: data.train, corpus.dev: data.val}
    if corpus.test:
        splits[corpus.test] = data.test_src.with_suffix("")
    for split, prefix in splits.items():
        for lang in ("de", "en"):
            lines = (
                train[lang] if split == corpus.train else read_lines(data_dir, f"{split}.{lang}")
            )
            if split == corpus.test:
                lines = lines[:test_sentences]
            encoded = processor.encode(lines, out_type=str)
            write_lines(prefix.with_suffix(f".{lang}"), [" ".join(p) for p in encoded])
    write_lines(data.val_ref, read_lines(data_dir, f"{corpus.dev}.en"))
    if corpus.test:
        write_lines(data.test_ref, read_lines(data_dir, f"{corpus.test}.en")[:test_sentences])
    marker.write_text(recipe)
    return data


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: a given SentencePiece model is part of a preparation's key."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_spm(sentences: list[str], prefix: Path, vocab_size: int, threads: int) -> None:
    """Train a joint unigram SentencePiece model on ``sentences`` as ``{prefix}.model``."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for s in sentences if s.strip()]),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=threads,
        minloglevel=2,
    )


def plain_pieces(processor: spm.SentencePieceProcessor) -> list[str]:
    """The pieces of a SentencePiece model a toolkit's vocabulary file can hold: no control or
    unknown symbols (each toolkit adds its own), none with whitespace or line breaks inside
    (the toolkits split vocabulary files on them)."""
    return [
        piece
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
        and (piece := processor.id_to_piece(i)).split() == [piece] == piece.splitlines()
    ]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def detokenize(line: str) -> str:
    """Text of a line of space-separated SentencePiece pieces."""
    return "".join(line.split()).replace("\u2581", " ").strip()


def score_bleu(hyp_file: Path, ref_file: Path) -> tuple[float, str]:
    """Cased sacreBLEU (13a) of a pieces file against raw references, and its signature."""
    hyps = [detokenize(line) for line in hyp_file.read_text(encoding="utf-8").splitlines()]
    refs = ref_file.read_text(encoding="utf-8").splitlines()
    if len(hyps) != len(refs):
        raise PeerError(f"{hyp_file} has {len(hyps)} lines, {ref_file} has {len(refs)}")
    bleu = sacrebleu.BLEU()
    return bleu.corpus_score(hyps, [refs]).score, str(bleu.get_signature())


# --- running a peer -------------------------------------------------------------------------


@dataclass
class ChildRun:
    """What a finished peer process left: exit code, wall time, peak memory and log."""

    returncode: int
    wall_s: float
    rss_mib: float
    log: str
    interrupted: bool


def child_env(threads: int) -> dict[str, str]:
    """Environment of a peer process. None of the toolkits has a torch thread option, so torch
    takes its intra-op thread count from OMP_NUM_THREADS. torch >= 2.6 loads checkpoints
    with ``weights_only=True``, which the toolkits' pickles fail; the variable restores the
    old behaviour for their process only."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }


def run_child(
    cmd: list[str],
    log_path: Path,
    threads: int,
    stdin: Path | None = None,
    stdout: Path | None = None,
    should_stop: Callable[[float, str], bool] | None = None,
    kill_after: float = 300.0,
) -> ChildRun:
    """Run ``cmd`` with its output (stderr only, when ``stdout`` is given) in ``log_path``;
    send it SIGINT once ``should_stop(elapsed seconds, log so far)`` says so, and SIGKILL
    ``kill_after`` seconds later if it is still running. Peak RSS comes from wait4, so it is
    this child's own."""
    start = time.perf_counter()
    interrupted_at = None
    with ExitStack() as files:
        log = files.enter_context(open(log_path, "w"))
        source = files.enter_context(open(stdin or os.devnull, "rb"))
        out = files.enter_context(open(stdout, "w")) if stdout else log
        proc = subprocess.Popen(
            cmd,
            stdin=source,
            stdout=out,
            stderr=log,
            env=child_env(threads),
            # a shell starts background jobs with SIGINT ignored, and Python then never raises
            # KeyboardInterrupt: JoeyNMT ran on past its stop. Give the child the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - start
            if interrupted_at is None and should_stop is not None:
                if should_stop(elapsed, log_path.read_text(errors="replace")):
                    proc.send_signal(signal.SIGINT)
                    interrupted_at = elapsed
            elif interrupted_at is not None and elapsed - interrupted_at > kill_after:
                proc.kill()  # it ignored the interrupt
            time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        returncode=proc.returncode,
        wall_s=time.perf_counter() - start,
        rss_mib=usage.ru_maxrss / 1024,
        log=log_path.read_text(errors="replace"),
        interrupted=interrupted_at is not None,
    )


def check(run: ChildRun, what: str) -> None:
    """Raise :class:`PeerError` with the log's tail when a peer exited with an error."""
    if run.returncode != 0 and not run.interrupted:
        tail = "\n".join(run.log.splitlines()[-15:])
        raise PeerError(f"{what} exited with {run.returncode}:\n{tail}")


def window_throughput(log: str, pattern: str) -> float:
    """Target tokens/s over a training run from the rates the toolkit logs per window of
    equal steps. The first window (data loading, allocator warm-up) is dropped when there are
    others; the rest are combined as total tokens / total time, i.e. their harmonic mean,
    since token-sized batches give every window nearly the same number of tokens."""
    rates = [float(rate) for rate in re.findall(pattern, log)]
    if not rates:
        raise PeerError(f"no throughput line ({pattern!r}) in the training log")
    rates = rates[1:] or rates
    return len(rates) / sum(1 / rate for rate in rates)


def logged_value(run: ChildRun, pattern: str) -> float:
    """The number a peer logged in the first group of ``pattern``."""
    found = re.search(pattern, run.log)
    if not found:
        raise PeerError(f"no line matching {pattern!r} in the log:\n{run.log[-2000:]}")
    return float(found.group(1))


def decoded(hyp_file: Path, ref_file: Path, sentences_per_s: float, run: ChildRun) -> dict:
    """The row of a translation run: speed, BLEU with its signature, peak memory."""
    bleu, signature = score_bleu(hyp_file, ref_file)
    return {
        "sentences_per_s": sentences_per_s,
        "bleu": bleu,
        "signature": signature,
        "rss_mib": run.rss_mib,
    }


def write_config(workdir: Path, config: dict) -> Path:
    """``workdir/train.yaml`` holding ``config``."""
    path = workdir / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def minutes_after(minutes: float, loop_start: str) -> Callable[[float, str], bool]:
    """A ``should_stop`` for :func:`run_child` that is true ``minutes`` after the toolkit
    logged ``loop_start``, the start of its training loop: ours counts ``train.max_minutes``
    from its loop too, so start-up (imports, data, model) is not part of the budget."""
    started: list[float] = []

    def past(elapsed: float, log: str) -> bool:
        if not started and loop_start in log:
            started.append(elapsed)
        return bool(started) and elapsed - started[0] >= 60 * minutes

    return past


def report_every(steps: int | None) -> int:
    """Steps per logged throughput window: 10, fewer for a short fixed run."""
    return 10 if steps is None else max(1, min(10, steps // 4))


def check_budget(minutes: float | None, steps: int | None) -> None:
    if (minutes is None) == (steps is None):
        raise ValueError("give exactly one of minutes and steps")


# --- OpenNMT-py -----------------------------------------------------------------------------

OPENNMT_RATE = r"(?:\d+)/\s*(\d+) tok/s"  # "src/tgt tok/s" of each report window
OPENNMT_SAVE = re.compile(r"Saving checkpoint (\S+)_step_(\d+)\.pt")
OPENNMT_STAMPED = re.compile(
    r"^\[(\S+ \S+) INFO\] (Start training loop|Saving checkpoint \S+)", re.M
)


def opennmt_config(
    workdir: Path,
    data: PeerData,
    steps: int | None,
    setup: PeerSetup = BENCH,
    save_every: int = OPENNMT_SAVE_EVERY,
    keep_all: bool = False,
    train_from: Path | None = None,
    *,
    gpu: bool = False,
    model_dtype: str = "fp32",
) -> dict:
    """OpenNMT-py 3.0 training options: bi-LSTM 2 x 256, LSTM 512, MLP attention with input
    feeding (at ``setup``'s sizes and with its cell and score), no validation; against the
    clock it checkpoints every ``save_every`` steps and keeps the last two (or, with
    ``keep_all``, every one). ``train_from``: a checkpoint to go on from, optimiser and step
    count included. With ``gpu`` it trains on GPU 0 with its default two loader processes,
    in ``model_dtype`` (fp16: autocast and loss scaling, weights fp32; 3.0.4 has no bf16).

    Without attention (``global_attention: none``) the source reaches the decoder only
    through its initial state, the encoder's final states (our context-vector model also reads
    a context at every step). Input feeding stays on, as in fairseq's LSTM without attention:
    it feeds back the decoder's previous output, here its own previous state after dropout
    (redundant, 1M more weights, and the step-by-step decoder). ``input_feed: 0``, the decoder
    that runs over all steps at once, fails in OpenNMT-py 3.0.4's training on CPU: the output
    of its ``nn.LSTM(batch_first=True)`` is not contiguous and the loss calls ``.view`` on it
    ("view size is not compatible with input tensor's size and stride")."""
    if model_dtype not in ("fp32", "fp16") or (model_dtype == "fp16" and not gpu):
        raise ValueError(f"model_dtype must be fp32, or fp16 on a GPU, not {model_dtype!r}")
    on_gpu = {"gpu_ranks": [0], "world_size": 1, "num_workers": 2, "model_dtype": model_dtype}
    return {
        **({"train_from": str(train_from)} if train_from else {}),
        "data": {"corpus_1": {"path_src": f"{data.train}.de", "path_tgt": f"{data.train}.en"}},
        "src_vocab": str(data.vocab),
        "tgt_vocab": str(data.vocab),
        "share_vocab": True,
        "transforms": ["filtertoolong"],
        "src_seq_length": setup.max_len,
        "tgt_seq_length": setup.max_len,
        "save_model": str(workdir / "model"),
        "save_checkpoint_steps": 0 if steps else save_every,  # 0: only at the end
        # the older one is deleted only after the newer is written
        "keep_checkpoint": -1 if keep_all else 2,
        "train_steps": steps or 10**9,
        "valid_steps": 10**9,
        "report_every": report_every(steps),
        "seed": setup.seed,
        "num_workers": 0,  # its default of 2 loader processes would compete for the cores
        "model_type": "text",
        "encoder_type": "brnn",
        "decoder_type": "rnn",
        "rnn_type": setup.opennmt_rnn,
        "word_vec_size": setup.emb_dim,
        "enc_layers": 1,
        "dec_layers": 1,
        "enc_hid_size": 2 * setup.enc_dir_dim,  # brnn splits it over the two directions
        "dec_hid_size": setup.hidden_dim,
        "global_attention": setup.opennmt_attention if setup.attention else "none",
        "input_feed": 1,
        "dropout": [setup.dropout],
        "optim": "adam",
        "learning_rate": setup.learning_rate,
        "max_grad_norm": setup.clip_norm,
        "label_smoothing": setup.label_smoothing,
        "normalization": "tokens",
        "batch_type": setup.batch_type,
        "batch_size": setup.batch_size,
        **(on_gpu if gpu else {}),
    }


def opennmt_checkpoints(log: str, exited: bool) -> list[Path]:
    """Checkpoints OpenNMT-py has finished writing, oldest first. It logs "Saving checkpoint"
    before ``torch.save``, so while it runs a file counts once it is a whole zip archive (the
    central directory that ends one is written last); after a clean exit all do."""
    saved = [Path(f"{m[1]}_step_{m[2]}.pt") for m in OPENNMT_SAVE.finditer(log)]
    return saved if exited else [path for path in saved if zipfile.is_zipfile(path)]


def opennmt_checkpoint_times(log: str) -> dict[Path, float]:
    """Seconds of OpenNMT-py's training loop at each checkpoint it began to save, from the
    timestamps of its log lines ("Saving checkpoint" is logged before ``torch.save``)."""
    times, start = {}, None
    for stamp, what in OPENNMT_STAMPED.findall(log):
        seconds = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
        seconds += int(stamp[20:]) / 1000
        if what.startswith("Start training loop"):
            start = seconds
        elif start is not None:
            times[Path(what.split()[-1])] = seconds - start
    return times


def train_opennmt(
    workdir: Path,
    data: PeerData,
    minutes: float | None = None,
    steps: int | None = None,
    threads: int = 2,
    *,
    setup: PeerSetup = BENCH,
    save_every: int = OPENNMT_SAVE_EVERY,
    keep_all: bool = False,
    train_from: Path | None = None,
    cache: Path = DEFAULT_CACHE,
    python: Path | None = None,
    gpu: bool = False,
    model_dtype: str = "fp32",
    limit_s: float | None = None,
) -> dict:
    """Train OpenNMT-py with ``setup`` for ``steps`` steps or about ``minutes`` of its training
    loop, then interrupt it. It saves nothing on SIGINT, so the model is its newest whole checkpoint
    (one every ``save_every`` steps) and ``steps`` counts the steps in it.
    ``tgt_tokens_per_s`` comes from its log (see :func:`window_throughput`); ``wall_s`` is
    the whole process; ``checkpoints`` lists the whole ones kept with their training-loop
    seconds (see :func:`opennmt_checkpoint_times`). ``python``: an interpreter that imports
    ``onmt`` (default: the virtual environment's); ``gpu`` and ``model_dtype``: see
    :func:`opennmt_config`; ``limit_s``: seconds after which the process is interrupted
    (and killed a minute later) even with no checkpoint yet."""
    check_budget(minutes, steps)
    python = python or setup_opennmt(cache)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    options = opennmt_config(
        workdir,
        data,
        steps,
        setup,
        save_every,
        keep_all,
        train_from,
        gpu=gpu,
        model_dtype=model_dtype,
    )
    config = write_config(workdir, options)
    chosen: list[Path] = []
    out_of_time = minutes_after(minutes or 0.0, "Start training loop")

    def should_stop(elapsed: float, log: str) -> bool:
        over_limit = limit_s is not None and elapsed >= limit_s
        if not over_limit and (minutes is None or not out_of_time(elapsed, log)):
            return False
        chosen[:] = opennmt_checkpoints(log, exited=False)
        return bool(chosen) or over_limit  # else wait for the first checkpoint

    cmd = [str(python), "-m", "onmt.bin.train", "-config", str(config)]
    stop = should_stop if minutes is not None or limit_s is not None else None
    kill_after = 60.0 if limit_s is not None else 300.0
    run = run_child(cmd, workdir / "train.log", threads, should_stop=stop, kill_after=kill_after)
    check(run, "OpenNMT-py training")
    if not run.interrupted:
        chosen = opennmt_checkpoints(run.log, exited=True)
    if not chosen or not chosen[-1].is_file():
        raise PeerError(f"OpenNMT-py left no checkpoint; see {workdir / 'train.log'}")
    times = opennmt_checkpoint_times(run.log)
    return {
        "tgt_tokens_per_s": window_throughput(run.log, OPENNMT_RATE),
        "wall_s": run.wall_s,
        "checkpoints": [(str(path), times[path]) for path in chosen if path.is_file()],
        "model": chosen[-1],
        "steps": int(chosen[-1].stem.rsplit("_", 1)[1]),
        "rss_mib": run.rss_mib,
    }


def translate_opennmt(
    model: Path,
    src_file: Path,
    beam: int | None = None,
    threads: int = 2,
    *,
    ref_file: Path | None = None,
    setup: PeerSetup = BENCH,
    cache: Path = DEFAULT_CACHE,
    python: Path | None = None,
    gpu: bool = False,
) -> dict:
    """Decode a pieces file with an OpenNMT-py checkpoint (beam: ``setup``'s unless given) and
    score it against ``ref_file`` (default: :func:`reference_of`). Speed is the toolkit's own
    timing of the decoding (model loading excluded), reported as average milliseconds per
    sentence. ``python``: as for :func:`train_opennmt`; ``gpu``: decode on GPU 0 (fp32)."""
    python = python or setup_opennmt(cache)
    beam = beam or setup.beam
    model = Path(model)
    out = model.parent / f"{Path(src_file).stem}.beam{beam}.hyp"
    cmd = [str(python), "-m", "onmt.bin.translate", "-model", str(model)]
    cmd += ["-src", str(src_file), "-output", str(out), "-beam_size", str(beam)]
    cmd += ["-batch_size", str(setup.decode_batch), "-batch_type", "sents", "-report_time"]
    cmd += ["-length_penalty", "wu", "-alpha", str(setup.length_penalty)]
    cmd += ["-gpu", "0" if gpu else "-1"]
    run = run_child(cmd, out.with_suffix(".log"), threads)
    check(run, "OpenNMT-py translation")
    milliseconds = logged_value(run, r"Average translation time \(ms\): ([\d.]+)")
    return decoded(out, ref_file or reference_of(src_file), 1000 / milliseconds, run)


# --- JoeyNMT --------------------------------------------------------------------------------

JOEYNMT_RATE = r"Tokens per Sec:\s+(\d+)"  # target tokens of each logging window


def joeynmt_config(
    model_dir: Path, data: PeerData, steps: int | None, setup: PeerSetup = BENCH
) -> dict:
    """JoeyNMT 2.3 training options: bi-GRU 2 x 256, GRU 512 with Bahdanau attention and
    input feeding (at ``setup``'s sizes), and a constant learning rate: ``plateau`` passes
    ``verbose`` to ReduceLROnPlateau, which torch 2.13 rejects, and leaving ``scheduling`` out
    is rejected by 2.3.0 itself, so it is an exponential decay by a factor of 1 per epoch.
    Validation is never reached. JoeyNMT has no decoder without attention (its recurrent
    decoder takes ``bahdanau`` or ``luong`` only), so a set-up without it is refused."""
    if not setup.attention:
        raise ValueError("JoeyNMT's recurrent decoder always attends: no set-up without it")
    every = report_every(steps)
    side = {"level": "word", "lowercase": False, "max_length": setup.max_len}
    side["voc_file"] = str(data.vocab)
    return {
        "name": "peers",
        "model_dir": str(model_dir),
        "use_cuda": False,
        "random_seed": setup.seed,
        "data": {
            "train": str(data.train),
            "dev": str(data.val),
            "dataset_type": "plain",
            "src": {"lang": "de", **side},
            "trg": {"lang": "en", **side},
        },
        "training": {
            "optimizer": "adam",
            "learning_rate": setup.learning_rate,
            "scheduling": "exponential",
            "decrease_factor": 1.0,
            "clip_grad_norm": setup.clip_norm,
            "label_smoothing": setup.label_smoothing,
            "normalization": "tokens",
            "batch_type": {"tokens": "token", "sents": "sentence"}[setup.batch_type],
            "batch_size": setup.batch_size,
            "epochs": 10**6,
            "updates": steps or 10**9,
            "logging_freq": every,
            "validation_freq": every * 10**6,
            "overwrite": True,
        },
        "testing": {"batch_size": setup.decode_batch, "batch_type": "sentence"},
        "model": {
            "tied_embeddings": False,
            "tied_softmax": False,
            "encoder": {
                "type": "recurrent",
                "rnn_type": "gru",
                "embeddings": {"embedding_dim": setup.emb_dim},
                "hidden_size": setup.enc_dir_dim,
                "bidirectional": True,
                "num_layers": 1,
                "dropout": setup.dropout,
            },
            "decoder": {
                "type": "recurrent",
                "rnn_type": "gru",
                "embeddings": {"embedding_dim": setup.emb_dim},
                "hidden_size": setup.hidden_dim,
                "attention": "bahdanau",
                "input_feeding": True,
                "init_hidden": "bridge",
                "num_layers": 1,
                "dropout": setup.dropout,
            },
        },
    }


def train_joeynmt(
    workdir: Path,
    data: PeerData,
    minutes: float | None = None,
    steps: int | None = None,
    threads: int = 2,
    *,
    setup: PeerSetup = BENCH,
    cache: Path = DEFAULT_CACHE,
) -> dict:
    """Train JoeyNMT with ``setup`` for ``steps`` steps or about ``minutes`` of its training loop, then
    interrupt it (it saves the current weights on SIGINT). ``model`` is its model directory,
    ``steps`` the steps in its latest checkpoint; ``tgt_tokens_per_s`` comes from its log
    (see :func:`window_throughput`); ``wall_s`` is the whole process."""
    check_budget(minutes, steps)
    python = setup_joeynmt(cache)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model"
    config = write_config(workdir, joeynmt_config(model_dir, data, steps, setup))

    # SIGINT is caught (and the model saved) only inside the epoch loop, which logs "EPOCH"
    stop = minutes_after(minutes, "EPOCH 1") if minutes is not None else None
    cmd = [str(python), "-m", "joeynmt", "train", str(config), "--skip-test"]
    run = run_child(cmd, workdir / "train.log", threads, should_stop=stop)
    check(run, "JoeyNMT training")
    latest = model_dir / "latest.ckpt"  # a link to STEPS.ckpt
    if not latest.is_file():
        raise PeerError(f"JoeyNMT left no checkpoint; see {workdir / 'train.log'}")
    return {
        "tgt_tokens_per_s": window_throughput(run.log, JOEYNMT_RATE),
        "wall_s": run.wall_s,
        "model": model_dir,
        "steps": int(latest.resolve().stem),
        "rss_mib": run.rss_mib,
    }


def translate_joeynmt(
    model: Path,
    src_file: Path,
    beam: int | None = None,
    threads: int = 2,
    *,
    ref_file: Path | None = None,
    setup: PeerSetup = BENCH,
    cache: Path = DEFAULT_CACHE,
) -> dict:
    """Decode a pieces file with the latest checkpoint of a JoeyNMT model directory (beam:
    ``setup``'s unless given) and score it against ``ref_file`` (default:
    :func:`reference_of`). Speed is the toolkit's own "Generation took" timing (model loading
    excluded)."""
    python = setup_joeynmt(cache)
    beam = beam or setup.beam
    model = Path(model)
    config = yaml.safe_load((model / "config.yaml").read_text())
    config["testing"].update(
        beam_size=beam,
        beam_alpha=setup.length_penalty,  # GNMT ((5 + len) / 6) ** alpha, as ours
        load_model=str((model / "latest.ckpt").resolve()),
    )
    translate_config = model / f"translate.beam{beam}.yaml"
    translate_config.write_text(yaml.safe_dump(config))
    out = model / f"{Path(src_file).stem}.beam{beam}.hyp"
    # 2.3.0 fails on its own -o option (it reads args.n_best, a field it lacks): take stdout
    cmd = [str(python), "-m", "joeynmt", "translate", str(translate_config)]
    run = run_child(cmd, out.with_suffix(".log"), threads, stdin=Path(src_file), stdout=out)
    check(run, "JoeyNMT translation")
    seconds = logged_value(run, r"Generation took ([\d.]+)\[sec\]")
    sentences = len(Path(src_file).read_text(encoding="utf-8").splitlines())
    return decoded(out, ref_file or reference_of(src_file), sentences / seconds, run)


# --- fairseq --------------------------------------------------------------------------------

FAIRSEQ_RATE = r'\| train_inner \| \{.*?"wps": "([\d.]+)"'  # target tokens/s of a window
FAIRSEQ_LOOP_START = "Start iterating over samples"
FAIRSEQ_STAMPED = re.compile(
    r"^(\S+ \S+) \| INFO \| \S+ \| (Start iterating over samples"
    r"|Saved checkpoint (\S+) \(epoch \d+ @ (\d+) updates)",
    re.M,
)
FAIRSEQ_DECODED = r"Translated [\d,]+ sentences \([\d,]+ tokens\) in \S+ \(([\d.]+) sentences/s"
FAIRSEQ_LANGS = ["--source-lang", "de", "--target-lang", "en"]


def fairseq_flops_per_target_token(
    vocab: int, src_per_tgt: float = 1.0, src_len: float = 18.0, setup: PeerSetup = BENCH
) -> float:
    """Forward+backward FLOPs per target token of fairseq's LSTM at ``setup``'s sizes: 3x the
    forward matrix products, as bench.py counts ours, with ``src_per_tgt`` source tokens per
    target token and ``src_len`` source tokens each target token attends to."""
    emb, enc, hidden = setup.emb_dim, setup.enc_dir_dim, setup.hidden_dim
    encoder = 2 * 2 * 4 * enc * (emb + enc)  # two directions
    decoder = 2 * 4 * hidden * (emb + hidden + hidden)  # input feeding
    # query projection, scores, weighted sum, tanh layer over [context; state]
    attend = 2 * hidden * (hidden + 2 * src_len + 2 * hidden) if setup.attention else 0
    output = 2 * hidden * vocab
    return 3.0 * (src_per_tgt * encoder + decoder + attend + output)


def write_fairseq_dictionary(vocab: Path, path: Path) -> Path:
    """``vocab`` in fairseq's dictionary format, "piece count" a line. A given dictionary is
    used as it is (its counts unread, so all 1), after fairseq's four specials."""
    pieces = vocab.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(f"{piece} 1\n" for piece in pieces), encoding="utf-8")
    return path


def binarize_fairseq(
    python: Path, prefixes: dict[str, Path], dictionary: Path, folder: Path, threads: int
) -> None:
    """fairseq-preprocess the pieces files ``{prefix}.de`` (and ``{prefix}.en`` where they
    exist) into ``folder`` as the splits named by ``prefixes``' keys, with one joint
    dictionary; its log is ``folder/preprocess.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), "-m", "fairseq_cli.preprocess", *FAIRSEQ_LANGS]
    for split, prefix in prefixes.items():
        cmd += [f"--{split}pref", str(prefix)]
    if not all(Path(f"{prefix}.en").is_file() for prefix in prefixes.values()):
        cmd.append("--only-source")
    cmd += ["--srcdict", str(dictionary), "--tgtdict", str(dictionary)]
    cmd += ["--destdir", str(folder), "--workers", str(threads)]
    check(run_child(cmd, folder / "preprocess.log", threads), "fairseq-preprocess")
    for lang in ("de", "en"):  # generation reads both, --only-source writes one
        (folder / f"dict.{lang}.txt").write_text(dictionary.read_text(encoding="utf-8"))


def fairseq_data(python: Path, data: PeerData, threads: int) -> Path:
    """The shared training and validation pieces binarised for fairseq, once per
    preparation of ``data``, in ``data.folder/fairseq``; that folder."""
    folder = data.folder / "fairseq"
    marker = folder / "prepared.json"
    recipe = (data.folder / "prepared.json").read_text()
    if marker.is_file() and marker.read_text() == recipe:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    dictionary = write_fairseq_dictionary(data.vocab, folder / "dict.txt")
    binarize_fairseq(python, {"train": data.train, "valid": data.val}, dictionary, folder, threads)
    marker.write_text(recipe)
    return folder


def fairseq_args(
    data_bin: Path,
    save_dir: Path,
    steps: int | None,
    setup: PeerSetup = BENCH,
    save_every: int = FAIRSEQ_SAVE_EVERY,
) -> list[str]:
    """fairseq 0.12 training options: architecture ``lstm`` with a bi-LSTM 2 x 256 and an
    LSTM 512 that starts from the encoder's final states, no validation; against the clock it
    checkpoints every ``save_every`` updates and keeps the last two, else once at the end.

    The decoder always feeds its previous output back in (input feeding). With attention it
    is Luong's "general" score, bilinear and bias-free (OpenNMT-py and JoeyNMT use Bahdanau's
    MLP), and a tanh layer over [context; state]; without, the output is the LSTM state and
    the source reaches the decoder only through its initial state (our context-vector model
    also reads a context at every step). Forward+backward per target token (see
    :func:`fairseq_flops_per_target_token`: 8001 types, 1.035 source tokens and 17.7 attended
    ones per target token on Multi30k): 51.6 MFLOP, 46.8 without attention; bench.py counts
    35.2 for ours. Lengths include the end-of-sentence token, hence ``max_len + 1``; batches
    are not rounded to multiples of 8 sentences (fairseq's default, for GPUs)."""
    options = {
        "--task": "translation",
        "--arch": "lstm",
        "--encoder-embed-dim": setup.emb_dim,
        "--encoder-hidden-size": setup.enc_dir_dim,
        "--encoder-layers": 1,
        "--decoder-embed-dim": setup.emb_dim,
        "--decoder-hidden-size": setup.hidden_dim,
        "--decoder-layers": 1,
        "--decoder-out-embed-dim": setup.hidden_dim,  # no extra layer before the softmax
        "--decoder-attention": int(setup.attention),
        "--dropout": setup.dropout,  # on embeddings, encoder outputs and decoder outputs
        "--criterion": "label_smoothed_cross_entropy",  # summed, divided by target tokens
        "--label-smoothing": setup.label_smoothing,
        "--optimizer": "adam",
        "--lr": setup.learning_rate,
        "--lr-scheduler": "fixed",
        "--clip-norm": setup.clip_norm,
        "--max-tokens" if setup.batch_type == "tokens" else "--batch-size": setup.batch_size,
        "--required-batch-size-multiple": 1,
        "--max-source-positions": setup.max_len + 1,
        "--max-target-positions": setup.max_len + 1,
        "--max-update": steps or 0,  # 0: no limit
        "--seed": setup.seed,
        "--num-workers": 0,
        "--log-format": "json",
        "--log-interval": report_every(steps),
        "--save-dir": save_dir,
        "--save-interval-updates": steps or save_every,
        "--keep-interval-updates": 2,
    }
    flags = ["--encoder-bidirectional", "--cpu", "--disable-validation"]
    flags += ["--no-epoch-checkpoints", "--no-last-checkpoints"]  # last: a copy of each one
    pairs = [item for option, value in options.items() for item in (option, str(value))]
    return [str(data_bin), *FAIRSEQ_LANGS, *pairs, *flags]


def fairseq_checkpoints(log: str) -> list[tuple[Path, int, float]]:
    """Checkpoints fairseq has finished writing, oldest first (it logs "Saved checkpoint"
    after the file is in place), with their updates and the seconds of its training loop at
    the log line (whole seconds: the log's stamps are)."""
    saved, start = [], None
    for stamp, what, path, updates in FAIRSEQ_STAMPED.findall(log):
        seconds = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
        if what == FAIRSEQ_LOOP_START:
            start = seconds if start is None else start
        elif start is not None:
            saved.append((Path(path), int(updates), seconds - start))
    return saved


def train_fairseq(
    workdir: Path,
    data: PeerData,
    minutes: float | None = None,
    steps: int | None = None,
    threads: int = 2,
    *,
    setup: PeerSetup = BENCH,
    save_every: int = FAIRSEQ_SAVE_EVERY,
    cache: Path = DEFAULT_CACHE,
) -> dict:
    """Train fairseq's LSTM (see :func:`fairseq_args`) with ``setup`` for ``steps`` updates or about
    ``minutes`` of its training loop, then interrupt it. It saves nothing on SIGINT, so the
    model is its newest checkpoint (one every ``save_every`` updates) and ``steps`` counts the
    updates in it. ``tgt_tokens_per_s`` comes from its log (see :func:`window_throughput`);
    ``wall_s`` is the training process, binarising the data (once, shared) excluded."""
    check_budget(minutes, steps)
    python = setup_fairseq(cache)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_bin = fairseq_data(python, data, threads)
    save_dir = workdir / "model"
    save_dir.mkdir(exist_ok=True)
    shutil.copy(data_bin / "dict.txt", save_dir / "dict.txt")  # for translate_fairseq
    options = fairseq_args(data_bin, save_dir, steps, setup, save_every)
    (workdir / "train.args").write_text("".join(f"{option}\n" for option in options))
    chosen: list[tuple[Path, int, float]] = []
    out_of_time = minutes_after(minutes or 0.0, FAIRSEQ_LOOP_START)

    def should_stop(elapsed: float, log: str) -> bool:
        if not out_of_time(elapsed, log):
            return False
        chosen[:] = fairseq_checkpoints(log)
        return bool(chosen)  # else wait for the first checkpoint

    cmd = [str(python), "-m", "fairseq_cli.train", *options]
    stop = should_stop if minutes is not None else None
    run = run_child(cmd, workdir / "train.log", threads, should_stop=stop)
    check(run, "fairseq training")
    if not run.interrupted:
        chosen = fairseq_checkpoints(run.log)
    if not chosen or not chosen[-1][0].is_file():
        raise PeerError(f"fairseq left no checkpoint; see {workdir / 'train.log'}")
    return {
        "tgt_tokens_per_s": window_throughput(run.log, FAIRSEQ_RATE),
        "wall_s": run.wall_s,
        "checkpoints": [(str(path), seconds) for path, _, seconds in chosen if path.is_file()],
        "model": chosen[-1][0],
        "steps": chosen[-1][1],
        "rss_mib": run.rss_mib,
    }


def fairseq_hypotheses(output: str, sentences: int) -> list[str]:
    """The best hypothesis of each sentence, in input order, from fairseq-generate's output
    (``H-{index}\\t{score}\\t{pieces}`` lines, in its own length order)."""
    best = {}
    for line in output.splitlines():
        if line.startswith("H-"):
            index, _, pieces = line[2:].split("\t", 2)
            best[int(index)] = pieces
    if sorted(best) != list(range(sentences)):
        raise PeerError(f"fairseq-generate translated {len(best)} of {sentences} sentences")
    return [best[i] for i in range(sentences)]


def translate_fairseq(
    model: Path,
    src_file: Path,
    beam: int | None = None,
    threads: int = 2,
    *,
    ref_file: Path | None = None,
    setup: PeerSetup = BENCH,
    cache: Path = DEFAULT_CACHE,
) -> dict:
    """Decode a pieces file with a fairseq checkpoint (binarised first, as fairseq-generate
    reads; beam: ``setup``'s unless given) and score it against ``ref_file`` (default: :func:`reference_of`). fairseq's
    ``--lenpen`` divides a hypothesis's log-probability by its length to that power, not by
    GNMT's ((5 + length) / 6) ** alpha; 1.0 ranks by the mean per token. Speed is the
    toolkit's own timing of its generation steps (loading and batching excluded)."""
    python = setup_fairseq(cache)
    beam = beam or setup.beam
    model = Path(model).resolve()
    src_file = Path(src_file)
    out = model.parent / f"{src_file.stem}.beam{beam}.hyp"
    data_bin = model.parent / f"{src_file.stem}.bin"
    shutil.rmtree(data_bin, ignore_errors=True)
    data_bin.mkdir()
    shutil.copy(src_file, data_bin / "input.de")
    dictionary = model.parent / "dict.txt"
    binarize_fairseq(python, {"test": data_bin / "input"}, dictionary, data_bin, threads)
    cmd = [str(python), "-m", "fairseq_cli.generate", str(data_bin), "--task", "translation"]
    cmd += [*FAIRSEQ_LANGS, "--gen-subset", "test", "--path", str(model), "--beam", str(beam)]
    cmd += ["--batch-size", str(setup.decode_batch), "--required-batch-size-multiple", "1"]
    cmd += ["--lenpen", str(setup.length_penalty), "--cpu", "--num-workers", "0"]
    # fairseq-fixed drops a last batch that is not a multiple of --required-batch-size-multiple;
    # the training length limit would make generation fail on a longer test sentence
    cmd += ["--model-overrides", "{'max_source_positions': 1024, 'max_target_positions': 1024}"]
    raw = out.with_suffix(".out")
    run = run_child(cmd, out.with_suffix(".log"), threads, stdout=raw)
    check(run, "fairseq-generate")
    sentences = len(src_file.read_text(encoding="utf-8").splitlines())
    write_lines(out, fairseq_hypotheses(raw.read_text(encoding="utf-8"), sentences))
    rate = logged_value(run, FAIRSEQ_DECODED)
    return decoded(out, ref_file or reference_of(src_file), rate, run)


# --- all of them, side by side -------------------------------------------------------------

TOOLKITS: dict[str, tuple[Callable, Callable, Callable]] = {
    "opennmt": (setup_opennmt, train_opennmt, translate_opennmt),
    "joeynmt": (setup_joeynmt, train_joeynmt, translate_joeynmt),
    "fairseq": (setup_fairseq, train_fairseq, translate_fairseq),
}
PEERS: dict[str, tuple[str, str]] = {  # a row of the table: (toolkit, set-up)
    "opennmt": ("opennmt", "bench"),
    "opennmt_noattn": ("opennmt", "bench_noattn"),
    "joeynmt": ("joeynmt", "bench"),
    "fairseq": ("fairseq", "bench"),
    "fairseq_noattn": ("fairseq", "bench_noattn"),
}
DEFAULT_PEERS = ["opennmt", "joeynmt", "fairseq", "fairseq_noattn"]


def measure(
    data_dir: Path,
    workdir: Path,
    minutes: float | None = 2.0,
    threads: int = 2,
    *,
    steps: int | None = None,
    test_sentences: int | None = None,
    batch_size: int | None = None,
    peers: list[str] | None = None,
    cache: Path = DEFAULT_CACHE,
) -> dict[str, dict]:
    """Train and decode ``peers`` (default: :data:`DEFAULT_PEERS`), each with its set-up
    (``batch_size`` replacing theirs: the smoke run's); rows ``{peer}_train`` and
    ``{peer}_beam{beam}`` in the shape bench/bench.py prints, or ``{"error": ...}`` for a step
    that failed. All are installed before any trains."""
    names = list(peers or DEFAULT_PEERS)
    vocab_size = shared_vocab_size([SETUPS[PEERS[name][1]] for name in names])
    results: dict[str, dict] = {}
    for name in names:
        try:
            TOOLKITS[PEERS[name][0]][0](cache)
        except (PeerError, subprocess.CalledProcessError, OSError) as err:
            results[f"{name}_train"] = {"error": f"installing: {err}"}
    workdir = Path(workdir).resolve()
    data = prepare_data(Path(data_dir), workdir, test_sentences, threads, vocab_size=vocab_size)
    budget = {"minutes": None, "steps": steps} if steps else {"minutes": minutes, "steps": None}
    for name in names:
        if f"{name}_train" in results:
            continue
        toolkit, setup_name = PEERS[name]
        _, train, translate = TOOLKITS[toolkit]
        setup = SETUPS[setup_name]
        if batch_size:
            setup = replace(setup, batch_size=batch_size)
        print(f"peers: training {name} in {workdir / name}", file=sys.stderr, flush=True)
        try:
            trained = train(
                workdir / name, data, **budget, threads=threads, setup=setup, cache=cache
            )
            results[f"{name}_train"] = {**trained, "model": str(trained["model"])}
            print(f"peers: decoding with {name}", file=sys.stderr, flush=True)
            row = translate(
                trained["model"], data.test_src, None, threads, setup=setup, cache=cache
            )
            results[f"{name}_beam{setup.beam}"] = row
        except (PeerError, subprocess.CalledProcessError, OSError) as err:
            key = f"{name}_beam{setup.beam}" if f"{name}_train" in results else f"{name}_train"
            results[key] = {"error": str(err)}
    return results


def print_table(results: dict[str, dict]) -> None:
    """One line per peer: training speed and length, decoding speed and BLEU."""
    print(f"{'system':14s} {'tgt tok/s':>10} {'steps':>6} {'train s':>8} {'sent/s':>7} {'BLEU':>6}")
    signatures = set()
    for name in PEERS:
        if f"{name}_train" not in results:
            continue  # not measured
        train = results.get(f"{name}_train", {})
        decode = next((v for k, v in results.items() if k.startswith(f"{name}_beam")), {})
        for row in (train, decode):
            if "error" in row:
                print(f"{name:14s} error: {row['error']}")
        if "error" in train:
            continue
        line = f"{name:14s} {train['tgt_tokens_per_s']:10.0f} {train['steps']:6d}"
        line += f" {train['wall_s']:8.0f}"
        if "bleu" in decode:
            line += f" {decode['sentences_per_s']:7.1f} {decode['bleu']:6.2f}"
            signatures.add(decode["signature"])
        print(line)
    for signature in sorted(signatures):
        print(f"BLEU: {signature}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument(
        "--workdir", help="where data, models and logs go (default: a new temp dir)"
    )
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="the virtual environments")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per peer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=list(PEERS),
        help=f"the peers to measure (default: {' '.join(DEFAULT_PEERS)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the wiring: 20 steps of 1000 tokens, 50 test sentences",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="peers-"))
    print(f"work directory: {workdir}", flush=True)
    if args.smoke:
        results = measure(
            args.data_dir,
            workdir,
            threads=args.threads,
            steps=20,
            test_sentences=50,
            batch_size=1000,
            peers=args.peers,
            cache=Path(args.cache),
        )
    else:
        results = measure(
            args.data_dir,
            workdir,
            args.minutes,
            args.threads,
            peers=args.peers,
            cache=Path(args.cache),
        )
    print_table(results)


if __name__ == "__main__":
    main()
