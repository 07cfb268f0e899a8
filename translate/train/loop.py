"""The training loop: teacher forcing, Adam, gradient clipping, validation and checkpoints.

:func:`train` reads top to bottom: set up, resume, then for each batch take a step, log,
validate and keep the best, checkpoint, and stop at the first limit reached. A run resumes by
itself when ``out_dir`` holds a checkpoint: model, optimiser, RNG state, position in the epoch
and best score are restored, so the resumed run takes exactly the steps the uninterrupted one
would have taken. SIGINT/SIGTERM save a checkpoint before exiting. A finished run rerun with
the same limits does nothing; with a larger limit it trains on (:mod:`.limits`). One run at a
time: rank 0 holds ``out_dir``'s lock (:mod:`translate.data.outdir`) for the run's life.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import sacrebleu
import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import Config
from ..data import outdir
from ..data.batches import Batch, bucket_batches, pair_batch
from ..data.prepare import Prepared, prepare
from ..data.vocab import PAD
from ..decoding import DecodeOptions
from ..errors import UserError
from ..model.loss import smoothed_cross_entropy
from ..model.seq2seq import Seq2Seq, build_model
from ..modeldir import CHECKPOINT, METRICS, RECENT, WEIGHTS, save_weights
from ..runtime import autocast, pick_device, resolve_dtype, set_threads
from ..search import search_batches
from . import distributed
from .checkpoint import TrainState, keep_recent, resume, save_checkpoint, saved_state
from .distributed import Ranks
from .limits import already_finished, continuing, ended_by, how_to_continue, say_reached, schedule
from .log import Progress, Window, log_window, open_metrics, pairs_seen, record
from .signals import Interrupted, catch_signals

MAX_BAD_STEPS = 20  # consecutive non-finite steps before training gives up


@dataclass(frozen=True)
class Run:
    """What setup builds once and every phase of the loop reads: settings, data, model and
    optimiser. The counters that change live in a TrainState, passed beside it."""

    cfg: Config
    out: Path
    ranks: Ranks  # this process among the training processes (one, unless torchrun)
    device: torch.device
    dtype: str  # fp32, bf16 or fp16: train.dtype with "auto" decided
    data: Prepared
    model: Seq2Seq
    # what forward and backward run through: the model itself, or under torchrun the
    # DistributedDataParallel wrapper around it that averages the gradients over the ranks
    forward_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    total_steps: int  # the step limit: max_steps, or all epochs' batches


def train(cfg: Config, log=print) -> Path:
    """Train (or resume training) as ``cfg`` says; returns the model directory ``cfg.out_dir``.

    Under torchrun every process runs this: each takes its share of every global batch,
    gradients are averaged, and rank 0 alone validates, logs and writes files."""
    ranks = distributed.start()
    try:
        with ExitStack() as held:
            # one trainer per out_dir: rank 0 holds its lock for the run's life
            distributed.main_first(ranks, lambda: held.enter_context(outdir.hold(cfg.out_dir)))
            out = _train(cfg, ranks, log if ranks.main else lambda message: None)
            distributed.barrier(ranks)  # no rank leaves the group while another still talks
            return out
    finally:
        distributed.finish(ranks)


def _train(cfg: Config, ranks: Ranks, log) -> Path:
    done = distributed.from_main(ranks, distributed.main_first(ranks, lambda: _finished(cfg)))
    if done:  # said in one line; nothing is touched
        log(done)
        return Path(cfg.out_dir)
    run = setup(cfg, ranks, log)
    state = resume(run.out, cfg, ranks, run.device, run.model, run.optimizer, run.scaler, log)
    t = cfg.train
    if state.finished:  # finished before; the limits now give it more to train
        state.finished, state.stopped_by = False, []
        log(continuing(t, state, run.total_steps))
    progress = Progress(state.step, state.elapsed, run.total_steps, t.max_minutes, ranks.main)
    window = Window()
    metrics_file = open_metrics(run.out / METRICS, state.step) if ranks.main else nullcontext()
    with catch_signals() as caught, metrics_file as metrics:
        for rows, last_batch in epoch_batches(run, state):
            # one step: forward, backward, clip, update
            loss, norm, tokens = train_step(run, state, rows, progress.elapsed())
            window.add(loss, norm, norm > t.clip_norm, *tokens)
            progress.step(state.step)
            if state.step % t.log_every == 0 and ranks.main:
                log_window(window, state, run.optimizer, cfg.data.train, metrics, progress)
            # stop after the last batch, at the step or time limit (rank 0's clock), or at a
            # signal on any rank
            out_of_time = ranks.main and t.max_minutes and progress.elapsed() > t.max_minutes * 60
            signalled, out_of_time = distributed.any_rank(ranks, caught, out_of_time)
            state.finished |= last_batch or state.step >= run.total_steps or out_of_time
            validating = state.step % t.valid_every == 0 or state.finished
            if validating:
                validate_and_keep_best(run, state, metrics, progress)
            if state.finished:  # patience may have ended it too
                state.stopped_by = ended_by(
                    t, state, run.total_steps, progress.elapsed(), last_batch
                )
            if validating or signalled:  # once, when a signal comes on a validation step too
                elapsed = progress.elapsed()
                save_checkpoint(
                    run.out, ranks, run.device, run.model, run.optimizer, run.scaler, state, elapsed
                )
            if signalled:  # Ctrl-C or SIGTERM: say how to go on
                progress.close()
                raise Interrupted(
                    f"stopped by signal {caught[0] if caught else 'on another rank'} at step "
                    f"{state.step}; checkpoint saved in {run.out / CHECKPOINT}. Run the same "
                    "command again to resume."
                )
            if state.finished:
                break
        if not state.finished:  # a lowered limit left nothing to train: end as a last step does
            state.finished = True
            validate_and_keep_best(run, state, metrics, progress)
            epochs_done = state.epoch > t.max_epochs
            state.stopped_by = ended_by(t, state, run.total_steps, progress.elapsed(), epochs_done)
            elapsed = progress.elapsed()
            save_checkpoint(
                run.out, ranks, run.device, run.model, run.optimizer, run.scaler, state, elapsed
            )
    progress.close()
    seen = ", ".join(
        f"{n} of {path}" for path, n in pairs_seen(cfg.data.train, state.pairs_seen).items()
    )
    log(f"pairs seen: {seen}; {state.skipped} non-finite steps skipped")
    log(
        f"finished after {state.step} steps in {progress.elapsed():.0f}s: "
        f"{say_reached(t, state.stopped_by)}; best model in {run.out / WEIGHTS}; "
        f"{how_to_continue(state.stopped_by)}"
    )
    return run.out


def _finished(cfg: Config) -> str | None:
    """Why a run already finished under these limits stops at once (None: it trains), read
    from its checkpoint before anything is written."""
    outdir.check_same_experiment(cfg)  # another experiment's checkpoint is refused instead
    out = Path(cfg.out_dir)
    return already_finished(cfg.out_dir, cfg.train, saved_state(out, len(cfg.data.train)))


# --- setup and resume -------------------------------------------------------------------------


def setup(cfg: Config, ranks: Ranks, log) -> Run:
    """Threads, seed and device; the prepared data (rank 0 prepares it while the others wait);
    a fresh model (the same on every rank) and optimiser."""
    t = cfg.train
    set_threads(t.threads or max(1, len(os.sched_getaffinity(0)) // ranks.local_world))
    torch.manual_seed(t.seed)
    device = distributed.device_of(ranks) or pick_device()
    dtype = resolve_dtype(t.dtype, device, log)
    # rank 0 prepares while the others wait (train holds out_dir's lock); a refusal stops all
    data = distributed.main_first(ranks, lambda: prepare(cfg, log, lock=False))
    if not ranks.main:
        data = prepare(cfg, log, lock=False)  # finds rank 0's preparation and opens it
    model = build_model(cfg.model, len(data.src_vocab), len(data.tgt_vocab)).to(device)
    forward_model = model
    if ranks.world > 1:
        torch.manual_seed(t.seed + 1000 * ranks.rank)  # each rank its own dropout masks
        device_ids = [device.index] if device.type == "cuda" else None
        forward_model = DistributedDataParallel(model, device_ids, process_group=ranks.group)
    optimizer = adam(model.parameters(), t.lr)
    # fp16 gradients underflow without loss scaling; for fp32/bf16 the scaler does nothing
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    weights = [corpus.weight for corpus in cfg.data.train]
    per_epoch = len(data.train.epoch(1, t.seed, weights, t.batch_tokens))
    total_steps = min(t.max_steps or per_epoch * t.max_epochs, per_epoch * t.max_epochs)
    n_params = sum(p.numel() for p in model.parameters())
    where = f"{ranks.world} processes ({ranks.backend}), " if ranks.world > 1 else ""
    log(
        f"model: {cfg.model.cell} seq2seq, attention {cfg.model.attention}, "
        f"{n_params / 1e6:.1f}M parameters, {len(data.train)} training pairs, {where}"
        f"device {device}, dtype {dtype}" + (" (auto)" if t.dtype == "auto" else "")
    )
    out = Path(cfg.out_dir)
    return Run(
        cfg, out, ranks, device, dtype, data, model, forward_model, optimizer, scaler, total_steps
    )


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel over all parameters where this torch has one for their
    device (CPU: torch >= 2.4), else the per-parameter loop."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.Adam(params, lr=lr)


# --- one step ---------------------------------------------------------------------------------


def epoch_batches(run: Run, state: TrainState) -> Iterator[tuple[np.ndarray, bool]]:
    """The global batches still to train on (arrays of row numbers), epoch after epoch, from
    the state's epoch and position, each with whether it is the last of the last epoch; counts
    the pairs of each corpus they hold.

    Each epoch has its own seeded order, the same in every process and on resuming, so a
    resumed run sees the batches the uninterrupted one would have seen.
    """
    t, data = run.cfg.train, run.data
    weights = [corpus.weight for corpus in run.cfg.data.train]
    if state.step >= run.total_steps:  # resumed with a lowered max_steps: nothing left
        return
    while not state.finished and state.epoch <= t.max_epochs:
        batches = data.train.epoch(state.epoch, t.seed, weights, t.batch_tokens)[state.position :]
        for number, rows in enumerate(batches, 1):
            counts = np.bincount(data.train.corpus_of(rows), minlength=len(weights))
            state.pairs_seen = [seen + int(n) for seen, n in zip(state.pairs_seen, counts)]
            yield rows, state.epoch == t.max_epochs and number == len(batches)
        state.epoch += 1
        state.position = 0


def my_parts(run: Run, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """This process's micro-batches of a global batch, with their part numbers: the rows are
    dealt into world x accum_steps parts, and rank r takes accum_steps of them in a row (empty
    ones left out). One process with accum_steps N takes the same parts as N processes with 1
    each."""
    ranks, accum = run.ranks, run.cfg.train.accum_steps
    parts = ranks.world * accum
    mine = range(ranks.rank * accum, (ranks.rank + 1) * accum)
    return [(part, rows[part::parts]) for part in mine if part < len(rows)]


def part_batch(run: Run, state: TrainState, part: int, rows: np.ndarray) -> Batch:
    """The padded batch of one part's rows; with subword sampling, their segmentations drawn
    by a generator seeded by (seed, epoch, batch, part)."""
    d, data = run.cfg.data, run.data
    if not d.sampling_alpha:
        return pair_batch(*data.train.ids(rows))
    key = [run.cfg.train.seed, state.epoch, state.position, part]
    draw = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    src_text, tgt_text = data.train.texts(rows)
    src = data.src_vocab.sample(src_text, d.sampling_alpha, draw)
    return pair_batch(src, data.tgt_vocab.sample(tgt_text, d.sampling_alpha, draw))


def train_step(
    run: Run, state: TrainState, rows: np.ndarray, elapsed: float
) -> tuple[float, float, tuple[int, int]]:
    """Forward and backward over this process's parts of a global batch, gradients averaged
    over the processes, clip and, when loss and gradient are finite, update; counts the step in
    ``state``. ``elapsed`` is the run's clock (rank 0's counts) for the schedule. Returns the
    loss summed over the global batch's target tokens, the gradient norm before clipping, and
    the global batch's target and source tokens."""
    t, ranks, optimizer, scaler = run.cfg.train, run.ranks, run.optimizer, run.scaler
    parts = [(part, part_batch(run, state, part, mine)) for part, mine in my_parts(run, rows)]
    tgt = sum(batch.n_tgt_tokens for _, batch in parts)
    src = sum(batch.n_src_tokens for _, batch in parts)
    # one all-reduce: the global batch's tokens, and rank 0's clock for the schedule
    tgt, src, elapsed = distributed.sums(ranks, tgt, src, elapsed if ranks.main else 0.0)
    rate = t.lr * state.lr_scale * schedule(t, state.step + 1, run.total_steps, elapsed)
    for group in optimizer.param_groups:
        group["lr"] = rate
    if not parts:  # fewer rows than parts: take part in the gradient exchange with nothing
        parts = [(-1, part_batch(run, state, 0, rows[:1]))]
    loss_sum = 0.0
    for number, (part, batch) in enumerate(parts):
        last = number == len(parts) - 1
        with nullcontext() if last or ranks.world == 1 else run.forward_model.no_sync():
            loss = batch_loss(run.forward_model, batch, run.device, run.dtype, t.label_smoothing)
            if part < 0:
                loss = loss * 0.0
            # the mean over the global batch's tokens, once DDP has averaged over the ranks
            scaler.scale(loss / (tgt / ranks.world)).backward()
        loss_sum += loss.item()
    scaler.unscale_(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.clip_norm))
    (loss_value,) = distributed.sums(ranks, loss_sum)
    if math.isfinite(norm) and math.isfinite(loss_value):
        scaler.step(optimizer)
        state.bad_in_row = 0
    else:  # skip the update (on every rank alike): one bad batch must not poison the weights
        state.skipped += 1
        # an fp16 overflow in the gradients only lowers the loss scale
        state.bad_in_row += not (math.isfinite(loss_value) and scaler.is_enabled())
        if state.bad_in_row >= MAX_BAD_STEPS:
            raise UserError(
                f"{MAX_BAD_STEPS} non-finite losses in a row at step {state.step}; "
                "lower train.lr or use train.dtype=fp32"
            )
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.position += 1
    return loss_value, norm, (int(tgt), int(src))


