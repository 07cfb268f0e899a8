"""Against the Transformer, at one training budget: ours (the Multi30k attention recipe, and a
small model on 4000 pieces) and fairseq's Transformer set-ups (bench/peer_setups.py), each
trained for ``--minutes`` of its own training loop with its own schedule, one after the other;
then, for each, test_2016_flickr BLEU and chrF (beam 5, each system's own length penalty:
ours GNMT's 1.0, fairseq's division by the length), decoding sentences/s batched (64
sentences a batch, both) and one sentence at a time, parameters and fp32 size.

Ours runs ``translate train`` with ``train.max_minutes`` (the cosine schedule anneals to 0 at
the budget; its dev validations count in the budget; the model is its best by dev BLEU) and
decodes in this process, in fp32, timed after a warm-up. fairseq trains against the clock
(:func:`bench.fairseq.train_fairseq`: its last checkpoint, every ``--save-every`` updates,
before the budget) and times its own generation steps. A fairseq set-up trains on the same
pieces as ours: the SentencePiece model of our system with its ``vocab_size`` (8000: the
attention recipe's; 4000: the small model's, trained by this run or an earlier one in the same
work directory), else one it trains itself; the table says which.
``--sweep`` trains the Transformer set-ups of ``peer_setups.TRANSFORMER_SWEEP`` and scores each
on the dev set (val) instead, so that the winner is not chosen on the test set. Every system's
row is kept in ``WORKDIR/NAME.json`` as soon as it is measured: a later run with
the same ``--workdir`` measures only what is missing, and refuses one made with other settings
(use one work directory per budget). ``--keep-every N`` keeps more checkpoints, for
``python -m bench.curves``: every validation of ours, every N updates of fairseq.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from translate.config import load_config
from translate.runtime import set_threads
from translate.score import score
from translate.translator import Translator

from .bench import cpu_name
from .fairseq import train_fairseq, translate_fairseq
from .fairseq_generate import weight_bytes
from .peer_data import (
    CORPORA,
    PeerData,
    detokenize,
    prepare_data,
    read_corpus_lines,
    reference_of,
    write_lines,
)
from .peer_runs import PeerError, check, run_child
from .peer_setups import SETUPS, TRANSFORMER_SWEEP, PeerSetup
from .time_to_bleu import DEFAULT_CONFIGS

BEAM = 5
RECIPE = DEFAULT_CONFIGS["multi30k"]  # recipes/multi30k/attention.yaml
OURS = {  # our systems: overrides of the attention recipe
    "attention": [],
    "small4k": ["data.vocab_size=4000", "model.hidden_dim=384"],
    # for decoding speed at the Transformer's BLEU: half the width of the small model's words
    "tiny4k": ["data.vocab_size=4000", "model.hidden_dim=256", "model.emb_dim=256"],
}
DEFAULT_OURS = ["attention", "small4k"]
DEFAULT_SETUPS = ["transformer_iwslt", "transformer_small", "transformer_tiny"]
MULTI30K = CORPORA["multi30k"]
FAILURES = (PeerError, subprocess.CalledProcessError, OSError)


# --- ours -----------------------------------------------------------------------------------


def ours_command(
    out: Path, data_dir: Path, minutes: float, threads: int, overrides: list[str], keep: bool
) -> list[str]:
    """``translate train`` of the attention recipe with ``overrides`` for ``minutes`` (the
    budget its only limit: the recipe's 30 epochs take about 50 minutes here); ``keep`` keeps
    the weights of every validation."""
    command = [sys.executable, "-m", "translate", "train", str(RECIPE), f"out_dir={out}"]
    command += [f"data.train={data_dir}/{MULTI30K.train}", f"data.dev={data_dir}/{MULTI30K.dev}"]
    command += [f"train.max_minutes={minutes:g}", f"train.threads={threads}"]
    command += ["train.max_epochs=1000"] + (["train.keep_checkpoints=1000"] if keep else [])
    return command + overrides


def ours_trained(out: Path, log: str) -> dict:
    """Steps and loop seconds of a finished run (its last validation), the step of its best
    weights (the model directory's) and the dtype it trained in."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validations = [record for record in records if "dev_loss" in record]
    best = [record for record in validations if record.get("best")] or validations
    dtype = re.search(r"dtype (\w+)", log)
    return {
        "steps": validations[-1]["step"],
        "train_s": validations[-1]["elapsed"],
        "best_step": best[-1]["step"],
        "dtype": dtype.group(1) if dtype else "?",
    }


def decode_ours(
    out: Path,
    sources: list[str],
    refs: list[str],
    threads: int,
    single: int,
    number_format: str = "fp32",
    hyp_file: Path | None = None,
) -> dict:
    """Test scores, sentences/s batched and one at a time (the first ``single`` sentences),
    parameters (a tied table once) and weight bytes of the model directory ``out``, decoded in
    ``number_format``: fp32, bf16 (autocast over fp32 weights) or int8 (dynamic quantization);
    the translations go to ``hyp_file`` when given."""
    set_threads(threads)
    dtype = "bf16" if number_format == "bf16" else "fp32"
    quantize = "int8" if number_format == "int8" else None
    translator = Translator.from_dir(out, device="cpu", dtype=dtype, quantize=quantize)
    translator.translate(sources[:20], beam=BEAM)  # warm-up
    start = time.perf_counter()
    hyps = translator.translate(sources, beam=BEAM)
    row = {"sentences_per_s": len(sources) / (time.perf_counter() - start)}
    if hyp_file:
        write_lines(hyp_file, hyps)
    if single:
        start = time.perf_counter()
        for line in sources[:single]:
            translator.translate([line], beam=BEAM)
        row["single_sentences_per_s"] = min(single, len(sources)) / (time.perf_counter() - start)
    row["parameters"] = sum(p.numel() for p in translator.model.parameters())
    row["model_bytes"] = weight_bytes(translator.model)
    return {**row, **score(hyps, refs)}


def ours_vocab(name: str) -> int:
    """The SentencePiece vocabulary size our system ``name`` trains."""
    return load_config(RECIPE, OURS[name]).data.vocab_size


def ours_row(
    name: str, args: argparse.Namespace, workdir: Path, test: tuple[list[str], list[str]]
) -> dict:
    """Train and decode our system ``name``; interrupted, the same call resumes its training."""
    out = workdir / f"ours-{name}"
    data_dir = Path(args.data_dir).resolve()
    command = ours_command(
        out, data_dir, args.minutes, args.threads, OURS[name], bool(args.keep_every)
    )
    print("ours: " + " ".join(command), flush=True)
    run = run_child(command, workdir / f"ours-{name}.log", args.threads)
    check(run, "translate train")
    row = {"system": "ours", "setup": name, "pieces": f"{ours_vocab(name)} (its own)"}
    row.update(ours_trained(out, run.log))
    return {**row, **decode_ours(out, *test, args.threads, args.single_sentences)}


# --- fairseq --------------------------------------------------------------------------------


def pieces_for(
    setup: PeerSetup, ours_spm: dict[int, tuple[str, Path]], args: argparse.Namespace, workdir: Path
) -> tuple[PeerData, str]:
    """The pieces a fairseq set-up trains on: those of our system with its vocab_size, else
    its own SentencePiece model of that size; and what the table calls them."""
    if setup.vocab_size in ours_spm:
        name, spm_model = ours_spm[setup.vocab_size]
        folder, given = workdir / f"pieces-{name}", {"spm_model": spm_model}
        pieces = f"{setup.vocab_size} (ours {name})"
    else:
        folder, given = workdir / f"pieces-{setup.vocab_size}", {"vocab_size": setup.vocab_size}
        pieces = f"{setup.vocab_size} (its own)"
    data = prepare_data(Path(args.data_dir), folder, args.test_sentences, args.threads, **given)
    return data, pieces


def fairseq_row(
    name: str, data: PeerData, pieces: str, args: argparse.Namespace, workdir: Path
) -> dict:
    """Train fairseq with the set-up ``name`` against the clock and decode the pieces of
    ``args.split`` batched and (the first ``--single-sentences``) one at a time."""
    setup = SETUPS[name]
    folder = workdir / f"fairseq-{name}"
    print(f"fairseq: training {name} in {folder}", flush=True)
    trained = train_fairseq(
        folder,
        data,
        args.minutes,
        threads=args.threads,
        setup=setup,
        save_every=args.save_every,
        keep_every=args.keep_every,
    )
    row = {"system": "fairseq", "setup": name, "pieces": pieces, "steps": trained["steps"]}
    row["train_s"] = dict(trained["checkpoints"])[str(trained["model"])]
    row["parameters"], row["dtype"] = trained["parameters"], "fp32"
    source = data.test_src if args.split == MULTI30K.test else data.val.with_suffix(".de")
    decoded = translate_fairseq(trained["model"], source, BEAM, args.threads, setup=setup)
    pieces_out = Path(decoded["hypotheses"]).read_text(encoding="utf-8").splitlines()
    refs = reference_of(source).read_text(encoding="utf-8").splitlines()
    row.update(score([detokenize(line) for line in pieces_out], refs))
    row["sentences_per_s"] = decoded["sentences_per_s"]
    if args.single_sentences:
        src = folder / "single.de"
        write_lines(src, source.read_text(encoding="utf-8").splitlines()[: args.single_sentences])
        write_lines(reference_of(src), refs[: args.single_sentences])
        one = replace(setup, decode_batch=1)
        single = translate_fairseq(trained["model"], src, BEAM, args.threads, setup=one)
        row["single_sentences_per_s"] = single["sentences_per_s"]
    return row


# --- the run --------------------------------------------------------------------------------


def kept_row(path: Path, recipe: dict, measure) -> dict:
    """The row saved in ``path`` for ``recipe``, else ``measure()``'s, saved there (an error
    too, as ``{"error": ...}``, measured again by a later run)."""
    recipe = json.loads(json.dumps(recipe))  # as it reads back
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["recipe"] != recipe:
            raise SystemExit(f"{path} was made with other settings: use another --workdir")
        if "error" not in saved["row"]:
            return saved["row"]
    path.write_text(json.dumps({"recipe": recipe, "row": {"error": "unfinished"}}))
    try:
        row = measure()
    except FAILURES as err:
        row = {"error": str(err)}
    path.write_text(json.dumps({"recipe": recipe, "row": row}, indent=1))
    return row


def measure(args: argparse.Namespace, workdir: Path) -> list[dict]:
    """Every row: our systems first (their pieces are the peers'), then the fairseq set-ups."""
    common = {
        "minutes": args.minutes,
        "threads": args.threads,
        "split": args.split,
        "test_sentences": args.test_sentences,
        "single_sentences": args.single_sentences,
        "keep_every": args.keep_every,
        "data_dir": str(Path(args.data_dir).resolve()),
    }
    sources = read_corpus_lines(args.data_dir, f"{args.split}.de")[: args.test_sentences]
    refs = read_corpus_lines(args.data_dir, f"{args.split}.en")[: args.test_sentences]
    rows, ours_spm = [], {}
    for name in args.ours:
        recipe = {**common, "ours": OURS[name]}
        row = kept_row(
            workdir / f"ours-{name}.json",
            recipe,
            lambda name=name: ours_row(name, args, workdir, (sources, refs)),
        )
        rows.append({"system": "ours", "setup": name, **row})
    for name in OURS:  # trained by this run or an earlier one in the same work directory
        spm_model = workdir / f"ours-{name}" / "spm.model"
        if spm_model.is_file() and ours_vocab(name) not in ours_spm:
            ours_spm[ours_vocab(name)] = (name, spm_model)
    for name in args.setups:
        data, pieces = pieces_for(SETUPS[name], ours_spm, args, workdir)
        recipe = {**common, "setup": asdict(SETUPS[name]), "pieces": pieces}
        row = kept_row(
            workdir / f"fairseq-{name}.json",
            recipe,
            lambda name=name, data=data, pieces=pieces: fairseq_row(
                name, data, pieces, args, workdir
            ),
        )
        rows.append({"system": "fairseq", "setup": name, **row})
    return rows


COLUMNS = ["system", "set-up", "pieces", "dtype", "steps", "train s", "BLEU", "chrF", "sent/s"]
COLUMNS += ["sent/s one", "params", "MB fp32"]


def format_table(
    rows: list[dict], cpu: str, minutes: float, threads: int, split: str, sentences: int
) -> str:
    """The rows as a markdown table, under a line naming the budget, the scored split and the
    machine, and over sacreBLEU's signatures."""
    lines = [
        f"{minutes:g} minutes of training each, {threads} thread(s), Multi30k {split}"
        f" ({sentences} sentences), beam 5; {cpu}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|" + "---:|" * (len(COLUMNS) - 4),
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['system']} | {row['setup']} | error: {row['error'].splitlines()[0]} |"
            )
            continue
        one = row.get("single_sentences_per_s")
        cells = [
            row["system"],
            row["setup"],
            row["pieces"],
            row["dtype"],
            f"{row['steps']}",
            f"{row['train_s']:.0f}",
            f"{row['bleu']:.2f}",
            f"{row['chrf']:.2f}",
            f"{row['sentences_per_s']:.1f}",
            f"{one:.1f}" if one else "-",
            f"{row['parameters'] / 1e6:.1f}M",
            f"{row['parameters'] * 4 / 1e6:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    signatures = sorted(
        {row[key] for row in rows for key in ("bleu_signature", "chrf_signature") if key in row}
    )
    lines += ["", *signatures]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transformer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument("--minutes", type=float, required=True, help="training budget per system")
    parser.add_argument(
        "--setups",
        help="fairseq set-ups from bench/peer_setups.py's SETUPS, comma-separated ('' for none;"
        f" default: {','.join(DEFAULT_SETUPS)})",
    )
    parser.add_argument(
        "--ours",
        help=f"ours, comma-separated: {', '.join(OURS)} ('' for none;"
        f" default: {','.join(DEFAULT_OURS)})",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="the Transformer's sweep, scored on the dev set (val): --setups defaults to"
        " peer_setups.TRANSFORMER_SWEEP and --ours to none",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--test-sentences", type=int, help="the first N test sentences (default: all)"
    )
    parser.add_argument(
        "--single-sentences", type=int, default=100, help="decoded one at a time too (0: none)"
    )
    parser.add_argument("--save-every", type=int, default=20, help="fairseq's checkpoint updates")
    parser.add_argument(
        "--keep-every",
        type=int,
        default=0,
        help="keep every validation's weights of ours and fairseq's checkpoints every N updates,"
        " for python -m bench.curves (a multiple of --save-every; 0: only the last)",
    )
    parser.add_argument("--workdir", help="models, logs and rows (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.setups is None:
        args.setups = ",".join(TRANSFORMER_SWEEP if args.sweep else DEFAULT_SETUPS)
    if args.ours is None:
        args.ours = "" if args.sweep else ",".join(DEFAULT_OURS)
    args.setups = [name for name in args.setups.split(",") if name]
    args.ours = [name for name in args.ours.split(",") if name]
    if unknown := [name for name in args.setups if name not in SETUPS]:
        parser.error(f"unknown set-up {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    if unknown := [name for name in args.ours if name not in OURS]:
        parser.error(f"unknown --ours {', '.join(unknown)}; known: {', '.join(OURS)}")
    if not args.setups and not args.ours:
        parser.error("nothing to measure: give --setups or --ours")
    if args.minutes <= 0 or args.threads < 1 or args.save_every < 1:
        parser.error("--minutes, --threads and --save-every must be positive")
    if args.keep_every < 0 or args.keep_every % args.save_every:
        parser.error("--keep-every must be 0 or a multiple of --save-every")
    if (args.test_sentences is not None and args.test_sentences < 1) or args.single_sentences < 0:
        parser.error("--test-sentences must be at least 1, --single-sentences at least 0")
    if args.sweep and args.test_sentences is not None:
        parser.error("--sweep scores the whole dev set; --test-sentences is the test set's")
    args.split = MULTI30K.dev if args.sweep else MULTI30K.test
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="transformer-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir}", flush=True)
    rows = measure(args, workdir)
    sentences = len(read_corpus_lines(args.data_dir, f"{args.split}.de")[: args.test_sentences])
    cpu = cpu_name()
    print(format_table(rows, cpu, args.minutes, args.threads, args.split, sentences))
    results = workdir / f"transformer-{args.minutes:g}min.json"
    results.write_text(json.dumps({"cpu": cpu, "args": vars(args), "rows": rows}, indent=1))
    print(f"rows: {results}")


if __name__ == "__main__":
    main()
