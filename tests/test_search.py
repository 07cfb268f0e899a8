import math

import pytest
import torch

from translate import search
from translate.data.batches import pair_batch, source_batch
from translate.data.vocab import EOS
from translate.search import beam_search, gnmt_length_penalty, greedy_search, max_lengths

A, B, C = 4, 5, 6
VOCAB = 7


class ScriptedModel:
    """A decoder whose next-token probabilities are written in the test, per sentence and prefix.

    The state is the prefix so far; unlisted prefixes end the sentence (EOS with probability 1).
    """

    def __init__(self, tables: list[dict[tuple, dict[int, float]]]):
        self.tables = tables

    def encode(self, src_tokens, src_lengths):
        return {"sentence": torch.arange(src_tokens.size(0)).unsqueeze(1)}

    def init_state(self, memory):
        return torch.zeros(memory["sentence"].size(0), 1, dtype=torch.long)

    def decode_step(self, prev_tokens, state, memory):
        state = torch.cat([state, prev_tokens.unsqueeze(1)], dim=1)
        log_probs = torch.full((state.size(0), VOCAB), float("-inf"))
        beams = state.size(0) // memory["sentence"].size(0)  # rows per sentence of memory
        for row in range(state.size(0)):
            prefix = tuple(t for t in state[row, 2:].tolist())
            table = self.tables[int(memory["sentence"][row // beams])].get(prefix, {EOS: 1.0})
            for token, p in table.items():
                log_probs[row, token] = math.log(p)
        return log_probs, state

    def decode_features(self, prev_tokens, state, memory):
        """The first half of a step, as beam search calls it: here the features are the
        log-probabilities themselves."""
        return self.decode_step(prev_tokens, state, memory)

    def log_probs(self, features):
        return features


def run(tables, beam, length_penalty=0.0, max_len=6):
    src = torch.ones(len(tables), 2, dtype=torch.long)
    lengths = torch.full((len(tables),), 2)
    limit = torch.full((len(tables),), max_len)
    return beam_search(
        ScriptedModel(tables), src, lengths, limit, beam=beam, length_penalty=length_penalty
    )


# greedy takes A (0.6) and then ends (0.4): 0.24; B then EOS is 0.4 * 0.9 = 0.36
GREEDY_TRAP = {(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.4, A: 0.3, C: 0.3}, (B,): {EOS: 0.9, C: 0.1}}


def test_beam_escapes_greedy_trap():
    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([6])
    greedy = greedy_search(ScriptedModel([GREEDY_TRAP]), src, lengths, limit)[0]
    assert greedy.tokens == [A]
    assert greedy.log_prob == pytest.approx(math.log(0.24), abs=1e-5)
    best = run([GREEDY_TRAP], beam=2)[0][0]
    assert best.tokens == [B]
    assert best.log_prob == pytest.approx(math.log(0.36), abs=1e-5)


def _all_hypotheses(table, max_len):
    """Every complete hypothesis of a scripted table with its log-probability (brute force)."""
    done, frontier = [], [((), 0.0)]
    for _ in range(max_len):
        new = []
        for prefix, lp in frontier:
            for token, p in table.get(prefix, {EOS: 1.0}).items():
                if token == EOS:
                    done.append((list(prefix), lp + math.log(p)))
                else:
                    new.append(((*prefix, token), lp + math.log(p)))
        frontier = new
    return done


# "A A A" (0.5 * 0.9 * 0.9 * 0.9 = 0.3645) loses to "B" (0.45 * 0.95 = 0.4275) on raw
# log-probability but wins once the GNMT length penalty (alpha = 1) divides the scores.
LENGTH_TABLE = {
    (): {A: 0.5, B: 0.45, C: 0.05},
    (A,): {A: 0.9, EOS: 0.1},
    (A, A): {A: 0.9, EOS: 0.1},
    (A, A, A): {EOS: 0.9, C: 0.1},
    (B,): {EOS: 0.95, C: 0.05},
}


@pytest.mark.parametrize("alpha, expected", [(0.0, [B]), (1.0, [A, A, A])])
def test_length_penalty_changes_the_winner(alpha, expected):
    best = run([LENGTH_TABLE], beam=3, length_penalty=alpha)[0][0]
    assert best.tokens == expected
    exhaustive = max(
        _all_hypotheses(LENGTH_TABLE, 6),
        key=lambda h: h[1] / float(gnmt_length_penalty(torch.tensor(len(h[0]) + 1), alpha)),
    )
    assert best.tokens == exhaustive[0]
    penalty = float(gnmt_length_penalty(torch.tensor(len(expected) + 1), alpha))
    assert best.score == pytest.approx(exhaustive[1] / penalty, abs=1e-5)


def test_sentences_in_a_batch_do_not_interfere():
    together = run([GREEDY_TRAP, LENGTH_TABLE], beam=3, length_penalty=1.0)
    alone = [
        run([GREEDY_TRAP], beam=3, length_penalty=1.0)[0],
        run([LENGTH_TABLE], beam=3, length_penalty=1.0)[0],
    ]
    assert [h[0].tokens for h in together] == [h[0].tokens for h in alone]
    assert [h[0].score for h in together] == pytest.approx([h[0].score for h in alone])


def test_max_length_forces_eos():
    # ending early is unlikely (0.001); the end forced after three tokens costs log(0.01)
    endless = {prefix: {A: 0.999, EOS: 0.001} for prefix in [tuple([A] * n) for n in range(3)]}
    endless[(A, A, A)] = {A: 0.99, EOS: 0.01}
    best = run([endless], beam=2, max_len=4)[0][0]
    assert best.tokens == [A, A, A]  # three tokens and the forced EOS make four


# after "A" (0.5), all three continuations (0.17, 0.165, 0.16) beat every one after "B" (0.15)
ONE_ROW_TABLE = {
    (): {A: 0.5, B: 0.5},
    (A,): {A: 0.34, B: 0.33, C: 0.32, EOS: 0.01},
    (B,): {A: 0.3, B: 0.3, C: 0.2, EOS: 0.2},
}


def test_every_beam_may_extend_the_same_hypothesis():
    # the search ranks each row's best `beam` tokens: a row must be able to fill all beams
    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([6])
    hyps = beam_search(
        ScriptedModel([ONE_ROW_TABLE]), src, lengths, limit, beam=3, length_penalty=0.0, n_best=3
    )[0]
    exhaustive = sorted(_all_hypotheses(ONE_ROW_TABLE, 6), key=lambda h: h[1], reverse=True)
    assert [h.tokens for h in hyps] == [[A, A], [A, B], [A, C]]
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in exhaustive[:3]]
    assert [h.log_prob for h in hyps] == pytest.approx([lp for _, lp in exhaustive[:3]], abs=1e-5)


def test_n_best_is_sorted_and_distinct():
    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([6])
    hyps = beam_search(
        ScriptedModel([LENGTH_TABLE]), src, lengths, limit, beam=4, length_penalty=0.0, n_best=3
    )[0]
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 3


def test_length_penalty_function():
    assert float(gnmt_length_penalty(torch.tensor(1), 1.0)) == pytest.approx(1.0)
    assert float(gnmt_length_penalty(torch.tensor(7), 0.5)) == pytest.approx(math.sqrt(2.0))
    assert float(gnmt_length_penalty(torch.tensor(30), 0.0)) == 1.0


def test_max_lengths():
    assert max_lengths(torch.tensor([1, 10]), 1.5, 10).tolist() == [11, 25]


def test_beam_one_equals_greedy_and_batch_equals_single(trained_dir):
    from translate.data.batches import source_batch
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    model = translator.model
    ids = translator.src_vocab.encode(
        ["hund katze", "haus", "baum auto buch tisch stuhl", "katze katze hund auto"]
    )
    batch = source_batch(ids)
    limit = max_lengths(batch.src_lengths, 1.5, 10)
    greedy = greedy_search(model, batch.src_tokens, batch.src_lengths, limit)
    beam1 = beam_search(
        model, batch.src_tokens, batch.src_lengths, limit, beam=1, length_penalty=0.0
    )
    assert [h.tokens for h in greedy] == [h[0].tokens for h in beam1]
    assert [h.log_prob for h in greedy] == pytest.approx([h[0].log_prob for h in beam1], abs=1e-4)

    batched = beam_search(model, batch.src_tokens, batch.src_lengths, limit, beam=4)
    for i, sentence in enumerate(ids):
        one = source_batch([sentence])
        single = beam_search(model, one.src_tokens, one.src_lengths, limit[i : i + 1], beam=4)
        assert single[0][0].tokens == batched[i][0].tokens
        assert single[0][0].score == pytest.approx(batched[i][0].score, abs=1e-4)


def test_dropping_finished_sentences_changes_no_result(trained_dir):
    from translate.data.batches import source_batch
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    sentences = ["hund", "katze katze hund auto", "haus", "baum auto buch tisch stuhl", "auto"]
    batch = source_batch(translator.src_vocab.encode(sentences))
    limit = max_lengths(batch.src_lengths, 1.5, 10)
    args = (translator.model, batch.src_tokens, batch.src_lengths, limit)
    fixed = beam_search(*args, beam=3, n_best=3)
    dropped = beam_search(*args, beam=3, n_best=3, drop_finished=True)
    lengths = {len(hyps[0].tokens) for hyps in fixed}
    assert len(lengths) > 1  # sentences finish at different steps: some leave early
    for a, b in zip(fixed, dropped):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-5)


@pytest.mark.parametrize("drop_finished", [False, True])
def test_taking_the_output_layer_in_slices_of_rows_changes_no_result(
    trained_dir, drop_finished, monkeypatch
):
    """Beam search takes the output layer, the softmax, the step's rules and the top-k a slice
    of rows at a time: with slices of 2 rows (each sentence's beams split across slices, the
    length limit and finished rows falling in every slice) the results are those of one slice."""
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")
    sentences = ["hund", "katze katze hund auto", "haus", "baum auto buch tisch stuhl", "auto"]
    batch = source_batch(translator.src_vocab.encode(sentences))
    limit = max_lengths(batch.src_lengths, 1.0, 1)  # short: some sentences end at the limit
    args = (translator.model, batch.src_tokens, batch.src_lengths, limit)
    kwargs = {"beam": 3, "n_best": 3, "length_penalty": 1.0, "drop_finished": drop_finished}
    whole = beam_search(*args, **kwargs)
    monkeypatch.setattr(search, "ROW_SLICE", 2)
    sliced = beam_search(*args, **kwargs)
    assert len({len(hyps[0].tokens) for hyps in whole}) > 1
    for a, b in zip(whole, sliced):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-5)


