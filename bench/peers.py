"""OpenNMT-py, JoeyNMT and fairseq, the RNN toolkits users pick instead of ours, trained and
decoded side by side on Multi30k De->En with the same subword data and model sizes: training
target tokens/s, steps and seconds, decoding sentences/s and BLEU.

Each toolkit runs in its own virtual environment (:mod:`bench.peer_runs`), all read the same
pre-tokenized files and their output is scored the same way (:mod:`bench.peer_data`), and
every hyperparameter is a field of a named set-up (:mod:`bench.peer_setups`); :data:`PEERS`
says which toolkit runs which set-up. Speeds are the toolkits' own figures: training target
tokens/s from the rates they log per window of steps (the first window dropped), decoding time
as they report it (model loading excluded). ``--minutes`` counts from the start of each
training loop, as ours does; then the peer is interrupted and its last checkpoint decodes the
test set. Threads: OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .fairseq import setup_fairseq, train_fairseq, translate_fairseq
from .joeynmt import setup_joeynmt, train_joeynmt, translate_joeynmt
from .opennmt import setup_opennmt, train_opennmt, translate_opennmt
from .peer_data import prepare_data
from .peer_runs import DEFAULT_CACHE, PeerError
from .peer_setups import SETUPS, shared_vocab_size

TOOLKITS: dict[str, tuple[Callable, Callable, Callable]] = {
    "opennmt": (setup_opennmt, train_opennmt, translate_opennmt),
    "joeynmt": (setup_joeynmt, train_joeynmt, translate_joeynmt),
    "fairseq": (setup_fairseq, train_fairseq, translate_fairseq),
}
PEERS: dict[str, tuple[str, str]] = {  # a row of the table: (toolkit, set-up)
    "opennmt": ("opennmt", "bench"),
    "opennmt_noattn": ("opennmt", "bench_noattn"),
    "joeynmt": ("joeynmt", "bench"),
    "fairseq": ("fairseq", "bench"),
    "fairseq_noattn": ("fairseq", "bench_noattn"),
}
DEFAULT_PEERS = ["opennmt", "joeynmt", "fairseq", "fairseq_noattn"]


def measure(
    data_dir: Path,
    workdir: Path,
    minutes: float | None = 2.0,
    threads: int = 2,
    *,
    steps: int | None = None,
    test_sentences: int | None = None,
    batch_size: int | None = None,
    peers: list[str] | None = None,
    cache: Path = DEFAULT_CACHE,
) -> dict[str, dict]:
    """Train and decode ``peers`` (default: :data:`DEFAULT_PEERS`), each with its set-up
    (``batch_size`` replacing theirs: the smoke run's); rows ``{peer}_train`` and
    ``{peer}_beam{beam}`` in the shape bench/bench.py prints, or ``{"error": ...}`` for a step
    that failed. All are installed before any trains."""
    names = list(peers or DEFAULT_PEERS)
    vocab_size = shared_vocab_size([SETUPS[PEERS[name][1]] for name in names])
    results: dict[str, dict] = {}
    for name in names:
        try:
            TOOLKITS[PEERS[name][0]][0](cache)
        except (PeerError, subprocess.CalledProcessError, OSError) as err:
            results[f"{name}_train"] = {"error": f"installing: {err}"}
    workdir = Path(workdir).resolve()
    data = prepare_data(Path(data_dir), workdir, test_sentences, threads, vocab_size=vocab_size)
    budget = {"minutes": None, "steps": steps} if steps else {"minutes": minutes, "steps": None}
    for name in names:
        if f"{name}_train" in results:
            continue
        toolkit, setup_name = PEERS[name]
        _, train, translate = TOOLKITS[toolkit]
        setup = SETUPS[setup_name]
        if batch_size:
            setup = replace(setup, batch_size=batch_size)
        print(f"peers: training {name} in {workdir / name}", file=sys.stderr, flush=True)
        try:
            trained = train(
                workdir / name, data, **budget, threads=threads, setup=setup, cache=cache
            )
            results[f"{name}_train"] = {**trained, "model": str(trained["model"])}
            print(f"peers: decoding with {name}", file=sys.stderr, flush=True)
            row = translate(
                trained["model"], data.test_src, None, threads, setup=setup, cache=cache
            )
            results[f"{name}_beam{setup.beam}"] = row
        except (PeerError, subprocess.CalledProcessError, OSError) as err:
            key = f"{name}_beam{setup.beam}" if f"{name}_train" in results else f"{name}_train"
            results[key] = {"error": str(err)}
    return results


def print_table(results: dict[str, dict]) -> None:
    """One line per peer: training speed and length, decoding speed and BLEU."""
    print(f"{'system':14s} {'tgt tok/s':>10} {'steps':>6} {'train s':>8} {'sent/s':>7} {'BLEU':>6}")
    signatures = set()
    for name in PEERS:
        if f"{name}_train" not in results:
            continue  # not measured
        train = results.get(f"{name}_train", {})
        decode = next((v for k, v in results.items() if k.startswith(f"{name}_beam")), {})
        for row in (train, decode):
            if "error" in row:
                print(f"{name:14s} error: {row['error']}")
        if "error" in train:
            continue
        line = f"{name:14s} {train['tgt_tokens_per_s']:10.0f} {train['steps']:6d}"
        line += f" {train['wall_s']:8.0f}"
        if "bleu" in decode:
            line += f" {decode['sentences_per_s']:7.1f} {decode['bleu']:6.2f}"
            signatures.add(decode["signature"])
        print(line)
    for signature in sorted(signatures):
        print(f"BLEU: {signature}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument(
        "--workdir", help="where data, models and logs go (default: a new temp dir)"
    )
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="the virtual environments")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per peer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=list(PEERS),
        help=f"the peers to measure (default: {' '.join(DEFAULT_PEERS)})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the wiring: 20 steps of 1000 tokens, 50 test sentences",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="peers-"))
    print(f"work directory: {workdir}", flush=True)
    if args.smoke:
        results = measure(
            args.data_dir,
            workdir,
            threads=args.threads,
            steps=20,
            test_sentences=50,
            batch_size=1000,
            peers=args.peers,
            cache=Path(args.cache),
        )
    else:
        results = measure(
            args.data_dir,
            workdir,
            args.minutes,
            args.threads,
            peers=args.peers,
            cache=Path(args.cache),
        )
    print_table(results)


if __name__ == "__main__":
    main()
