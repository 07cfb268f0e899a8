"""Speed benchmark: ours against a hand-written naive seq2seq and, with --peers, OpenNMT-py,
fairseq and JoeyNMT, like against like: our context-vector model against their models without
attention, our attention model against theirs with attention, at the sizes of the peers' bench
set-up (bench/peer_setups.py).

Each measurement runs in its own process (so peak RSS is its own) with the same thread count.
Ratios within one run are the figures of record: absolute times drift on shared machines. Each
row says the matrix-product FLOPs per target token of its model (bench/flops.py) and the share
of the machine's peak it reaches. bf16 rows are measured only where the CPU runs bf16 faster
than fp32; decoding rows only for the trained models given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import ROOT

# Ours at the sizes of the peers' bench set-up (bench/peer_setups.py): embeddings 256, a
# bidirectional encoder of 2 x 256, a decoder of 512, untied tables, 8k joint pieces, batches
# of 4000 tokens. Ours runs GRUs (OpenNMT-py and fairseq LSTMs: 4 gates to our 3).
SIZES = [
    "data.vocab_size=8000",
    "model.cell=gru",
    "model.emb_dim=256",
    "model.enc_hidden_dim=256",
    "model.hidden_dim=512",
    "model.enc_layers=1",
    "model.dec_layers=1",
    "model.bidirectional=true",
    "model.tie_embeddings=false",
    "model.context_pool=none",
    "model.attention=none",
    "train.batch_tokens=4000",
]
# the two model families, each to be compared with its own kind of peer
FAMILIES = {"context": ["model.attention=none"], "attention": ["model.attention=general"]}
PEER_OF = {  # family: the peers' rows that are like it
    "context": ["opennmt_noattn", "fairseq_noattn"],
    "attention": ["opennmt", "fairseq", "joeynmt"],
}


# the inference variants each decoding row is measured in: worker_decode arguments
DECODE_VARIANTS = {"fp32": {}, "bf16": {"dtype": "bf16"}, "int8": {"quantize": "int8"}}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a square matrix product in ``dtype`` on this process's threads."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def read_gz(path: Path) -> list[str]:
    return gzip.open(path, "rt", encoding="utf-8").read().split("\n")[:-1]


# --- workers: each runs in a child process and prints one JSON line -------------------------


def worker_train(args: dict) -> dict:
    from translate.config import load_config
    from translate.data.batches import pair_batch
    from translate.data.prepare import prepare
    from translate.model.seq2seq import build_model
    from translate.train.loop import adam, batch_loss

    torch.set_num_threads(args["threads"])
    torch.manual_seed(1)
    cfg = load_config(None, args["overrides"])
    data = prepare(cfg, log=lambda m: None)
    batches = data.train.epoch(1, 1, [1.0], cfg.train.batch_tokens)
    if args["naive"]:
        from .naive import NaiveSeq2Seq

        model = NaiveSeq2Seq(len(data.tgt_vocab))
    else:
        model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab))
    # the naive reference: plain Adam, as the tutorials write it; ours: the trainer's
    optimizer = torch.optim.Adam if args["naive"] else adam
    optimizer = optimizer(model.parameters(), lr=1e-3)
    device = torch.device("cpu")

    ids = data.train.ids
    if args.get("in_memory"):  # the ids as Python lists, as training held them before Arrow
        all_src, all_tgt = data.train.ids(np.arange(len(data.train)))
        all_src, all_tgt = [s.tolist() for s in all_src], [t.tolist() for t in all_tgt]

        def ids(rows):
            return [all_src[i] for i in rows], [all_tgt[i] for i in rows]

    def step(rows) -> tuple[int, int, int]:
        batch = pair_batch(*ids(rows))
        if args["naive"]:
            logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)),
                batch.tgt_out.view(-1),
                ignore_index=0,
                reduction="sum",
            )
        else:
            loss = batch_loss(model, batch, device, cfg.train.dtype, 0.1)
        (loss / batch.n_tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch.src_lengths.sum()), batch.n_tgt_tokens, len(batch.src_lengths)

    for chunk in batches[:3]:  # warm-up
        step(chunk)
    src_tokens, tgt_tokens, sentences, start = 0, 0, 0, time.perf_counter()
    for chunk in batches[3 : 3 + args["steps"]]:
        src, tgt, n = step(chunk)
        src_tokens, tgt_tokens, sentences = src_tokens + src, tgt_tokens + tgt, sentences + n
    seconds = time.perf_counter() - start
    return {
        "tgt_tokens_per_s": tgt_tokens / seconds,
        "src_per_tgt": src_tokens / tgt_tokens,
        "src_len": src_tokens / sentences,
    }


def worker_decode(args: dict) -> dict:
    from translate.score import score
    from translate.translator import Translator

    torch.set_num_threads(args["threads"])
    sources = read_gz(Path(args["data_dir"]) / "test_2016_flickr.de.gz")[: args["sentences"]]
    refs = read_gz(Path(args["data_dir"]) / "test_2016_flickr.en.gz")[: args["sentences"]]
    if args["naive"]:
        return naive_decode(args, sources)
    translator = Translator.from_dir(
        args["model"], device="cpu", dtype=args["dtype"], quantize=args["quantize"]
    )
    translator.cfg.decode.drop_finished = args.get("drop_finished", True)
    translator.translate(sources[:20], beam=args["beam"])  # warm-up
    start = time.perf_counter()
    hyps = translator.translate(sources, beam=args["beam"])
    seconds = time.perf_counter() - start
    return {"sentences_per_s": len(sources) / seconds, "bleu": score(hyps, refs)["bleu"]}


def naive_decode(args: dict, sources: list[str]) -> dict:
    """The naive model (weights untrained: only speed counts) one sentence at a time; output
    lengths are fixed to those of our model's translations so both do the same work."""
    from translate.data.vocab import Vocab

    from .naive import NaiveSeq2Seq

    vocab = Vocab.load(Path(args["model"]) / "spm.model")
    model = NaiveSeq2Seq(len(vocab)).eval()
    lengths = [len(vocab.encode([s])[0]) for s in sources]
    start = time.perf_counter()
    for ids, n in zip(vocab.encode(sources), lengths):
        if args["beam"] == 1:
            model.greedy(ids + [3], max_len=n + 1)
        else:
            model.beam(ids + [3], max_len=n + 1, size=args["beam"])
    return {"sentences_per_s": len(sources) / (time.perf_counter() - start)}


