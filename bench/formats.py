"""Decoding in three number formats, ours and fairseq's Transformer: the models that
``python -m bench.transformer`` trained and kept in its work directories (one per budget), each
decoded on test_2016_flickr with beam 5 in fp32, bf16 and int8, batched (64 sentences) and one
sentence at a time, in one run; BLEU and chrF, sentences/s, and the megabytes of the weights as
decoded (``torch.save`` of the state dict, a shared table once).

Ours decodes through :class:`translate.translator.Translator` (bf16: autocast over the fp32
weights, so they weigh as fp32; int8: PyTorch's dynamic quantization of the linear and recurrent
layers, ``translate --quantize int8``). fairseq decodes through fairseq-generate with its
models converted after loading by bench/fairseq_generate.py (bf16: the weights cast; int8: the
same dynamic quantization, of every linear layer), since fairseq-generate itself offers only
fp32 on a CPU. Speed is each toolkit's own timing: ours ``translate()`` on text, fairseq its
generation steps on binarised pieces (loading, SentencePiece and batching excluded). A second
table gives ours' speed over fairseq's for every pair of models decoded in the same format.
``--models`` adds model directories of ``translate train`` (trained outside bench.transformer)
as rows of ours, named after their folder, at the budget of their ``train.max_minutes``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path

from translate.modeldir import CONFIG, read_config
from translate.score import score

from .bench import cpu_name
from .fairseq import FAIRSEQ_BUDGET_CHECKPOINT, translate_fairseq
from .fairseq_generate import FORMATS
from .peer_data import detokenize, read_corpus_lines, reference_of, write_lines
from .peer_setups import SETUPS
from .transformer import BEAM, FAILURES, MULTI30K, decode_ours


def budget_rows(workdir: Path) -> tuple[float, list[dict]]:
    """The budget in minutes and the measured rows of a bench.transformer work directory."""
    found = sorted(workdir.glob("transformer-*min.json"))
    if not found:
        raise SystemExit(f"{workdir} has no transformer-*min.json: run python -m bench.transformer")
    saved = json.loads(found[-1].read_text())
    if saved["args"]["split"] != MULTI30K.test:
        raise SystemExit(f"{found[-1]} scored {saved['args']['split']}, not the test set")
    return saved["args"]["minutes"], [row for row in saved["rows"] if "error" not in row]


def model_rows(model_dir: Path) -> tuple[float, list[dict]]:
    """A model directory of ``translate train`` as one row of ours: its folder's name as the
    set-up, its ``train.max_minutes`` as the budget (0: none)."""
    if not (model_dir / CONFIG).is_file():
        raise SystemExit(f"{model_dir} has no {CONFIG}: not a model directory")
    minutes = read_config(model_dir / CONFIG)[0].train.max_minutes or 0
    return minutes, [{"system": "ours", "setup": model_dir.name, "model_dir": str(model_dir)}]


def fairseq_checkpoint(workdir: Path, row: dict) -> Path:
    """The checkpoint a fairseq row was scored with: the one kept at its budget, or in work
    directories from before it was kept, the one saved at its last step."""
    folder = workdir / f"fairseq-{row['setup']}" / "model"
    if (folder / FAIRSEQ_BUDGET_CHECKPOINT).is_file():
        return folder / FAIRSEQ_BUDGET_CHECKPOINT
    found = sorted(folder.glob(f"*_{row['steps']}.pt"))
    if len(found) != 1:
        raise SystemExit(f"no single checkpoint of step {row['steps']} for {row['setup']}")
    return found[0]


def fairseq_pieces(workdir: Path, row: dict) -> Path:
    """The test set in the pieces a fairseq row trained on (bench.transformer's folders)."""
    ours = re.search(r"\(ours (\w+)\)", row["pieces"])
    name = ours.group(1) if ours else row["pieces"].split()[0]
    return workdir / f"pieces-{name}" / "data" / "test.de"


def hyp_file(workdir: Path, row: dict, number_format: str) -> Path:
    """Where a model's test translations in ``number_format`` are kept, for
    ``translate score --src`` (BLEU by source length) and ``--paired-bs``."""
    folder = workdir / "formats"
    folder.mkdir(exist_ok=True)
    return folder / f"{row['system']}-{row['setup']}-{number_format}.en"


def fairseq_decode(
    workdir: Path, row: dict, number_format: str, args: argparse.Namespace, refs: list[str]
) -> dict:
    """One fairseq row's model decoded in ``number_format``: scores, speeds and bytes."""
    checkpoint, source = fairseq_checkpoint(workdir, row), fairseq_pieces(workdir, row)
    setup = SETUPS[row["setup"]]
    decoded = translate_fairseq(
        checkpoint, source, BEAM, args.threads, setup=setup, number_format=number_format
    )
    hyps = Path(decoded["hypotheses"]).read_text(encoding="utf-8").splitlines()
    hyps = [detokenize(line) for line in hyps]
    write_lines(hyp_file(workdir, row, number_format), hyps)
    result = score(hyps, refs)
    result.update(sentences_per_s=decoded["sentences_per_s"], model_bytes=decoded["model_bytes"])
    if args.single_sentences:
        single = workdir / "formats" / "single.de"
        write_lines(
            single, source.read_text(encoding="utf-8").splitlines()[: args.single_sentences]
        )
        write_lines(reference_of(single), refs[: args.single_sentences])
        one = translate_fairseq(
            checkpoint,
            single,
            BEAM,
            args.threads,
            setup=replace(setup, decode_batch=1),
            number_format=number_format,
        )
        result["single_sentences_per_s"] = one["sentences_per_s"]
    return result


def decode(
    workdir: Path, row: dict, number_format: str, args: argparse.Namespace, test: tuple
) -> dict:
    """The model of one bench.transformer row decoded in ``number_format``."""
    if row["system"] == "fairseq":
        return fairseq_decode(workdir, row, number_format, args, test[1])
    model = Path(row["model_dir"]) if "model_dir" in row else workdir / f"ours-{row['setup']}"
    hyps = hyp_file(workdir, row, number_format)
    single = args.single_sentences
    return decode_ours(model, *test, args.threads, single, number_format, hyps)


def measure(args: argparse.Namespace, test: tuple[list[str], list[str]]) -> list[dict]:
    """Every model of every work directory in every format, one after the other; with
    ``args.repeat`` above 1, that many passes over them all, every other one in reverse order,
    so that a slower spell of a shared machine falls on every model alike."""
    jobs = []
    budgets = [(workdir, budget_rows(workdir)) for workdir in args.workdirs]
    budgets += [(model_dir, model_rows(model_dir)) for model_dir in args.models]
    for workdir, (minutes, trained) in budgets:
        for row in trained:
            for number_format in args.formats:
                out = {"minutes": minutes, "system": row["system"], "setup": row["setup"]}
                jobs.append((workdir, row, {**out, "format": number_format}))
    decodes: list[list[dict]] = [[] for _ in jobs]
    for turn in range(args.repeat):
        for i in range(len(jobs)) if turn % 2 == 0 else reversed(range(len(jobs))):
            workdir, row, out = jobs[i]
            print("decoding: " + " ".join(map(str, out.values())), flush=True)
            try:
                decodes[i].append(decode(workdir, row, out["format"], args, test))
            except FAILURES as err:
                decodes[i].append({"error": str(err)})
    return [{**out, **merged(runs)} for (_, _, out), runs in zip(jobs, decodes)]


SPEEDS = ("sentences_per_s", "single_sentences_per_s")


def merged(decodes: list[dict]) -> dict:
    """One model's decodes in one format as one row: the first one's scores and bytes (they do
    not change), each speed the median of all, every one kept under ``all_<speed>``; the
    first error, if any decode failed."""
    if failed := [result for result in decodes if "error" in result]:
        return failed[0]
    row = dict(decodes[0])
    for key in SPEEDS:
        if key in row:
            row[f"all_{key}"] = [result[key] for result in decodes]
            row[key] = statistics.median(row[f"all_{key}"])
    return row


COLUMNS = ["budget", "system", "set-up", "format", "BLEU", "chrF", "sent/s", "sent/s one", "MB"]


def format_table(rows: list[dict], cpu: str, threads: int, sentences: int, repeat: int = 1) -> str:
    """The rows as a markdown table under a line naming the machine."""
    speeds = f"; sentences/s: the median of {repeat} decodes" if repeat > 1 else ""
    lines = [
        f"Multi30k {MULTI30K.test} ({sentences} sentences), beam 5, {threads} thread(s); {cpu}"
        + speeds,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---:|---|---|---|" + "---:|" * (len(COLUMNS) - 4),
    ]
    for row in rows:
        head = [f"{row['minutes']:g} min", row["system"], row["setup"], row["format"]]
        if "error" in row:
            lines.append("| " + " | ".join(head) + f" | error: {row['error'].splitlines()[0]} |")
            continue
        one = row.get("single_sentences_per_s")
        cells = [f"{row['bleu']:.2f}", f"{row['chrf']:.2f}", f"{row['sentences_per_s']:.1f}"]
        cells += [f"{one:.1f}" if one else "-", f"{row['model_bytes'] / 1e6:.1f}"]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines)


