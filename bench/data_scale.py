"""Data scale: time and peak memory of preparing and training on corpora of growing size, to
show that memory does not grow.

The corpora are Tatoeba's training pairs repeated, each line numbered on both sides so that no
two pairs are alike ("17 Ich habe ..." / "17 I baked ..."); they are written under --work and
never leave it. One SentencePiece model is trained first (on the smallest corpus) and copied
into every experiment, so that each row's prepare time is the encoding alone. Every
measurement runs in its own process: its peak RSS (ru_maxrss of the process and, for prepare,
of its worker processes) is its own, and the peaks of its anonymous and file-backed parts
are sampled from /proc. Training is the bench's context-vector GRU (embeddings 256, state
512, batches of 4000 tokens) in fp32 for --steps steps. At --single-process-size the corpus
is also prepared by one process, once on all cores (SentencePiece encodes with a thread per
core) and once pinned to one core: the two baselines of the workers' speed-up. With
``--repeat N`` each prepare runs N times and its fastest run is kept (the host's speed drifts);
``--steps 0`` measures prepare alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import repo_env

MODEL = [
    "data.vocab_size=8000",
    "data.max_len=80",
    "model.cell=gru",
    "model.emb_dim=256",
    "model.hidden_dim=512",
    "model.attention=none",
    "train.batch_tokens=4000",
    "train.dtype=fp32",
]


def write_corpus(source: Path, folder: Path, pairs: int) -> Path:
    """``pairs`` numbered pairs cycled from the Tatoeba files in ``source``: folder/train.de|en."""
    prefix = folder / "train"
    if (folder / "done").is_file():
        return prefix
    folder.mkdir(parents=True, exist_ok=True)
    de = gzip.open(source / "train.de.gz", "rt", encoding="utf-8").read().splitlines()
    en = gzip.open(source / "train.en.gz", "rt", encoding="utf-8").read().splitlines()
    with open(f"{prefix}.de", "w", encoding="utf-8") as f_de, open(f"{prefix}.en", "w") as f_en:
        for n in range(pairs):
            f_de.write(f"{n} {de[n % len(de)]}\n")
            f_en.write(f"{n} {en[n % len(en)]}\n")
    (folder / "done").touch()
    return prefix


class MemorySampler(threading.Thread):
    """Peak anonymous and file-backed resident memory of this process, read from
    /proc/self/status every 20 ms (Linux): ru_maxrss counts both together, and the file-backed
    part (pages of the memory-mapped training data) is page cache the kernel can drop."""

    def __init__(self):
        super().__init__(daemon=True)
        self.anon = self.file = float("nan")

    def run(self) -> None:
        while True:
            try:
                status = dict(line.split(":", 1) for line in open("/proc/self/status"))
            except OSError:
                return
            anon, file = (int(status[k].split()[0]) / 1024 for k in ("RssAnon", "RssFile"))
            self.anon = anon if self.anon != self.anon else max(self.anon, anon)
            self.file = file if self.file != self.file else max(self.file, file)
            time.sleep(0.02)


def worker(args: dict) -> dict:
    """One measurement in this process: prepare, or train --steps steps."""
    from translate.config import load_config

    if args.get("one_core"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sampler = MemorySampler()
    sampler.start()
    from translate.data.prepare import prepare

    cfg = load_config(None, args["overrides"])
    start = time.perf_counter()  # after the imports (torch's alone takes seconds)
    if args["kind"] == "prepare":
        data = prepare(cfg, log=lambda message: None, workers=args["workers"])
        result = {"seconds": time.perf_counter() - start, "rows": len(data.train)}
    else:
        from translate.train.loop import train  # its speed is read from its log, not timed here

        train(cfg, log=lambda message: None)
        log = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").open()]
        rates = [e["tgt_tok_s"] for e in log if "tgt_tok_s" in e][1:]  # the first window warms up
        result = {"tgt_tok_s": sum(rates) / len(rates)}
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["anon_mib"], result["file_mib"] = sampler.anon, sampler.file
    result["children_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def run_worker(args: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.data_scale", "--worker", json.dumps(args)],
        capture_output=True,
        text=True,
        env=repo_env(),
    )
    if done.returncode != 0:
        raise SystemExit(f"worker failed: {args}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.data_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", help="folder with Tatoeba's train.de/en.gz (required)")
    parser.add_argument("--sizes", default="0.16,1,5", help="millions of pairs, comma-separated")
    parser.add_argument(
        "--steps", type=int, default=200, help="training steps per size (0: prepare only)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each prepare, fastest kept")
    parser.add_argument("--work", default="/tmp/translate-data-scale", help="scratch folder")
    parser.add_argument(
        "--single-process-size",
        type=float,
        default=1.0,
        help="also prepare this size with one process, for the throughput ratio",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not args.data_dir:
        parser.error("--data-dir is required")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.steps < 0:
        parser.error("--steps must be 0 or more")
    work = Path(args.work)
    sizes = [float(s) for s in args.sizes.split(",")]
    source = Path(args.data_dir)
    rows = []
    spm = None
    for size in sizes:
        pairs = int(size * 1_000_000)
        corpus = write_corpus(source, work / f"corpus-{size}M", pairs)
        # 2 workers; and for the ratio one process on both cores (SentencePiece's own threads)
        # and one process on one core
        setups = [(2, False), (1, False), (1, True)]
        for workers, one_core in setups if size == args.single_process_size else setups[:1]:
            out = work / f"exp-{size}M-{workers}{'-1core' if one_core else ''}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            overrides = [f"out_dir={out}", f"data.train={corpus}", *MODEL]
            if spm is None:  # the first size trains SentencePiece, unmeasured
                run_worker({"kind": "prepare", "workers": 2, "overrides": overrides})
                spm = out / "spm.model"  # its prepared data is removed before each run below
            elif not (out / "spm.model").is_file():
                shutil.copyfile(spm, out / "spm.model")
            job = {"kind": "prepare", "workers": workers, "one_core": one_core}
            runs = []
            for _ in range(args.repeat):
                shutil.rmtree(out / "prepared", ignore_errors=True)
                runs.append(run_worker({**job, "overrides": overrides}))
            prep = min(runs, key=lambda run: run["seconds"])
            row = {
                "pairs": pairs,
                "workers": workers,
                "cores": 1 if one_core else len(os.sched_getaffinity(0)),
                "prepare_s": prep["seconds"],
                "lines_per_s": pairs / prep["seconds"],
                "prepare_rss_mib": prep["rss_mib"],
                "worker_rss_mib": prep["children_rss_mib"],
                "disk_mib": folder_mib(out / "prepared"),
            }
            if workers == 2 and args.steps:
                steps = [f"train.max_steps={args.steps}", "train.valid_every=100000"]
                steps += ["train.log_every=20", "train.threads=2"]
                trained = run_worker({"kind": "train", "overrides": [*overrides, *steps]})
                row.update(
                    train_rss_mib=trained["rss_mib"],
                    train_anon_mib=trained["anon_mib"],
                    train_file_mib=trained["file_mib"],
                    tgt_tok_s=trained["tgt_tok_s"],
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
            if size > 1:  # the large prepared sets are measured; keep the disk free
                shutil.rmtree(out / "prepared")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        "?",
    )
    print(f"\nCPU: {cpu}, {os.cpu_count()} cores; memory in MiB (RSS: peak resident; anon and")
    print("file: peaks of its anonymous and its file-backed part, the latter mapped data pages)")
    header = f"{'pairs':>9} {'workers':>7} {'cores':>5} {'prep s':>7} {'lines/s':>8} "
    header += f"{'prep RSS':>8} {'workers RSS':>11} {'disk':>5} {'train RSS':>9} "
    header += f"{'anon':>5} {'file':>5} {'tgt tok/s':>9}"
    print(header)
    nan = float("nan")
    for r in rows:
        print(
            f"{r['pairs']:>9} {r['workers']:>7} {r['cores']:>5} {r['prepare_s']:>7.1f} "
            f"{r['lines_per_s']:>8.0f} {r['prepare_rss_mib']:>8.0f} {r['worker_rss_mib']:>11.0f} "
            f"{r['disk_mib']:>5.0f} {r.get('train_rss_mib', nan):>9.0f} "
            f"{r.get('train_anon_mib', nan):>5.0f} {r.get('train_file_mib', nan):>5.0f} "
            f"{r.get('tgt_tok_s', nan):>9.0f}"
        )
    for r in rows:
        if r["workers"] != 1:
            continue
        two = next(x for x in rows if x["pairs"] == r["pairs"] and x["workers"] == 2)
        print(
            f"prepare throughput at {r['pairs']} pairs, 2 workers / 1 process on "
            f"{r['cores']} core(s): {two['lines_per_s'] / r['lines_per_s']:.2f}x"
        )
    trained = [r for r in rows if "train_rss_mib" in r]
    if len(trained) > 1:
        low, high = trained[0], trained[-1]
        for key, name in [("train_rss_mib", "peak RSS"), ("train_anon_mib", "peak anonymous")]:
            print(
                f"training {name}, {high['pairs']} / {low['pairs']} pairs: "
                f"{high[key] / low[key]:.3f}"
            )


if __name__ == "__main__":
    main()