def decode_trained_opennmt(workdir: Path, sentences: int, work: Path, threads: int) -> dict:
    """Beam 5 with the newest checkpoint of the OpenNMT-py training a time_to_bleu.py run
    started in ``workdir`` (its ``--minutes``; a continuation lives in another folder), on the
    first ``sentences`` test sentences in that run's own SentencePiece pieces."""
    from .opennmt import translate_opennmt
    from .peer_data import PeerData, write_lines
    from .peer_runs import PeerError

    data = PeerData(workdir / "data")
    checkpoints = sorted(
        (workdir / "opennmt").glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1])
    )
    if not checkpoints:
        return {"error": f"no OpenNMT-py checkpoint in {workdir / 'opennmt'}"}
    src, ref = work / "opennmt_trained_test.de", work / "opennmt_trained_test.ref.en"
    for path, target in ((data.test_src, src), (data.test_ref, ref)):
        lines = path.read_text(encoding="utf-8").splitlines()[:sentences]
        write_lines(target, lines)
    try:
        return translate_opennmt(checkpoints[-1], src, 5, threads, ref_file=ref)
    except (PeerError, subprocess.CalledProcessError, OSError) as err:
        return {"error": str(err)}


def run_worker(kind: str, args: dict) -> dict:
    """Run one measurement in a fresh process; adds its peak RSS in MiB."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench", "--worker", kind, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument("--model", help="a trained context-vector model at the bench's sizes")
    parser.add_argument("--attention-model", help="a trained attention model, to decode too")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences decoded")
    parser.add_argument("--naive-sentences", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", action="store_true", help="also OpenNMT-py, fairseq, JoeyNMT")
    parser.add_argument("--peer-minutes", type=float, default=3.0)
    parser.add_argument(
        "--opennmt-trained",
        help="a bench/time_to_bleu.py work directory: also decode with the last checkpoint of "
        "the OpenNMT-py it trained, for speed at its trained BLEU",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few steps and sentences, no peers: the bench's own code, for CI",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.sentences, args.naive_sentences = 2, 10, 3
    results = run_bench(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def run_bench(args) -> dict:
    """Every row: ours in both families and dtypes, the naive reference, decoding with the
    given models, and (--peers) the peers' rows."""
    torch.set_num_threads(args.threads)
    from translate.runtime import cpu_bf16_speedup

    work = Path(tempfile.mkdtemp(prefix="translate-bench-"))
    data_dir = Path(args.data_dir).resolve()
    sizes = [*SIZES, *(SMOKE_SIZES if args.smoke else [])]
    overrides = [f"out_dir={work / 'ours'}", f"data.train={data_dir / 'train'}", *sizes]
    size = 256 if args.smoke else 2048
    results: dict = {"cpu": cpu_name(), "bf16_speedup": cpu_bf16_speedup(), "smoke": args.smoke}
    # bf16 where the CPU has bf16 units; where it emulates them it is tens of times slower
    dtypes = ["fp32", "bf16"] if results["bf16_speedup"] >= 1.0 else ["fp32"]
    dtype_of = {"fp32": torch.float32, "bf16": torch.bfloat16}
    results["peak_gflops"] = {dtype: matmul_peak(dtype_of[dtype], size) for dtype in dtypes}
    common = {"threads": args.threads, "steps": args.steps, "naive": False}
    for family, family_overrides in FAMILIES.items():
        for dtype in dtypes:
            row_overrides = [*overrides, *family_overrides, f"train.dtype={dtype}"]
            results[f"ours_{family}_train_{dtype}"] = run_worker(
                "train", {**common, "overrides": row_overrides}
            )
    results["naive_train"] = run_worker("train", {**common, "naive": True, "overrides": overrides})
    decode = {
        "threads": args.threads,
        "data_dir": str(data_dir),
        "sentences": args.sentences,
        "naive": False,
        "quantize": None,
        "dtype": "fp32",
    }
    for family, model in (("context", args.model), ("attention", args.attention_model)):
        if not model:
            continue
        for beam in (1, 5):
            for variant, extra in DECODE_VARIANTS.items():
                if variant == "bf16" and "bf16" not in dtypes:
                    continue
                results[f"ours_{family}_beam{beam}_{variant}"] = run_worker(
                    "decode", {**decode, **extra, "model": model, "beam": beam}
                )
        if family == "context":  # a fixed (sentences x beam) shape, or dropping finished ones
            results["ours_context_beam5_fp32_fixed"] = run_worker(
                "decode", {**decode, "model": model, "beam": 5, "drop_finished": False}
            )
            for beam in (1, 5):
                naive = {**decode, "model": model, "beam": beam, "naive": True}
                results[f"naive_beam{beam}"] = run_worker(
                    "decode", {**naive, "sentences": args.naive_sentences}
                )
    if args.peers and not args.smoke:
        from . import peers

        names = [name for family in PEER_OF.values() for name in family]
        results.update(
            peers.measure(
                data_dir,
                work / "peers",
                args.peer_minutes,
                args.threads,
                test_sentences=args.sentences,
                peers=names,
            )
        )
    if args.opennmt_trained:
        results["opennmt_trained_beam5"] = decode_trained_opennmt(
            Path(args.opennmt_trained), args.sentences, work, args.threads
        )
    return results


