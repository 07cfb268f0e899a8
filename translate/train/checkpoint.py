"""What a training run starts, saves and resumes from: its counters (TrainState), the
checkpoint with every process's random state, the weights of recent validations kept for
averaging, and for a fine-tuned run the parent model's weights, recorded in parent.json.
(That a checkpoint belongs to this experiment, and that a parent can serve, is checked before
prepare writes anything: :mod:`translate.data.outdir`.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..data.outdir import PARENT
from ..errors import UserError
from ..model.seq2seq import Seq2Seq
from ..modeldir import (
    CHECKPOINT,
    atomic_save,
    atomic_write,
    load_tensors,
    read_model_dir,
    save_weights,
    write_config,
)
from . import distributed
from .distributed import Ranks


@dataclass
class TrainState:
    """The loop's counters: with the weights, the optimiser and the RNG state, everything a
    resumed run needs. Saved in the checkpoint as a plain dict (``loop``); the loop holds one
    object and its phases update it in place."""

    step: int = 0
    epoch: int = 1
    position: int = 0  # batches of this epoch already taken
    best_bleu: float = -1.0
    best_loss: float = math.inf
    bad_validations: int = 0  # in a row, without improvement
    elapsed: float = 0.0  # seconds of training so far, in this and earlier processes
    finished: bool = False
    skipped: int = 0  # steps whose loss or gradient was not finite
    lr_scale: float = 1.0  # the plateau decay so far
    pairs_seen: list[int] = field(default_factory=list)  # training pairs, per corpus
    stopped_by: list[str] = field(default_factory=list)  # the limits that ended it (train.*)
    bad_in_row: int = 0  # non-finite steps in a row; not saved: a restart clears it


def saved_state(out: Path, corpora: int) -> TrainState | None:
    """The counters of ``out/checkpoint.pt`` (None without one), read before anything is
    written: a finished run rerun with the same limits stops here."""
    path = out / CHECKPOINT
    return _loop_state(load_tensors(path)["loop"], corpora) if path.is_file() else None


def _loop_state(loop: dict, corpora: int) -> TrainState:
    state = TrainState(**loop)
    if len(state.pairs_seen) != corpora:  # saved before counts were kept
        state.pairs_seen = [0] * corpora
    return state


def resume(
    out: Path,
    cfg: Config,
    ranks: Ranks,
    device: torch.device,
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    log,
) -> TrainState:
    """The counters to start from: those of ``out/checkpoint.pt`` with the model, optimiser,
    scaler and random state it holds loaded in place, or fresh ones (from the parent's weights
    with ``train.init_from``). Writes this run's config.yaml."""
    path, corpora = out / CHECKPOINT, len(cfg.data.train)
    if ranks.main:  # prepare has checked that a checkpoint here is of this experiment
        write_config(out, cfg)  # upgrades the directory's files if they are older
    distributed.barrier(ranks)
    if not path.is_file():
        if cfg.train.init_from:
            start_from_parent(out, cfg, ranks, model, optimizer, log)
        return TrainState(pairs_seen=[0] * corpora)
    saved = load_tensors(path)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if "scaler" in saved:
        scaler.load_state_dict(saved["scaler"])
    state = _loop_state(saved["loop"], corpora)
    rng = saved["rng"] if isinstance(saved["rng"], list) else [saved["rng"]]
    if len(rng) == ranks.world:
        torch.set_rng_state(rng[ranks.rank])
        if "cuda_rng" in saved and device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"][ranks.rank], device)
    else:  # the global batches stay the same; each rank's random draws cannot
        log(
            f"note: {path} was written by {len(rng)} process(es) and this run has "
            f"{ranks.world}: it goes on with the same global batches, but its dropout masks "
            "differ from those of an uninterrupted run"
        )
    log(f"resuming from {path} at step {state.step}")
    return state


def start_from_parent(
    out: Path,
    cfg: Config,
    ranks: Ranks,
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    log,
) -> None:
    """Load the weights of ``train.init_from`` (every rank), and with ``train.init_optimizer``
    the Adam state of its checkpoint; rank 0 records the parent in ``out/parent.json``: its
    path, weight file and that file's sha256."""
    parent = Path(cfg.train.init_from)
    files = read_model_dir(parent)
    model.load_state_dict(files.weights)
    took = "weights"
    if cfg.train.init_optimizer:
        try:
            optimizer.load_state_dict(load_tensors(parent / CHECKPOINT)["optimizer"])
        except (KeyError, ValueError, TypeError):
            raise UserError(
                f"train.init_optimizer: the optimiser state in {parent / CHECKPOINT} does not "
                "fit this model (written by an older translate?); leave init_optimizer out"
            ) from None
        took = f"weights and the Adam state of its {CHECKPOINT}"
    digest = hashlib.sha256(files.weights_path.read_bytes()).hexdigest()
    if ranks.main:
        record = {
            "init_from": str(parent),
            "weights": files.weights_path.name,
            "sha256": digest,
            "init_optimizer": cfg.train.init_optimizer,
        }
        atomic_write(out / PARENT, (json.dumps(record, indent=2) + "\n").encode())
    fresh = "the schedule" if cfg.train.init_optimizer else "Adam and the schedule"
    log(
        f"starting from the {took} of {parent} ({files.weights_path.name}, sha256 "
        f"{digest[:12]}); {fresh} start afresh at step 0"
    )


def save_checkpoint(
    out: Path,
    ranks: Ranks,
    device: torch.device,
    model: Seq2Seq,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    elapsed: float,
) -> None:
    """Everything a resumed run needs, in ``out/checkpoint.pt``, with ``elapsed`` seconds of
    training so far; under torchrun, written by rank 0 with every rank's random state."""
    rng = distributed.gather_to_main(ranks, torch.get_rng_state())
    cuda_rng = None
    if device.type == "cuda":
        cuda_rng = distributed.gather_to_main(ranks, torch.cuda.get_rng_state(device))
    if not ranks.main:
        return
    loop = dataclasses.asdict(dataclasses.replace(state, elapsed=elapsed))
    del loop["bad_in_row"]  # not saved: a restart clears it
    saved = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng[0] if ranks.world == 1 else rng,  # one process: the format as it was
        "loop": loop,
    }
    if cuda_rng is not None:
        saved["cuda_rng"] = cuda_rng
    if scaler.is_enabled():
        saved["scaler"] = scaler.state_dict()
    atomic_save(saved, out / CHECKPOINT)


def keep_recent(model: Seq2Seq, folder: Path, step: int, keep: int) -> None:
    """Save the weights as ``folder/step-N.safetensors`` and delete all but the ``keep`` most
    recent."""
    folder.mkdir(exist_ok=True)
    save_weights(model.state_dict(), folder / f"step-{step:08d}.safetensors")
    for old in sorted(folder.glob("step-*.safetensors"))[:-keep]:
        old.unlink()
