"""Domain adaptation, measured: a general-domain parent (the Tatoeba recipe's model) fine-tuned
on Multi30k for N minutes against Multi30k from scratch for the same N minutes, the two arms
trained at the same time, one thread each (on 2 cores: the same share of the machine for both). Prints test BLEU (greedy) of every kept checkpoint by training seconds,
the final models' beam-5 test BLEU, and what each keeps on Tatoeba valid (forgetting).

    python -m bench.adapt --parent TATOEBA_MODEL --data-dir MULTI30K_DIR --tatoeba-dir TATOEBA_DIR
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

import sacrebleu
import torch

from translate.decoding import DecodeOptions
from translate.runtime import set_threads
from translate.translator import Translator

from . import repo_env
from .bench import cpu_name

ROOT = Path(__file__).resolve().parent.parent


def read_lines(folder: Path, name: str) -> list[str]:
    path = folder / f"{name}.gz"
    if path.is_file():
        return gzip.open(path, "rt", encoding="utf-8").read().splitlines()
    return (folder / name).read_text(encoding="utf-8").splitlines()


def start(out: Path, args, parent: Path | None) -> subprocess.Popen | None:
    """One arm: the Multi30k attention recipe for --minutes, a checkpoint every --every steps."""
    if (out / "train.done").is_file():
        return None
    command = [
        sys.executable, "-m", "translate", "train", str(args.config), f"out_dir={out}",
        f"data.train={args.data_dir}/train", f"data.dev={args.data_dir}/val",
        f"train.max_minutes={args.minutes}", "train.max_steps=0", "train.max_epochs=1000",
        f"train.valid_every={args.every}", "train.valid_bleu_sentences=0",
        "train.keep_checkpoints=1000", f"train.threads={args.threads}",
    ]  # fmt: skip
    if parent is not None:
        command.append(f"train.init_from={parent}")
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, env=repo_env(), stdout=open(out.with_suffix(".log"), "w"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def bleu(translator: Translator, sources: list[str], refs: list[str], beam: int) -> float:
    options = DecodeOptions(beam=beam, length_penalty=translator.defaults.length_penalty)
    size, hyps = translator.cfg.decode.batch_size, []
    for first in range(0, len(sources), size):
        hyps += [t.text for t in translator.translate_batch(sources[first : first + size], options)]
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from translate.modeldir import load_weights as load

        return load(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def curve(out: Path, sources: list[str], refs: list[str]) -> list[tuple[int, float, float]]:
    """(step, training seconds, greedy test BLEU) of every kept checkpoint."""
    seconds = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "dev_loss" in row:
            seconds[row["step"]] = row["elapsed"]
    translator = Translator.from_dir(out)
    points = []
    for path in sorted((out / "checkpoints").glob("step-*")):
        step = int(path.stem.split("-")[1])
        translator.model.load_state_dict(load_weights(path))
        points.append((step, seconds.get(step, float("nan")), bleu(translator, sources, refs, 1)))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.adapt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--parent", type=Path, required=True, help="the general-domain model")
    parser.add_argument("--data-dir", type=Path, required=True, help="Multi30k's files")
    parser.add_argument("--tatoeba-dir", type=Path, required=True, help="Tatoeba's valid files")
    parser.add_argument("--config", type=Path, default=ROOT / "recipes/multi30k/attention.yaml")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--out", type=Path, default=Path("experiments/adapt"))
    parser.add_argument("--threads", type=int, default=1, help="per arm")
    parser.add_argument("--score-threads", type=int, default=2, help="for the scoring after")
    args = parser.parse_args()
    arms = {"fine-tuned": args.out / "finetuned", "from scratch": args.out / "scratch"}
    running = {out: start(out, args, args.parent if name == "fine-tuned" else None)
               for name, out in arms.items()}  # fmt: skip
    for out, process in running.items():
        if process is not None:
            if process.wait():
                sys.exit(f"adapt.py: training {out} failed; see {out.with_suffix('.log')}")
            (out / "train.done").write_text("done\n")
    set_threads(args.score_threads)
    test_src = read_lines(args.data_dir, "test_2016_flickr.de")
    test_ref = read_lines(args.data_dir, "test_2016_flickr.en")
    tat_src = read_lines(args.tatoeba_dir, "valid.de")
    tat_ref = read_lines(args.tatoeba_dir, "valid.en")
    print(
        f"# {cpu_name()}; {args.minutes:g} minutes per arm, {args.threads} thread(s) each, side by side"
    )
    print("\ntest_2016_flickr greedy BLEU of each checkpoint")
    print("| arm | step | training s | BLEU |\n|---|---:|---:|---:|")
    for name, out in arms.items():
        for step, seconds, score in curve(out, test_src, test_ref):
            print(f"| {name} | {step} | {seconds:.0f} | {score:.2f} |")
    print("\nfinal (best dev loss) models, beam 5")
    print("| model | test_2016_flickr BLEU | Tatoeba valid BLEU |\n|---|---:|---:|")
    for name, out in {"parent (Tatoeba)": args.parent, **arms}.items():
        translator = Translator.from_dir(out)
        row = [bleu(translator, test_src, test_ref, 5), bleu(translator, tat_src, tat_ref, 5)]
        print(f"| {name} | {row[0]:.2f} | {row[1]:.2f} |")


if __name__ == "__main__":
    main()
