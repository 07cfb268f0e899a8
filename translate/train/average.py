"""Checkpoint averaging: the weights of the last validations averaged into the model directory's
model.pt (the previous one kept as model.single.pt)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..data.outdir import hold
from ..errors import UserError
from ..modeldir import RECENT, SINGLE, WEIGHTS, atomic_save, atomic_write, load_tensors

STEP_FILE = re.compile(r"step-(\d+)\.pt")  # what train.keep_checkpoints writes


def average_state_dicts(paths: list[Path]) -> dict:
    """The element-wise mean of several state dicts with the same keys and shapes, each tensor in
    the dtype it was saved in."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict = {}
    dtypes: dict = {}
    for path in paths:
        weights = load_tensors(path)
        if not isinstance(weights, dict) or not all(
            isinstance(value, torch.Tensor) and value.is_floating_point()
            for value in weights.values()
        ):
            raise UserError(f"{path} does not hold model weights (named float tensors)")
        if total and weights.keys() != total.keys():
            raise UserError(f"{path} holds other parameters than {paths[0]}")
        for key, value in weights.items():
            if key in total and value.shape != total[key].shape:
                raise UserError(
                    f"{path} holds {key} of shape {tuple(value.shape)}, {paths[0]} of shape "
                    f"{tuple(total[key].shape)}: they come from different models"
                )
            # summed in float64: exact for a handful of fp32 tensors, so the mean is rounded once
            total[key] = total.get(key, 0) + value.double()
            dtypes.setdefault(key, value.dtype)
    return {key: (value / len(paths)).to(dtypes[key]) for key, value in total.items()}


def recent_checkpoints(model_dir: Path) -> list[Path]:
    """The step-N.pt files of ``model_dir/checkpoints``, oldest step first."""
    found = [(STEP_FILE.fullmatch(path.name), path) for path in (model_dir / RECENT).glob("*.pt")]
    return [path for match, path in sorted((int(m.group(1)), p) for m, p in found if m)]


def average_checkpoints(model_dir: str | Path, last: int) -> list[Path]:
    """Average the ``last`` most recent checkpoints of ``model_dir/checkpoints`` (all of them
    if there are fewer) into model.pt. Returns the averaged files.

    The first averaging keeps model.pt as model.single.pt; later ones leave that copy alone, so
    it always holds the weights training chose.
    """
    model_dir = Path(model_dir)
    if not isinstance(last, int) or last < 2:
        raise UserError(f"averaging takes 2 or more checkpoints, got last={last!r}")
    if model_dir.exists() and not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model directory")
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir}")
    paths = recent_checkpoints(model_dir)[-last:]
    if len(paths) < 2:
        raise UserError(
            f"{model_dir / RECENT} has {len(paths)} checkpoint(s); train with "
            "train.keep_checkpoints=N (N >= 2) to average"
        )
    averaged = average_state_dicts(paths)  # every file checked before anything is written
    with hold(model_dir):  # not while a training run writes model.pt there
        if (model_dir / WEIGHTS).is_file() and not (model_dir / SINGLE).is_file():
            try:
                single = (model_dir / WEIGHTS).read_bytes()
            except OSError as err:
                raise UserError(f"cannot read {model_dir / WEIGHTS} ({err.strerror})") from None
            atomic_write(model_dir / SINGLE, single)
        atomic_save(averaged, model_dir / WEIGHTS)
    return paths