def batch_loss(
    model: Seq2Seq, batch: Batch, device: torch.device, dtype: str, smoothing: float
) -> torch.Tensor:
    """Summed (label-smoothed) cross-entropy over the batch's non-pad target tokens."""
    with autocast(device, dtype):
        logits = model(
            batch.src_tokens.to(device), batch.src_lengths.to(device), batch.tgt_in.to(device)
        )
    return smoothed_cross_entropy(
        logits.view(-1, logits.size(-1)), batch.tgt_out.to(device).view(-1), smoothing, PAD
    )


# --- validation and checkpoints ---------------------------------------------------------------


@torch.no_grad()
def validate(model: Seq2Seq, data: Prepared, cfg: Config, device: torch.device, dtype: str) -> dict:
    """Dev loss, perplexity and greedy BLEU on the first ``valid_bleu_sentences`` dev pairs."""
    model.eval()
    src_ids, tgt_ids = data.dev_src_ids, data.dev_tgt_ids
    pairs = [i for i in range(len(src_ids)) if src_ids[i] and tgt_ids[i]]
    total, tokens = 0.0, 0
    lengths = [len(src_ids[i]) for i in pairs], [len(tgt_ids[i]) for i in pairs]
    for chunk in bucket_batches(*lengths, cfg.train.batch_tokens):
        batch = pair_batch([src_ids[pairs[i]] for i in chunk], [tgt_ids[pairs[i]] for i in chunk])
        total += float(batch_loss(model, batch, device, dtype, 0.0))
        tokens += batch.n_tgt_tokens
    loss = total / max(tokens, 1)
    result = {"dev_loss": round(loss, 4), "dev_ppl": round(math.exp(min(loss, 50)), 2)}
    n = min(cfg.train.valid_bleu_sentences, len(pairs))
    if n:
        chosen = pairs[:n]
        with autocast(device, dtype):
            greedy = DecodeOptions(beam=1)
            hyps = search_batches(model, [src_ids[i] for i in chosen], cfg.decode, device, greedy)
        texts = [data.tgt_vocab.decode(h[0].tokens) for h in hyps]
        refs = [data.dev_tgt[i] for i in chosen]
        result["dev_bleu"] = round(sacrebleu.corpus_bleu(texts, [refs]).score, 2)
    model.train()
    return result


