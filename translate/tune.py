"""After training: pick beam size and length penalty on the dev set, and write the choice into
the model directory, so ``translate`` then uses it (an ensemble's choice is only reported)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from .data.outdir import hold
from .decoding import DecodeOptions
from .errors import UserError
from .modeldir import write_config
from .score import score
from .translator import Translator


def tune_decoding(
    model_dir: str | Path | Sequence[str | Path],
    sources: list[str],
    refs: list[str],
    beams: list[int],
    alphas: list[float],
    progress=print,
) -> dict:
    """Dev BLEU for each (beam, alpha); the best pair is written to the model's decode config.

    Of pairs with equal BLEU the smaller beam wins (the cheaper search), then the alpha listed
    first. Greedy search (beam 1) uses no length penalty: it is tried once and, if it wins, the
    model's length penalty is left as it was.

    Several directories are tuned as one ensemble (:meth:`Translator.from_dirs`), and the
    choice is written nowhere: a member's own defaults must not change for the ensemble's sake.
    """
    if len(sources) != len(refs):
        raise UserError(f"{len(sources)} sources but {len(refs)} references")
    if not sources:
        raise UserError("the dev set is empty: tune needs sentences to score")
    if not beams or not alphas:
        raise UserError("tune needs at least one beam size and one length penalty")
    # every choice checked before any is tried (and before the model is read)
    for beam in beams:
        for alpha in alphas:
            DecodeOptions(beam=beam, length_penalty=alpha)
    model_dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    translator = Translator.from_dirs(model_dirs)
    alone = len(model_dirs) == 1
    # no training run may rewrite the directory meanwhile
    with hold(model_dirs[0]) if alone else nullcontext():
        kept = translator.cfg.decode.length_penalty  # what greedy leaves in the config
        grid = list(  # in the order given, each pair once
            dict.fromkeys((beam, alpha if beam > 1 else kept) for beam in beams for alpha in alphas)
        )
        results = []
        for beam, alpha in grid:
            options = DecodeOptions(beam=beam, length_penalty=alpha)
            hyps = [t.text for t in translator.translate_batch(sources, options)]
            bleu = score(hyps, refs)["bleu"]
            results.append({"beam": beam, "length_penalty": alpha, "bleu": bleu})
            penalty = f"{alpha:4.2f}" if beam > 1 else "  - "
            progress(f"beam {beam:2d}  length_penalty {penalty}  BLEU {bleu:6.2f}")
        # max keeps the first of equals: the order of the grid breaks ties between alphas
        best = max(results, key=lambda r: (r["bleu"], -r["beam"]))
        decode = dataclasses.replace(
            translator.cfg.decode, beam=best["beam"], length_penalty=best["length_penalty"]
        )
        if alone:
            write_config(Path(model_dirs[0]), dataclasses.replace(translator.cfg, decode=decode))
    return {"best": best, "all": results}
