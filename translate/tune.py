"""After training: pick beam size and length penalty on the dev set, and write the choice into
the model directory, so ``translate`` then uses it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import UserError
from .modeldir import write_config
from .score import score
from .translator import Translator


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
