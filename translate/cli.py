"""Command line: subcommands that parse arguments and call the library, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .config import load_config
from .decoding import add_decoding_flags, options_from_flags
from .errors import UserError
from .serve.options import ServeOptions

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


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--dtype, --quantize, --threads and --device: how a loaded model runs, for translate and
    serve alike."""
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16", "auto"],
        default="fp32",
        help="bf16 runs the search under bf16 autocast (fast on GPUs and on CPUs with AMX or "
        "AVX-512 BF16, slow elsewhere); fp16: GPU only; auto: bf16 where it is fast",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: dynamic quantization of linear and recurrent layers (CPU); activations are "
        "quantized per batch, so a sentence's translation can change with the sentences "
        "batched with it",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="translate",
        description="RNN neural machine translation: SentencePiece, training, search, BLEU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _prepare_parser(sub)
    _train_parser(sub)
    _translate_parser(sub)
    _tune_parser(sub)
    _average_parser(sub)
    _score_parser(sub)
    _plot_parser(sub)
    _serve_parser(sub)
    _attention_parser(sub)
    return parser


def _prepare_parser(sub) -> None:
    prep = sub.add_parser(
        "prepare",
        help="train SentencePiece and encode/filter the training data",
        description="Train the SentencePiece model(s) into out_dir and cache the encoded, "
        "filtered training pairs; reports how many pairs were dropped and why. "
        "'train' runs this step itself when it has not been run.",
    )
    _add_config_args(prep)


def _train_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model; out_dir becomes a self-contained model directory",
        description="Prepare the data if needed, then train with teacher forcing, Adam and "
        "gradient clipping, validating on data.dev every train.valid_every steps. The best "
        "model (by dev BLEU) is kept in out_dir/model.pt; metrics go to out_dir/metrics.jsonl. "
        "A run resumes from out_dir/checkpoint.pt by itself. Several processes or machines: "
        "torchrun --nproc_per_node N -m translate train CONFIG (train.batch_tokens is the "
        "batch of all of them together; gloo on CPUs, NCCL when every process has a GPU).",
    )
    _add_config_args(train)


def _translate_parser(sub) -> None:
    tr = sub.add_parser(
        "translate",
        help="translate lines from a file or stdin",
        description="Translate one sentence per line. Output has exactly one line per input "
        "line, in input order; blank input lines give blank output lines.",
    )
    tr.add_argument("-m", "--model", required=True, help="model directory written by 'train'")
    tr.add_argument("-i", "--input", help="input file (default: stdin)")
    tr.add_argument("-o", "--output", help="output file (default: stdout); written atomically")
    add_decoding_flags(tr)
    add_runtime_options(tr)
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue the partly written OUT.tmp that an interrupted run left",
    )
    tr.add_argument(
        "--replace-bad-utf8",
        action="store_true",
        help="translate lines with invalid UTF-8 (bad bytes become U+FFFD) instead of stopping",
    )
    tr.add_argument(
        "--scores",
        action="store_true",
        help="write 'TEXT ||| SCORE': the log-probability divided by the length penalty",
    )


def _tune_parser(sub) -> None:
    tu = sub.add_parser(
        "tune",
        help="pick beam size and length penalty on the dev set",
        description="Translate the dev set with each beam size and length "
        "penalty, report BLEU, and write the best pair into MODEL/config.yaml.",
    )
    tu.add_argument("-m", "--model", required=True, help="model directory")
    tu.add_argument("--src", required=True, help="dev source file")
    tu.add_argument("--ref", required=True, help="dev reference file")
    tu.add_argument("--beams", default="1,3,5,8", help="comma-separated (default: 1,3,5,8)")
    tu.add_argument(
        "--alphas",
        default="0,0.5,1,1.5",
        help="length penalties, comma-separated (default: 0,0.5,1,1.5)",
    )


def _average_parser(sub) -> None:
    av = sub.add_parser(
        "average",
        help="average the last N checkpoints into model.pt",
        description="Average the weights of the N most recent checkpoints in "
        "MODEL/checkpoints (train with train.keep_checkpoints=N) into "
        "MODEL/model.pt; the previous model.pt is kept as model.single.pt.",
    )
    av.add_argument("-m", "--model", required=True, help="model directory")
    av.add_argument("-n", "--last", type=int, default=5, help="how many (default: 5)")


