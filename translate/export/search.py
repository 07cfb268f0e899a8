"""Greedy and beam search in numpy, over the model interface of :mod:`translate.search`
(``encode``, ``init_state``, ``decode_step``) with numpy arrays: the same rules, scores and
results as that module's torch functions, step for step, so that the ONNX engine translates as
the PyTorch one does (see :mod:`.manifest` for the rules)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # translate.data.vocab's ids, which import torch
NEG_INF = np.float32(-np.inf)


@dataclass
class Hypothesis:
    """A finished translation in subword ids (no BOS/EOS), with its search score."""

    tokens: list[int]
    score: float  # log_prob divided by the length penalty
    log_prob: float  # sum of the token log-probabilities, EOS included


def gnmt_length_penalty(lengths: np.ndarray, alpha: float) -> np.ndarray:
    """((5 + len) / 6) ** alpha in float32, ``lengths`` counting EOS; scores are divided by it."""
    return ((np.float32(5.0) + lengths.astype(np.float32)) / np.float32(6.0)) ** np.float32(alpha)


def max_lengths(src_lengths: np.ndarray, a: float, b: int) -> np.ndarray:
    """Maximum output length (EOS included): a * source_length + b, at least 1."""
    limit = (np.float32(a) * src_lengths.astype(np.float32) + np.float32(b)).astype(np.int64)
    return np.maximum(limit, 1)


def mask_step(
    log_probs: np.ndarray, at_limit: np.ndarray | None, finished: np.ndarray | None
) -> None:
    """translate.search.mask_step, in place: PAD never; only EOS at the limit; PAD after EOS
    (None: no such row)."""
    log_probs[:, PAD] = NEG_INF
    if at_limit is not None:
        eos = log_probs[at_limit, EOS]
        log_probs[at_limit] = NEG_INF
        log_probs[at_limit, EOS] = eos
    if finished is not None:
        log_probs[finished] = NEG_INF
        log_probs[finished, PAD] = 0.0


def _strip(ids: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS or PAD."""
    out = []
    for i in ids:
        if i in (EOS, PAD):
            break
        out.append(i)
    return out


