"""Speed benchmark: ours (fp32, bf16, int8) against a hand-written naive seq2seq and, with
--peers, OpenNMT-py and JoeyNMT, side by side on Multi30k with the same model sizes.

    python bench/bench.py --data-dir ../shared/data/multi30k [--model DIR] [--peers]
        [--attention-model DIR] [--opennmt-trained TIME_TO_BLEU_DIR]

Each measurement runs in its own process (so peak RSS is its own) with the same thread count.
Ratios within one run are the figures of record: absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = [
    "data.vocab_size=8000",
    "model.cell=gru",
    "model.emb_dim=256",
    "model.hidden_dim=512",
    "model.enc_layers=1",
    "model.dec_layers=1",
    "model.bidirectional=true",
    "model.tie_embeddings=false",
    "model.context_pool=none",
    "model.attention=none",
    "train.batch_tokens=4000",
]


# the inference variants each decoding row is measured in: worker_decode arguments
DECODE_VARIANTS = {"fp32": {}, "bf16": {"dtype": "bf16"}, "int8": {"quantize": "int8"}}


def flops_per_target_token(vocab: int, src_per_tgt: float = 1.0) -> float:
    """Forward+backward FLOPs per target token of our context-vector GRU at the bench's sizes
    (about 3x forward), counting the matrix products we run, with ``src_per_tgt`` source tokens
    per target token. The context's share of the decoder's gates and readout, computed once
    per sentence, is left out (the naive reference computes it at every step)."""
    emb, hidden = 256, 512
    gates = 3 * hidden
    encoder = 2 * 2 * (emb * gates + hidden * gates)  # two directions
    decoder = 2 * (emb * gates + hidden * gates)
    readout = 2 * (hidden + emb) * emb
    output = 2 * emb * vocab
    return 3.0 * (src_per_tgt * encoder + decoder + readout + output)


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
    from translate.data import pair_batch
    from translate.model import build_model
    from translate.prepare import prepare
    from translate.train import adam, batch_loss

    torch.set_num_threads(args["threads"])
    torch.manual_seed(1)
    cfg = load_config(None, args["overrides"])
    data = prepare(cfg, log=lambda m: None)
    batches = data.train.epoch(1, 1, [1.0], cfg.train.batch_tokens)
    if args["naive"]:
        sys.path.insert(0, str(ROOT / "bench"))
        from naive import NaiveSeq2Seq

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

    def step(rows) -> tuple[int, int]:
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
        return int(batch.src_lengths.sum()), batch.n_tgt_tokens

    for chunk in batches[:3]:  # warm-up
        step(chunk)
    src_tokens, tgt_tokens, start = 0, 0, time.perf_counter()
    for chunk in batches[3 : 3 + args["steps"]]:
        src, tgt = step(chunk)
        src_tokens, tgt_tokens = src_tokens + src, tgt_tokens + tgt
    seconds = time.perf_counter() - start
    return {"tgt_tokens_per_s": tgt_tokens / seconds, "src_per_tgt": src_tokens / tgt_tokens}


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
    sys.path.insert(0, str(ROOT / "bench"))
    from naive import NaiveSeq2Seq

    from translate.vocab import Vocab

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
    sys.path.insert(0, str(ROOT / "bench"))
    import peers

    data = peers.PeerData(workdir / "data")
    checkpoints = sorted(
        (workdir / "opennmt").glob("model_step_*.pt"), key=lambda p: int(p.stem.split("_")[-1])
    )
    if not checkpoints:
        return {"error": f"no OpenNMT-py checkpoint in {workdir / 'opennmt'}"}
    src, ref = work / "opennmt_trained_test.de", work / "opennmt_trained_test.ref.en"
    for path, target in ((data.test_src, src), (data.test_ref, ref)):
        lines = path.read_text(encoding="utf-8").splitlines()[:sentences]
        peers.write_lines(target, lines)
    try:
        return peers.translate_opennmt(checkpoints[-1], src, 5, threads, ref_file=ref)
    except (peers.PeerError, subprocess.CalledProcessError, OSError) as err:
        return {"error": str(err)}


def run_worker(kind: str, args: dict) -> dict:
    """Run one measurement in a fresh process; adds its peak RSS in MiB."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", kind, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument(
        "--model",
        help="a trained model directory with the bench sizes "
        "(default: train one for --train-minutes)",
    )
    parser.add_argument(
        "--attention-model",
        help="also decode with this trained attention model (e.g. the attention recipe's)",
    )
    parser.add_argument("--train-minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences decoded")
    parser.add_argument("--naive-sentences", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", action="store_true", help="also OpenNMT-py and JoeyNMT")
    parser.add_argument("--peer-minutes", type=float, default=3.0)
    parser.add_argument(
        "--opennmt-trained",
        help="a bench/time_to_bleu.py work directory: also decode with the last checkpoint of "
        "the OpenNMT-py it trained (its 20 minutes), for speed at its trained BLEU",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="translate-bench-"))
    data_dir = Path(args.data_dir).resolve()
    overrides = [
        f"out_dir={work / 'ours'}",
        f"data.train={data_dir / 'train'}",
        f"data.dev={data_dir / 'val'}",
        *SIZES,
    ]
    results: dict = {
        "peak_gflops": {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    }
    common = {"threads": args.threads, "steps": args.steps, "naive": False}
    for dtype in ("fp32", "bf16"):
        results[f"ours_train_{dtype}"] = run_worker(
            "train", {**common, "overrides": [*overrides, f"train.dtype={dtype}"]}
        )
    # the peers train attention models: ours with Luong (general) attention, for a like row
    results["ours_train_bf16_attention"] = run_worker(
        "train",
        {**common, "overrides": [*overrides, "train.dtype=bf16", "model.attention=general"]},
    )
    results["naive_train"] = run_worker("train", {**common, "naive": True, "overrides": overrides})
    model = args.model
    if model is None:
        model = str(work / "ours")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "translate",
                "train",
                "recipes/multi30k/config.yaml",
                *overrides,
                f"train.max_minutes={args.train_minutes}",
                "train.valid_every=100000",
                "train.valid_bleu_sentences=0",
                f"train.threads={args.threads}",
            ],
            cwd=ROOT,
            check=True,
        )
    decode = {
        "threads": args.threads,
        "data_dir": str(data_dir),
        "model": model,
        "sentences": args.sentences,
        "naive": False,
        "quantize": None,
        "dtype": "fp32",
    }
    for beam in (1, 5):
        for variant, extra in DECODE_VARIANTS.items():
            results[f"ours_beam{beam}_{variant}"] = run_worker(
                "decode", {**decode, **extra, "beam": beam}
            )
        if beam == 5:  # issue 3: fixed (sentences x beam) shape or drop finished sentences
            results["ours_beam5_fp32_fixed"] = run_worker(
                "decode", {**decode, "beam": 5, "drop_finished": False}
            )
        results[f"naive_beam{beam}"] = run_worker(
            "decode", {**decode, "beam": beam, "naive": True, "sentences": args.naive_sentences}
        )
    if args.attention_model:
        for variant, extra in DECODE_VARIANTS.items():
            results[f"ours_attention_beam5_{variant}"] = run_worker(
                "decode", {**decode, **extra, "model": args.attention_model, "beam": 5}
            )
    if args.peers:
        sys.path.insert(0, str(ROOT / "bench"))
        import peers

        results.update(
            peers.measure(
                data_dir,
                work / "peers",
                args.peer_minutes,
                args.threads,
                test_sentences=args.sentences,
            )
        )
    if args.opennmt_trained:
        results["opennmt_trained_beam5"] = decode_trained_opennmt(
            Path(args.opennmt_trained), args.sentences, work, args.threads
        )
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def print_table(results: dict) -> None:
    src_per_tgt = results.get("ours_train_bf16", {}).get("src_per_tgt", 1.0)
    flops = flops_per_target_token(8000, src_per_tgt)
    peak = results["peak_gflops"]
    print(
        f"matrix-product peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s;"
        f" model: {flops / 1e6:.1f} MFLOP per target token (train, {src_per_tgt:.2f} source"
        " tokens per target token)"
    )
    print(
        f"{'system':28s} {'tgt tok/s':>10} {'% peak':>7} {'sent/s':>8} {'BLEU':>6} {'RSS MiB':>8}"
    )
    for name, row in results.items():
        if name == "peak_gflops":
            continue
        if "error" in row:
            print(f"{name:28s} error: {row['error']}")
            continue
        tok = row.get("tgt_tokens_per_s")
        share = ""
        if tok and name in ("ours_train_fp32", "ours_train_bf16"):
            dtype = name.rsplit("_", 1)[1]
            row_flops = flops_per_target_token(8000, row.get("src_per_tgt", 1.0))
            share = f"{100 * tok * row_flops / 1e9 / peak[dtype]:.0f}%"
        print(
            f"{name:28s} {tok or '':>10.0f} {share:>7} "
            if tok
            else f"{name:28s} {'':>10} {'':>7} ",
            end="",
        )
        sent = row.get("sentences_per_s")
        bleu = row.get("bleu")
        print(f"{sent or 0:8.1f} " if sent else f"{'':>8} ", end="")
        print(f"{bleu:6.2f} " if bleu is not None else f"{'':>6} ", end="")
        print(f"{row.get('rss_mib', 0):8.0f}")
    print_ratios(results)


