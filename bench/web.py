"""The browser page of an export (`translate/export/web.py`), measured in headless Chromium:
the folder's download size, the page's load time, its first translation, its latency per
sentence, and how many of its translations equal the torch-free engine's (OnnxTranslator on the
same int8 graphs, one line at a time as the page goes, same search).

The page runs ONNX Runtime Web's WebAssembly build on one thread (a folder served as plain
static files is not cross-origin isolated, so no threads); the engine runs with one thread too.
Load time counts from the page's start to the model being ready (graphs and SentencePiece
compiled) over loopback, so it leaves out the network; the sizes tell what a network adds.

    python -m bench.web --model MODEL_OR_EXPORT_DIR [--test FILE] [-n 100] [--beam 5]
                        [--precision int8|fp32]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from translate.export.manifest import MANIFEST
from translate.export.web import RUNTIME, folder_size, write_web

from . import ROOT
from .bench import cpu_name

TEST_SET = ROOT.parent / "shared/data/multi30k/test_2016_flickr.de.gz"


def read_lines(path: Path, n: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for _, line in zip(range(n), file)]


def page_folder(model: Path, work: Path, precision: str) -> Path:
    """The page folder of a model directory (exported first) or of an export directory."""
    export = model
    if not (model / MANIFEST).is_file():
        from translate.export.directory import export_model

        export = export_model(model, work / "export")
    return write_web(export, work / "web", precision)


def in_browser(folder: Path, lines: list[str], beam: int, work: Path) -> dict:
    """What the page shows for ``lines`` typed into it, and its timings."""
    from tests.test_web import browser_page, static_server, translate_in_page

    text = "\n".join(lines)
    with static_server(folder) as url, browser_page(work) as open_page:
        return open_page(url, lambda page: translate_in_page(page, text, beam, seconds=3600))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model or export directory")
    parser.add_argument("--test", type=Path, default=TEST_SET, help="source sentences")
    parser.add_argument("-n", type=int, default=100, help="sentences (default: 100)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    args = parser.parse_args(argv)

    from translate.export.engine import OnnxTranslator

    lines = read_lines(args.test, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = page_folder(args.model, work, args.precision)
        raw, zipped = folder_size(folder)
        graphs = sum(p.stat().st_size for p in folder.glob("*.onnx"))
        got = in_browser(folder, lines, args.beam, work)
        engine = OnnxTranslator.from_dir(folder, int8=args.precision == "int8", threads=1)
        options = engine.defaults.override(beam=args.beam)
        wanted, seconds = [], []
        for line in lines:
            start = time.perf_counter()
            wanted.append(engine.translate_batch([line], options)[0].text)
            seconds.append(time.perf_counter() - start)
        runtime = json.loads((folder / RUNTIME).read_text(encoding="utf-8"))
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    browser = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout
    timings, shown = got["timings"], got["shown"]
    per_sentence = sorted(timings["sentences"])
    model = manifest["model"]
    print(
        f"model: {args.model} ({model['cell']}, attention {model['attention']}, hidden "
        f"{model['hidden_dim']}, vocab {manifest['vocab']['tgt_size']}); {args.precision}; "
        f"beam {args.beam}; {len(lines)} sentences of {args.test.name}"
    )
    print(
        f"machine: {cpu_name()}; {browser.strip()} headless; onnxruntime-web "
        f"{runtime['onnxruntime-web']} (WebAssembly, 1 thread)"
    )
    print()
    print("| what | value |")
    print("|---|---|")
    print(
        f"| folder size | {raw / 1e6:.1f} MB ({zipped / 1e6:.1f} MB gzipped); {args.precision} graphs "
        f"{graphs / 1e6:.1f} MB |"
    )
    print(f"| page load (start to model ready) | {timings['load'] / 1000:.2f} s |")
    print(f"| first translation | {timings['first']:.0f} ms |")
    if per_sentence:
        p90 = per_sentence[int(0.9 * (len(per_sentence) - 1))]
        print(
            f"| per sentence, page (median / mean / p90) | {statistics.median(per_sentence):.0f}"
            f" / {statistics.mean(per_sentence):.0f} / {p90:.0f} ms |"
        )
    print(
        f"| per sentence, OnnxTranslator in Python, 1 thread (median) | "
        f"{statistics.median(seconds) * 1000:.0f} ms |"
    )
    same = sum(a == b for a, b in zip(shown, wanted))
    print(f"| translations equal to OnnxTranslator's | {same} of {len(lines)} |")
    if got["error"]:
        print(f"\nthe page said: {got['error']}")
    for i, (a, b) in enumerate(zip(shown, wanted)):
        if a != b:
            print(f"\nline {i + 1}: {lines[i]}\n  page:   {a}\n  engine: {b}")


if __name__ == "__main__":
    main()
