"""fairseq's LSTM and Transformer (the fairseq-fixed 0.12.3.1 fork) as a peer: its training
options built from a :class:`PeerSetup`, the shared data binarised its way, training against
the clock or for a number of updates, and decoding a pieces file with a checkpoint; also its
FLOPs per target token. Speeds are its own figures, as it logs them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from .peer_data import PeerData, decoded, reference_of, write_lines
from .peer_runs import (
    DEFAULT_CACHE,
    TORCH,
    PeerError,
    check,
    check_budget,
    logged_value,
    minutes_after,
    report_every,
    run_child,
    setup_venv,
    window_throughput,
)
from .peer_setups import BENCH, PeerSetup

# fairseq 0.12.2 fails to import on Python 3.11; this fork of it runs unchanged on torch 2.13
FAIRSEQ_PACKAGES = [TORCH, "fairseq-fixed==0.12.3.1"]
# it is an sdist whose build requires an unpinned torch, which pip's isolated build takes as
# the newest, a CUDA one (2.14.1 here, with 2 GB of NVIDIA libraries), and compiles fairseq's
# torch extensions against it: they are built in the venv instead, against these, first
FAIRSEQ_BUILD = [TORCH, "numpy", "cython", "setuptools", "wheel"]
# updates between checkpoints against the clock (each ~0.3 s: 152 MB, Adam state included)
FAIRSEQ_SAVE_EVERY = 20
# seconds it may take to stop after SIGINT (it saves nothing then) before it is killed
FAIRSEQ_KILL_AFTER = 30.0
# the newest checkpoint at the budget, hard-linked where fairseq's rotation does not remove it
FAIRSEQ_BUDGET_CHECKPOINT = "checkpoint_budget.pt"

FAIRSEQ_RATE = r'\| train_inner \| \{.*?"wps": "([\d.]+)"'  # target tokens/s of a window
FAIRSEQ_LOOP_START = "Start iterating over samples"
FAIRSEQ_STAMPED = re.compile(
    r"^(\S+ \S+) \| INFO \| \S+ \| (Start iterating over samples"
    r"|Saved checkpoint (\S+) \(epoch \d+ @ (\d+) updates)",
    re.M,
)
FAIRSEQ_PARAMETERS = r"num\. shared model params: ([\d,]+)"
FAIRSEQ_DECODED = r"Translated [\d,]+ sentences \([\d,]+ tokens\) in \S+ \(([\d.]+) sentences/s"
FAIRSEQ_LANGS = ["--source-lang", "de", "--target-lang", "en"]


def setup_fairseq(cache: Path = DEFAULT_CACHE) -> Path:
    """Install fairseq (the fairseq-fixed 0.12.3.1 fork) with the CPU torch into
    ``cache/fairseq``, compiling its C extensions (7 minutes on two cores); its python."""
    return setup_venv(Path(cache) / "fairseq", FAIRSEQ_PACKAGES, build=FAIRSEQ_BUILD)


def fairseq_flops_per_target_token(
    vocab: int, src_per_tgt: float = 1.0, src_len: float = 18.0, setup: PeerSetup = BENCH
) -> float:
    """Forward+backward FLOPs per target token of fairseq's LSTM or Transformer at ``setup``'s
    sizes: 3x the forward matrix products, as bench.py counts ours, with ``src_per_tgt``
    source tokens per target token and ``src_len`` source tokens each token attends to."""
    if setup.arch == "transformer":
        return transformer_flops_per_target_token(vocab, src_per_tgt, src_len, setup)
    emb, enc, hidden = setup.emb_dim, setup.enc_dir_dim, setup.hidden_dim
    encoder = 2 * 2 * 4 * enc * (emb + enc)  # two directions
    decoder = 2 * 4 * hidden * (emb + hidden + hidden)  # input feeding
    # query projection, scores, weighted sum, tanh layer over [context; state]
    attend = 2 * hidden * (hidden + 2 * src_len + 2 * hidden) if setup.attention else 0
    output = 2 * hidden * vocab
    return 3.0 * (src_per_tgt * encoder + decoder + attend + output)


def transformer_flops_per_target_token(
    vocab: int, src_per_tgt: float, src_len: float, setup: PeerSetup
) -> float:
    """The Transformer's part of :func:`fairseq_flops_per_target_token`: projections, scores
    and weighted sums of every attention, feed-forward layers and the output layer. Decoder
    self-attention spans half the target length on average (the causal mask); the memory's
    keys and values are computed once per source token and layer."""
    width, ffn, layers = setup.emb_dim, setup.ffn_dim, setup.layers
    tgt_len = src_len / src_per_tgt
    feed_forward = 2 * 2 * width * ffn
    encoder = 2 * 4 * width * width + 2 * 2 * src_len * width + feed_forward
    self_attend = 2 * 4 * width * width + 2 * 2 * (tgt_len / 2) * width
    cross_attend = 2 * 2 * width * width + 2 * 2 * src_len * width  # queries and output
    memory = 2 * 2 * width * width  # keys and values, per source token
    decoder = self_attend + cross_attend + feed_forward
    per_layer = src_per_tgt * (encoder + memory) + decoder
    return 3.0 * (layers * per_layer + 2 * width * vocab)


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
    keep_every: int = 0,
) -> list[str]:
    """fairseq 0.12 training options: the model of ``setup.arch`` (:func:`lstm_options`,
    :func:`transformer_options`), no validation; against the clock it checkpoints every
    ``save_every`` updates and keeps the last two (and, with ``keep_every``, every one whose
    updates are a multiple of it), else once at the end. Lengths include the
    end-of-sentence token, hence ``max_len + 1``; batches are not rounded to multiples of 8
    sentences (fairseq's default, for GPUs)."""
    model, flags = (
        transformer_options(setup) if setup.arch == "transformer" else lstm_options(setup)
    )
    options = {
        "--task": "translation",
        **model,
        "--dropout": setup.dropout,
        "--criterion": "label_smoothed_cross_entropy",  # summed, divided by target tokens
        "--label-smoothing": setup.label_smoothing,
        "--optimizer": "adam",
        **schedule_options(setup),
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
    if keep_every:
        options["--keep-interval-updates-pattern"] = keep_every
    flags += ["--cpu", "--disable-validation"]
    flags += ["--no-epoch-checkpoints", "--no-last-checkpoints"]  # last: a copy of each one
    pairs = [item for option, value in options.items() for item in (option, str(value))]
    return [str(data_bin), *FAIRSEQ_LANGS, *pairs, *flags]


def lstm_options(setup: PeerSetup) -> tuple[dict, list[str]]:
    """Options and flags of fairseq's ``lstm``: a bi-LSTM 2 x 256 and an LSTM 512 that starts
    from the encoder's final states.

    The decoder always feeds its previous output back in (input feeding). With attention it
    is Luong's "general" score, bilinear and bias-free (OpenNMT-py and JoeyNMT use Bahdanau's
    MLP), and a tanh layer over [context; state]; without, the output is the LSTM state and
    the source reaches the decoder only through its initial state (our context-vector model
    also reads a context at every step). Dropout is on embeddings, encoder outputs and decoder
    outputs. Forward+backward per target token (see :func:`fairseq_flops_per_target_token`:
    8001 types, 1.035 source tokens and 17.7 attended ones per target token on Multi30k):
    51.6 MFLOP, 46.8 without attention; bench.py counts 35.2 for ours."""
    options = {
        "--arch": "lstm",
        "--encoder-embed-dim": setup.emb_dim,
        "--encoder-hidden-size": setup.enc_dir_dim,
        "--encoder-layers": setup.layers,
        "--decoder-embed-dim": setup.emb_dim,
        "--decoder-hidden-size": setup.hidden_dim,
        "--decoder-layers": setup.layers,
        "--decoder-out-embed-dim": setup.hidden_dim,  # no extra layer before the softmax
        "--decoder-attention": int(setup.attention),
    }
    return options, ["--encoder-bidirectional"]


def transformer_options(setup: PeerSetup) -> tuple[dict, list[str]]:
    """Options and flags of fairseq's ``transformer`` at ``setup``'s sizes, every one given
    (``transformer_iwslt_de_en`` is 512 wide, 6 + 6 layers, 4 heads, feed-forward 1024):
    post-norm layers, sinusoidal positions, ReLU, dropout on sub-layer outputs and embeddings
    only (its attention and activation dropouts stay 0, as in the IWSLT recipe), and one
    table for source and target pieces and the output layer (``--share-all-embeddings``:
    the pieces are joint). Forward+backward per target token on Multi30k (8001 types, 1.035
    and 17.7 as for the LSTM): 218 MFLOP for transformer_iwslt, 46.3 for transformer_small,
    28.6 for transformer_tiny."""
    options: dict = {"--arch": "transformer"}
    for side in ("encoder", "decoder"):
        options[f"--{side}-embed-dim"] = setup.emb_dim
        options[f"--{side}-ffn-embed-dim"] = setup.ffn_dim
        options[f"--{side}-layers"] = setup.layers
        options[f"--{side}-attention-heads"] = setup.heads
    return options, ["--share-all-embeddings"]


def schedule_options(setup: PeerSetup) -> dict:
    """Adam's learning rate, schedule and, where they differ from its defaults, betas and
    weight decay."""
    options: dict = {}
    if setup.adam_betas != PeerSetup().adam_betas:
        options["--adam-betas"] = f"({setup.adam_betas[0]}, {setup.adam_betas[1]})"
    options["--lr"] = setup.learning_rate
    options["--lr-scheduler"] = setup.lr_schedule
    if setup.lr_schedule == "inverse_sqrt":
        options["--warmup-updates"] = setup.warmup_updates
        options["--warmup-init-lr"] = 1e-07
    if setup.weight_decay:
        options["--weight-decay"] = setup.weight_decay
    return options


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
    keep_every: int = 0,
    cache: Path = DEFAULT_CACHE,
) -> dict:
    """Train fairseq's model (see :func:`fairseq_args`) with ``setup`` for ``steps`` updates or
    about ``minutes`` of its training loop, then interrupt it. It saves nothing on SIGINT, so the
    model is its newest checkpoint at the budget (one every ``save_every`` updates), kept as
    ``checkpoint_budget.pt``, and ``steps`` counts the updates in it; ``keep_every`` keeps more
    (see :func:`fairseq_args`). ``tgt_tokens_per_s`` comes from its log (see
    :func:`window_throughput`); ``wall_s`` is the training process, binarising the data (once,
    shared) excluded; ``parameters`` counts a shared table once, as fairseq logs it."""
    check_budget(minutes, steps)
    python = setup_fairseq(cache)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_bin = fairseq_data(python, data, threads)
    save_dir = workdir / "model"
    save_dir.mkdir(exist_ok=True)
    shutil.copy(data_bin / "dict.txt", save_dir / "dict.txt")  # for translate_fairseq
    options = fairseq_args(data_bin, save_dir, steps, setup, save_every, keep_every)
    (workdir / "train.args").write_text("".join(f"{option}\n" for option in options))
    chosen: list[tuple[Path, int, float]] = []
    out_of_time = minutes_after(minutes or 0.0, FAIRSEQ_LOOP_START)
    budget = save_dir / FAIRSEQ_BUDGET_CHECKPOINT

    def should_stop(elapsed: float, log: str) -> bool:
        if not out_of_time(elapsed, log):
            return False
        chosen[:] = fairseq_checkpoints(log)
        return bool(chosen) and keep(chosen[-1][0], budget)  # else wait for the next one

    cmd = [str(python), "-m", "fairseq_cli.train", *options]
    stop = should_stop if minutes is not None else None
    run = run_child(
        cmd, workdir / "train.log", threads, should_stop=stop, kill_after=FAIRSEQ_KILL_AFTER
    )
    check(run, "fairseq training")
    if not run.interrupted:
        chosen = fairseq_checkpoints(run.log)
    model = budget if run.interrupted else chosen[-1][0] if chosen else None
    if model is None or not model.is_file():
        raise PeerError(f"fairseq left no checkpoint; see {workdir / 'train.log'}")
    return {
        "tgt_tokens_per_s": window_throughput(run.log, FAIRSEQ_RATE),
        "wall_s": run.wall_s,
        "checkpoints": [(str(path), seconds) for path, _, seconds in chosen[:-1] if path.is_file()]
        + [(str(model), chosen[-1][2])],  # the last one as kept, if rotated away since
        "model": model,
        "steps": chosen[-1][1],
        "parameters": fairseq_parameters(run.log),
        "rss_mib": run.rss_mib,
    }


def keep(checkpoint: Path, kept: Path) -> bool:
    """Hard-link ``checkpoint`` as ``kept``, so that the model of the budget survives fairseq
    rotating its checkpoints away while it finishes the step it was interrupted in (or, as
    it once did, trains on for minutes). False when fairseq already removed it."""
    kept.unlink(missing_ok=True)
    try:
        os.link(checkpoint, kept)
    except FileNotFoundError:
        return False
    return True


def fairseq_parameters(log: str) -> int:
    """The parameters fairseq counted as it built the model (a shared table once)."""
    found = re.search(FAIRSEQ_PARAMETERS, log)
    if not found:
        raise PeerError("fairseq's training log does not count the model's parameters")
    return int(found.group(1).replace(",", ""))


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
    number_format: str | None = None,
) -> dict:
    """Decode a pieces file with a fairseq checkpoint (binarised first, as fairseq-generate
    reads; beam: ``setup``'s unless given) and score it against ``ref_file`` (default:
    :func:`reference_of`). With ``number_format`` (fp32, bf16, int8) the models are converted
    after loading by bench/fairseq_generate.py, and ``model_bytes`` says what they weigh.
    fairseq's ``--lenpen`` divides a hypothesis's log-probability by its length to that power,
    not by GNMT's ((5 + length) / 6) ** alpha; 1.0 ranks by the mean per token. Speed is the
    toolkit's own timing of its generation steps (loading and batching excluded);
    ``hypotheses`` is the pieces file it wrote."""
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
    generate = ["-m", "fairseq_cli.generate"]
    if number_format:
        generate = [str(Path(__file__).with_name("fairseq_generate.py")), number_format]
    cmd = [str(python), *generate, str(data_bin), "--task", "translation"]
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
    row = {**decoded(out, ref_file or reference_of(src_file), rate, run), "hypotheses": str(out)}
    if number_format:
        row["model_bytes"] = int(logged_value(run, r"model bytes: (\d+)"))
    return row
