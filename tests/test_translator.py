"""Translator: loading a model directory and translating lines, lists and streams."""

import io
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_config
from translate.decoding import DecodeOptions
from translate.errors import UserError
from translate.train.loop import train
from translate.translator import Translator

LINES = ["hund katze", "", "   ", "baum auto buch", "haus", "\t", "stuhl tisch hund katze"]


def test_model_directory_reload_gives_identical_translations(trained_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_dir, copy)
    first = Translator.from_dir(trained_dir).translate(LINES, beam=3)
    again = Translator.from_dir(copy).translate(LINES, beam=3)
    assert first == again
    assert first[0] == "dog cat"  # and the model did learn the task


def test_one_output_line_per_input_line_in_order(trained_dir):
    translator = Translator.from_dir(trained_dir)
    out = translator.translate(LINES, beam=2)
    assert len(out) == len(LINES)
    assert [i for i, line in enumerate(out) if not line] == [1, 2, 5]
    # the same sentences one at a time give the same lines: batching never mixes up the order
    assert [translator.translate([line], beam=2)[0] for line in LINES] == out


def test_stream_keeps_line_count(trained_dir, tmp_path):
    import io

    translator = Translator.from_dir(trained_dir)
    lines = [f"{line}\n" for line in LINES * 5]
    out = io.StringIO()
    greedy = DecodeOptions(beam=1)
    assert translator.translate_stream(iter(lines), out, greedy, chunk_size=4) == (len(lines), 0)
    assert out.getvalue().count("\n") == len(lines)
    assert out.getvalue().split("\n")[:-1] == translator.translate(LINES * 5, beam=1)


def test_a_stream_asked_for_n_best_lists_writes_rows_numbered_from_its_first_line(trained_dir):
    """Plain text cannot hold several candidates a line: n-best makes rows even unasked; a
    resumed stream numbers its lines from where it starts."""
    translator = Translator.from_dir(trained_dir)
    out = io.StringIO()
    lines = ["hund katze\n", "\n", "baum\n"]
    options = DecodeOptions(beam=4, n_best=2)
    assert translator.translate_stream(lines, out, options, first_line=7) == (3, 0)
    rows = [row.split(" ||| ") for row in out.getvalue().splitlines()]
    assert [row[0] for row in rows] == ["7", "7", "8", "9", "9"]
    assert [row[1] for row in rows][:3] == ["dog cat", rows[1][1], ""] and rows[1][1] != "dog cat"


def test_very_long_input_is_translated_not_crashed(trained_dir):
    translator = Translator.from_dir(trained_dir)
    out = translator.translate_batch(["hund " * 2000, "katze"], DecodeOptions(beam=2))
    assert len(out) == 2 and out[0].text.startswith("dog") and out[1].text == "cat"
    assert [t.truncated for t in out] == [True, False]


@pytest.mark.parametrize("options", [{"dtype": "bf16"}, {"quantize": "int8"}])
def test_bf16_and_int8_translate_like_fp32(trained_dir, options):
    reference = Translator.from_dir(trained_dir).translate(LINES, beam=3)
    fast = Translator.from_dir(trained_dir, device="cpu", **options).translate(LINES, beam=3)
    assert len(fast) == len(LINES)
    # the task is easy and the model confident: lower precision must not change a word
    assert fast == reference


def test_fp16_runs_on_a_gpu_and_is_refused_on_a_cpu(trained_dir, word_corpus, tmp_path):
    with pytest.raises(UserError, match="fp16 runs on a GPU only"):
        Translator.from_dir(trained_dir, device="cpu", dtype="fp16")
    cfg = tiny_config(word_corpus, f"out_dir={tmp_path}", "train.dtype=fp16", "train.max_steps=40")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="fp16 runs on a GPU only"):
            train(cfg, log=lambda message: None)
        return
    train(cfg, log=lambda message: None)  # on a GPU: loss-scaled fp16 training
    reference = Translator.from_dir(trained_dir).translate(LINES, beam=3)
    assert Translator.from_dir(trained_dir, dtype="fp16").translate(LINES, beam=3) == reference


@pytest.fixture(scope="module")
def translator(trained_dir):
    return Translator.from_dir(trained_dir)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12))
def test_any_unicode_keeps_line_count_and_order(translator, lines):
    # a line of the file format cannot hold a newline: the stream splits on it
    lines = [line.replace("\n", " ") for line in lines]
    out = io.StringIO()
    count, _ = translator.translate_stream(
        iter(f"{line}\n" for line in lines), out, DecodeOptions(beam=2), chunk_size=5
    )
    produced = out.getvalue().split("\n")
    assert count == len(lines) and produced[-1] == "" and len(produced) == len(lines) + 1
    for line, result in zip(lines, produced):
        if not line.strip():
            assert result == ""


@settings(max_examples=15, deadline=None)
@given(st.permutations(["hund", "katze baum", "auto auto buch", "", "tisch", "stuhl hund"]))
def test_batching_is_invariant_to_input_order(translator, lines):
    reference = dict(zip(lines, translator.translate(lines, beam=3)))
    again = translator.translate(sorted(lines), beam=3)
    assert [reference[line] for line in sorted(lines)] == again


def test_n_best_lists(trained_dir):
    translator = Translator.from_dir(trained_dir)
    nbest = translator.translate_batch(["hund katze", ""], DecodeOptions(beam=4, n_best=3))
    assert [len(t.candidates) for t in nbest] == [3, 3]
    texts = [c.text for c in nbest[0].candidates]
    scores = [c.score for c in nbest[0].candidates]
    assert texts[0] == "dog cat" and len(set(texts)) == 3
    assert scores == sorted(scores, reverse=True)
    assert [(c.text, c.score) for c in nbest[1].candidates] == [("", 0.0)] * 3
    with pytest.raises(UserError, match="between 1 and the beam size"):
        translator.translate_batch(["hund"], DecodeOptions(beam=4, n_best=5))


def test_the_device_asked_for_is_the_one_used(trained_dir):
    translator = Translator.from_dir(trained_dir, device="cpu")
    assert translator.device == torch.device("cpu")
    assert {p.device for p in translator.model.parameters()} == {torch.device("cpu")}
    default = "cuda" if torch.cuda.is_available() else "cpu"  # None: a GPU where there is one
    assert Translator.from_dir(trained_dir).device.type == default
    gpus = torch.cuda.device_count()
    for device, message in [
        ("tpu", "device 'tpu' is not a torch device (cpu, cuda, cuda:1 ...)"),
        (f"cuda:{gpus}", f"device 'cuda:{gpus}': this machine has {gpus} CUDA GPU(s) torch"),
    ]:
        with pytest.raises(UserError) as refused:
            Translator.from_dir(trained_dir, device=device)
        assert str(refused.value).startswith(message)
