"""sacrebleu wrappers: corpus BLEU, chrF and TER on detokenized text, with their signatures."""

from __future__ import annotations

from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF, TER

from .config import UserError
from .data import read_lines


def score(hyps: list[str], refs: list[str], ter: bool = False) -> dict:
    """Corpus scores of ``hyps`` against one reference each; each with its sacrebleu signature."""
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses but {len(refs)} references")
    metrics = [("bleu", BLEU()), ("chrf", CHRF())] + ([("ter", TER())] if ter else [])
    result = {}
    for name, metric in metrics:
        corpus = metric.corpus_score(hyps, [refs])
        result[name] = round(corpus.score, 2)
        result[f"{name}_signature"] = str(metric.get_signature())
    return result


def score_files(ref_path: str | Path, hyp_path: str | Path, ter: bool = False) -> dict:
    """Scores of a hypothesis file against a reference file (same number of lines)."""
    refs, hyps = read_lines(ref_path), read_lines(hyp_path)
    if len(refs) != len(hyps):
        raise UserError(
            f"line counts differ: {ref_path} has {len(refs)} lines, {hyp_path} has {len(hyps)}"
        )
    return score(hyps, refs, ter)


def format_scores(result: dict) -> str:
    """Human-readable lines: ``BLEU = 31.20  (signature)``."""
    lines = []
    for name in ("bleu", "chrf", "ter"):
        if name in result:
            lines.append(f"{name.upper():5s}= {result[name]:6.2f}  ({result[name + '_signature']})")
    return "\n".join(lines)