SMOKE_SIZES = ["data.vocab_size=200", "model.emb_dim=16", "model.enc_hidden_dim=16"]
SMOKE_SIZES += ["model.hidden_dim=32", "train.batch_tokens=300"]


def cpu_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return "unknown CPU"


def row_flops(name: str, row: dict) -> float | None:
    """Training FLOPs per target token of the model a training row measured."""
    from . import flops
    from .fairseq import fairseq_flops_per_target_token
    from .peer_setups import SETUPS
    from .peers import PEERS

    s, L = row.get("src_per_tgt", 1.0), row.get("src_len", 13.0)
    if name.startswith("ours_"):
        return flops.ours(256, 256, 512, 8000, "_attention_" in name, s, L)
    peer = name.removesuffix("_train")
    if peer not in PEERS or not name.endswith("_train"):
        return None  # the naive tutorial's GRU reads the context at every step: not counted
    toolkit, setup_name = PEERS[peer]
    setup = SETUPS[setup_name]
    if toolkit == "opennmt":
        return flops.opennmt(setup, 8000, s, L)
    if toolkit == "joeynmt":
        return flops.joeynmt(setup, 8000, s, L)
    return fairseq_flops_per_target_token(8000, s, L, setup)


def print_table(results: dict) -> None:
    peak = results["peak_gflops"]
    peaks = ", ".join(f"{dtype} {gflops:.0f} GFLOP/s" for dtype, gflops in peak.items())
    print(
        f"{results['cpu']}; matrix-product peak: {peaks}; bf16 runs "
        f"{results['bf16_speedup']:.2f}x fp32 on a small product"
        + ("" if "bf16" in peak else " (emulated: no bf16 rows)")
    )
    header = f"{'system':32s} {'tgt tok/s':>10} {'MFLOP/tok':>10} {'% peak':>7} "
    print(header + f"{'sent/s':>8} {'BLEU':>6} {'RSS MiB':>8}")
    for name, row in results.items():
        if not isinstance(row, dict) or name == "peak_gflops":  # cpu, smoke, bf16_speedup
            continue
        if "error" in row:
            print(f"{name:32s} error: {row['error']}")
            continue
        tok = row.get("tgt_tokens_per_s")
        per_token = None if results.get("smoke") else row_flops(name, row)  # tiny sizes
        cells = [f"{tok:10.0f}" if tok else " " * 10]
        cells.append(f"{per_token / 1e6:10.1f}" if tok and per_token else " " * 10)
        dtype = "bf16" if name.endswith("_bf16") else "fp32"
        share = tok * per_token / 1e9 / peak[dtype] if tok and per_token and dtype in peak else None
        cells.append(f"{100 * share:6.0f}%" if share else " " * 7)
        sent, bleu = row.get("sentences_per_s"), row.get("bleu")
        cells.append(f"{sent:8.1f}" if sent else " " * 8)
        cells.append(f"{bleu:6.2f}" if bleu is not None else " " * 6)
        cells.append(f"{row.get('rss_mib', 0):8.0f}")
        print(f"{name:32s} " + " ".join(cells))
    print_ratios(results)