RATIOS = [
    ("train: ours bf16 / naive", "ours_train_bf16", "naive_train", "tgt_tokens_per_s"),
    ("train: ours bf16 / OpenNMT-py", "ours_train_bf16", "opennmt_train", "tgt_tokens_per_s"),
    ("train: ours bf16 / JoeyNMT", "ours_train_bf16", "joeynmt_train", "tgt_tokens_per_s"),
    (
        "train: ours bf16 attention / OpenNMT-py",
        "ours_train_bf16_attention",
        "opennmt_train",
        "tgt_tokens_per_s",
    ),
    ("beam 5: ours fp32 / naive", "ours_beam5_fp32", "naive_beam5", "sentences_per_s"),
    ("beam 5: ours int8 / ours fp32", "ours_beam5_int8", "ours_beam5_fp32", "sentences_per_s"),
    (
        "beam 5: drop finished / fixed shape (fp32)",
        "ours_beam5_fp32",
        "ours_beam5_fp32_fixed",
        "sentences_per_s",
    ),
    ("beam 5: ours fp32 / OpenNMT-py", "ours_beam5_fp32", "opennmt_beam5", "sentences_per_s"),
    ("beam 5: ours int8 / OpenNMT-py", "ours_beam5_int8", "opennmt_beam5", "sentences_per_s"),
    (
        "beam 5: ours attention bf16 / OpenNMT-py",
        "ours_attention_beam5_bf16",
        "opennmt_beam5",
        "sentences_per_s",
    ),
    (  # OpenNMT-py's model has attention: this is the like-for-like decoding ratio
        "beam 5: ours attention int8 / OpenNMT-py",
        "ours_attention_beam5_int8",
        "opennmt_beam5",
        "sentences_per_s",
    ),
    (  # ... and with both models trained (a short-trained model's output ends differently)
        "beam 5: ours attention int8 / OpenNMT-py 20 min",
        "ours_attention_beam5_int8",
        "opennmt_trained_beam5",
        "sentences_per_s",
    ),
    (
        "beam 5: ours attention fp32 / OpenNMT-py 20 min",
        "ours_attention_beam5_fp32",
        "opennmt_trained_beam5",
        "sentences_per_s",
    ),
]


def print_ratios(results: dict) -> None:
    """The targets' ratios, for the rows this run measured."""
    for label, mine, theirs, key in RATIOS:
        a, b = results.get(mine, {}).get(key), results.get(theirs, {}).get(key)
        if a and b:
            print(f"{label:48s} {a / b:6.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, payload = sys.argv[2], json.loads(sys.argv[3])
        out = {"train": worker_train, "decode": worker_decode}[kind](payload)
        out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
    else:
        main()
