"""Ensembles against their members, side by side in one run: sacreBLEU and chrF of each single
model and of ensembles of the first 2, 3, ... models on a split, and sentences/s of each (the
whole split in the model's batches, best of --reps timed passes, systems interleaved).

    python -m bench.ensemble --data-dir MULTI30K_DIR -m MODEL_A -m MODEL_B [-m MODEL_C]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import sacrebleu
import torch

from translate.decoding import DecodeOptions
from translate.runtime import set_threads
from translate.translator import Translator

from .bench import cpu_name


def read_lines(folder: Path, name: str) -> list[str]:
    """DIR/NAME.gz or DIR/NAME, one sentence a line."""
    path = folder / f"{name}.gz"
    if path.is_file():
        return gzip.open(path, "rt", encoding="utf-8").read().splitlines()
    return (folder / name).read_text(encoding="utf-8").splitlines()


def translate_all(translator: Translator, sources: list[str], options: DecodeOptions) -> list[str]:
    size = translator.cfg.decode.batch_size
    out: list[str] = []
    for first in range(0, len(sources), size):
        out += [t.text for t in translator.translate_batch(sources[first : first + size], options)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ensemble",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with SPLIT.SRC/.TGT")
    parser.add_argument("-m", "--model", action="append", required=True, help="a model directory")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--beams", default="5,1", help="comma-separated beam sizes")
    parser.add_argument("--reps", type=int, default=2, help="timed passes per system (best kept)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    first = Translator.from_dir(args.model[0])
    src, tgt = first.cfg.data.src_lang, first.cfg.data.tgt_lang
    sources = read_lines(args.data_dir, f"{args.split}.{src}")
    references = read_lines(args.data_dir, f"{args.split}.{tgt}")
    systems: dict[str, Translator] = {m: Translator.from_dir(m) for m in args.model}
    for k in range(2, len(args.model) + 1):
        systems[f"ensemble of {k}"] = Translator.from_dirs(args.model[:k])
    print(
        f"# {cpu_name()}, {args.threads} threads; {args.split} {src}->{tgt}, {len(sources)} lines"
    )
    for beam in (int(b) for b in args.beams.split(",")):
        options = DecodeOptions(beam=beam, length_penalty=first.defaults.length_penalty)
        rates: dict[str, float] = {}
        scores: dict[str, tuple[float, float]] = {}
        for rep in range(args.reps):
            names = list(systems) if rep % 2 == 0 else list(reversed(systems))
            for name in names:
                started = time.perf_counter()
                hyps = translate_all(systems[name], sources, options)
                rate = len(sources) / (time.perf_counter() - started)
                rates[name] = max(rates.get(name, 0.0), rate)
                bleu = sacrebleu.corpus_bleu(hyps, [references]).score
                chrf = sacrebleu.corpus_chrf(hyps, [references]).score
                scores[name] = (bleu, chrf)
        best_single = max(rates[m] for m in args.model)
        print(f"\nbeam {beam}, length penalty {options.length_penalty}")
        print("| system | BLEU | chrF | sentences/s | speed vs fastest single |")
        print("|---|---:|---:|---:|---:|")
        for name in systems:
            bleu, chrf = scores[name]
            print(
                f"| {name} | {bleu:.2f} | {chrf:.2f} | {rates[name]:.1f} | "
                f"{rates[name] / best_single:.2f} |"
            )


if __name__ == "__main__":
    main()
