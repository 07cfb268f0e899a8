"""ONNX Runtime against ours in PyTorch, side by side in one run: the exported graphs (fp32 and
int8, translate.export) and the PyTorch model (fp32, --quantize int8, and bf16 where the CPU has
bf16 units), one sentence at a time (latency: median and p90) and the whole file in the model's
batches (sentences/s), greedy and beam; each system's identical lines against PyTorch fp32 and its BLEU against a reference;
the export's size on disk and the install size of torch and of onnxruntime.

    python -m bench.onnx_speed -m MODEL --src test.de --ref test.en [--export OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import sacrebleu

from translate.decoding import DecodeOptions
from translate.export.directory import export_model
from translate.export.engine import OnnxTranslator
from translate.export.manifest import MANIFEST, read_manifest
from translate.runtime import cpu_bf16_speedup, set_threads
from translate.translator import Translator

from .bench import cpu_name

WEIGHT_FILES = ("model.safetensors", "model.pt")


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def install_size(module: str) -> int:
    """Bytes of an installed package's folder (its site-packages directory), 0 if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return 0
    return sum(folder_size(Path(p)) for p in spec.submodule_search_locations)


def export_sizes(export_dir: Path) -> dict[str, int]:
    """Bytes of what each precision needs: its two graphs and the SentencePiece model(s)."""
    manifest = read_manifest(export_dir)
    spm = sum(folder_size(p) for p in set(manifest.spm_paths()))
    return {
        precision: spm + sum(folder_size(export_dir / name) for name in graphs.values())
        for precision, graphs in manifest.data["graphs"].items()
    }


def bf16_row(model: Path) -> dict:
    """PyTorch under bf16 autocast, on a CPU whose bf16 units make it fast (else no row: an
    emulated bf16 is tens of times slower than fp32 and measures nothing a user would run)."""
    if cpu_bf16_speedup() < 1.3:  # as dtype auto decides
        return {}
    return {"PyTorch bf16": Translator.from_dir(model, device="cpu", dtype="bf16")}


def latency(system, lines: list[str], options: DecodeOptions) -> tuple[float, float]:
    """Median and 90th percentile milliseconds to translate one line."""
    times = []
    for line in lines:
        started = time.perf_counter()
        system.translate_batch([line], options)
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]


def throughput(system, lines: list[str], options: DecodeOptions) -> tuple[float, list[str]]:
    """Sentences per second over all lines (batched as the model's batch size says), and the
    translations."""
    started = time.perf_counter()
    out = [t.text for t in system.translate_batch(lines, options)]
    return len(lines) / (time.perf_counter() - started), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.onnx_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", type=Path, required=True, help="a model directory")
    parser.add_argument("--src", type=Path, required=True, help="source sentences, one a line")
    parser.add_argument("--ref", type=Path, required=True, help="their reference translations")
    parser.add_argument(
        "--export", type=Path, help="its export (made here if it holds none; default: a temp dir)"
    )
    parser.add_argument("--beams", default="5,1", help="comma-separated beam sizes (1: greedy)")
    parser.add_argument("--latency-lines", type=int, default=200, help="lines timed one by one")
    parser.add_argument("--threads", type=int, default=2, help="threads of every system")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        export_dir = args.export or Path(temp) / "export"
        if not (export_dir / MANIFEST).is_file():
            export_model(args.model, export_dir)
        run(args, export_dir)


def run(args, export_dir: Path) -> None:
    sources = args.src.read_text(encoding="utf-8").splitlines()
    references = args.ref.read_text(encoding="utf-8").splitlines()
    systems = {
        "PyTorch fp32": Translator.from_dir(args.model, device="cpu"),
        "PyTorch int8": Translator.from_dir(args.model, device="cpu", quantize="int8"),
        **bf16_row(args.model),
        "ONNX Runtime fp32": OnnxTranslator.from_dir(export_dir, threads=args.threads),
        "ONNX Runtime int8": OnnxTranslator.from_dir(export_dir, int8=True, threads=args.threads),
    }
    alpha = systems["PyTorch fp32"].defaults.length_penalty
    print(f"# {cpu_name()}, {args.threads} threads; {args.src.name}: {len(sources)} lines")
    print(f"# model {args.model}, export {export_dir}; length penalty {alpha}")
    print()
    print(
        "| system | beam | latency median (ms) | p90 (ms) | sentences/s | identical to PyTorch fp32 | BLEU |"
    )
    print("|---|---|---|---|---|---|---|")
    for beam in (int(b) for b in args.beams.split(",")):
        options = DecodeOptions(beam=beam, length_penalty=alpha)
        outputs = {}
        for name, system in systems.items():
            system.translate_batch(sources[:8], options)  # warm-up: first calls allocate
            median, p90 = latency(system, sources[: args.latency_lines], options)
            rate, outputs[name] = throughput(system, sources, options)
            same = sum(a == b for a, b in zip(outputs[name], outputs["PyTorch fp32"]))
            bleu = sacrebleu.corpus_bleu(outputs[name], [references]).score
            print(
                f"| {name} | {beam} | {median:.1f} | {p90:.1f} | {rate:.1f} | "
                f"{same}/{len(sources)} | {bleu:.2f} |"
            )
    sizes = export_sizes(export_dir)
    print()
    print("| on disk | MB |")
    print("|---|---|")
    for precision, size in sizes.items():
        print(f"| export, {precision} graphs + SentencePiece | {size / 1e6:.1f} |")
    weights = next((p for p in WEIGHT_FILES if (args.model / p).is_file()), None)
    if weights is not None:  # older model directories keep them in model.pt
        print(
            f"| model directory's weights ({weights}) | {folder_size(args.model / weights) / 1e6:.1f} |"
        )
    for module in ("torch", "onnxruntime", "numpy", "sentencepiece"):
        print(f"| installed {module} | {install_size(module) / 1e6:.0f} |")


if __name__ == "__main__":
    main()
