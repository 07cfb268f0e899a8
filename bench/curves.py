"""Dev BLEU by training seconds: every checkpoint that ``python -m bench.transformer
--keep-every N`` kept in a work directory, ours and fairseq's, decoded on the dev set (val, all
of it) with beam 5 after training, so that scoring costs no system any training time.

Ours keeps the weights of every validation (``train.keep_checkpoints``); their seconds are the
validation's ``elapsed`` in metrics.jsonl (the training loop's clock, validations counted, as
the budget counts them). fairseq keeps every checkpoint whose update count is a multiple of N
(``--keep-interval-updates-pattern``) and its last two; their seconds are those of the
"Saved checkpoint" line in its log, from the start of its training loop. Each checkpoint's
score is kept in ``WORKDIR/curves.json`` as soon as it is measured, so an interrupted run
goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from translate.modeldir import CONFIG, read_config, read_weights
from translate.plots import read_metrics
from translate.runtime import set_threads
from translate.score import score
from translate.train.average import STEP_FILE, recent_checkpoints
from translate.translator import Translator

from .bench import cpu_name
from .fairseq import fairseq_checkpoints, translate_fairseq
from .formats import fairseq_pieces
from .peer_data import detokenize, read_corpus_lines, reference_of
from .peer_setups import SETUPS
from .transformer import BEAM, MULTI30K


def run_rows(path: Path) -> list[dict]:
    """The measured rows of one bench.transformer run (a work directory may hold runs of
    several budgets, e.g. ours for 30 minutes and the Transformer for 60)."""
    return [row for row in json.loads(path.read_text())["rows"] if "error" not in row]


def ours_points(out: Path) -> list[tuple[int, float, Path]]:
    """(step, loop seconds, weights) of every checkpoint our run kept, oldest first."""
    records = read_metrics(out / "metrics.jsonl")
    seconds = {record["step"]: record["elapsed"] for record in records if "dev_loss" in record}
    points = []
    for path in recent_checkpoints(out):
        step = int(STEP_FILE.fullmatch(path.name).group(1))
        if step not in seconds:
            raise SystemExit(f"{path}: metrics.jsonl has no validation at step {step}")
        points.append((step, seconds[step], path))
    return points


def fairseq_points(folder: Path) -> list[tuple[int, float, Path]]:
    """(updates, loop seconds, checkpoint) of every checkpoint fairseq kept in ``folder``."""
    log = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    return [(step, s, path) for path, step, s in fairseq_checkpoints(log) if path.is_file()]


def score_ours(
    out: Path, points: list[tuple[int, float, Path]], dev: tuple[list[str], list[str]], measured
) -> None:
    """Decode the dev set with each of ``points``' weights in ``out``'s model (fp32)."""
    translator = Translator.from_dir(out, device="cpu")
    cfg, version = read_config(out / CONFIG)
    for step, seconds, path in points:
        translator.model.load_state_dict(read_weights(path, cfg, version))
        measured(step, seconds, score(translator.translate(dev[0], beam=BEAM), dev[1]))


def score_fairseq(
    setup: str, source: Path, points: list[tuple[int, float, Path]], threads: int, measured
) -> None:
    """Decode the dev pieces ``source`` with each of ``points``' checkpoints (fairseq-generate,
    fp32, the set-up's own length penalty)."""
    refs = reference_of(source).read_text(encoding="utf-8").splitlines()
    for step, seconds, path in points:
        decoded = translate_fairseq(path, source, BEAM, threads, setup=SETUPS[setup])
        pieces = Path(decoded["hypotheses"]).read_text(encoding="utf-8").splitlines()
        measured(step, seconds, score([detokenize(line) for line in pieces], refs))


def measure(workdir: Path, threads: int, data_dir: str, dev: str = MULTI30K.dev) -> list[dict]:
    """Every kept checkpoint of every system in ``workdir`` scored on ``data_dir``'s ``dev``
    split, measured or read back."""
    saved_file = workdir / "curves.json"
    saved = json.loads(saved_file.read_text()) if saved_file.is_file() else []
    done = {(row["system"], row["setup"], row["step"]): row for row in saved}
    set_threads(threads)
    texts = tuple(read_corpus_lines(data_dir, f"{dev}.{lang}") for lang in ("de", "en"))
    rows = [row for path in workdir.glob("transformer-*min.json") for row in run_rows(path)]
    if not rows:
        raise SystemExit(f"{workdir} has no transformer-*min.json: run python -m bench.transformer")
    for row in rows:
        system, setup = row["system"], row["setup"]
        if system == "ours":
            points = ours_points(workdir / f"ours-{setup}")
        else:
            points = fairseq_points(workdir / f"fairseq-{setup}")
        points = [point for point in points if (system, setup, point[0]) not in done]

        def measured(step: int, seconds: float, scores: dict, system=system, setup=setup) -> None:
            row = {"system": system, "setup": setup, "step": step, "seconds": seconds}
            done[(system, setup, step)] = {**row, **scores}
            print(f"{system} {setup} step {step} ({seconds:.0f} s): {scores['bleu']:.2f}")
            saved_file.write_text(json.dumps(list(done.values()), indent=1))

        if not points:
            continue
        if system == "ours":
            score_ours(workdir / f"ours-{setup}", points, texts, measured)
        else:
            source = fairseq_pieces(workdir, row).with_name("val.de")
            score_fairseq(setup, source, points, threads, measured)
    return sorted(done.values(), key=lambda r: (r["system"], r["setup"], r["step"]))


def format_table(rows: list[dict], cpu: str, threads: int) -> str:
    """One table a system: step, loop seconds, dev BLEU and chrF, under a line naming the
    machine, and over sacreBLEU's signatures."""
    lines = [f"dev BLEU (val, beam 5, fp32) of every kept checkpoint; {threads} thread(s); {cpu}"]
    for system, setup in dict.fromkeys((row["system"], row["setup"]) for row in rows):
        lines += ["", f"{system} {setup}", "", "| step | seconds | BLEU | chrF |"]
        lines.append("|---:|---:|---:|---:|")
        for row in rows:
            if (row["system"], row["setup"]) == (system, setup):
                cells = [row["step"], f"{row['seconds']:.0f}", f"{row['bleu']:.2f}"]
                lines.append("| " + " | ".join(map(str, cells + [f"{row['chrf']:.2f}"])) + " |")
    signatures = sorted({row[k] for row in rows for k in ("bleu_signature", "chrf_signature")})
    return "\n".join(lines + ["", *signatures])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.curves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument("--workdir", required=True, help="a bench.transformer work directory")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be positive")
    workdir = Path(args.workdir).resolve()
    rows = measure(workdir, args.threads, args.data_dir)
    if not rows:
        raise SystemExit(
            f"{workdir} kept no checkpoints: train with bench.transformer --keep-every"
        )
    print(format_table(rows, cpu_name(), args.threads))


if __name__ == "__main__":
    main()
