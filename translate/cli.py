"""Command line: subcommands that parse arguments and call the library, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import UserError, load_config

EXAMPLES = """\
examples:
  translate train recipes/toy/config.yaml
  translate train recipes/multi30k/config.yaml out_dir=exp/m30k train.max_minutes=30
  translate translate -m exp/m30k -i test.de -o test.hyp.en --beam 5
  echo "Ein Hund läuft." | translate translate -m exp/m30k
  translate score -r test.en test.hyp.en
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (sections: data, model, train, decode)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override config values, e.g. train.lr=0.0005 model.cell=lstm out_dir=exp/run1",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="translate",
        description="RNN neural machine translation: SentencePiece, training, search, BLEU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = sub.add_parser(
        "prepare",
        help="train SentencePiece and encode/filter the training data",
        description="Train the SentencePiece model(s) into out_dir and cache the encoded, "
        "filtered training pairs; reports how many pairs were dropped and why. "
        "'train' runs this step itself when it has not been run.",
    )
    _add_config_args(prep)

    train = sub.add_parser(
        "train",
        help="train a model; out_dir becomes a self-contained model directory",
        description="Prepare the data if needed, then train with teacher forcing, Adam and "
        "gradient clipping, validating on data.dev every train.valid_every steps. The best "
        "model (by dev BLEU) is kept in out_dir/model.pt; metrics go to out_dir/metrics.jsonl.",
    )
    _add_config_args(train)

    tr = sub.add_parser(
        "translate",
        help="translate lines from a file or stdin",
        description="Translate one sentence per line. Output has exactly one line per input "
        "line, in input order; blank input lines give blank output lines.",
    )
    tr.add_argument("-m", "--model", required=True, help="model directory written by 'train'")
    tr.add_argument("-i", "--input", help="input file (default: stdin)")
    tr.add_argument("-o", "--output", help="output file (default: stdout); written atomically")
    tr.add_argument("--beam", type=int, help="beam size; 1 = greedy (default: the model's)")
    tr.add_argument("--length-penalty", type=float, help="GNMT alpha (default: the model's)")
    tr.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16 runs the search under bf16 autocast (fast on CPUs with AMX)",
    )
    tr.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: dynamic quantization of linear and recurrent layers (CPU)",
    )
    tr.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    tr.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")

    sc = sub.add_parser(
        "score",
        help="BLEU and chrF (and TER) of a hypothesis file, with sacrebleu signatures",
        description="Score detokenized hypotheses against one reference file with sacrebleu "
        "(BLEU with the 13a tokenizer, chrF; both files must have the same number of lines).",
    )
    sc.add_argument("-r", "--ref", required=True, help="reference file")
    sc.add_argument("hyp", help="hypothesis file")
    sc.add_argument("--ter", action="store_true", help="also compute TER")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _translate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .translate import Translator, open_input, set_threads

    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    set_threads(args.threads)
    translator = Translator.from_dir(
        args.model, device=args.device, dtype=args.dtype, quantize=args.quantize
    )
    with open_input(args.input) as lines:
        if args.output is None:
            translator.translate_stream(lines, sys.stdout, args.beam)
            return
        out_path = Path(args.output)
        tmp = out_path.with_name(out_path.name + ".tmp")
        with (
            open(tmp, "w", encoding="utf-8", newline="\n") as out,
            tqdm(desc="translate", unit="line", mininterval=1.0) as progress,
        ):
            count = translator.translate_stream(lines, out, args.beam, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
        print(f"translated {count} lines into {out_path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from .prepare import prepare

            prepare(load_config(args.config, args.overrides), log=_log)
        elif args.command == "train":
            from .train import train

            train(load_config(args.config, args.overrides), log=_log)
        elif args.command == "translate":
            _translate(args)
        elif args.command == "score":
            from .score import format_scores, score_files

            result = score_files(args.ref, args.hyp, ter=args.ter)
            print(json.dumps(result) if args.json else format_scores(result))
    except KeyboardInterrupt:
        print("translate: interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        print(f"translate: {err.label}: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
