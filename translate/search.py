"""Greedy, beam and sampled search over the small model interface of :mod:`translate.model`,
and the length-sorted batching that feeds them.

Every search is batched over sentences (and beams) and stops early once every row has ended.
Every search reports the same score: the summed log-probability of the tokens, EOS included,
divided by the GNMT length penalty ((5 + length) / 6) ** alpha, length counting EOS.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from .data.batches import source_batch
from .data.vocab import BOS, EOS, PAD
from .decoding import DecodeOptions, Sampling

if TYPE_CHECKING:
    from .config import DecodeConfig

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """A finished translation in subword ids (no BOS/EOS), with its search score."""

    tokens: list[int]
    score: float  # log_prob divided by the length penalty (log_prob itself when alpha = 0)
    log_prob: float  # sum of the token log-probabilities, EOS included


def _scored(steps: list[torch.Tensor], log_prob: torch.Tensor, alpha: float) -> list[Hypothesis]:
    """Hypotheses of the rows of produced ids (each ends in EOS, then PAD), scored as beam
    search scores them: ``log_prob`` over the length penalty of their tokens and EOS."""
    tokens = torch.stack(steps, dim=1)  # (rows, steps)
    lengths = ((tokens != EOS) & (tokens != PAD)).sum(dim=1) + 1  # EOS included
    score = log_prob / gnmt_length_penalty(lengths, alpha)
    rows = zip(tokens.tolist(), score.tolist(), log_prob.tolist())
    return [Hypothesis(_strip(ids), s, lp) for ids, s, lp in rows]


def gnmt_length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length penalty ((5 + len) / 6) ** alpha; scores are divided by it.

    ``lengths`` count the output tokens including EOS. alpha = 0 gives 1 (no normalisation).
    """
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Maximum output length (EOS included) for each source: a * source_length + b, at least 1."""
    return (a * src_lengths.float() + b).long().clamp(min=1)


def mask_step(
    log_probs: torch.Tensor, at_limit: torch.Tensor | None, finished: torch.Tensor | None
) -> None:
    """The rules of every search step, in place on (rows, vocab) log-probabilities: PAD is never
    chosen; a row at its last allowed position can only end (EOS keeps its log-probability, so
    the score stays the model's); a finished row goes on with PAD at no cost. None for
    ``at_limit`` or ``finished``: no such row (the search knows, and skips the work)."""
    log_probs.select(1, PAD).fill_(NEG_INF)
    # filled by row index: a boolean row mask would pass over the whole (rows, vocab) tensor
    if at_limit is not None:
        limit_rows = at_limit.nonzero().squeeze(1)
        eos = log_probs.select(1, EOS).index_select(0, limit_rows)
        log_probs.index_fill_(0, limit_rows, NEG_INF)
        log_probs.select(1, EOS).index_copy_(0, limit_rows, eos)
    if finished is not None:
        finished_rows = finished.nonzero().squeeze(1)
        log_probs.index_fill_(0, finished_rows, NEG_INF)
        log_probs.select(1, PAD).index_fill_(0, finished_rows, 0.0)


@torch.no_grad()
def greedy_search(
    model,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len: torch.Tensor,
    length_penalty: float = DecodeOptions.length_penalty,
) -> list[Hypothesis]:
    """The most probable token at every step, for each sentence of the batch; scored with
    ``length_penalty`` as beam search scores (which it does not change: all rows of one
    sentence have the same length)."""
    memory = model.encode(src_tokens, src_lengths)
    state = model.init_state(memory)
    batch = src_tokens.size(0)
    prev = torch.full((batch,), BOS, dtype=torch.long, device=src_tokens.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src_tokens.device)
    log_prob = torch.zeros(batch, device=src_tokens.device)
    steps, first_limit, done = [], int(max_len.min()), 0
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (batch, vocab)
        at_limit = (t + 1 >= max_len) & ~finished if t + 1 >= first_limit else None
        mask_step(log_probs, at_limit, finished if done else None)
        best, prev = log_probs.max(dim=-1)
        log_prob += best
        steps.append(prev)
        finished |= prev == EOS
        done = int(finished.sum())
        if done == batch:
            break
    return _scored(steps, log_prob, length_penalty)


@dataclass
class Beams:
    """The per-row tensors of a beam search, rows = sentences x beam with each sentence's beams
    adjacent: reordered together, so no row's parts can fall out of step."""

    state: torch.Tensor  # the decoder state
    tokens: torch.Tensor  # (rows, steps): BOS, then the tokens so far
    log_prob: torch.Tensor  # summed log-probability so far
    score: torch.Tensor  # the length-normalised score once finished, else -inf
    finished: torch.Tensor
    max_len: torch.Tensor  # the sentence's length limit

    def select(self, rows: torch.Tensor) -> Beams:
        return Beams(*(getattr(self, f.name).index_select(0, rows) for f in fields(self)))

    def advance(
        self, rows: torch.Tensor, token: torch.Tensor, log_prob: torch.Tensor, score: torch.Tensor
    ) -> Beams:
        """The beams after a step: each continues row ``rows[i]`` (of its own sentence, so
        ``max_len`` stays) with ``token[i]``, its new summed log-probability and, where the
        token is EOS, the score it ends with."""
        ended = token == EOS
        return Beams(
            state=self.state.index_select(0, rows),
            tokens=torch.cat([self.tokens.index_select(0, rows), token.unsqueeze(1)], dim=1),
            log_prob=log_prob,
            score=torch.where(ended, score, self.score.index_select(0, rows)),
            finished=self.finished.index_select(0, rows) | ended,
            max_len=self.max_len,
        )


# the output layer's rows per slice in beam search: a slice's logits (64 x vocab) stay in the
# cache from the matrix product through the softmax to the top-k
ROW_SLICE = 64


def best_tokens(
    model,
    features: torch.Tensor,
    k: int,
    at_limit: torch.Tensor | None,
    finished: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` best log-probabilities and their tokens (rows, k), after the rules of
    :func:`mask_step`, from the output layer's input ``features``: taken ``ROW_SLICE`` rows at a
    time, which is faster than the whole (rows, vocab) tensor at once, and the same."""
    best, tokens = [], []
    for start in range(0, features.size(0), ROW_SLICE):
        part = slice(start, start + ROW_SLICE)
        log_probs = model.log_probs(features[part])
        limit = at_limit[part] if at_limit is not None else None
        mask_step(log_probs, limit, finished[part] if finished is not None else None)
        part_best, part_tokens = log_probs.topk(min(k, log_probs.size(1)), dim=1)
        best.append(part_best)
        tokens.append(part_tokens)
    if len(best) == 1:
        return best[0], tokens[0]
    return torch.cat(best), torch.cat(tokens)


@torch.no_grad()
def beam_search(
    model,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len: torch.Tensor,
    beam: int = 5,
    length_penalty: float = 1.0,
    n_best: int = 1,
    drop_finished: bool = False,
) -> list[list[Hypothesis]]:
    """The ``n_best`` highest-scoring translations of each sentence, best first.

    Every candidate is ranked by its length-normalised score as if it ended there (as
    OpenNMT-py's GNMT scorer does), so live and finished hypotheses compete on one scale; a
    finished row only emits PAD and keeps its score. With ``drop_finished``, a sentence whose
    beams have all ended leaves the batch (same results, less work).
    """
    batch, device = src_tokens.size(0), src_tokens.device
    memory = model.encode(src_tokens, src_lengths)  # one copy per sentence, read by its beams
    tile = torch.arange(batch, device=device).repeat_interleave(beam)  # (batch*beam,)
    rows = batch * beam
    beams = Beams(
        state=model.init_state(memory).index_select(0, tile),
        tokens=torch.full((rows, 1), BOS, dtype=torch.long, device=device),
        log_prob=torch.zeros(rows, device=device),
        score=torch.full((rows,), NEG_INF, device=device),
        finished=torch.zeros(rows, dtype=torch.bool, device=device),
        max_len=max_len.to(device).index_select(0, tile),
    )
    beams.log_prob.view(batch, beam)[:, 1:] = NEG_INF  # step 0: one live beam per sentence
    sentence_ids = torch.arange(batch, device=device)  # which input sentence each one is
    retired: list[tuple[list[int], Beams]] = []
    steps, first_limit = int(max_len.max()), int(max_len.min())
    # At step t every live row holds t tokens, so one length penalty serves them all (a
    # finished row's only candidate, PAD, keeps its score): one number a step, known ahead.
    penalties = gnmt_length_penalty(torch.arange(1, steps + 1), length_penalty).tolist()
    prev, done = beams.tokens[:, 0], 0  # done: finished rows, counted after every step
    first_row = torch.arange(batch, device=device).unsqueeze(1) * beam  # of each sentence
    for t in range(steps):
        features, beams.state = model.decode_features(prev, beams.state, memory)
        at_limit = (t + 1 >= beams.max_len) & ~beams.finished if t + 1 >= first_limit else None
        # a row's prefix score and length penalty are the same for all its tokens, so its
        # sentence's best candidates are among each row's best ``beam`` tokens: rank those
        row_best, row_token = best_tokens(
            model, features, beam, at_limit, beams.finished if done else None
        )
        k = row_best.size(1)
        candidates = beams.log_prob.unsqueeze(1) + row_best
        normalised = candidates / penalties[t]
        if done:  # a finished row's one candidate (PAD) keeps the score it ended with
            pad = normalised.select(1, 0)
            pad.copy_(torch.where(beams.finished, beams.score, pad))

        top_score, top_index = normalised.view(-1, beam * k).topk(beam, dim=1)
        source_row = (top_index.div(k, rounding_mode="floor") + first_row).view(-1)
        chosen = (top_index + first_row * k).view(-1)  # (rows,) into the (rows, k) above
        prev = row_token.take(chosen)
        beams = beams.advance(source_row, prev, candidates.take(chosen), top_score.view(-1))
        done = int(beams.finished.sum())
        if done == beams.finished.numel():
            break
        if drop_finished and done >= beam and first_row.size(0) > 1:
            beams, sentence_ids, memory = _retire(beams, sentence_ids, memory, beam, retired)
            done, prev = int(beams.finished.sum()), beams.tokens[:, -1]
            first_row = first_row[: sentence_ids.numel()]
    retired.append((sentence_ids.tolist(), beams))
    return _best_first(retired, batch, beam, n_best)


@torch.no_grad()
def sample_search(
    model,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len: torch.Tensor,
    sampling: Sampling,
    n: int = 1,
    generator: torch.Generator | None = None,
    length_penalty: float = DecodeOptions.length_penalty,
) -> list[list[Hypothesis]]:
    """``n`` translations of each sentence drawn token by token, best first; scored as beam
    search scores, from the model's log-probabilities at temperature 1 and the length penalty
    ``length_penalty``."""
    batch, device = src_tokens.size(0), src_tokens.device
    memory = model.encode(src_tokens, src_lengths)
    tile = torch.arange(batch, device=device).repeat_interleave(n)
    state = model.init_state(memory).index_select(0, tile)
    row_max_len = max_len.to(device).index_select(0, tile)
    prev = torch.full((batch * n,), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(batch * n, dtype=torch.bool, device=device)
    log_prob = torch.zeros(batch * n, device=device)
    steps, first_limit, done = [], int(max_len.min()), 0
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (rows, vocab)
        at_limit = (t + 1 >= row_max_len) & ~finished if t + 1 >= first_limit else None
        mask_step(log_probs, at_limit, finished if done else None)
        weights = (log_probs / sampling.temperature).softmax(dim=-1)
        if sampling.top_k:
            kept = weights.topk(min(sampling.top_k, weights.size(1)), dim=-1)
            weights = torch.zeros_like(weights).scatter_(1, kept.indices, kept.values)
        prev = torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(device)
        log_prob += log_probs.gather(1, prev.unsqueeze(1)).squeeze(1)
        steps.append(prev)
        finished |= prev == EOS
        done = int(finished.sum())
        if done == finished.numel():
            break
    hyps = _scored(steps, log_prob, length_penalty)
    return [
        sorted(hyps[i * n : (i + 1) * n], key=lambda h: h.score, reverse=True) for i in range(batch)
    ]


def _retire(beams: Beams, sentence_ids: torch.Tensor, memory: dict, beam: int, retired: list):
    """Move the sentences whose beams have all ended out of the batch, into ``retired``."""
    complete = beams.finished.view(-1, beam).all(dim=1)  # (sentences,)
    if not complete.any():
        return beams, sentence_ids, memory
    retired.append((sentence_ids[complete].tolist(), beams.select(_rows_of(complete, beam))))
    keep = ~complete
    memory = {key: value[keep] for key, value in memory.items()}
    return beams.select(_rows_of(keep, beam)), sentence_ids[keep], memory


def _rows_of(sentences: torch.Tensor, beam: int) -> torch.Tensor:
    """The row indices of the sentences where the (sentences,) mask is True."""
    chosen = sentences.nonzero().squeeze(1)
    return (chosen.unsqueeze(1) * beam + torch.arange(beam, device=chosen.device)).view(-1)


def _best_first(retired: list, batch: int, beam: int, n_best: int) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses of each input sentence, by score, from the retired groups."""
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for sentence_ids, beams in retired:
        score = beams.score.view(len(sentence_ids), beam)
        log_prob = beams.log_prob.view(len(sentence_ids), beam)
        order = score.argsort(dim=1, descending=True)
        tokens = beams.tokens[:, 1:].tolist()
        for b, sentence in enumerate(sentence_ids):
            for k in order[b, :n_best].tolist():
                results[sentence].append(
                    Hypothesis(
                        _strip(tokens[b * beam + k]), float(score[b, k]), float(log_prob[b, k])
                    )
                )
    return results


def _strip(ids: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS or PAD."""
    out = []
    for i in ids:
        if i in (EOS, PAD):
            break
        out.append(i)
    return out


def search_batches(
    model,
    src_ids: list[list[int]],
    decode: DecodeConfig,
    device: torch.device,
    options: DecodeOptions | None = None,
) -> list[list[Hypothesis]]:
    """The ``options.n_best`` hypotheses of each source (id lists), in input order: sources are
    sorted by length into batches of ``decode.batch_size``, each searched as ``options`` ask
    (default: the config's): beam 1 with one hypothesis is greedy; sampling draws from one
    generator, seeded once."""
    options = options if options is not None else DecodeOptions.from_config(decode)
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]), reverse=True)
    results: list = [None] * len(src_ids)
    model.eval()
    sampling = options.sampling
    generator = torch.Generator().manual_seed(sampling.seed) if sampling else None
    for start in range(0, len(order), decode.batch_size):
        chunk = order[start : start + decode.batch_size]
        batch = source_batch([src_ids[i] for i in chunk])
        src_tokens, src_lengths = batch.src_tokens.to(device), batch.src_lengths.to(device)
        max_len = max_lengths(batch.src_lengths, decode.max_len_a, decode.max_len_b).to(device)
        if sampling is not None:
            hyps = sample_search(
                model,
                src_tokens,
                src_lengths,
                max_len,
                sampling,
                options.n_best,
                generator,
                options.length_penalty,
            )
        elif options.beam == 1 and options.n_best == 1:
            greedy = greedy_search(model, src_tokens, src_lengths, max_len, options.length_penalty)
            hyps = [[h] for h in greedy]
        else:
            hyps = beam_search(
                model,
                src_tokens,
                src_lengths,
                max_len,
                beam=options.beam,
                length_penalty=options.length_penalty,
                n_best=options.n_best,
                drop_finished=decode.drop_finished,
            )
        for index, hyp in zip(chunk, hyps):
            results[index] = hyp
    return results
