"""OpenNMT-py 3.0.4 as a peer: its training options built from a :class:`PeerSetup`, training
against the clock or for a number of steps, and decoding a pieces file with a checkpoint.
Speeds are its own figures: training target tokens/s from the rates it logs per window of
steps (the first window dropped), decoding time as it reports it (model loading excluded).
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

from .peer_data import PeerData, decoded, reference_of
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
    write_train_yaml,
)
from .peer_setups import BENCH, PeerSetup

OPENNMT_PACKAGES = [TORCH, "OpenNMT-py==3.0.4"]  # 3.5 needs torch<2.3
OPENNMT_SAVE_EVERY = 20  # steps between checkpoints against the clock (each ~0.2 s, ~1%)

OPENNMT_RATE = r"(?:\d+)/\s*(\d+) tok/s"  # "src/tgt tok/s" of each report window
OPENNMT_SAVE = re.compile(r"Saving checkpoint (\S+)_step_(\d+)\.pt")
OPENNMT_STAMPED = re.compile(
    r"^\[(\S+ \S+) INFO\] (Start training loop|Saving checkpoint \S+)", re.M
)


def setup_opennmt(cache: Path = DEFAULT_CACHE) -> Path:
    """Install OpenNMT-py 3.0.4 with the CPU torch into ``cache/opennmt``; its python."""
    return setup_venv(Path(cache) / "opennmt", OPENNMT_PACKAGES)


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
    if setup.arch != "lstm":
        raise ValueError(f"{setup.arch} set-ups are fairseq's; OpenNMT-py runs the RNN ones")
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
    config = write_train_yaml(workdir, options)
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
