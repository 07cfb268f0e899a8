"""After training: pick beam size and length penalty on the dev set, and write the choice into
the model directory, so ``translate`` then uses it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .decoding import DecodeOptions
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
    # every choice checked before any is tried; greedy ignores the penalty: one alpha for it
    grid = [
        DecodeOptions(beam=beam, length_penalty=alpha)
        for beam in beams
        for alpha in (alphas if beam > 1 else alphas[:1])
    ]
    translator = Translator.from_dir(model_dir)
    results = []
    for options in grid:
        hyps = [t.text for t in translator.translate_batch(sources, options)]
        bleu = score(hyps, refs)["bleu"]
        results.append(
            {"beam": options.beam, "length_penalty": options.length_penalty, "bleu": bleu}
        )
        progress(
            f"beam {options.beam:2d}  length_penalty {options.length_penalty:4.2f}  BLEU {bleu:6.2f}"
        )
    best = max(results, key=lambda r: (r["bleu"], -r["beam"]))  # ties: the cheaper search
    decode = dataclasses.replace(
        translator.cfg.decode, beam=best["beam"], length_penalty=best["length_penalty"]
    )
    write_config(Path(model_dir), dataclasses.replace(translator.cfg, decode=decode))
    return {"best": best, "all": results}