def best_train(results: dict, family: str) -> tuple[str, float] | None:
    """Our faster dtype's training row of a family: (row name, tokens/s)."""
    rows = [
        (name, row["tgt_tokens_per_s"])
        for name, row in results.items()
        if name.startswith(f"ours_{family}_train_") and "tgt_tokens_per_s" in row
    ]
    return max(rows, key=lambda pair: pair[1]) if rows else None


def print_ratios(results: dict) -> None:
    """The ratios of record, per pair of like models: our best dtype and fp32 against each
    peer of the same family; then decoding."""
    for family, peer_rows in PEER_OF.items():
        best = best_train(results, family)
        fp32 = results.get(f"ours_{family}_train_fp32", {}).get("tgt_tokens_per_s")
        for peer in peer_rows:
            theirs = results.get(f"{peer}_train", {}).get("tgt_tokens_per_s")
            if not theirs or not best:
                continue
            dtype = best[0].rsplit("_", 1)[1]
            print(f"train {family}: ours {dtype} / {peer:16s} {best[1] / theirs:6.2f}x")
            if fp32 and dtype != "fp32":
                print(f"train {family}: ours fp32 / {peer:16s} {fp32 / theirs:6.2f}x")
    naive = results.get("naive_train", {}).get("tgt_tokens_per_s")
    best = best_train(results, "context")
    if naive and best:
        print(f"train context: ours / naive tutorial-style {best[1] / naive:6.2f}x")
    for label, mine, theirs, key in DECODE_RATIOS:
        a, b = results.get(mine, {}).get(key), results.get(theirs, {}).get(key)
        if a and b:
            print(f"{label:48s} {a / b:6.2f}x")


DECODE_RATIOS = [
    ("beam 5: ours fp32 / naive", "ours_context_beam5_fp32", "naive_beam5", "sentences_per_s"),
    (
        "beam 5: ours int8 / ours fp32",
        "ours_context_beam5_int8",
        "ours_context_beam5_fp32",
        "sentences_per_s",
    ),
    (
        "beam 5: drop finished / fixed shape (fp32)",
        "ours_context_beam5_fp32",
        "ours_context_beam5_fp32_fixed",
        "sentences_per_s",
    ),
    (
        "beam 5: ours context int8 / OpenNMT-py noattn",
        "ours_context_beam5_int8",
        "opennmt_noattn_beam5",
        "sentences_per_s",
    ),
    (
        "beam 5: ours attention int8 / OpenNMT-py",
        "ours_attention_beam5_int8",
        "opennmt_beam5",
        "sentences_per_s",
    ),
    (
        "beam 5: ours attention fp32 / OpenNMT-py trained",
        "ours_attention_beam5_fp32",
        "opennmt_trained_beam5",
        "sentences_per_s",
    ),
]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, payload = sys.argv[2], json.loads(sys.argv[3])
        out = {"train": worker_train, "decode": worker_decode}[kind](payload)
        out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
    else:
        main()