# With alpha = 1, ending after "A" scores log(0.2295) / lp(2) = -1.26 while going on to "A A"
# ends at log(0.2805) / lp(3) = -0.95. Ranking a live hypothesis by its raw log-prob (-1.27)
# against the normalised score of one that just ended (-1.26) cut it off: compare both
# normalised. (Found on Multi30k, where that bias made beam 5 seven BLEU worse than greedy.)
EARLY_END = {
    (): {A: 0.51, B: 0.49},
    (A,): {EOS: 0.45, A: 0.55},
    (B,): {EOS: 0.45, B: 0.55},
    (A, A): {EOS: 1.0},
    (B, B): {EOS: 1.0},
}


@pytest.mark.parametrize("beam", [1, 2])
def test_live_hypotheses_are_not_cut_off_by_the_length_penalty(beam):
    best = run([EARLY_END], beam=beam, length_penalty=1.0)[0][0]
    assert best.tokens == [A, A]
    assert best.score == pytest.approx(math.log(0.2805) / (8 / 6), abs=1e-5)


def test_search_score_is_the_models_score(trained_dir):
    """Re-scoring the beam's output with teacher forcing gives the log-prob the search reported."""
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    model = translator.model
    sources = translator.src_vocab.encode(["hund katze", "haus baum baum", "stuhl"])
    src = source_batch(sources)
    hyps = beam_search(
        model,
        src.src_tokens,
        src.src_lengths,
        max_lengths(src.src_lengths, 2.0, 10),
        beam=3,
        length_penalty=0.0,
    )
    for source, (best, *_) in zip(sources, hyps):
        pair = pair_batch([source], [best.tokens])
        with torch.no_grad():
            log_probs = model(pair.src_tokens, pair.src_lengths, pair.tgt_in).log_softmax(-1)[0]
        rescored = log_probs.gather(1, pair.tgt_out[0].unsqueeze(1)).sum()
        assert float(rescored) == pytest.approx(best.log_prob, abs=1e-4)


