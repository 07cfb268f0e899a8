"""After training: average checkpoints into one model, and pick beam size and length penalty
on the dev set. Both write into the model directory, so ``translate`` then uses the choice."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from .config import UserError
from .modeldir import RECENT, SINGLE, WEIGHTS, atomic_save, load_tensors, write_config
from .score import score
from .translator import Translator


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


def tune_decoding(
    model_dir: str | Path,
    sources: list[str],
    refs: list[str],
    beams: list[int],
    alphas: list[float],
    progress=print,
) -> dict:
    """Dev BLEU for each (beam, alpha); the best pair is written to the model's decode config."""
    if len(sources) != len(refs):
        raise UserError(f"{len(sources)} sources but {len(refs)} references")
    translator = Translator.from_dir(model_dir)
    results = []
    for beam in beams:
        for alpha in alphas if beam > 1 else alphas[:1]:  # greedy ignores the penalty
            hyps = translator.translate(sources, beam=beam, length_penalty=alpha)
            bleu = score(hyps, refs)["bleu"]
            results.append({"beam": beam, "length_penalty": alpha, "bleu": bleu})
            progress(f"beam {beam:2d}  length_penalty {alpha:4.2f}  BLEU {bleu:6.2f}")
    best = max(results, key=lambda r: (r["bleu"], -r["beam"]))  # ties: the cheaper search
    cfg = dataclasses.replace(
        translator.cfg,
        decode=dataclasses.replace(
            translator.cfg.decode, beam=best["beam"], length_penalty=best["length_penalty"]
        ),
    )
    write_config(Path(model_dir), cfg)
    return {"best": best, "all": results}
