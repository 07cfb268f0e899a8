"""The command line's parser: every subcommand with its arguments (their types and actions:
:mod:`.arguments`). Nothing here imports torch, so that --help starts at once."""

from __future__ import annotations

import argparse
import dataclasses

from ..decoding import add_decoding_flags, flag_type
from ..output import CHUNK_LINES
from ..serve.options import ServeOptions
from .arguments import (
    EXAMPLES,
    TRANSLATE_FORMAT,
    OneModel,
    ShowVersion,
    checkpoint_count,
    non_negative_float,
    non_negative_int,
    port_number,
    positive_float,
    positive_int,
)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (sections: data, model, train, decode)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override config values, e.g. train.lr=0.0005 model.cell=lstm out_dir=exp/run1",
    )


def add_models(parser: argparse.ArgumentParser, what: str) -> None:
    """``-m`` given once or more: one model directory, or the members of an ensemble."""
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help=f"{what}; given again (-m A -m B ...), an ensemble: the models' log-probabilities "
        "are averaged at each step; they must share their SentencePiece pieces and may differ "
        "in architecture; the decoding defaults, length limits and batch size are the first "
        "model's",
    )


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--dtype, --quantize, --threads and --device: how a loaded model runs, for translate and
    serve alike."""
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16", "auto"],
        default="fp32",
        help="for every model given: bf16 runs the search under bf16 autocast (fast on GPUs "
        "and on CPUs with AMX or AVX-512 BF16, slow elsewhere); fp16: GPU only; auto: bf16 "
        "where it is fast",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: dynamic quantization of linear and recurrent layers (CPU); activations are "
        "quantized per batch, so a sentence's translation can change with the sentences "
        "batched with it",
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="CPU threads (0, the default: all cores)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="torch (the default): -m names model directories, run in PyTorch; onnx: -m names "
        "one folder written by 'translate export', run in ONNX Runtime without torch (CPU, "
        "fp32, or its int8 graphs with --quantize int8; greedy and beam search, n-best; no "
        "sampling or alignments)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="translate",
        description="RNN neural machine translation: SentencePiece, training, search, BLEU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=ShowVersion, help="show the versions of translate, torch and Python"
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
    _export_parser(sub)
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
        "model (by dev BLEU) is kept in out_dir/model.safetensors; metrics go to "
        "out_dir/metrics.jsonl. A run resumes from out_dir/checkpoint.pt by itself. Several processes or machines: "
        "torchrun --nproc_per_node N -m translate train CONFIG (train.batch_tokens is the "
        "batch of all of them together; gloo on CPUs, NCCL when every process has a GPU).",
    )
    _add_config_args(train)


def _translate_parser(sub) -> None:
    tr = sub.add_parser(
        "translate",
        help="translate lines from a file or stdin",
        description=TRANSLATE_FORMAT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_models(
        tr, "model directory written by 'train' (--engine onnx: a folder written by 'export')"
    )
    tr.add_argument("-i", "--input", help="input file (default: stdin)")
    tr.add_argument(
        "-o",
        "--output",
        help="output file (default: stdout). A file is written as OUTPUT.tmp and renamed over "
        "it when complete (never half-written); a device or FIFO (/dev/null, a pipe) is written "
        "in place; a symlink's target is written so, and the link kept",
    )
    add_decoding_flags(tr)
    add_runtime_options(tr)
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue the partly written OUTPUT.tmp that an interrupted run left (a regular "
        "file's), after its whole lines; give the interrupted run's flags. A sampled "
        f"(--sample) output is continued from a multiple of {CHUNK_LINES} lines, so that it is "
        "what an uninterrupted run writes",
    )
    tr.add_argument(
        "--replace-bad-utf8",
        action="store_true",
        help="translate lines with invalid UTF-8 (bad bytes become U+FFFD) instead of stopping",
    )
    tr.add_argument(
        "--scores",
        action="store_true",
        help="write rows 'LINE ||| TEXT ||| SCORE' (see above) instead of plain text: SCORE is "
        "the translation's log-probability (EOS included) divided by the length penalty "
        "((5 + length) / 6) ** ALPHA, whichever the search (greedy, beam, --sample); see "
        "--length-penalty",
    )


def _tune_parser(sub) -> None:
    tu = sub.add_parser(
        "tune",
        help="pick beam size and length penalty on the dev set",
        description="Translate the dev set with each beam size and length "
        "penalty, report BLEU, and write the best pair into MODEL/config.yaml. An ensemble "
        "(-m given more than once) is tuned as a whole and its choice is only reported: "
        "pass it to translate or serve as --beam and --length-penalty.",
    )
    add_models(tu, "model directory")
    tu.add_argument("--src", required=True, help="dev source file")
    tu.add_argument("--ref", required=True, help="dev reference file")
    tu.add_argument(
        "--beams",
        type=flag_type("beam", int, listed=True),
        default="1,3,5,8",
        help="beam sizes, comma-separated (default: %(default)s)",
    )
    tu.add_argument(
        "--alphas",
        type=flag_type("length_penalty", float, listed=True),
        default="0,0.5,1,1.5",
        help="length penalties, comma-separated; beam 1 uses none: it is tried once and, if "
        "it wins, the model's length penalty is kept (default: %(default)s)",
    )


def _average_parser(sub) -> None:
    av = sub.add_parser(
        "average",
        help="average the last N checkpoints into model.safetensors",
        description="Average the weights of the N most recent checkpoints in "
        "MODEL/checkpoints (train with train.keep_checkpoints=N) into "
        "MODEL/model.safetensors; the weights training chose are kept as "
        "model.single.safetensors.",
    )
    av.add_argument("-m", "--model", action=OneModel, required=True, help="model directory")
    av.add_argument(
        "-n", "--last", type=checkpoint_count, default=5, help="how many, >= 2 (default: 5)"
    )


def _score_parser(sub) -> None:
    sc = sub.add_parser(
        "score",
        help="BLEU and chrF (and TER) of hypothesis files, with sacrebleu signatures",
        description="Score detokenized hypotheses against one reference file with sacrebleu "
        "(BLEU with the 13a tokenizer, chrF; every file must have the same number of lines) "
        "and print the scores. With several systems, the first is the baseline of "
        "--paired-bs.",
    )
    sc.add_argument("-r", "--ref", required=True, help="reference file")
    sc.add_argument("hyp", nargs="+", help="hypothesis file(s)")
    sc.add_argument("--ter", action="store_true", help="also compute TER")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    sc.add_argument(
        "--paired-bs",
        type=positive_int,
        metavar="N",
        nargs="?",
        const=1000,
        help="paired bootstrap resampling (N samples, default 1000) of each system "
        "against the first, with p-values",
    )
    sc.add_argument("--src", help="source file: adds BLEU by source-length bucket")
    sc.add_argument(
        "-o",
        "--output",
        "--plot",
        metavar="PNG",
        help="with --src: the file to draw BLEU by source length into, as a PNG chart (the "
        "scores themselves are printed; --plot is this option's earlier name)",
    )


def _plot_parser(sub) -> None:
    pl = sub.add_parser(
        "plot",
        help="training curves of a model directory as a PNG",
        description="Draw loss, dev BLEU and learning rate from metrics.jsonl.",
    )
    pl.add_argument("-m", "--model", action=OneModel, required=True, help="model directory")
    pl.add_argument("-o", "--output", required=True, metavar="PNG", help="the PNG file to write")


def _serve_parser(sub) -> None:
    sv = sub.add_parser(
        "serve",
        help="an HTTP translation service: JSON API and a web page (pip install 'translate[serve]')",
        description='Load the model once and answer POST /translate {"text": [...]} (GET '
        "/health, GET /model, and a page at /). Sentences of concurrent requests with the same "
        "options are decoded together in length-sorted batches. SIGTERM or Ctrl-C stops "
        "accepting connections, finishes the requests in flight, then exits.",
    )
    add_models(
        sv, "model directory written by 'train' (--engine onnx: a folder written by 'export')"
    )
    sv.add_argument(
        "--host",
        help="address to listen on (default: %(default)s; 127.0.0.1: this machine "
        "only; 0.0.0.0: all)",
    )
    sv.add_argument("--port", type=port_number, help="default: %(default)s; 0: any free port")
    add_decoding_flags(sv, for_requests=True)
    add_runtime_options(sv)
    limits = sv.add_argument_group("limits, batching and time-outs")
    for flag, kind, what in (
        ("--max-sentences", positive_int, "sentences per request, else 413"),
        ("--max-bytes", positive_int, "request body size, else 413"),
        (
            "--max-request-work",
            positive_int,
            "work one request may ask for: over its sentences, beam (or samples) x (source "
            "subwords + 1); beyond it 413, so that one request cannot hold the server for long",
        ),
        (
            "--max-attention-cells",
            positive_int,
            "attention weights one request may ask back: over its sentences, n_best x the "
            "longest allowed translation x (source subwords + 1); beyond it 413",
        ),
        ("--max-batch-sentences", positive_int, "sentences decoded together at most (1: none)"),
        (
            "--max-batch-tokens",
            positive_int,
            "source subwords decoded together at most, counted at the default beam (a sentence "
            "of a request with a beam K times as wide counts K times); larger requests are "
            "decoded in slices, taking turns with other requests",
        ),
        ("--batch-wait-ms", non_negative_float, "how long a sentence waits for company"),
        (
            "--max-queued-sentences",
            positive_int,
            "sentences of all requests waiting to be decoded at most; a request that would go "
            "beyond gets 503 with Retry-After",
        ),
        (
            "--read-timeout",
            positive_float,
            "seconds a client has to send a request's head (from connecting, or from its last "
            "answer) and then its body; a slower one is dropped, or answered 408",
        ),
        (
            "--shutdown-timeout",
            non_negative_float,
            "seconds the requests in flight get after SIGTERM; those still unfinished are "
            "answered 503",
        ),
    ):
        limits.add_argument(flag, type=kind, help=what + " (default: %(default)s)")
    sv.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no line per request on stderr (method, path, status, sentences, milliseconds)",
    )
    sv.set_defaults(**dataclasses.asdict(ServeOptions()))  # the defaults are ServeOptions'


def _attention_parser(sub) -> None:
    at = sub.add_parser(
        "attention",
        help="attention heatmaps (PNG) for chosen sentences",
        description="Translate each sentence and draw the attention weights the model used: "
        "-o FILE.png for one sentence, --out-dir DIR for any number (DIR/attention-N.png, N "
        "the sentence's place: its argument, or its line of the input; blank lines skipped). "
        "The sentences are the arguments, else the lines of -i FILE, else of stdin.",
    )
    add_models(
        at,
        "model directory with attention (an ensemble draws the mean attention of its models "
        "that have it)",
    )
    where = at.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="PNG", help="the PNG file of one sentence")
    where.add_argument(
        "--out-dir", metavar="DIR", help="the folder to write attention-N.png into (made if new)"
    )
    at.add_argument("-i", "--input", help="a file of sentences, one a line ('-': stdin)")
    at.add_argument("sentences", nargs="*", help="source sentences")


def _export_parser(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="the model as ONNX graphs, to translate without PyTorch and in a browser",
        description="Write the model's encoder and one decoder step as ONNX graphs (fp32, and "
        "int8 through ONNX Runtime's dynamic quantization), its SentencePiece model(s) and a "
        "manifest.json into OUT, after checking the graphs against the model. OUT translates "
        "with 'translate translate --engine onnx -m OUT' (or serve), which needs only "
        "onnxruntime, sentencepiece and numpy. --web DIR also writes a static folder whose "
        "page translates in the browser (ONNX Runtime Web and SentencePiece in WebAssembly, "
        "from the npm registry at pinned versions: npm is needed once, then they are cached).",
    )
    ex.add_argument("-m", "--model", action=OneModel, required=True, help="model directory")
    ex.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the export folder: new, empty, or an earlier export (replaced once the new one "
        "is complete)",
    )
    ex.add_argument(
        "--no-int8", dest="int8", action="store_false", help="write the fp32 graphs only"
    )
    ex.add_argument(
        "--web",
        metavar="DIR",
        help="also write a page folder that translates in the browser into DIR (new or empty), "
        "with the int8 graphs (fp32 with --no-int8); serve it as static files",
    )
