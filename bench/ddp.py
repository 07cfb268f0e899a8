"""Scaling on one CPU machine: training tokens/s of 1 process against 2 gloo processes under
torchrun, and the share of a step the gradient exchange takes.

Rows, each `translate train` on Multi30k at the bench's context-vector sizes (bench/bench.py's
SIZES, fp32) for --steps steps, the same global batches of 4000 tokens: one process with 2
threads, one with 1 thread, and `torchrun --nproc_per_node 2` with 1 thread each (each rank
computes half of every batch). Tokens/s is the median of the logged 10-step windows after the
first. The exchange is timed alone: an all-reduce of every gradient (one flat fp32 tensor of
the model's parameter count) between the 2 processes, the median of 20, as a share of the
2-process step. DDP overlaps its buckets with the backward pass, so this is an upper bound on
the time the exchange adds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ROOT, repo_env
from .bench import SIZES

ROWS = [  # name, processes, threads per process
    ("1 process, 2 threads", 1, 2),
    ("1 process, 1 thread", 1, 1),
    ("2 gloo processes, 1 thread each", 2, 1),
]


def train(data_dir: Path, out: Path, processes: int, threads: int, steps: int) -> list[dict]:
    """One training run; the metrics it logged."""
    overrides = [
        *SIZES,
        "model.tie_source_embedding=false",  # the recipe's; the bench's sizes untie the tables
        "train.dtype=fp32",
        f"train.threads={threads}",
        f"train.max_steps={steps}",
        "train.max_minutes=0",
        "train.log_every=10",
        f"train.valid_every={steps * 10}",
        f"out_dir={out}",
        f"data.train={data_dir}/train",
        f"data.dev={data_dir}/val",
    ]
    config = ROOT / "recipes/multi30k/config.yaml"
    if processes == 1:
        command = [sys.executable, "-m", "translate", "train", str(config), *overrides]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={processes}", "-m", "translate", "train", str(config)]
        command += overrides
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"ddp.py: training failed:\n{done.stderr[-3000:]}")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"tgt_tok_s"' in line]


def exchange_ms(model_file: Path) -> float:
    """Median milliseconds of an all-reduce of every gradient between 2 gloo processes."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "bench.ddp", "--worker", str(model_file)],
        env=dict(repo_env(), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"ddp.py: the all-reduce worker failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split("EXCHANGE_MS")[1].split()[0])


def worker(model_file: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from translate.modeldir import load_weights

    weights = load_weights(model_file)
    flat = torch.zeros(sum(w.numel() for w in weights.values() if w.is_floating_point()))
    times = []
    for _ in range(23):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(f"EXCHANGE_MS {1000 * statistics.median(times[3:]):.2f} PARAMS {flat.numel()}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ddp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, help="folder with the Multi30k .gz files")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--work", type=Path, help="experiment folders (default: a temp dir)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if not args.data_dir:
        parser.error("--data-dir is required")
    work = args.work or Path(tempfile.mkdtemp(prefix="translate-ddp-"))
    rows, first = [], None
    for name, processes, threads in ROWS:
        out = work / f"p{processes}t{threads}"
        shutil.rmtree(out, ignore_errors=True)
        if first:  # the same pieces and prepared data: only the first run prepares
            out.mkdir(parents=True)
            shutil.copy(first / "spm.model", out)
            shutil.copytree(first / "prepared", out / "prepared")
        print(f"training: {name}", file=sys.stderr)
        windows = train(args.data_dir, out, processes, threads, args.steps)
        first = first or out
        tok_s = statistics.median(w["tgt_tok_s"] for w in windows[1:])
        rows.append((name, processes, tok_s, windows))
    base = rows[0][2]
    print(f"\n{'':34} {'target tok/s':>12} {'vs 1 process, 2 threads':>24}")
    for name, _, tok_s, _ in rows:
        print(f"{name:34} {tok_s:>12,.0f} {tok_s / base:>23.2f}x")
    ms = exchange_ms(work / "p2t1" / "model.safetensors")
    windows = rows[2][3]
    step_ms = statistics.median(
        1000 * (b["elapsed"] - a["elapsed"]) / (b["step"] - a["step"])
        for a, b in zip(windows[1:], windows[2:])
    )
    print(f"\nall-reduce of every gradient alone, 2 processes: {ms:.1f} ms,", end=" ")
    print(f"{ms / step_ms:.1%} of a 2-process step ({step_ms:.0f} ms)")


if __name__ == "__main__":
    main()