def test_a_forced_end_costs_its_probability():
    """At the length limit only EOS may follow, and its log-probability still counts: greedy
    and beam report the model's score for the same cut-off hypothesis."""
    endless = {prefix: {A: 0.9, EOS: 0.1} for prefix in [tuple([A] * n) for n in range(10)]}
    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([3])
    greedy = greedy_search(ScriptedModel([endless]), src, lengths, limit)[0]
    best = run([endless], beam=1, max_len=3)[0][0]
    expected = 2 * math.log(0.9) + math.log(0.1)  # A, A and the forced EOS
    assert greedy.tokens == best.tokens == [A, A]
    assert greedy.log_prob == pytest.approx(expected, abs=1e-5)
    assert best.log_prob == pytest.approx(expected, abs=1e-5)


def test_search_batches_follows_the_options(trained_dir):
    """Sorted into batches and back, the hypotheses are those of one search over all with the
    options' beam, length penalty and n-best; the config's options are the default, and
    beam 1 (the training loop's validation) is greedy."""
    from translate.config import DecodeConfig
    from translate.decoding import DecodeOptions
    from translate.search import search_batches
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    model = translator.model
    sentences = ["hund katze", "haus", "baum auto buch tisch stuhl", "katze katze hund auto"]
    ids = translator.src_vocab.encode(sentences)
    decode = DecodeConfig(batch_size=2, length_penalty=0.0)
    cpu = torch.device("cpu")
    batch = source_batch(ids)
    limit = max_lengths(batch.src_lengths, decode.max_len_a, decode.max_len_b)
    args = (model, batch.src_tokens, batch.src_lengths, limit)
    options = DecodeOptions(beam=4, length_penalty=2.0, n_best=3)
    searched = search_batches(model, ids, decode, cpu, options)
    direct = beam_search(*args, beam=4, length_penalty=2.0, n_best=3)
    assert [[h.tokens for h in hyps] for hyps in searched] == [
        [h.tokens for h in hyps] for hyps in direct
    ]
    assert [h.score for hyps in searched for h in hyps] == pytest.approx(
        [h.score for hyps in direct for h in hyps], abs=1e-5
    )
    by_config = search_batches(model, ids, decode, cpu)  # beam 5, length penalty 0
    direct = beam_search(*args, beam=5, length_penalty=0.0)
    assert [h[0].score for h in by_config] == pytest.approx([h[0].score for h in direct], abs=1e-5)
    greedy = search_batches(model, ids, decode, cpu, DecodeOptions(beam=1))
    assert [h[0].tokens for h in greedy] == [h.tokens for h in greedy_search(*args)]


