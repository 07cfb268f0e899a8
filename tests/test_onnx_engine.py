"""OnnxTranslator: translates exported graphs as the PyTorch Translator translates the model
(greedy, beam, n-best, length penalty; every cell and attention kind), without torch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config

pytest.importorskip("onnxruntime")

from translate import search as torch_search  # noqa: E402
from translate.decoding import DecodeOptions, Sampling  # noqa: E402
from translate.errors import UserError  # noqa: E402
from translate.export import search as numpy_search  # noqa: E402
from translate.export.directory import export_model  # noqa: E402
from translate.export.engine import OnnxTranslator, Translation  # noqa: E402
from translate.runtime import cpu_bf16_speedup  # noqa: E402
from translate.train.loop import train  # noqa: E402
from translate.translator import Translator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = [
    DecodeOptions(beam=1),
    DecodeOptions(beam=5),
    DecodeOptions(beam=4, n_best=3, length_penalty=0.6),
    DecodeOptions(beam=3, length_penalty=0.0),
]
# briefly trained models that, with the two fixtures (GRU without attention, GRU with general
# attention after the RNN), cover every cell, attention kind and attention step
KINDS = {
    "rnn-dot": ["model.cell=rnn", "model.attention=dot", "model.enc_hidden_dim=32"],
    "lstm-additive-before": [
        "model.cell=lstm",
        "model.attention=additive",
        "model.attention_step=before",
        "model.dec_layers=2",
        "model.context_pool=mean",
    ],
    "gru-general-before": [
        "model.attention_step=before",
        "model.attention=general",
        "model.reverse_source=true",
        "model.tie_embeddings=true",
        "data.joint_vocab=false",
        "model.dropout=0.2",  # the export must leave it off
    ],
}


def dev_lines(word_corpus: Path) -> list[str]:
    return (word_corpus / "dev.de").read_text(encoding="utf-8").splitlines()


def assert_same_translations(reference: list[Translation], ours: list[Translation]) -> None:
    """Every candidate's text identical, every score within 1e-4."""
    assert len(reference) == len(ours)
    for theirs, mine in zip(reference, ours):
        assert [c.text for c in mine.candidates] == [c.text for c in theirs.candidates]
        for a, b in zip(theirs.candidates, mine.candidates):
            assert b.score == pytest.approx(a.score, abs=1e-4)
            assert b.log_prob == pytest.approx(a.log_prob, abs=1e-4)
        assert mine.truncated == theirs.truncated


class ScriptedModel:
    """A random recurrent model over numpy arrays, or (``torch_tensors``) the same over
    tensors: both searches run on one model. PAD is its favourite token and EOS is rare, so
    that the rules of a step (no PAD, only EOS at the length limit) decide the output."""

    def __init__(self, torch_tensors: bool, vocab: int = 12, hidden: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.embed, self.recurrent = (
            rng.normal(size=(vocab, hidden)),
            rng.normal(size=(hidden, hidden)),
        )
        self.output = rng.normal(size=(hidden, vocab)) * 2
        self.bias = np.zeros(vocab)
        self.bias[numpy_search.PAD], self.bias[numpy_search.EOS] = 6.0, -2.0
        self.torch = torch_tensors
        self.embed, self.recurrent, self.output, self.bias = (
            a.astype(np.float32) for a in (self.embed, self.recurrent, self.output, self.bias)
        )
        if torch_tensors:
            self.embed, self.recurrent, self.output, self.bias = map(
                torch.from_numpy, (self.embed, self.recurrent, self.output, self.bias)
            )

    def eval(self):
        return self

    def encode(self, src_tokens, src_lengths):
        start = self.embed[src_tokens].sum(1)[:, None] / src_lengths[:, None, None]
        return {"start": start}  # (sentences, 1, hidden)

    def init_state(self, memory):
        return memory["start"]

    def decode_step(self, prev_tokens, state, memory):
        lib = torch if self.torch else np
        start = memory["start"]  # per sentence: each one's rows (its beams) adjacent
        beams = state.shape[0] // start.shape[0]
        start = start.repeat_interleave(beams, 0) if self.torch else start.repeat(beams, 0)
        state = lib.tanh(state @ self.recurrent + self.embed[prev_tokens][:, None] + start)
        logits = state[:, 0] @ self.output + self.bias
        if self.torch:
            return torch.log_softmax(logits, dim=-1), state
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), state

    def decode_features(self, prev_tokens, state, memory):
        """The first half of a step for the torch beam search: the log-probabilities."""
        return self.decode_step(prev_tokens, state, memory)

    def log_probs(self, features):
        return features