def ratio_table(rows: list[dict]) -> str:
    """Ours' sentences a second over fairseq's, for every pair of one of our rows and one of
    fairseq's in the same format: the ratio of the medians and, over several passes, the lowest
    and highest ratio within one pass (the passes of one run are aligned). Empty without such
    a pair."""
    measured = [row for row in rows if "error" not in row]
    lines = []
    for ours in (row for row in measured if row["system"] != "fairseq"):
        for peer in (row for row in measured if row["system"] == "fairseq"):
            if peer["format"] == ours["format"]:
                bleu = f"{ours['bleu']:.2f} / {peer['bleu']:.2f}"
                cells = [_name(ours), _name(peer), ours["format"], bleu]
                cells += [_ratio(ours, peer, key) for key in SPEEDS]
                lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = "| ours | fairseq | format | BLEU | sent/s ratio | sent/s one ratio |"
    return "\n".join([head, "|---|---|---|---:|---:|---:|", *lines])


def _name(row: dict) -> str:
    return f"{row['setup']}, {row['minutes']:g} min"


def _ratio(ours: dict, peer: dict, key: str) -> str:
    """The ratio of two rows' median speeds, with its range over the passes when there are
    several; "-" where either row lacks the speed."""
    if not ours.get(key) or not peer.get(key):
        return "-"
    per_pass = [a / b for a, b in zip(ours.get(f"all_{key}", []), peer.get(f"all_{key}", []))]
    spread = f" ({min(per_pass):.2f}-{max(per_pass):.2f})" if len(per_pass) > 1 else ""
    return f"{ours[key] / peer[key]:.2f}×" + spread


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument(
        "--workdirs", default="", help="bench.transformer work directories, comma-separated"
    )
    parser.add_argument(
        "--models",
        default="",
        help="model directories of `translate train`, comma-separated: decoded as ours too "
        "(their translations go to DIR/formats/)",
    )
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--single-sentences", type=int, default=100, help="decoded one at a time too (0: none)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="decode every model this many times, every other pass in reverse order, and give "
        "the median speed: one model's speed moves between runs on a shared machine",
    )
    parser.add_argument("--out", help="the rows as JSON here too")
    args = parser.parse_args(argv)
    args.workdirs = [Path(name).resolve() for name in args.workdirs.split(",") if name]
    args.models = [Path(name).resolve() for name in args.models.split(",") if name]
    args.formats = [name for name in args.formats.split(",") if name]
    if unknown := [name for name in args.formats if name not in FORMATS]:
        parser.error(f"unknown format {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    if missing := [str(path) for path in args.workdirs + args.models if not path.is_dir()]:
        parser.error(f"no such directory: {', '.join(missing)}")
    if not args.workdirs + args.models or not args.formats:
        parser.error("give work directories or model directories, and formats")
    if args.threads < 1 or args.single_sentences < 0:
        parser.error("--threads must be at least 1 and --single-sentences at least 0")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sources = read_corpus_lines(args.data_dir, f"{MULTI30K.test}.de")
    refs = read_corpus_lines(args.data_dir, f"{MULTI30K.test}.en")
    rows = measure(args, (sources, refs))
    print(format_table(rows, cpu_name(), args.threads, len(sources), args.repeat))
    if ratios := ratio_table(rows):
        print("\nOurs' sentences/s over fairseq's (the medians' ratio; its range per pass):\n")
        print(ratios)
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
