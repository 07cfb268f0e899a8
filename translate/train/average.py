"""Checkpoint averaging: the weights of the last validations averaged into the model directory's
model.safetensors (the weights training chose kept as model.single.safetensors)."""

from __future__ import annotations

import re
from pathlib import Path

from ..config import Config
from ..data.outdir import hold
from ..errors import UserError
from ..modeldir import (
    CONFIG,
    FORMAT_VERSION,
    RECENT,
    SINGLE,
    WEIGHTS,
    atomic_write,
    load_weights,
    read_config,
    read_weights,
    save_weights,
    write_config,
)

# what train.keep_checkpoints writes: step-N.safetensors, step-N.pt before format 4
STEP_FILE = re.compile(r"step-(\d+)\.(safetensors|pt)")


def average_state_dicts(
    paths: list[Path], cfg: Config | None = None, version: int = FORMAT_VERSION
) -> dict:
    """The element-wise mean of several state dicts with the same keys and shapes, each tensor in
    the dtype it was saved in. With ``cfg``, each file is first put in the current layout (see
    :func:`translate.modeldir.read_weights`)."""
    if not paths:
        raise UserError("no checkpoints to average")
    total: dict = {}
    dtypes: dict = {}
    for path in paths:
        weights = load_weights(path) if cfg is None else read_weights(path, cfg, version)
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
    """The step-N files of ``model_dir/checkpoints``, oldest step first; of a step saved both
    ways (an upgrade cut short), the .safetensors file."""
    found = {}
    for path in sorted((model_dir / RECENT).glob("step-*"), key=lambda p: p.suffix == ".pt"):
        match = STEP_FILE.fullmatch(path.name)
        if match:
            found.setdefault(int(match.group(1)), path)
    return [found[step] for step in sorted(found)]


def average_checkpoints(model_dir: str | Path, last: int) -> list[Path]:
    """Average the ``last`` most recent checkpoints of ``model_dir/checkpoints`` (all of them
    if there are fewer) into model.safetensors. Returns the averaged files, as now named.

    The first averaging keeps model.safetensors as model.single.safetensors; later ones leave
    that copy alone, so it always holds the weights training chose. A directory of an older
    format is upgraded first, all its weight files with it.
    """
    model_dir = Path(model_dir)
    if not isinstance(last, int) or last < 2:
        raise UserError(f"averaging takes 2 or more checkpoints, got last={last!r}")
    if model_dir.exists() and not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model directory")
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir}")
    if not (model_dir / CONFIG).is_file():
        raise UserError(f"{model_dir} is not a model directory: {CONFIG} is missing")
    cfg, version = read_config(model_dir / CONFIG)
    paths = recent_checkpoints(model_dir)[-last:]
    if len(paths) < 2:
        raise UserError(
            f"{model_dir / RECENT} has {len(paths)} checkpoint(s); train with "
            "train.keep_checkpoints=N (N >= 2) to average"
        )
    averaged = average_state_dicts(paths, cfg, version)  # every file checked before writing
    with hold(model_dir):  # not while a training run writes the weights there
        if version < FORMAT_VERSION:  # model.pt becomes model.safetensors, and so on
            write_config(model_dir, cfg)
            paths = [path.with_suffix(".safetensors") for path in paths]
        if (model_dir / WEIGHTS).is_file() and not (model_dir / SINGLE).is_file():
            try:
                single = (model_dir / WEIGHTS).read_bytes()
            except OSError as err:
                raise UserError(f"cannot read {model_dir / WEIGHTS} ({err.strerror})") from None
            atomic_write(model_dir / SINGLE, single)
        save_weights(averaged, model_dir / WEIGHTS)
    return paths