@pytest.mark.parametrize(
    "beam,n_best,alpha", [(1, 1, 1.0), (1, 1, 0.0), (2, 2, 0.6), (4, 1, 1.0), (5, 3, 0.0)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_search_finds_what_the_torch_search_finds(beam, n_best, alpha, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, size=8)
    src = np.zeros((8, lengths.max()), dtype=np.int64)  # random ids, EOS, PAD
    for row, length in enumerate(lengths):
        src[row, : length - 1] = rng.integers(4, 12, size=length - 1)
        src[row, length - 1] = numpy_search.EOS
    max_len = numpy_search.max_lengths(lengths, 1.5, 1)  # short: some rows reach the limit
    assert (max_len == torch_search.max_lengths(torch.from_numpy(lengths), 1.5, 1).numpy()).all()
    theirs_model = ScriptedModel(torch_tensors=True, seed=seed)
    ours_model = ScriptedModel(torch_tensors=False, seed=seed)
    torch_args = (torch.from_numpy(src), torch.from_numpy(lengths), torch.from_numpy(max_len))
    if beam == 1:
        theirs = [[h] for h in torch_search.greedy_search(theirs_model, *torch_args, alpha)]
        ours = [[h] for h in numpy_search.greedy_search(ours_model, src, lengths, max_len, alpha)]
    else:
        theirs = torch_search.beam_search(
            theirs_model, *torch_args, beam, alpha, n_best, drop_finished=True
        )
        ours = numpy_search.beam_search(ours_model, src, lengths, max_len, beam, alpha, n_best)
    assert [[h.tokens for h in nbest] for nbest in ours] == [
        [h.tokens for h in nbest] for nbest in theirs
    ]
    for mine, reference in zip(sum(ours, []), sum(theirs, [])):
        assert mine.score == pytest.approx(reference.score, abs=1e-4)
        assert mine.log_prob == pytest.approx(reference.log_prob, abs=1e-4)


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory) -> Path:
    return export_model(trained_dir, tmp_path_factory.mktemp("onnx") / "export")


@pytest.mark.parametrize("fixture", ["trained_dir", "attention_dir"])
def test_fp32_translations_equal_pytorch_on_every_line(fixture, word_corpus, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    lines = dev_lines(word_corpus) + ["", "hund " * 300]  # a blank line, one cut to the limit
    reference = Translator.from_dir(model_dir)
    engine = OnnxTranslator.from_dir(export_model(model_dir, tmp_path / "export", int8=False))
    for options in SEARCHES:
        assert_same_translations(
            reference.translate_batch(lines, options), engine.translate_batch(lines, options)
        )
    assert engine.translate(["hund katze"], beam=2) == ["dog cat"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_cell_and_attention_kind_translates_as_in_pytorch(kind, word_corpus, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(
        word_corpus, f"out_dir={tmp_path / 'model'}", "train.max_steps=60", *KINDS[kind]
    )
    model_dir = train(cfg, log=lambda message: None)
    lines = dev_lines(word_corpus)[:30]
    reference = Translator.from_dir(model_dir)
    engine = OnnxTranslator.from_dir(export_model(model_dir, tmp_path / "export", int8=False))
    for options in SEARCHES[:3]:
        assert_same_translations(
            reference.translate_batch(lines, options), engine.translate_batch(lines, options)
        )


def test_int8_translates_sanely(exported, word_corpus):
    lines = dev_lines(word_corpus)
    fp32 = OnnxTranslator.from_dir(exported).translate(lines, beam=5)
    int8 = OnnxTranslator.from_dir(exported, int8=True)
    assert int8.precision == "int8"
    same = sum(a == b for a, b in zip(int8.translate(lines, beam=5), fp32))
    assert same >= 0.95 * len(lines)  # an easy task and a confident model: int8 barely matters
    # ... but it is int8 that ran: its scores are not fp32's
    scores = [
        OnnxTranslator.from_dir(exported, int8=flag).translate_batch(lines[:5])
        for flag in (False, True)
    ]
    differences = [abs(a.candidates[0].score - b.candidates[0].score) for a, b in zip(*scores)]
    assert 1e-4 < max(differences) < 0.5


def test_the_defaults_batching_and_order_are_the_models(exported, trained_dir):
    engine = OnnxTranslator.from_dir(exported)
    assert engine.defaults == Translator.from_dir(trained_dir).defaults
    lines = ["hund", "katze baum auto", "", "stuhl"]
    together = engine.translate(lines, beam=3)
    assert together == [engine.translate([line], beam=3)[0] for line in lines]
    assert together[2] == ""


def test_what_the_engine_cannot_do_is_refused_in_one_line(exported):
    engine = OnnxTranslator.from_dir(exported)
    with pytest.raises(UserError, match="does not sample"):
        engine.translate_batch(["hund"], DecodeOptions(n_best=2, sampling=Sampling()))
    with pytest.raises(UserError, match="gives no alignment"):
        engine.translate_batch(["hund"], DecodeOptions(attention=True))


def test_missing_and_damaged_exports_are_named(exported, tmp_path):
    def refused(folder, match, **kwargs):
        with pytest.raises(UserError, match=match) as error:
            OnnxTranslator.from_dir(folder, **kwargs)
        assert "\n" not in str(error.value)

    refused(tmp_path / "nowhere", "export directory not found")
    copy = tmp_path / "copy"
    copy.mkdir()
    refused(copy, "manifest.json is missing")
    for name in os.listdir(exported):
        (copy / name).write_bytes((exported / name).read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text("{not json")
    refused(copy, "manifest.json cannot be read")
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    refused(copy, "has format version 99; this translate reads 1")
    (copy / "manifest.json").write_text(json.dumps({**manifest, "graphs": {"fp32": {}}}))
    refused(copy, "manifest.json is damaged")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "step.int8.onnx").unlink()
    refused(copy, "step.int8.onnx is missing", int8=True)
    (copy / "step.onnx").write_bytes(b"not a graph")
    refused(copy, "step.onnx is not a loadable ONNX graph")
    (copy / "step.onnx").write_bytes((exported / "encoder.onnx").read_bytes())
    refused(copy, "the folder mixes files of two exports")
    (copy / "step.onnx").write_bytes((exported / "step.onnx").read_bytes())
    (copy / "spm.model").write_bytes(b"damaged")
    refused(copy, "spm.model is not a SentencePiece model")


# the torch-free install route: pip install --no-deps translate, then only these
ENGINE_NEEDS = ("onnxruntime", "sentencepiece", "numpy")
TORCH_FREE = """
import sys
sys.path.insert(0, sys.argv[1])  # python -S: no site-packages, only the folder of links
from translate.export.engine import OnnxTranslator
from translate.decoding import DecodeOptions
engine = OnnxTranslator.from_dir(sys.argv[2], int8=sys.argv[3] == "int8")
for t in engine.translate_batch(["hund katze", "", "baum auto buch"], DecodeOptions(beam=3)):
    print(t.text, round(t.candidates[0].score, 4))
"""


def packages_only(folder: Path, names: tuple[str, ...]) -> Path:
    """A folder of links to translate and to the installed packages ``names`` (with the
    ``NAME.libs`` folders of their wheels' shared libraries): a site-packages with nothing else."""
    folder.mkdir()
    (folder / "translate").symlink_to(ROOT / "translate")
    for name in names:
        location = Path(importlib.util.find_spec(name).origin).parent
        for path in (location, location.with_name(location.name + ".libs")):
            if path.exists():
                (folder / path.name).symlink_to(path)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_engine_needs_only_onnxruntime_sentencepiece_and_numpy(exported, precision, tmp_path):
    site = packages_only(tmp_path / "site", ENGINE_NEEDS)
    done = subprocess.run(
        [sys.executable, "-S", "-c", TORCH_FREE, str(site), str(exported), precision],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    engine = OnnxTranslator.from_dir(exported, int8=precision == "int8")
    expected = engine.translate_batch(["hund katze", "", "baum auto buch"], DecodeOptions(beam=3))
    lines = [f"{t.text} {round(t.candidates[0].score, 4)}" for t in expected]
    assert done.stdout.splitlines() == lines
    assert lines[0].startswith("dog cat ")


def test_the_speed_bench_prints_every_system(trained_dir, exported, word_corpus, capsys):
    from bench.onnx_speed import main

    src, ref = word_corpus / "dev.de", word_corpus / "dev.en"
    main(
        ["-m", str(trained_dir), "--src", str(src), "--ref", str(ref), "--export", str(exported)]
        + ["--beams", "2", "--latency-lines", "3", "--threads", "1"]
    )
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if "| 2 |" in line]
    systems = ["PyTorch fp32", "PyTorch int8", "ONNX Runtime fp32", "ONNX Runtime int8"]
    if cpu_bf16_speedup() >= 1.3:  # a CPU with bf16 units: PyTorch's fast path has a row too
        systems.insert(2, "PyTorch bf16")
    rows = {row[0].strip("| "): row for row in rows}
    assert list(rows) == systems
    assert rows["ONNX Runtime fp32"][5] == "60/60"  # ONNX fp32 gives PyTorch fp32's lines
    bleu = {name: float(row[6].strip(" |")) for name, row in rows.items()}
    assert bleu["PyTorch fp32"] == bleu["ONNX Runtime fp32"] > 80  # and its BLEU