def _score_parser(sub) -> None:
    sc = sub.add_parser(
        "score",
        help="BLEU and chrF (and TER) of hypothesis files, with sacrebleu signatures",
        description="Score detokenized hypotheses against one reference file with sacrebleu "
        "(BLEU with the 13a tokenizer, chrF; every file must have the same number of lines). "
        "With several systems, the first is the baseline of --paired-bs.",
    )
    sc.add_argument("-r", "--ref", required=True, help="reference file")
    sc.add_argument("hyp", nargs="+", help="hypothesis file(s)")
    sc.add_argument("--ter", action="store_true", help="also compute TER")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.add_argument(
        "--paired-bs",
        type=int,
        metavar="N",
        nargs="?",
        const=1000,
        help="paired bootstrap resampling (N samples, default 1000) of each system "
        "against the first, with p-values",
    )
    sc.add_argument("--src", help="source file: adds BLEU by source-length bucket")
    sc.add_argument("--plot", help="with --src: also draw the buckets as a PNG chart")


def _plot_parser(sub) -> None:
    pl = sub.add_parser(
        "plot",
        help="training curves of a model directory as a PNG",
        description="Draw loss, dev BLEU and learning rate from metrics.jsonl.",
    )
    pl.add_argument("-m", "--model", required=True, help="model directory")
    pl.add_argument("-o", "--output", required=True, help="PNG file to write")


def _serve_parser(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="an HTTP translation service: JSON API and a web page (pip install 'translate[serve]')",
        description='Load the model once and answer POST /translate {"text": [...]} (GET '
        "/health, GET /model, and a page at /). Sentences of concurrent requests with the same "
        "options are decoded together in length-sorted batches. SIGTERM or Ctrl-C stops "
        "accepting connections, finishes the requests in flight, then exits.",
    )
    sv.add_argument("-m", "--model", required=True, help="model directory written by 'train'")
    sv.add_argument(
        "--host",
        help="address to listen on (default: %(default)s; 127.0.0.1: this machine "
        "only; 0.0.0.0: all)",
    )
    sv.add_argument("--port", type=int, help="default: %(default)s; 0: any free port")
    add_decoding_flags(sv, for_requests=True)
    add_runtime_options(sv)
    for flag, kind, what in (
        ("--max-sentences", int, "sentences per request, else 413"),
        ("--max-bytes", int, "request body size, else 413"),
        ("--max-batch-sentences", int, "sentences decoded together at most (1: no batching)"),
        ("--max-batch-tokens", int, "source subwords decoded together at most"),
        ("--batch-wait-ms", float, "how long a sentence waits for others to share its batch"),
        (
            "--max-queued-sentences",
            int,
            "sentences of all requests waiting to be decoded at most; a request that would go "
            "beyond gets 503 with Retry-After",
        ),
        ("--shutdown-timeout", float, "seconds the requests in flight get after SIGTERM"),
    ):
        sv.add_argument(flag, type=kind, help=what + " (default: %(default)s)")
    sv.set_defaults(**dataclasses.asdict(ServeOptions()))  # the defaults are ServeOptions'


def _attention_parser(sub) -> None:
    at = sub.add_parser(
        "attention",
        help="attention heatmaps (PNG) for chosen sentences",
        description="Translate each sentence and draw the attention weights "
        "the model used, one PNG per sentence.",
    )
    at.add_argument("-m", "--model", required=True, help="model directory with attention")
    at.add_argument("-o", "--output", required=True, help="folder for attention-N.png files")
    at.add_argument("sentences", nargs="+", help="source sentences")


def _translate(args: argparse.Namespace) -> None:
    """``translate translate``: the model's decoding options with the flags', into a file or
    stdout."""
    from .output import check_output, translate_file
    from .runtime import set_threads
    from .translator import Translator

    output = Path(args.output) if args.output else None
    check_output(output)
    set_threads(args.threads)
    translator = Translator.from_dir(
        args.model, device=args.device, dtype=args.dtype, quantize=args.quantize
    )
    options = options_from_flags(args, translator.defaults)
    translate_file(
        translator,
        args.input,
        output,
        options,
        numbered=args.n_best is not None,
        scores=args.scores,
        resume=args.resume,
        replace_bad_utf8=args.replace_bad_utf8,
        log=_log,
    )


