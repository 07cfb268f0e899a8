"""The command line's commands: each subcommand parses its arguments and calls the library;
:func:`main` turns what goes wrong into one line and an exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import load_config
from ..decoding import DecodeOptions, options_from_flags
from ..errors import UserError
from ..export.manifest import MANIFEST as EXPORT_MANIFEST
from ..output import Writer, check_output
from ..serve.options import ServeOptions, check_onnx_runtime
from .parser import build_parser

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer a closed pipe ended


def _translate(args: argparse.Namespace) -> None:
    """``translate translate``: the model's decoding options with the flags', into a file or
    stdout, in PyTorch or (``--engine onnx``) in ONNX Runtime."""
    from ..output import translate_file

    output = Path(args.output) if args.output else None
    check_output(output)  # before the model is loaded
    translator = _onnx_engine(args) if args.engine == "onnx" else _torch_engine(args)
    options = options_from_flags(args, translator.defaults)
    translator.check(options)  # what the engine cannot do, before the output is opened
    translate_file(
        translator,
        args.input,
        output,
        options,
        rows=args.scores or args.n_best is not None,  # --alignment: in the options
        resume=args.resume,
        replace_bad_utf8=args.replace_bad_utf8,
        log=_log,
    )


def _torch_engine(args: argparse.Namespace):
    """The Translator of ``-m`` (several: an ensemble), run as the runtime flags say."""
    from ..runtime import set_threads
    from ..translator import Translator

    for model in args.model:
        if (Path(model) / EXPORT_MANIFEST).is_file():
            raise UserError(f"{model} is an ONNX export: translate it with --engine onnx")
    set_threads(args.threads)
    return Translator.from_dirs(
        args.model, device=args.device, dtype=args.dtype, quantize=args.quantize
    )


def _onnx_engine(args: argparse.Namespace):
    """The OnnxTranslator of one export folder (never importing torch); the runtime flags it
    cannot honour are refused rather than ignored."""
    from ..export.engine import OnnxTranslator

    if len(args.model) > 1:
        raise UserError(
            "--engine onnx translates with one export (-m once); ensembles: --engine torch"
        )
    check_onnx_runtime(args.device, args.dtype, args.quantize)
    folder = Path(args.model[0])
    if not (folder / EXPORT_MANIFEST).is_file() and (folder / "config.yaml").is_file():
        raise UserError(
            f"{folder} is a model directory, not an export: translate export -m {folder} -o "
            "OUT writes one, for --engine onnx -m OUT"
        )
    return OnnxTranslator.from_dir(folder, int8=args.quantize == "int8", threads=args.threads)


def _export(args: argparse.Namespace) -> None:
    """``translate export``: the graphs, then (``--web``) the page folder; what the page needs
    from npm is fetched (or found cached) before the slower export, so that a missing npm or
    registry is said at once."""
    from ..export.directory import export_model
    from ..export.web import folder_size, prepare_web, write_web

    output, web = Path(args.output), Path(args.web) if args.web else None
    if web is not None:
        if web.absolute() == output.absolute():
            raise UserError("--web needs a folder of its own, not the export's (-o)")
        prepare_web(web)
    export_model(args.model, output, int8=args.int8)
    precisions = "fp32 and int8" if args.int8 else "fp32"
    _log(f"wrote {output}: {precisions} ONNX graphs, {_megabytes(folder_size(output)[0])}")
    if web is not None:
        write_web(output, web, precision="int8" if args.int8 else "fp32")
        raw, zipped = folder_size(web)
        _log(
            f"wrote {web}: a page that translates in the browser, {_megabytes(raw)} "
            f"({_megabytes(zipped)} gzipped); serve it as static files, e.g. python -m "
            f"http.server -d {web}"
        )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _tune(args: argparse.Namespace) -> None:
    from ..score import read_same_length
    from ..tune import tune_decoding

    sources, refs = read_same_length([args.src, args.ref])
    best = tune_decoding(args.model, sources, refs, args.beams, args.alphas, progress=_log)["best"]
    beam, alpha = best["beam"], best["length_penalty"]
    if len(args.model) == 1:
        where = f"written to {args.model[0]}/config.yaml"
    else:  # no member's own defaults should change for the sake of the ensemble
        where = f"for this ensemble, written nowhere: translate with --beam {beam}"
        where += f" --length-penalty {alpha}" if beam > 1 else ""
    _say(f"best: beam {beam}, length_penalty {alpha}, BLEU {best['bleu']} ({where})")


def _score(args: argparse.Namespace) -> None:
    from ..score import format_report, score_files

    check_output(None)  # the scores go to stdout: refused before the work if it is closed
    result = score_files(args.ref, args.hyp, args.ter, args.paired_bs, args.src, args.output)
    if args.json:
        _say(json.dumps(result[args.hyp[0]] if len(result) == 1 else result))
    else:
        _say(format_report(result, args.hyp))
    if args.output:
        _log(f"wrote {args.output}")


def _attention(args: argparse.Namespace) -> None:
    """``translate attention``: a heatmap per sentence, into -o FILE (one sentence) or
    --out-dir DIR (attention-N.png, N the sentence's place), each refused before the model
    loads where it cannot be written."""
    from ..plots import check_png_path, plot_attention
    from ..translator import Translator

    sentences = _attention_sentences(args)
    if args.output is not None:
        if Path(args.output).is_dir():
            raise UserError(
                f"-o names one PNG file and {args.output} is a folder: --out-dir "
                f"{args.output} writes one attention-N.png per sentence into it"
            )
        if len(sentences) > 1:
            raise UserError(
                f"-o names one PNG file, but there are {len(sentences)} sentences: --out-dir "
                "DIR writes one attention-N.png per sentence"
            )
        paths = [check_png_path(args.output)]
    else:
        folder = Path(args.out_dir)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"cannot write into {folder}: it is not a folder")
        paths = [folder / f"attention-{n}.png" for n in sentences]
    translator = Translator.from_dirs(args.model)
    translator.check(DecodeOptions(attention=True))  # before the folder is made
    if args.out_dir is not None:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for path, sentence in zip(paths, sentences.values()):
        src, tgt, weights = translator.attention(sentence)
        plot_attention(weights.numpy(), src, tgt, path)
    names = [str(p) for p in paths]
    if len(names) > 3:
        names = [names[0], "...", names[-1]]
    _log(f"wrote {len(paths)} attention plot{'s' * (len(paths) > 1)}: {', '.join(names)}")


def _attention_sentences(args: argparse.Namespace) -> dict[int, str]:
    """The sentences of ``translate attention`` by their place, from 1: the arguments (a
    blank one refused), else the non-blank lines of -i FILE or of stdin, by line number."""
    from ..output import input_lines

    if args.sentences:
        if args.input is not None:
            raise UserError("give sentences as arguments or with -i, not both")
        if not all(sentence.strip() for sentence in args.sentences):
            raise UserError("attention needs sentences to translate, got a blank one")
        return dict(enumerate(args.sentences, 1))
    if args.input is None and sys.stdin is not None and sys.stdin.isatty():
        raise UserError("no sentences: give them as arguments, with -i FILE, or on stdin")
    lines = enumerate(input_lines(args.input), 1)
    sentences = {n: line.rstrip("\r\n") for n, line in lines if line.strip()}
    if not sentences:
        raise UserError(f"no sentences to draw: {args.input or 'stdin'} has no non-blank line")
    return sentences


def _run(args: argparse.Namespace) -> None:
    if args.command == "prepare":
        from ..data.prepare import prepare

        prepare(load_config(args.config, args.overrides), log=_log)
    elif args.command == "train":
        from ..train.loop import train

        train(load_config(args.config, args.overrides), log=_log)
    elif args.command == "translate":
        _translate(args)
    elif args.command == "score":
        _score(args)
    elif args.command == "tune":
        _tune(args)
    elif args.command == "average":
        from ..modeldir import WEIGHTS
        from ..train.average import average_checkpoints

        paths = average_checkpoints(args.model, args.last)
        _say(f"averaged {len(paths)} checkpoints into {args.model}/{WEIGHTS}")
    elif args.command == "plot":
        from ..plots import plot_training_curves

        metrics = Path(args.model) / "metrics.jsonl"
        if not Path(args.model).is_dir():
            raise UserError(f"model directory not found: {args.model}")
        if not metrics.is_file():
            raise UserError(f"{metrics} not found")
        plot_training_curves(metrics, args.output)
        _log(f"wrote {args.output}")
    elif args.command == "serve":
        from ..serve.http import serve

        serve(args.model, ServeOptions.from_namespace(args))
    elif args.command == "attention":
        _attention(args)
    elif args.command == "export":
        _export(args)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake or the system's refusal (a full disk, a missing file)
    is one line on stderr and exit status 1, a closed output pipe ends quietly with 141, as
    a shell reports a writer SIGPIPE ended, Ctrl-C ends with 130; usage errors exit with 2."""
    args = build_parser().parse_args(argv)
    try:
        _run(args)
        if sys.stdout is not None:
            Writer(sys.stdout, "stdout").flush()  # a full disk is said here, not at exit
    except KeyboardInterrupt:
        _log("translate: interrupted")
        return 130
    except BrokenPipeError:  # the reader has gone (| head): nothing to say, no one to say it to
        return EXIT_BROKEN_PIPE
    except UserError as err:
        if err.label != "interrupted" or os.environ.get("RANK", "0") == "0":  # said once
            _log(f"translate: {err.label}: {err}")
        return err.exit_code
    except OSError as err:  # what the system refused, where no message of ours names it
        where = f"{err.filename}: " if err.filename else ""
        _log(f"translate: error: {where}{err.strerror or err}")
        return 1
    finally:
        _settle_stdout()
    return 0


def _settle_stdout() -> None:
    """Flush stdout; where it cannot be written (a closed pipe, a full disk), point it at
    /dev/null, so that the interpreter's own flush at exit drops the rest without a word."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _say(text: str) -> None:
    """A result, on stdout: a failed write is one line naming stdout."""
    check_output(None)
    Writer(sys.stdout, "stdout").write(text + "\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
