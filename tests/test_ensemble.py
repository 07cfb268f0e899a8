"""Ensemble decoding: one model is the model alone, a model with itself decodes as the model, two
models decode with the mean of their log-probabilities (greedy, beam, n-best, attention), and
models whose vocabularies differ are refused in one line by translate, tune and serve."""

from __future__ import annotations

import dataclasses
import random

import pytest
import sacrebleu
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from tests.conftest import GERMAN, tiny_config, tiny_model
from tests.test_serve import call, running
from translate import search
from translate.cli import main
from translate.data.batches import pad, pair_batch, source_batch
from translate.data.vocab import BOS, EOS, PAD, train_vocab
from translate.decoding import DecodeOptions
from translate.model.ensemble import Ensemble, vocabulary_difference
from translate.model.seq2seq import Seq2Seq, build_model, reverse_padded
from translate.modeldir import read_model_dir
from translate.search import max_lengths
from translate.train.loop import train
from translate.translator import Translator, attention_weights

_rng = random.Random(1)
# longer than the training sentences: the tiny models are unsure there and disagree
LONG = [" ".join(_rng.choice(GERMAN) for _ in range(_rng.randint(8, 14))) for _ in range(30)]


@pytest.fixture(autouse=True)
def keep_threads():
    """main() sets torch's threads for the process; leave them as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def trained(word_corpus, tmp_path_factory, name: str, *overrides: str):
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp(name) / "model"
    return train(tiny_config(word_corpus, f"out_dir={out}", *overrides), log=lambda m: None)


@pytest.fixture(scope="module")
def lstm_dir(word_corpus, tmp_path_factory):
    """The vocabulary of ``trained_dir`` with another seed and cell: an LSTM, 48 wide."""
    return trained(
        word_corpus,
        tmp_path_factory,
        "lstm",
        "train.seed=1",
        "model.cell=lstm",
        "model.hidden_dim=48",
    )


@pytest.fixture(scope="module")
def reversed_dir(word_corpus, tmp_path_factory):
    """General attention over the source read backwards, the vocabulary of ``attention_dir``."""
    overrides = ("train.seed=2", "model.attention=general", "model.reverse_source=true")
    return trained(word_corpus, tmp_path_factory, "reversed", *overrides)


@pytest.fixture(scope="module")
def other_vocab_dir(word_corpus, tmp_path_factory):
    """A model with a smaller SentencePiece vocabulary (trained one epoch: it is only refused)."""
    return trained(
        word_corpus, tmp_path_factory, "vocab30", "data.vocab_size=30", "train.max_epochs=1"
    )


def alone(model_dir) -> Translator:
    """The model of a directory in a Translator made by hand, without from_dir/from_dirs."""
    files = read_model_dir(model_dir)
    model = build_model(files.cfg.model, len(files.src_vocab), len(files.tgt_vocab))
    model.load_state_dict(files.weights)
    device = torch.device("cpu")
    return Translator(files.cfg, model.eval(), files.src_vocab, files.tgt_vocab, device)


def models_flags(*model_dirs) -> list[str]:
    return [flag for model_dir in model_dirs for flag in ("-m", str(model_dir))]


def texts(translations) -> list[str]:
    return [t.text for t in translations]


@pytest.mark.parametrize(
    "model, flags",
    [
        ("trained_dir", ["--beam", "1", "--scores"]),
        ("trained_dir", ["--beam", "5", "--scores"]),
        ("lstm_dir", ["--beam", "5", "--n-best", "3"]),
        ("reversed_dir", ["--beam", "3", "--scores", "--alignment"]),
        ("attention_dir", ["--beam", "1", "--n-best", "1", "--alignment"]),
    ],
    ids=["greedy", "beam5", "nbest", "alignment-reversed", "greedy-alignment"],
)
def test_one_model_and_a_model_with_itself_translate_as_the_model_alone(
    model, flags, request, tmp_path, capsys, monkeypatch
):
    """-m A is the model itself, unwrapped; -m A -m A averages two equal log-probabilities (and
    attentions) at every step: both write byte for byte what the model alone writes."""
    model_dir = request.getfixturevalue(model)
    capsys.readouterr()  # what training the fixture printed
    lines = [*LONG, "", "hund katze"]
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def translate(*models) -> str:
        command = ["translate", *models_flags(*models), "-i", str(source), "--threads", "1"]
        assert main([*command, *flags]) == 0
        return capsys.readouterr().out

    with monkeypatch.context() as patched:  # the model alone, loaded by hand, through the CLI
        patched.setattr(Translator, "from_dirs", lambda *args, **kwargs: alone(model_dir))
        expected = translate(model_dir)
    assert expected.count("\n") >= len(lines) and expected.count(" ||| ") >= len(lines)
    assert translate(model_dir) == expected
    assert translate(model_dir, model_dir) == expected
    assert type(Translator.from_dirs([model_dir]).model) is Seq2Seq
    assert type(Translator.from_dirs(str(model_dir)).model) is Seq2Seq  # one path, not letters
    assert isinstance(Translator.from_dirs([model_dir] * 2).model, Ensemble)


def hand_greedy(models: list[Seq2Seq], src_ids: list[int], limit: int) -> tuple[list[int], float]:
    """Greedy search written out: at each step the argmax of the mean of the models' log-probs
    (PAD never; EOS forced at the length limit), and the summed mean log-probs of the choices."""
    batch = source_batch([src_ids])
    memories = [model.encode(batch.src_tokens, batch.src_lengths) for model in models]
    states = [model.init_state(memory) for model, memory in zip(models, memories)]
    prev, tokens, log_prob = torch.tensor([BOS]), [], 0.0
    for step in range(limit):
        log_probs = []
        for number, model in enumerate(models):
            member_log_probs, states[number] = model.decode_step(
                prev, states[number], memories[number]
            )
            log_probs.append(member_log_probs[0])
        mean = sum(log_probs) / len(log_probs)
        mean[PAD] = float("-inf")
        token = EOS if step + 1 == limit else int(mean.argmax())
        log_prob += float(mean[token])
        if token == EOS:
            break
        tokens.append(token)
        prev = torch.tensor([token])
    return tokens, log_prob


@torch.no_grad()
def test_two_models_search_greedily_by_the_mean_of_their_log_probabilities(trained_dir, lstm_dir):
    """A GRU and an LSTM of other sizes: the ensemble's greedy output is the argmax of the mean
    log-probabilities at every step, its log-prob their sum, and it is neither model's own."""
    ensemble = Translator.from_dirs([trained_dir, lstm_dir], device="cpu")
    gru, lstm = alone(trained_dir), alone(lstm_dir)
    found = ensemble.translate_batch(LONG, DecodeOptions(beam=1))
    assert texts(found) != texts(gru.translate_batch(LONG, DecodeOptions(beam=1)))
    assert texts(found) != texts(lstm.translate_batch(LONG, DecodeOptions(beam=1)))
    decode = ensemble.cfg.decode
    for line, translation in zip(LONG[:8], found):
        src_ids = ensemble.src_vocab.encode([line])[0]
        limit = int(
            max_lengths(torch.tensor([len(src_ids) + 1]), decode.max_len_a, decode.max_len_b)
        )
        tokens, log_prob = hand_greedy([gru.model, lstm.model], src_ids, limit)
        assert translation.text == ensemble.tgt_vocab.decode(tokens)
        assert translation.candidates[0].log_prob == pytest.approx(log_prob, abs=1e-4)