def test_greedy_and_sampling_scores_are_divided_by_the_length_penalty():
    """Every search reports log_prob / ((5 + len) / 6) ** alpha, len counting EOS: greedy's
    "A" then EOS is two tokens long, a drawn "B" then EOS too."""
    from translate.decoding import Sampling
    from translate.search import sample_search

    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([6])
    for alpha in (0.0, 1.0, 2.5):
        greedy = greedy_search(ScriptedModel([GREEDY_TRAP]), src, lengths, limit, alpha)[0]
        assert greedy.log_prob == pytest.approx(math.log(0.24), abs=1e-5)
        assert greedy.score == pytest.approx(math.log(0.24) / (7 / 6) ** alpha, abs=1e-5)
        drawn = sample_search(
            ScriptedModel([GREEDY_TRAP]),
            src,
            lengths,
            limit,
            Sampling(),
            n=40,
            generator=torch.Generator().manual_seed(0),
            length_penalty=alpha,
        )[0]
        for hyp in drawn:
            penalty = ((5 + len(hyp.tokens) + 1) / 6) ** alpha
            assert hyp.score == pytest.approx(hyp.log_prob / penalty, abs=1e-5)
        assert [h.score for h in drawn] == sorted((h.score for h in drawn), reverse=True)
        assert {tuple(h.tokens) for h in drawn} >= {(A,), (B,)}  # both lengths were drawn


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_every_search_reports_the_models_score_over_the_length_penalty(trained_dir, alpha):
    """Greedy equals beam 1 to the bit, score and all; and the score of each hypothesis of
    greedy, beam (n-best) and sampling is the model's teacher-forced log-probability of its
    tokens and EOS, divided by the penalty of that length."""
    from translate.decoding import Sampling
    from translate.search import sample_search
    from translate.translator import Translator

    translator = Translator.from_dir(trained_dir, device="cpu")  # CPU tensors below
    model = translator.model
    sources = translator.src_vocab.encode(
        ["hund katze", "haus baum baum", "stuhl", "katze auto buch tisch stuhl hund haus baum"]
    )
    src = source_batch(sources)
    args = (model, src.src_tokens, src.src_lengths, max_lengths(src.src_lengths, 1.5, 10))
    greedy = greedy_search(*args, alpha)
    beam1 = beam_search(*args, beam=1, length_penalty=alpha)
    assert [(h.tokens, h.score, h.log_prob) for h in greedy] == [
        (h[0].tokens, h[0].score, h[0].log_prob) for h in beam1
    ]
    beam = beam_search(*args, beam=4, length_penalty=alpha, n_best=3)
    generator = torch.Generator().manual_seed(3)
    drawn = sample_search(*args, Sampling(temperature=2.0), 3, generator, alpha)
    for source, found in zip(sources, zip(greedy, beam, drawn)):
        hyps = [found[0], *found[1], *found[2]]
        pair = pair_batch([source] * len(hyps), [h.tokens for h in hyps])
        with torch.no_grad():
            log_probs = model(pair.src_tokens, pair.src_lengths, pair.tgt_in).log_softmax(-1)
        for row, hyp in enumerate(hyps):
            n = len(hyp.tokens) + 1  # EOS included
            rescored = float(log_probs[row, :n].gather(1, pair.tgt_out[row, :n, None]).sum())
            assert hyp.log_prob == pytest.approx(rescored, abs=1e-4)
            assert hyp.score == pytest.approx(rescored / ((5 + n) / 6) ** alpha, abs=1e-4)