def _tune(args: argparse.Namespace) -> None:
    from .score import read_same_length
    from .tune import tune_decoding

    sources, refs = read_same_length([args.src, args.ref])
    beams = _numbers(args.beams, int, "--beams")
    alphas = _numbers(args.alphas, float, "--alphas")
    best = tune_decoding(args.model, sources, refs, beams, alphas, progress=_log)["best"]
    print(
        f"best: beam {best['beam']}, length_penalty {best['length_penalty']}, "
        f"BLEU {best['bleu']} (written to {args.model}/config.yaml)"
    )


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{option} takes at least one number, got {text!r}")
    return values


def _score(args: argparse.Namespace) -> None:
    from .score import (
        bleu_by_length,
        format_length_table,
        format_scores,
        paired_bootstrap,
        read_same_length,
        score,
    )

    if args.plot and not args.src:
        raise UserError("--plot draws the length buckets: give --src too")
    texts = read_same_length([args.ref, *args.hyp, *([args.src] if args.src else [])])
    refs, systems = texts[0], dict(zip(args.hyp, texts[1 : 1 + len(args.hyp)]))
    result: dict = {name: score(hyps, refs, ter=args.ter) for name, hyps in systems.items()}
    if args.paired_bs:
        baseline = args.hyp[0]
        for name in args.hyp[1:]:
            result[name]["paired_bs"] = paired_bootstrap(
                refs, systems[baseline], systems[name], args.paired_bs
            )
    if args.src:
        result["by_length"] = bleu_by_length(texts[-1], refs, systems)
        if args.plot:
            from .plots import plot_length_buckets

            plot_length_buckets(result["by_length"], args.plot)
    if args.json:
        print(json.dumps(result[args.hyp[0]] if len(result) == 1 else result))
        return
    for name in args.hyp:
        if len(args.hyp) > 1:
            print(f"== {name}")
        print(format_scores(result[name]))
        if "paired_bs" in result[name]:
            bs = result[name]["paired_bs"]
            print(
                f"paired bootstrap vs {args.hyp[0]}: BLEU {bs['baseline_bleu']} -> "
                f"{bs['system_bleu']} (p = {bs['bleu_p_value']}), chrF {bs['baseline_chrf']} "
                f"-> {bs['system_chrf']} (p = {bs['chrf_p_value']})"
            )
    if args.src:
        print(format_length_table(result["by_length"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from .data.prepare import prepare

            prepare(load_config(args.config, args.overrides), log=_log)
        elif args.command == "train":
            from .train.loop import train

            train(load_config(args.config, args.overrides), log=_log)
        elif args.command == "translate":
            _translate(args)
        elif args.command == "score":
            _score(args)
        elif args.command == "tune":
            _tune(args)
        elif args.command == "average":
            from .train.average import average_checkpoints

            paths = average_checkpoints(args.model, args.last)
            print(f"averaged {len(paths)} checkpoints into {args.model}/model.pt")
        elif args.command == "plot":
            from .plots import plot_training_curves

            metrics = Path(args.model) / "metrics.jsonl"
            if not metrics.is_file():
                raise UserError(f"{metrics} not found")
            plot_training_curves(metrics, args.output)
        elif args.command == "serve":
            from .serve.http import serve

            serve(args.model, ServeOptions.from_namespace(args))
        elif args.command == "attention":
            from .plots import plot_attention
            from .translator import Translator

            translator = Translator.from_dir(args.model)
            Path(args.output).mkdir(parents=True, exist_ok=True)
            for n, sentence in enumerate(args.sentences, 1):
                src, tgt, weights = translator.attention(sentence)
                plot_attention(weights.numpy(), src, tgt, Path(args.output) / f"attention-{n}.png")
    except KeyboardInterrupt:
        print("translate: interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        if err.label != "interrupted" or os.environ.get("RANK", "0") == "0":  # said once
            print(f"translate: {err.label}: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
