"""sacrebleu wrappers: corpus BLEU, chrF and TER on detokenized text with their signatures,
paired bootstrap resampling between systems, and BLEU by source-length bucket."""

from __future__ import annotations

from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from .data.corpus import read_lines
from .errors import UserError

LENGTH_BUCKETS = (10, 15, 20, 25)  # source words: <=10, 11-15, 16-20, 21-25, >25


def score(hyps: list[str], refs: list[str], ter: bool = False) -> dict:
    """Corpus scores of ``hyps`` against one reference each; each with its sacrebleu signature."""
    if len(hyps) != len(refs):
        raise UserError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise UserError("nothing to score: the files have no lines")
    metrics = [("bleu", BLEU()), ("chrf", CHRF())] + ([("ter", TER())] if ter else [])
    result = {}
    for name, metric in metrics:
        corpus = metric.corpus_score(hyps, [refs])
        result[name] = round(corpus.score, 2)
        result[f"{name}_signature"] = str(metric.get_signature())
    return result


def read_same_length(paths: list[str | Path]) -> list[list[str]]:
    """The lines of several files that must have the same number of lines."""
    texts = [read_lines(p) for p in paths]
    counts = {len(t) for t in texts}
    if len(counts) > 1:
        sizes = ", ".join(f"{p} has {len(t)}" for p, t in zip(paths, texts))
        raise UserError(f"line counts differ: {sizes}")
    return texts


def paired_bootstrap(
    refs: list[str], baseline: list[str], system: list[str], samples: int = 1000
) -> dict:
    """sacrebleu's paired bootstrap resampling (Koehn 2004) of ``system`` against ``baseline``.

    Returns both BLEUs and chrFs, and the p-values of the null hypothesis "no better". sacrebleu
    counts strict wins, which gives an identical system the smallest p-value; identical
    outputs are reported as p = 1 instead.
    """
    if not len(refs) == len(baseline) == len(system):
        raise UserError("references and both systems need the same number of lines")
    metrics = {"BLEU": BLEU(references=[refs]), "chrF": CHRF(references=[refs])}
    test = PairedTest(
        [("baseline", baseline), ("system", system)],
        metrics,
        references=None,
        test_type="bs",
        n_samples=samples,
    )
    _, results = test()
    out = {}
    for name, key in (("BLEU", "bleu"), ("chrF2", "chrf")):
        base, other = results[name]
        p_value = 1.0 if baseline == system else float(other.p_value)
        out.update(
            {
                f"baseline_{key}": round(base.score, 2),
                f"system_{key}": round(other.score, 2),
                f"{key}_p_value": round(p_value, 4),
            }
        )
    return out


def bucket_name(index: int) -> str:
    edges = (0, *LENGTH_BUCKETS)
    if index == len(LENGTH_BUCKETS):
        return f">{LENGTH_BUCKETS[-1]}"
    return f"{edges[index] + 1}-{edges[index + 1]}"


def bleu_by_length(sources: list[str], refs: list[str], systems: dict[str, list[str]]) -> dict:
    """BLEU of each system on buckets of source length (whitespace words).

    Returns ``{"buckets": [names], "sentences": [counts], name: [bleu per bucket]}``.
    """
    bucket_of = [sum(len(s.split()) > edge for edge in LENGTH_BUCKETS) for s in sources]
    n_buckets = len(LENGTH_BUCKETS) + 1
    table: dict = {
        "buckets": [bucket_name(b) for b in range(n_buckets)],
        "sentences": [bucket_of.count(b) for b in range(n_buckets)],
    }
    for name, hyps in systems.items():
        row = []
        for b in range(n_buckets):
            chosen = [i for i, k in enumerate(bucket_of) if k == b]
            if not chosen:
                row.append(None)
                continue
            corpus = BLEU().corpus_score([hyps[i] for i in chosen], [[refs[i] for i in chosen]])
            row.append(round(corpus.score, 2))
        table[name] = row
    return table


def format_length_table(table: dict) -> str:
    """A plain-text table: one row per bucket, one column per system."""
    systems = [k for k in table if k not in ("buckets", "sentences")]
    header = f"{'source words':>12} {'sentences':>9} " + " ".join(f"{s:>12}" for s in systems)
    lines = [header]
    for i, bucket in enumerate(table["buckets"]):
        cells = [("-" if table[s][i] is None else f"{table[s][i]:.2f}") for s in systems]
        lines.append(
            f"{bucket:>12} {table['sentences'][i]:>9} " + " ".join(f"{c:>12}" for c in cells)
        )
    return "\n".join(lines)


def score_files(
    ref: str,
    hyps: list[str],
    ter: bool = False,
    paired_bs: int | None = None,
    src: str | None = None,
    plot: str | None = None,
) -> dict:
    """``translate score``: the scores of each hypothesis file against ``ref``, by file name;
    with ``paired_bs``, each system's paired bootstrap (that many samples) against the first
    under "paired_bs"; with ``src``, BLEU by source length under "by_length" (drawn into the PNG
    ``plot``, checked before any scoring)."""
    if plot and not src:
        raise UserError(
            "-o draws BLEU by source length as a PNG: give --src too (the scores are printed; "
            "> FILE keeps them)"
        )
    if plot:
        from .plots import check_png_path

        check_png_path(plot)  # a folder, a missing one, not .png: refused before the work
    texts = read_same_length([ref, *hyps, *([src] if src else [])])
    refs, systems = texts[0], dict(zip(hyps, texts[1 : 1 + len(hyps)]))
    result: dict = {name: score(lines, refs, ter=ter) for name, lines in systems.items()}
    if paired_bs:
        for name in hyps[1:]:
            result[name]["paired_bs"] = paired_bootstrap(
                refs, systems[hyps[0]], systems[name], paired_bs
            )
    if src:
        result["by_length"] = bleu_by_length(texts[-1], refs, systems)
        if plot:
            from .plots import plot_length_buckets

            plot_length_buckets(result["by_length"], plot)
    return result


def format_report(result: dict, hyps: list[str]) -> str:
    """:func:`score_files`' result as text: each system's scores (under its name when there
    are several), its paired bootstrap against the first, and the length table."""
    lines = []
    for name in hyps:
        if len(hyps) > 1:
            lines.append(f"== {name}")
        lines.append(format_scores(result[name]))
        if "paired_bs" in result[name]:
            bs = result[name]["paired_bs"]
            lines.append(
                f"paired bootstrap vs {hyps[0]}: BLEU {bs['baseline_bleu']} -> "
                f"{bs['system_bleu']} (p = {bs['bleu_p_value']}), chrF {bs['baseline_chrf']} "
                f"-> {bs['system_chrf']} (p = {bs['chrf_p_value']})"
            )
    if "by_length" in result:
        lines.append(format_length_table(result["by_length"]))
    return "\n".join(lines)


def format_scores(result: dict) -> str:
    """Human-readable lines: ``BLEU = 31.20  (signature)``."""
    lines = []
    for name in ("bleu", "chrf", "ter"):
        if name in result:
            lines.append(f"{name.upper():5s}= {result[name]:6.2f}  ({result[name + '_signature']})")
    return "\n".join(lines)
