"""JoeyNMT 2.3.0 as a peer: its training options built from a :class:`PeerSetup`, training
against the clock (it saves its weights when interrupted) or for a number of steps, and
decoding a pieces file with its latest checkpoint. Speeds are its own figures, as it logs them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

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

JOEYNMT_PACKAGES = [TORCH, "joeynmt==2.3.0", "importlib_metadata"]  # imported, not declared

JOEYNMT_RATE = r"Tokens per Sec:\s+(\d+)"  # target tokens of each logging window


def setup_joeynmt(cache: Path = DEFAULT_CACHE) -> Path:
    """Install JoeyNMT 2.3.0 with the CPU torch into ``cache/joeynmt``; its python."""
    return setup_venv(Path(cache) / "joeynmt", JOEYNMT_PACKAGES)


def joeynmt_config(
    model_dir: Path, data: PeerData, steps: int | None, setup: PeerSetup = BENCH
) -> dict:
    """JoeyNMT 2.3 training options: bi-GRU 2 x 256, GRU 512 with Bahdanau attention and
    input feeding (at ``setup``'s sizes), and a constant learning rate: ``plateau`` passes
    ``verbose`` to ReduceLROnPlateau, which torch 2.13 rejects, and leaving ``scheduling`` out
    is rejected by 2.3.0 itself, so it is an exponential decay by a factor of 1 per epoch.
    Validation is never reached. JoeyNMT has no decoder without attention (its recurrent
    decoder takes ``bahdanau`` or ``luong`` only), so a set-up without it is refused."""
    if setup.arch != "lstm":
        raise ValueError(f"{setup.arch} set-ups are fairseq's; JoeyNMT runs the RNN ones")
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
    """Train JoeyNMT with ``setup`` for ``steps`` steps or about ``minutes`` of its training
    loop, then interrupt it (it saves the current weights on SIGINT). ``model`` is its model
    directory, ``steps`` the steps in its latest checkpoint; ``tgt_tokens_per_s`` comes from its
    log (see :func:`window_throughput`); ``wall_s`` is the whole process."""
    check_budget(minutes, steps)
    python = setup_joeynmt(cache)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model"
    config = write_train_yaml(workdir, joeynmt_config(model_dir, data, steps, setup))

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