def greedy_search(model, src_tokens, src_lengths, max_len, length_penalty) -> list[Hypothesis]:
    """The most probable token at every step, for each sentence of the batch."""
    memory = model.encode(src_tokens, src_lengths)
    state = model.init_state(memory)
    batch = src_tokens.shape[0]
    prev = np.full(batch, BOS, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    log_prob = np.zeros(batch, dtype=np.float32)
    steps, first_limit = [], int(max_len.min())
    for t in range(int(max_len.max())):
        log_probs, state = model.decode_step(prev, state, memory)  # (batch, vocab)
        at_limit = (t + 1 >= max_len) & ~finished if t + 1 >= first_limit else None
        mask_step(log_probs, at_limit, finished if finished.any() else None)
        prev = log_probs.argmax(axis=-1)
        log_prob += log_probs[np.arange(batch), prev]
        steps.append(prev)
        finished |= prev == EOS
        if finished.all():
            break
    tokens = np.stack(steps, axis=1)  # (batch, steps)
    lengths = ((tokens != EOS) & (tokens != PAD)).sum(axis=1) + 1  # EOS included
    score = log_prob / gnmt_length_penalty(lengths, length_penalty)
    rows = zip(tokens.tolist(), score.tolist(), log_prob.tolist())
    return [Hypothesis(_strip(ids), s, lp) for ids, s, lp in rows]


@dataclass
class Beams:
    """The per-row arrays of a beam search (rows = sentences x beam), reordered together."""

    state: np.ndarray
    tokens: np.ndarray  # (rows, steps): BOS, then the tokens so far
    log_prob: np.ndarray
    score: np.ndarray  # the length-normalised score once finished, else -inf
    finished: np.ndarray
    max_len: np.ndarray

    def select(self, rows: np.ndarray) -> Beams:
        return Beams(*(getattr(self, f.name)[rows] for f in fields(self)))


def _top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of each row, largest first, and their indices (as torch.topk)."""
    index = np.argpartition(-values, k - 1, axis=1)[:, :k]
    chosen = np.take_along_axis(values, index, axis=1)
    order = np.argsort(-chosen, axis=1, kind="stable")
    return np.take_along_axis(chosen, order, axis=1), np.take_along_axis(index, order, axis=1)


def beam_search(
    model, src_tokens, src_lengths, max_len, beam: int, length_penalty: float, n_best: int
) -> list[list[Hypothesis]]:
    """The ``n_best`` highest-scoring translations of each sentence, best first: the beam
    search of translate.search, a sentence leaving the batch once its beams have all ended."""
    batch = src_tokens.shape[0]
    memory = model.encode(src_tokens, src_lengths)  # one copy per sentence, read by its beams
    tile = np.repeat(np.arange(batch), beam)  # (batch*beam,)
    rows = batch * beam
    beams = Beams(
        state=model.init_state(memory)[tile],
        tokens=np.full((rows, 1), BOS, dtype=np.int64),
        log_prob=np.zeros(rows, dtype=np.float32),
        score=np.full(rows, NEG_INF, dtype=np.float32),
        finished=np.zeros(rows, dtype=bool),
        max_len=max_len[tile],
    )
    beams.log_prob.reshape(batch, beam)[:, 1:] = NEG_INF  # step 0: one live beam per sentence
    sentence_ids = np.arange(batch)
    retired: list[tuple[list[int], Beams]] = []
    steps, first_limit = int(max_len.max()), int(max_len.min())
    # as in translate.search: at step t every live row holds t tokens, so one penalty a step
    penalties = gnmt_length_penalty(np.arange(1, steps + 1), length_penalty)
    for t in range(steps):
        log_probs, beams.state = model.decode_step(beams.tokens[:, -1], beams.state, memory)
        at_limit = (t + 1 >= beams.max_len) & ~beams.finished if t + 1 >= first_limit else None
        any_finished = beams.finished.any()
        mask_step(log_probs, at_limit, beams.finished if any_finished else None)
        # as translate.search ranks: each row's best ``beam`` tokens hold its sentence's best
        k = min(beam, log_probs.shape[1])
        row_best, row_token = _top_k(log_probs, k)  # (rows, k)
        candidates = beams.log_prob[:, None] + row_best
        normalised = candidates / penalties[t]
        if any_finished:  # a finished row's one candidate (PAD) keeps its score
            normalised[:, 0] = np.where(beams.finished, beams.score, normalised[:, 0])

        n_sentences = sentence_ids.size
        top_score, top_index = _top_k(normalised.reshape(n_sentences, beam * k), beam)
        first_row = np.arange(n_sentences)[:, None] * beam
        source_row = (top_index // k + first_row).reshape(-1)
        chosen = (top_index + first_row * k).reshape(-1)  # (rows,) into the (rows, k) above
        token = row_token.reshape(-1)[chosen]

        beams = beams.select(source_row)
        beams.log_prob = candidates.reshape(-1)[chosen]
        beams.score = np.where(token == EOS, top_score.reshape(-1), beams.score)
        beams.finished = beams.finished | (token == EOS)
        beams.tokens = np.concatenate([beams.tokens, token[:, None]], axis=1)
        if beams.finished.all():
            break
        complete = beams.finished.reshape(-1, beam).all(axis=1)  # (sentences,)
        if complete.any():  # retire them: same results, less work
            retired.append((sentence_ids[complete].tolist(), beams.select(_rows(complete, beam))))
            keep = ~complete
            memory = {key: value[keep] for key, value in memory.items()}
            beams, sentence_ids = beams.select(_rows(keep, beam)), sentence_ids[keep]
    retired.append((sentence_ids.tolist(), beams))
    return _best_first(retired, batch, beam, n_best)


def _rows(sentences: np.ndarray, beam: int) -> np.ndarray:
    """The row indices of the sentences where the (sentences,) mask is True."""
    return (np.flatnonzero(sentences)[:, None] * beam + np.arange(beam)).reshape(-1)


def _best_first(retired: list, batch: int, beam: int, n_best: int) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses of each input sentence, by score, from the retired groups."""
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for sentence_ids, beams in retired:
        score = beams.score.reshape(len(sentence_ids), beam)
        log_prob = beams.log_prob.reshape(len(sentence_ids), beam)
        order = np.argsort(-score, axis=1, kind="stable")
        tokens = beams.tokens[:, 1:].tolist()
        for b, sentence in enumerate(sentence_ids):
            for k in order[b, :n_best].tolist():
                hypothesis = Hypothesis(
                    _strip(tokens[b * beam + k]), float(score[b, k]), float(log_prob[b, k])
                )
                results[sentence].append(hypothesis)
    return results