def test_a_beam_wider_than_the_vocabulary_finds_the_best_hypotheses():
    src, lengths, limit = torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), torch.tensor([4])
    wide = VOCAB + 3
    model = ScriptedModel([GREEDY_TRAP])
    hyps = beam_search(model, src, lengths, limit, beam=wide, length_penalty=0.0, n_best=2)[0]
    exhaustive = sorted(_all_hypotheses(GREEDY_TRAP, 4), key=lambda h: h[1], reverse=True)
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in exhaustive[:2]]


@pytest.mark.parametrize("drop_finished", [False, True])
def test_each_sentence_ends_at_its_own_length_limit(drop_finished):
    """The search checks the limits only from the first sentence's on; each sentence is still
    cut at its own, and a sentence that ended early keeps its result while the others go on."""
    endless = {prefix: {A: 0.9, EOS: 0.1} for prefix in [tuple([A] * n) for n in range(10)]}
    src, lengths = torch.ones(3, 2, dtype=torch.long), torch.tensor([2, 2, 2])
    limit = torch.tensor([5, 2, 4])  # EOS included
    model = ScriptedModel([endless] * 3)
    greedy = greedy_search(model, src, lengths, limit, length_penalty=1.0)
    beams = beam_search(
        model, src, lengths, limit, beam=2, length_penalty=1.0, drop_finished=drop_finished
    )
    for hyp, best, cut in zip(greedy, beams, [4, 1, 3]):
        expected = cut * math.log(0.9) + math.log(0.1)  # A cut times, then the forced EOS
        assert hyp.tokens == best[0].tokens == [A] * cut
        assert hyp.log_prob == pytest.approx(expected, abs=1e-5)
        assert best[0].score == pytest.approx(expected / ((5 + cut + 1) / 6), abs=1e-5)
