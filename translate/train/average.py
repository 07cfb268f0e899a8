"""Checkpoint averaging: the weights of the last validations averaged into the model directory's
model.pt (the previous one kept as model.single.pt)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..modeldir import RECENT, SINGLE, WEIGHTS, atomic_save, load_tensors


def average_state_dicts(paths: list[Path]) -> dict:
    """The element-wise mean of several state dicts with the same keys and shapes."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict = {}
    for path in paths:
        weights = load_tensors(path)
        if total and weights.keys() != total.keys():
            raise UserError(f"{path} holds other parameters than {paths[0]}")
        for key, value in weights.items():
            total[key] = total.get(key, 0) + value.double()
    return {key: (value / len(paths)).float() for key, value in total.items()}


def average_checkpoints(model_dir: str | Path, last: int) -> list[Path]:
    """Average the ``last`` most recent checkpoints of ``model_dir/checkpoints`` into model.pt.

    The previous model.pt is kept as model.single.pt. Returns the averaged files.
    """
    model_dir = Path(model_dir)
    paths = sorted((model_dir / RECENT).glob("step-*.pt"))[-last:]
    if len(paths) < 2:
        raise UserError(
            f"{model_dir}/checkpoints has {len(paths)} checkpoint(s); train with "
            "train.keep_checkpoints=N (N >= 2) to average"
        )
    averaged = average_state_dicts(paths)
    if (model_dir / WEIGHTS).is_file() and not (model_dir / SINGLE).is_file():
        shutil.copyfile(model_dir / WEIGHTS, model_dir / SINGLE)
    atomic_save(averaged, model_dir / WEIGHTS)
    return paths