@torch.no_grad()
def forced_log_probs(model: Seq2Seq, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """The model's log-probability of each (source, target) pair's target and EOS, in one
    teacher-forced batch."""
    batch = pair_batch([src for src, _ in pairs], [tgt for _, tgt in pairs])
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    chosen = log_probs.gather(2, batch.tgt_out.unsqueeze(2)).squeeze(2)  # (pairs, tgt_len)
    return chosen.masked_fill(batch.tgt_out == PAD, 0.0).sum(dim=1)


@pytest.mark.parametrize("row_slice", [search.ROW_SLICE, 5])
def test_beam_candidates_score_the_mean_of_the_members_log_probabilities(
    trained_dir, lstm_dir, attention_dir, row_slice, monkeypatch
):
    """Three models of three shapes in a beam of 4 that reorders all their states: each of the 3
    best candidates' log-prob is the mean of the members' own (teacher-forced) log-probs of it;
    also when the search takes the output layers 5 rows at a time (each member its own part of
    the features)."""
    monkeypatch.setattr(search, "ROW_SLICE", row_slice)
    dirs = [trained_dir, lstm_dir, attention_dir]
    ensemble = Translator.from_dirs(dirs, device="cpu")
    lines = LONG[:12]
    found = ensemble.translate_batch(lines, DecodeOptions(beam=4, n_best=3))
    assert all(len({c.text for c in t.candidates}) == 3 for t in found)
    candidates = [c for t in found for c in t.candidates]
    pairs = [
        (ensemble.src_vocab.encode([line])[0], ensemble.tgt_vocab.encode([c.text])[0])
        for line, t in zip(lines, found)
        for c in t.candidates
    ]
    each = torch.stack([forced_log_probs(alone(d).model, pairs) for d in dirs])  # (models, pairs)
    expected = each.mean(dim=0).tolist()
    assert [c.log_prob for c in candidates] == pytest.approx(expected, abs=2e-4)


def test_an_ensembles_attention_is_the_mean_of_its_members_that_have_it(
    trained_dir, attention_dir, reversed_dir
):
    """Members with attention (one reads the source backwards) are averaged over the source in
    its order; a member without attention adds nothing. Both attend word by word here."""
    ensemble = Translator.from_dirs([trained_dir, attention_dir, reversed_dir], device="cpu")
    with_attention = [alone(attention_dir).model, alone(reversed_dir).model]
    lines = ["hund katze baum", "stuhl tisch buch hund", *LONG[:5]]
    found = ensemble.translate_batch(lines, DecodeOptions(beam=3, n_best=2, attention=True))
    assert found[0].candidates[0].alignment == [0, 1, 2, 3]  # EOS attends to EOS
    assert found[1].candidates[0].alignment == [0, 1, 2, 3, 4]
    for line, translation in zip(lines, found):
        src_ids = ensemble.src_vocab.encode([line])[0]
        for candidate in translation.candidates:
            tokens = ensemble.tgt_vocab.encode([candidate.text])[0]
            batch = pair_batch([src_ids], [tokens])
            each = [
                attention_weights(model, batch.src_tokens, batch.src_lengths, batch.tgt_in)[0]
                for model in with_attention
            ]
            assert torch.allclose(torch.tensor(candidate.attention), sum(each) / 2, atol=1e-5)


def test_a_model_reading_backwards_attends_over_the_source_in_its_order():
    """Its weights over reversed memory are turned back: weight on source position i is what a
    forward model with the same weights, fed the reversed sentence, gives position len-1-i."""
    backwards = tiny_model(attention="general", reverse_source=True)
    forwards = build_model(dataclasses.replace(backwards.cfg, reverse_source=False), 20, 20)
    forwards.load_state_dict(backwards.state_dict())
    batch = source_batch([[5, 6, 7, 8, 9], [10, 11]])
    tgt_in = pad([[4, 5, 6], [7, 8]], prefix=[BOS])
    ours = attention_weights(backwards, batch.src_tokens, batch.src_lengths, tgt_in)
    reversed_tokens = reverse_padded(batch.src_tokens, batch.src_lengths)
    theirs = attention_weights(forwards, reversed_tokens, batch.src_lengths, tgt_in)
    for row, length in enumerate(batch.src_lengths.tolist()):
        assert torch.allclose(ours[row, :, :length], theirs[row, :, :length].flip(-1))
        assert not torch.allclose(ours[row, :, :length], theirs[row, :, :length])


def test_different_vocabularies_are_refused_in_one_line_by_translate_tune_and_serve(
    trained_dir, other_vocab_dir, tmp_path, capsys
):
    dev = tmp_path / "dev"
    (tmp_path / "dev.de").write_text("hund\n")
    (tmp_path / "dev.en").write_text("dog\n")
    config = (trained_dir / "config.yaml").read_bytes()
    models = models_flags(trained_dir, other_vocab_dir)
    for command in (
        ["translate", *models],
        ["tune", *models, "--src", f"{dev}.de", "--ref", f"{dev}.en"],
        ["serve", *models, "--port", "0"],
    ):
        assert main(command) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (
            f"translate: error: cannot ensemble {trained_dir} and {other_vocab_dir}: their "
            "source SentencePiece models differ (39 pieces against 30); the models of an "
            "ensemble must share their pieces\n"
        )
    assert (trained_dir / "config.yaml").read_bytes() == config


def test_vocabulary_difference_names_what_differs():
    words = "hund katze baum haus auto buch tisch stuhl".split()
    lines = [" ".join(random.Random(n).sample(words, 4)) for n in range(200)]
    first = train_vocab(lines, 30)
    assert vocabulary_difference(first, train_vocab(lines, 30)) is None
    assert vocabulary_difference(first, train_vocab(lines, 25)) == f"{len(first)} pieces against 25"
    upper = train_vocab([line.upper() for line in lines], 30)
    assert len(upper) == len(first)
    difference = vocabulary_difference(first, upper)
    index = next(i for i in range(len(first)) if first.piece(i) != upper.piece(i))
    assert difference == f"piece {index} is {first.piece(index)!r} against {upper.piece(index)!r}"


def test_tune_tunes_an_ensemble_and_writes_nowhere(trained_dir, lstm_dir, tmp_path, capsys):
    """The BLEU tune reports is the ensemble's; neither member's config changes."""
    sources = LONG[:20]
    refs = texts(alone(trained_dir).translate_batch(sources, DecodeOptions(beam=1)))
    (tmp_path / "dev.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "dev.en").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    configs = [(d / "config.yaml").read_bytes() for d in (trained_dir, lstm_dir)]
    dev = ["--src", str(tmp_path / "dev.de"), "--ref", str(tmp_path / "dev.en")]
    flags = ["--beams", "1,3", "--alphas", "0.5"]
    assert main(["tune", *models_flags(trained_dir, lstm_dir), *dev, *flags]) == 0
    out, err = capsys.readouterr()
    ensemble = Translator.from_dirs([trained_dir, lstm_dir])
    bleu = {
        beam: round(
            sacrebleu.BLEU()
            .corpus_score(
                texts(ensemble.translate_batch(sources, DecodeOptions(beam, 0.5))), [refs]
            )
            .score,
            2,
        )
        for beam in (1, 3)
    }
    assert bleu[1] < 100  # the ensemble is not the model that wrote the references
    beam = max(bleu, key=lambda b: (bleu[b], -b))
    penalty = " --length-penalty 0.5" if beam > 1 else ""
    kept = ensemble.cfg.decode.length_penalty if beam == 1 else 0.5
    assert out == (
        f"best: beam {beam}, length_penalty {kept}, BLEU {bleu[beam]} (for this ensemble, "
        f"written nowhere: translate with --beam {beam}{penalty})\n"
    )
    assert len(err.splitlines()) == 2
    assert [(d / "config.yaml").read_bytes() for d in (trained_dir, lstm_dir)] == configs


def test_serve_answers_with_the_ensemble_and_names_its_members(attention_dir, lstm_dir):
    dirs = [attention_dir, lstm_dir]
    reference = Translator.from_dirs(dirs)
    lines = ["hund katze", "", *LONG[:4]]
    expected = reference.translate_batch(lines, DecodeOptions(beam=3, attention=True))
    with running(dirs) as server:
        request = {"text": lines, "beam": 3, "return_attention": True}
        status, answer = call(server.port, "POST", "/translate", request)
        assert status == 200
        for got, translation in zip(answer["translations"], expected):
            candidate = translation.candidates[0]
            assert (got["text"], got["score"]) == (candidate.text, candidate.score)
            alignment = got["candidates"][0].get("alignment")  # none for a blank line
            assert alignment == candidate.alignment
        status, model = call(server.port, "GET", "/model")
    assert status == 200
    assert model["model_dir"] == str(attention_dir) and model["model"]["attention"] == "general"
    members = model["ensemble"]
    assert [m["model_dir"] for m in members] == [str(d) for d in dirs]
    assert [m["model"]["cell"] for m in members] == ["gru", "lstm"]
    assert [m["model"]["parameters"] for m in members] == [
        sum(p.numel() for p in alone(d).model.parameters()) for d in dirs
    ]


def test_int8_applies_to_every_member(trained_dir, lstm_dir):
    ensemble = Translator.from_dirs([trained_dir, lstm_dir], device="cpu", quantize="int8")
    assert all(isinstance(m.decoder.output, DynamicQuantizedLinear) for m in ensemble.model.members)
    assert ensemble.translate(["hund katze"], beam=2) == ["dog cat"]


@pytest.mark.parametrize("command", [["average"], ["plot", "-o", "out.png"]])
def test_commands_of_one_model_refuse_a_second(command, trained_dir, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command, *models_flags(trained_dir, trained_dir)])
    assert exit.value.code == 2
    assert "argument -m/--model: given more than once" in capsys.readouterr().err


def test_attention_command_draws_an_ensembles_mean_attention(
    trained_dir, attention_dir, lstm_dir, tmp_path, capsys
):
    """The heatmap of an ensemble is of the attention its members with attention average; an
    ensemble in which no member has attention is refused before anything is written."""
    plot = tmp_path / "map.png"
    sentence = "hund katze baum"
    models = models_flags(trained_dir, lstm_dir)
    assert main(["attention", *models, "-o", str(plot), sentence]) == 1
    assert capsys.readouterr().err == (
        "translate: error: no model of this ensemble has attention (model.attention is none)\n"
    )
    assert not plot.exists()
    models = models_flags(trained_dir, attention_dir)
    assert main(["attention", *models, "-o", str(plot), sentence]) == 0
    assert plot.exists()
    ensemble = Translator.from_dirs([trained_dir, attention_dir])
    src, tgt, weights = ensemble.attention(sentence)
    assert tgt == ["▁dog", "▁cat", "▁tree", "</s>"]
    assert weights.argmax(dim=1).tolist() == [0, 1, 2, 3]
