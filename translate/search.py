"""Greedy and beam search over the small model interface of :mod:`translate.model`.

Both are batched over sentences (and beams) and stop early once every row has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .vocab import BOS, EOS, PAD

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """A finished translation in subword ids (no BOS/EOS), with its search score."""

    tokens: list[int]
    score: float  # length-normalised log-probability (raw when alpha = 0)
    log_prob: float  # sum of the token log-probabilities, EOS included


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length penalty ((5 + len) / 6) ** alpha; scores are divided by it.

    ``lengths`` count the output tokens including EOS. alpha = 0 gives 1 (no normalisation).
    """
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Maximum output length (EOS included) for each source: a * source_length + b, at least 1."""
    return (a * src_lengths.float() + b).long().clamp(min=1)


def _reorder(memory: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value.index_select(0, index) for key, value in memory.items()}


@torch.no_grad()
def greedy_search(
    model, src_tokens: torch.Tensor, src_lengths: torch.Tensor, max_len: torch.Tensor
) -> list[Hypothesis]:
    """The most probable token at every step, for each sentence of the batch."""
    memory = model.encode(src_tokens, src_lengths)
    state = model.init_state(memory)
    batch = src_tokens.size(0)
    prev = torch.full((batch,), BOS, dtype=torch.long, device=src_tokens.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src_tokens.device)
    log_prob = torch.zeros(batch, device=src_tokens.device)
    steps = []
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (batch, vocab)
        log_probs[:, PAD] = NEG_INF
        at_limit = (t + 1 >= max_len) & ~finished
        log_probs[at_limit, :EOS] = NEG_INF  # the last allowed position can only be EOS
        log_probs[at_limit, EOS + 1 :] = NEG_INF
        best, prev = log_probs.max(dim=-1)
        prev = prev.masked_fill(finished, PAD)
        log_prob += best.masked_fill(finished, 0.0)
        steps.append(prev)
        finished |= prev == EOS
        if finished.all():
            break
    tokens = torch.stack(steps, dim=1).tolist()  # (batch, steps)
    return [
        Hypothesis(_strip(row), float(lp), float(lp)) for row, lp in zip(tokens, log_prob.tolist())
    ]


def _rows_of(sentences: torch.Tensor, beam: int) -> torch.Tensor:
    """The (sentences * beam) row indices of the given sentence positions."""
    offsets = torch.arange(beam, device=sentences.device)
    return (sentences.unsqueeze(1) * beam + offsets).view(-1)


def _strip(ids: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS or PAD."""
    out = []
    for i in ids:
        if i in (EOS, PAD):
            break
        out.append(i)
    return out


@torch.no_grad()
def beam_search(
    model,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len: torch.Tensor,
    beam: int = 5,
    alpha: float = 1.0,
    n_best: int = 1,
    shrink: bool = False,
) -> list[list[Hypothesis]]:
    """The ``n_best`` highest-scoring translations of each sentence, best first.

    The batch keeps a (sentences * beam) shape; with ``shrink``, a sentence whose beams have
    all finished leaves the batch (same results; see bench/ for which is faster). A finished
    row may only emit PAD at zero cost and carries its final, length-normalised score; live
    rows compete on their log-prob divided by the length penalty of their length so far (as
    OpenNMT-py's GNMT scorer does).
    """
    batch, device = src_tokens.size(0), src_tokens.device
    sentence_ids = torch.arange(batch, device=device)  # which input sentence each one is
    done: list[tuple[list[int], torch.Tensor, torch.Tensor, list[list[int]]]] = []
    rows = batch * beam
    tile = torch.arange(batch, device=device).repeat_interleave(beam)  # (batch*beam,)
    memory = model.encode(src_tokens, src_lengths)  # one copy per sentence, read by its beams
    state = model.init_state(memory).index_select(0, tile)
    row_max_len = max_len.to(device).index_select(0, tile)

    raw = torch.zeros(rows, device=device)  # accumulated log-prob of each row
    raw.view(batch, beam)[:, 1:] = NEG_INF  # step 0: only one live beam per sentence
    final = torch.full((rows,), NEG_INF, device=device)  # normalised score once finished
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    tokens = torch.full((rows, 0), BOS, dtype=torch.long, device=device)
    prev = torch.full((rows,), BOS, dtype=torch.long, device=device)

    first_row = torch.arange(batch, device=device) * beam  # (batch,)
    eos_only = pad_only = None
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (rows, vocab)
        vocab = log_probs.size(1)
        if eos_only is None:
            eos_only = torch.full((vocab,), NEG_INF, device=device)
            pad_only = eos_only.clone()
            eos_only[EOS] = pad_only[PAD] = 0.0
        log_probs[:, PAD] = NEG_INF
        at_limit = (t + 1 >= row_max_len) & ~finished
        log_probs[at_limit] = eos_only  # the last allowed position can only be EOS
        log_probs[finished] = pad_only  # finished rows continue with PAD at zero cost
        candidates = raw.unsqueeze(1) + log_probs  # (rows, vocab): raw score of each extension
        # every candidate is ranked by its length-normalised score (as if it ended here), so
        # finished and live hypotheses compete on the same scale; a finished row keeps its score
        rank = candidates / length_penalty(lengths + 1, alpha).unsqueeze(1)
        rank[finished, PAD] = final[finished]

        top_rank, top_index = rank.view(batch, beam * vocab).topk(beam, dim=1)  # (batch, beam)
        beam_index = top_index.div(vocab, rounding_mode="floor")  # which beam it extends
        source_row = (beam_index + first_row.unsqueeze(1)).view(-1)  # (rows,)
        token = top_index.fmod(vocab).view(-1)  # (rows,)

        was_finished = finished.index_select(0, source_row)
        raw = candidates.view(-1)[source_row * vocab + token]
        lengths = lengths.index_select(0, source_row) + (~was_finished).long()
        final = torch.where(token == EOS, top_rank.view(-1), final.index_select(0, source_row))
        finished = was_finished | (token == EOS)
        tokens = torch.cat([tokens.index_select(0, source_row), token.unsqueeze(1)], dim=1)
        state = state.index_select(0, source_row)
        prev = token
        if finished.all():
            break
        complete = finished.view(batch, beam).all(dim=1) if shrink else None  # (batch,)
        if complete is not None and complete.any():
            gone = _rows_of(complete.nonzero().squeeze(1), beam)
            done.append(
                (
                    sentence_ids[complete].tolist(),
                    final.index_select(0, gone),
                    raw.index_select(0, gone),
                    tokens.index_select(0, gone).tolist(),
                )
            )
            keep = (~complete).nonzero().squeeze(1)
            sentence_ids, batch = sentence_ids[keep], keep.numel()
            kept = _rows_of(keep, beam)
            memory = _reorder(memory, keep)
            state, raw, final, finished, lengths, tokens, prev, row_max_len = (
                x.index_select(0, kept)
                for x in (state, raw, final, finished, lengths, tokens, prev, row_max_len)
            )
            first_row = torch.arange(batch, device=device) * beam

    done.append((sentence_ids.tolist(), final, raw, tokens.tolist()))
    results: list[list[Hypothesis]] = [[] for _ in range(src_tokens.size(0))]
    for ids, final, raw, token_rows in done:
        final, raw = final.view(len(ids), beam), raw.view(len(ids), beam)
        order = final.argsort(dim=1, descending=True)
        for b, sentence in enumerate(ids):
            for k in order[b, :n_best].tolist():
                results[sentence].append(
                    Hypothesis(
                        _strip(token_rows[b * beam + k]), float(final[b, k]), float(raw[b, k])
                    )
                )
    return results
