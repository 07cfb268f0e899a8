"""The training loop: teacher forcing, Adam, gradient clipping, validation and checkpoints.

A run resumes by itself when ``out_dir`` holds a checkpoint: model, optimiser, RNG state,
position in the epoch and best score are restored, so the resumed run takes exactly the steps
the uninterrupted one would have taken. SIGINT/SIGTERM save a checkpoint before exiting.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import sacrebleu
import torch
from tqdm import tqdm

from .config import (
    Config,
    TrainConfig,
    UserError,
    config_to_dict,
    dump_model_config,
    read_model_config,
)
from .data import bucket_batches, pair_batch
from .loss import smoothed_cross_entropy
from .model import Seq2Seq, build_model
from .prepare import Prepared, Segmentations, atomic_write, prepare, save_state
from .translate import (
    CONFIG,
    WEIGHTS,
    autocast,
    check_dtype,
    decode_ids,
    pick_device,
    set_threads,
)
from .vocab import PAD

CHECKPOINT = "checkpoint.pt"
MAX_BAD_STEPS = 20  # consecutive non-finite steps before training gives up


class Interrupted(UserError):
    """Training stopped by a signal after saving a resumable checkpoint."""

    label = "interrupted"
    exit_code = 130


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel over all parameters where this torch has one for their
    device (CPU: torch >= 2.4); the per-parameter loop was ~3% of a CPU training step."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.Adam(params, lr=lr)


def batch_loss(model: Seq2Seq, batch, device, cfg: Config, smoothing: float) -> torch.Tensor:
    """Summed (label-smoothed) cross-entropy over non-pad target tokens."""
    with autocast(device, cfg.train.dtype):
        logits = model(
            batch.src_tokens.to(device), batch.src_lengths.to(device), batch.tgt_in.to(device)
        )
    return smoothed_cross_entropy(
        logits.view(-1, logits.size(-1)), batch.tgt_out.to(device).view(-1), smoothing, PAD
    )


@torch.no_grad()
def validate(model: Seq2Seq, data: Prepared, cfg: Config, device: torch.device) -> dict:
    """Dev loss, perplexity and greedy BLEU on the first ``valid_bleu_sentences`` dev pairs."""
    model.eval()
    src_ids, tgt_ids = data.dev_src_ids, data.dev_tgt_ids
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


@contextmanager
def catch_signals():
    """While active, SIGINT and SIGTERM only set a flag that the loop checks after each step."""
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda number, frame: caught.append(number))
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_same_experiment(out: Path, cfg: Config) -> None:
    """A checkpoint may only be resumed with the data and model it was trained with."""
    if not (out / CONFIG).is_file():
        return
    saved = config_to_dict(read_model_config(out / CONFIG))  # keys added since get defaults
    now = config_to_dict(cfg)
    for section in ("data", "model"):
        if saved.get(section) != now[section]:
            changed = [k for k in now[section] if saved[section][k] != now[section][k]]
            raise UserError(
                f"{out} holds a checkpoint trained with other {section} settings "
                f"({', '.join(f'{section}.{k}' for k in changed)}); "
                "use a new out_dir, or delete the old one to start over"
            )


def train(cfg: Config, log=print) -> Path:
    """Train (or resume training) as ``cfg`` says; returns the model directory ``cfg.out_dir``."""
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    device = pick_device()
    out = Path(cfg.out_dir)
    t = cfg.train
    check_dtype(t.dtype, device)
    data = prepare(cfg, log)
    model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab)).to(device)
    optimizer = adam(model.parameters(), t.lr)
    # fp16 gradients underflow without loss scaling; for fp32/bf16 the scaler does nothing
    scaler = torch.amp.GradScaler(device.type, enabled=t.dtype == "fp16")
    # the loop's counters: everything a resumed run needs besides weights and optimiser
    state = {
        "step": 0,
        "epoch": 1,
        "position": 0,
        "best_bleu": -1.0,
        "best_loss": math.inf,
        "bad_validations": 0,
        "elapsed": 0.0,
        "finished": False,
        "skipped": 0,
        "lr_scale": 1.0,  # the plateau decay so far
    }
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.is_file():
        _check_same_experiment(out, cfg)
        try:
            saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(
                f"{checkpoint_path} is unreadable ({err}); delete it to start over"
            ) from None
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])
        state.update(saved["loop"])
        log(f"resuming from {checkpoint_path} at step {state['step']}")
    atomic_write(out / CONFIG, dump_model_config(cfg))
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {cfg.model.cell} seq2seq, attention {cfg.model.attention}, {n_params / 1e6:.1f}M parameters, "
        f"{len(data.train_src)} training pairs, device {device}, dtype {t.dtype}"
    )
    per_epoch = len(bucket_batches(data.train_src, data.train_tgt, t.batch_tokens))
    total = min(t.max_steps or per_epoch * t.max_epochs, per_epoch * t.max_epochs)
    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8")

    def record(entry: dict) -> None:
        metrics_file.write(json.dumps(entry) + "\n")
        metrics_file.flush()

    def save_checkpoint() -> None:
        save_state(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
                "rng": torch.get_rng_state(),
                "loop": dict(state),
            },
            checkpoint_path,
        )

    progress = tqdm(
        total=total,
        initial=state["step"],
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    started = time.time() - state["elapsed"]

    def run_validation() -> None:
        if not data.dev_src:
            save_state(model.state_dict(), out / WEIGHTS)
            return
        result = validate(model, data, cfg, device)
        if t.keep_checkpoints:
            keep_recent(model, out / "checkpoints", state["step"], t.keep_checkpoints)
        if "dev_bleu" in result:
            improved = result["dev_bleu"] > state["best_bleu"]
        else:
            improved = result["dev_loss"] < state["best_loss"]
        if improved:
            state.update(
                best_bleu=result.get("dev_bleu", -1.0),
                best_loss=result["dev_loss"],
                bad_validations=0,
            )
            save_state(model.state_dict(), out / WEIGHTS)
        else:
            state["bad_validations"] += 1
            state["lr_scale"] *= t.lr_decay
            if t.patience and state["bad_validations"] >= t.patience:
                state["finished"] = True
        record(
            {
                "step": state["step"],
                "elapsed": round(time.time() - started, 1),
                **result,
                "best": improved,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        progress.write(
            f"step {state['step']}: "
            + ", ".join(f"{k} {v}" for k, v in result.items())
            + (" (best)" if improved else "")
        )

    sampled = None
    if cfg.data.sampling_alpha:
        sampled = (
            Segmentations(data.src_vocab, data.train_src_text),
            Segmentations(data.tgt_vocab, data.train_tgt_text),
        )
    window = _Window()
    bad_in_row = 0
    model.train()
    with catch_signals() as caught:
        while not state["finished"] and state["epoch"] <= t.max_epochs:
            if sampled:  # a new segmentation each epoch, the same on resuming
                draw = torch.Generator().manual_seed(t.seed * 1000 + state["epoch"])
                data.train_src = sampled[0].draw(cfg.data.sampling_alpha, draw)
                data.train_tgt = sampled[1].draw(cfg.data.sampling_alpha, draw)
            batches = bucket_batches(
                data.train_src, data.train_tgt, t.batch_tokens, seed=t.seed * 1000 + state["epoch"]
            )
            for chunk in batches[state["position"] :]:
                batch = pair_batch(
                    [data.train_src[i] for i in chunk], [data.train_tgt[i] for i in chunk]
                )
                rate = t.lr * state["lr_scale"] * schedule(t, state, total, time.time() - started)
                for group in optimizer.param_groups:
                    group["lr"] = rate
                loss = batch_loss(model, batch, device, cfg, t.label_smoothing)
                scaler.scale(loss / batch.n_tgt_tokens).backward()
                scaler.unscale_(optimizer)
                norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm))
                loss_ok = math.isfinite(loss.item())
                if math.isfinite(norm) and loss_ok:
                    scaler.step(optimizer)
                    bad_in_row = 0
                else:  # skip the update: one bad batch must not poison the weights
                    state["skipped"] += 1
                    # an fp16 overflow in the gradients only lowers the loss scale
                    bad_in_row += not (loss_ok and scaler.is_enabled())
                    if bad_in_row >= MAX_BAD_STEPS:
                        raise UserError(
                            f"{MAX_BAD_STEPS} non-finite losses in a row at step "
                            f"{state['step']}; lower train.lr or use train.dtype=fp32"
                        )
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["position"] += 1
                window.add(loss.item(), batch, norm, norm > t.clip_norm)
                progress.update(1)
                if state["step"] % t.log_every == 0:
                    entry = window.flush(state, optimizer, time.time() - started)
                    record(entry)
                    progress.set_postfix(
                        loss=entry["train_loss"],
                        tok_s=entry["tgt_tok_s"],
                        lr=f"{entry['lr']:.2g}",
                        clip=entry["clipped"],
                    )
                out_of_time = t.max_minutes and time.time() - started > t.max_minutes * 60
                if state["step"] >= total or out_of_time:
                    state["finished"] = True
                if state["step"] % t.valid_every == 0 or state["finished"]:
                    state["elapsed"] = time.time() - started
                    run_validation()
                    save_checkpoint()
                if caught:
                    state["elapsed"] = time.time() - started
                    save_checkpoint()
                    progress.close()
                    raise Interrupted(
                        f"stopped by signal {caught[0]} at step {state['step']}; checkpoint "
                        f"saved in {checkpoint_path}. Run the same command again to resume."
                    )
                if state["finished"]:
                    break
            else:
                state["epoch"] += 1
                state["position"] = 0
    if not state["finished"]:  # ran out of epochs exactly at an epoch boundary
        state["finished"] = True
        run_validation()
        save_checkpoint()
    progress.close()
    metrics_file.close()
    log(
        f"finished after {state['step']} steps in {time.time() - started:.0f}s "
        f"({state['skipped']} non-finite steps skipped); best model in {out / WEIGHTS}"
    )
    return out


def schedule(t: TrainConfig, state: dict, total_steps: int, elapsed: float) -> float:
    """The learning-rate factor for the next step: linear warm-up, then constant or a cosine
    down to 0 at the end of the run, whichever of ``total_steps`` and ``max_minutes`` comes
    first (so a wall-clock budget is annealed into, not cut off)."""
    step = state["step"] + 1
    warm = min(1.0, step / t.warmup_steps) if t.warmup_steps else 1.0
    if t.lr_schedule == "constant":
        return warm
    progress = step / max(total_steps, 1)
    if t.max_minutes:
        progress = max(progress, elapsed / (t.max_minutes * 60))
    return warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def keep_recent(model: Seq2Seq, folder: Path, step: int, keep: int) -> None:
    """Save the weights as ``folder/step-N.pt`` and delete all but the ``keep`` most recent."""
    folder.mkdir(exist_ok=True)
    save_state(model.state_dict(), folder / f"step-{step:08d}.pt")
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()


class _Window:
    """Running sums between two log lines: loss, tokens, gradient norms, clipping."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.tgt, self.src, self.norm, self.clipped, self.steps = 0.0, 0, 0, 0.0, 0, 0
        self.started = time.time()

    def add(self, loss: float, batch, norm: float, clipped: bool) -> None:
        if math.isfinite(loss) and math.isfinite(norm):
            self.loss += loss
            self.norm += norm
        self.tgt += batch.n_tgt_tokens
        self.src += batch.n_src_tokens
        self.clipped += clipped
        self.steps += 1

    def flush(self, state: dict, optimizer, elapsed: float) -> dict:
        seconds = max(time.time() - self.started, 1e-9)
        entry = {
            "step": state["step"],
            "epoch": state["epoch"],
            "elapsed": round(elapsed, 1),
            "train_loss": round(self.loss / max(self.tgt, 1), 4),
            "grad_norm": round(self.norm / self.steps, 3),
            "clipped": round(self.clipped / self.steps, 3),
            "lr": optimizer.param_groups[0]["lr"],
            "tgt_tok_s": round(self.tgt / seconds),
            "src_tok_s": round(self.src / seconds),
            "skipped": state["skipped"],
        }
        self.reset()
        return entry