def validate_and_keep_best(
    run: Run, state: TrainState, metrics: TextIO | None, progress: Progress
) -> None:
    """Validate, save the weights when dev BLEU (or, without it, dev loss) improved, else decay
    the rate and count towards patience; the result goes to metrics.jsonl and above the bar.
    Rank 0 does it while the others wait, then they take its counters into ``state``."""
    if run.ranks.main:
        _validate_and_keep_best(run, state, metrics, progress)
    synced = distributed.from_main(run.ranks, state)
    state.__dict__.update(vars(synced))  # in place: the loop and its batches hold this object


def _validate_and_keep_best(
    run: Run, state: TrainState, metrics: TextIO, progress: Progress
) -> None:
    t = run.cfg.train
    if not run.data.dev_src:  # nothing to compare: the latest weights are the best
        save_weights(run.model.state_dict(), run.out / WEIGHTS)
        return
    result = validate(run.model, run.data, run.cfg, run.device, run.dtype)
    if t.keep_checkpoints:
        keep_recent(run.model, run.out / RECENT, state.step, t.keep_checkpoints)
    if "dev_bleu" in result:
        improved = result["dev_bleu"] > state.best_bleu
    else:
        improved = result["dev_loss"] < state.best_loss
    if improved:
        state.best_bleu = result.get("dev_bleu", -1.0)
        state.best_loss = result["dev_loss"]
        state.bad_validations = 0
        save_weights(run.model.state_dict(), run.out / WEIGHTS)
    else:
        state.bad_validations += 1
        state.lr_scale *= t.lr_decay
        if t.patience and state.bad_validations >= t.patience:
            state.finished = True
    lr = run.optimizer.param_groups[0]["lr"]
    elapsed = round(progress.elapsed(), 1)
    record(metrics, {"step": state.step, "elapsed": elapsed, **result, "best": improved, "lr": lr})
    progress.write(
        f"step {state.step}: "
        + ", ".join(f"{k} {v}" for k, v in result.items())
        + (" (best)" if improved else "")
    )
