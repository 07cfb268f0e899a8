"""The training loop: teacher forcing, Adam, gradient clipping, validation and checkpoints."""

from __future__ import annotations

import io
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import sacrebleu
import torch
import yaml
from tqdm import tqdm

from .config import Config, config_to_dict
from .data import bucket_batches, pair_batch
from .model import Seq2Seq, build_model
from .prepare import Prepared, atomic_write, prepare
from .translate import CONFIG, WEIGHTS, decode_ids, pick_device, set_threads
from .vocab import PAD


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def save_weights(model: Seq2Seq, path: Path) -> None:
    """Save a state dict atomically, so a crash never leaves half a file where a good one was."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write(path, buffer.getvalue())


def autocast(device: torch.device, dtype: str):
    """bf16 autocast (weights stay fp32) or nothing."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def batch_loss(model: Seq2Seq, batch, device, cfg: Config, smoothing: float) -> torch.Tensor:
    """Summed cross-entropy over non-pad target tokens."""
    with autocast(device, cfg.train.dtype):
        logits = model(
            batch.src_tokens.to(device), batch.src_lengths.to(device), batch.tgt_in.to(device)
        )
    return torch.nn.functional.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        batch.tgt_out.to(device).view(-1),
        ignore_index=PAD,
        reduction="sum",
        label_smoothing=smoothing,
    )


@torch.no_grad()
def validate(model: Seq2Seq, data: Prepared, cfg: Config, device: torch.device) -> dict:
    """Dev loss, perplexity and greedy BLEU on the first ``valid_bleu_sentences`` dev pairs."""
    model.eval()
    src_ids = data.src_vocab.encode(data.dev_src)
    tgt_ids = data.tgt_vocab.encode(data.dev_tgt)
    pairs = [i for i in range(len(src_ids)) if src_ids[i] and tgt_ids[i]]
    total, tokens = 0.0, 0
    for chunk in bucket_batches(
        [src_ids[i] for i in pairs], [tgt_ids[i] for i in pairs], cfg.train.batch_tokens
    ):
        batch = pair_batch([src_ids[pairs[i]] for i in chunk], [tgt_ids[pairs[i]] for i in chunk])
        total += float(batch_loss(model, batch, device, cfg, 0.0))
        tokens += batch.n_tgt_tokens
    loss = total / max(tokens, 1)
    result = {"dev_loss": round(loss, 4), "dev_ppl": round(math.exp(min(loss, 50)), 2)}
    n = min(cfg.train.valid_bleu_sentences, len(pairs))
    if n:
        chosen = pairs[:n]
        with autocast(device, cfg.train.dtype):
            hyps = decode_ids(model, [src_ids[i] for i in chosen], cfg.decode, 1, device)
        texts = [data.tgt_vocab.decode(h[0].tokens) for h in hyps]
        refs = [data.dev_tgt[i] for i in chosen]
        result["dev_bleu"] = round(sacrebleu.corpus_bleu(texts, [refs]).score, 2)
    model.train()
    return result


def train(cfg: Config, log=print) -> Path:
    """Train a model as ``cfg`` says; returns the model directory (``cfg.out_dir``)."""
    set_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = pick_device()
    out = Path(cfg.out_dir)
    data = prepare(cfg, log)
    atomic_write(out / CONFIG, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())

    model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {cfg.model.cell} context-vector seq2seq, {n_params / 1e6:.1f}M parameters, "
        f"{len(data.train_src)} training pairs, device {device}, dtype {cfg.train.dtype}"
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8")

    def record(entry: dict) -> None:
        metrics_file.write(json.dumps(entry) + "\n")
        metrics_file.flush()

    t = cfg.train
    per_epoch = len(bucket_batches(data.train_src, data.train_tgt, t.batch_tokens))
    total = min(t.max_steps or per_epoch * t.max_epochs, per_epoch * t.max_epochs)
    progress = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
    best_bleu, best_loss, bad_validations = -1.0, float("inf"), 0
    step, start = 0, time.time()
    window = {
        "loss": 0.0,
        "tgt": 0,
        "src": 0,
        "clipped": 0,
        "norm": 0.0,
        "steps": 0,
        "time": time.time(),
    }
    stop = False

    def run_validation() -> None:
        nonlocal best_bleu, best_loss, bad_validations, stop
        if not data.dev_src:
            save_weights(model, out / WEIGHTS)
            return
        result = validate(model, data, cfg, device)
        score = result.get("dev_bleu", -result["dev_loss"])
        improved = score > best_bleu if "dev_bleu" in result else result["dev_loss"] < best_loss
        if improved:
            best_bleu, best_loss, bad_validations = score, result["dev_loss"], 0
            save_weights(model, out / WEIGHTS)
        else:
            bad_validations += 1
            for group in optimizer.param_groups:
                group["lr"] *= t.lr_decay
            if t.patience and bad_validations >= t.patience:
                stop = True
        record(
            {
                "step": step,
                "elapsed": round(time.time() - start, 1),
                **result,
                "best": improved,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        progress.write(
            f"step {step}: "
            + ", ".join(f"{k} {v}" for k, v in result.items())
            + (" (best)" if improved else "")
        )

    model.train()
    for epoch in range(1, t.max_epochs + 1):
        for chunk in bucket_batches(
            data.train_src, data.train_tgt, t.batch_tokens, seed=t.seed * 1000 + epoch
        ):
            batch = pair_batch(
                [data.train_src[i] for i in chunk], [data.train_tgt[i] for i in chunk]
            )
            loss = batch_loss(model, batch, device, cfg, t.label_smoothing)
            (loss / batch.n_tgt_tokens).backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window["loss"] += loss.item()
            window["tgt"] += batch.n_tgt_tokens
            window["src"] += batch.n_src_tokens
            window["clipped"] += norm > t.clip_norm
            window["norm"] += norm
            window["steps"] += 1
            progress.update(1)
            if step % t.log_every == 0:
                seconds = max(time.time() - window["time"], 1e-9)
                entry = {
                    "step": step,
                    "epoch": epoch,
                    "elapsed": round(time.time() - start, 1),
                    "train_loss": round(window["loss"] / window["tgt"], 4),
                    "grad_norm": round(window["norm"] / window["steps"], 3),
                    "clipped": round(window["clipped"] / window["steps"], 3),
                    "lr": optimizer.param_groups[0]["lr"],
                    "tgt_tok_s": round(window["tgt"] / seconds),
                    "src_tok_s": round(window["src"] / seconds),
                }
                record(entry)
                progress.set_postfix(
                    loss=entry["train_loss"],
                    tok_s=entry["tgt_tok_s"],
                    lr=f"{entry['lr']:.2g}",
                    clip=entry["clipped"],
                )
                window.update(
                    loss=0.0, tgt=0, src=0, clipped=0, norm=0.0, steps=0, time=time.time()
                )
            if step % t.valid_every == 0:
                run_validation()
            out_of_time = t.max_minutes and time.time() - start > t.max_minutes * 60
            if stop or step >= total or out_of_time:
                stop = True
                break
        if stop:
            break
    if step % t.valid_every != 0:
        run_validation()
    progress.close()
    metrics_file.close()
    log(f"finished after {step} steps in {time.time() - start:.0f}s; model in {out}")
    return out
