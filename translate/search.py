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


def mask_step(log_probs: torch.Tensor, at_limit: torch.Tensor, finished: torch.Tensor) -> None:
    """The rules of every search step, in place on (rows, vocab) log-probabilities: PAD is never
    chosen; a row at its last allowed position can only end (EOS keeps its log-probability, so
    the score stays the model's); a finished row goes on with PAD at no cost."""
    log_probs[:, PAD] = NEG_INF
    # filled by row index: a boolean row mask would pass over the whole (rows, vocab) tensor
    limit_rows, finished_rows = at_limit.nonzero().squeeze(1), finished.nonzero().squeeze(1)
    eos = log_probs[limit_rows, EOS]
    log_probs.index_fill_(0, limit_rows, NEG_INF)
    log_probs[limit_rows, EOS] = eos
    log_probs.index_fill_(0, finished_rows, NEG_INF)
    log_probs[finished_rows, PAD] = 0.0


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
    steps = []
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (batch, vocab)
        mask_step(log_probs, (t + 1 >= max_len) & ~finished, finished)
        best, prev = log_probs.max(dim=-1)
        log_prob += best
        steps.append(prev)
        finished |= prev == EOS
        if finished.all():
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
    lengths: torch.Tensor  # tokens so far, EOS included
    max_len: torch.Tensor  # the sentence's length limit

    def select(self, rows: torch.Tensor) -> Beams:
        return Beams(*(getattr(self, f.name).index_select(0, rows) for f in fields(self)))


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
        lengths=torch.zeros(rows, dtype=torch.long, device=device),
        max_len=max_len.to(device).index_select(0, tile),
    )
    beams.log_prob.view(batch, beam)[:, 1:] = NEG_INF  # step 0: one live beam per sentence
    sentence_ids = torch.arange(batch, device=device)  # which input sentence each one is
    retired: list[tuple[list[int], Beams]] = []
    for t in range(int(max_len.max())):
        log_probs, beams.state = model.decode_step(beams.tokens[:, -1], beams.state, memory)
        mask_step(log_probs, (t + 1 >= beams.max_len) & ~beams.finished, beams.finished)
        # a row's prefix score and length penalty are the same for all its tokens, so its
        # sentence's best candidates are among each row's best ``beam`` tokens: rank those
        k = min(beam, log_probs.size(1))
        row_best, row_token = log_probs.topk(k, dim=1)  # (rows, k)
        candidates = beams.log_prob.unsqueeze(1) + row_best
        normalised = candidates / gnmt_length_penalty(beams.lengths + 1, length_penalty)[:, None]
        normalised[:, 0] = torch.where(beams.finished, beams.score, normalised[:, 0])  # PAD

        n_sentences = sentence_ids.numel()
        top_score, top_index = normalised.view(n_sentences, beam * k).topk(beam, dim=1)
        first_row = torch.arange(n_sentences, device=device).unsqueeze(1) * beam
        source_row = (top_index.div(k, rounding_mode="floor") + first_row).view(-1)
        chosen = (top_index + first_row * k).view(-1)  # (rows,) into the (rows, k) above
        token = row_token.view(-1)[chosen]

        beams = beams.select(source_row)
        beams.log_prob = candidates.view(-1)[chosen]
        beams.lengths += ~beams.finished
        beams.score = torch.where(token == EOS, top_score.view(-1), beams.score)
        beams.finished |= token == EOS
        beams.tokens = torch.cat([beams.tokens, token.unsqueeze(1)], dim=1)
        if beams.finished.all():
            break
        if drop_finished:
            beams, sentence_ids, memory = _retire(beams, sentence_ids, memory, beam, retired)
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
    steps = []
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (rows, vocab)
        mask_step(log_probs, (t + 1 >= row_max_len) & ~finished, finished)
        weights = (log_probs / sampling.temperature).softmax(dim=-1)
        if sampling.top_k:
            kept = weights.topk(min(sampling.top_k, weights.size(1)), dim=-1)
            weights = torch.zeros_like(weights).scatter_(1, kept.indices, kept.values)
        prev = torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(device)
        log_prob += log_probs.gather(1, prev.unsqueeze(1)).squeeze(1)
        steps.append(prev)
        finished |= prev == EOS
        if finished.all():
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
