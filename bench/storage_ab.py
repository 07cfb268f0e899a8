"""A/B in one run: training tokens/s with the ids gathered from the memory-mapped Arrow shards
(the training path) against the same ids held in Python lists (how training held them before).

The bench's context-vector model (bench/bench.py's SIZES, fp32, 2 threads) trains the same
batches both ways, each measurement in its own process, alternating which goes first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import repo_env
from .bench import SIZES


def measure(data_dir: Path, out: Path, steps: int, lists: bool) -> dict:
    args = {
        "threads": 2,
        "steps": steps,
        "naive": False,
        "in_memory": lists,
        "overrides": [
            f"out_dir={out}",
            f"data.train={data_dir}/train",
            f"data.dev={data_dir}/val",
            *SIZES,
            "train.dtype=fp32",
        ],
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench", "--worker", "train", json.dumps(args)],
        capture_output=True,
        text=True,
        env=repo_env(),
    )
    if done.returncode:
        sys.exit(f"storage_ab.py: the training worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="the Multi30k .gz files")
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="translate-storage-ab-"))  # prepared once, then reused
    rates: dict[str, list[float]] = {"arrow": [], "lists": []}
    for rep in range(args.reps):
        for mode in ("arrow", "lists") if rep % 2 == 0 else ("lists", "arrow"):
            row = measure(args.data_dir, out, args.steps, mode == "lists")
            rates[mode].append(row["tgt_tokens_per_s"])
            print(f"rep {rep} {mode:6s} {row['tgt_tokens_per_s']:7.0f} tok/s", file=sys.stderr)
    for mode, values in rates.items():
        shown = " ".join(f"{v:.0f}" for v in values)
        print(f"{mode:6s} median {statistics.median(values):7.0f} target tok/s  ({shown})")
    ratio = statistics.median(rates["arrow"]) / statistics.median(rates["lists"])
    print(f"memory-mapped / lists: {ratio:.3f}")


if __name__ == "__main__":
    main()
