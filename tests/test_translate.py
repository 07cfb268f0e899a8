import pickle
import shutil

import pytest
import torch

from tests.conftest import tiny_config
from translate.config import UserError
from translate.train import train
from translate.translate import ModelDirError, Translator

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
    assert translator.translate_stream(iter(lines), out, beam=1, chunk_size=4) == len(lines)
    assert out.getvalue().count("\n") == len(lines)
    assert out.getvalue().split("\n")[:-1] == translator.translate(LINES * 5, beam=1)


def test_very_long_input_is_translated_not_crashed(trained_dir):
    translator = Translator.from_dir(trained_dir)
    out = translator.translate(["hund " * 2000, "katze"], beam=2)
    assert len(out) == 2 and out[0].startswith("dog") and out[1] == "cat"
    assert translator.truncated == 1


class Planted:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_planted_pickle_is_refused_without_running(trained_dir, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(trained_dir, bad)
    (bad / "model.pt").write_bytes(pickle.dumps({"weights": Planted()}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelDirError, match="cannot be loaded safely"):
        Translator.from_dir(bad)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "missing, message",
    [
        ("config.yaml", "config.yaml is missing"),
        ("spm.model", "spm.model is missing"),
        ("model.pt", "model.pt is missing"),
    ],
)
def test_incomplete_model_directory(trained_dir, tmp_path, missing, message):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    (broken / missing).unlink()
    with pytest.raises(ModelDirError, match=message):
        Translator.from_dir(broken)


def test_truncated_checkpoint_is_named(trained_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelDirError, match="model.pt cannot be loaded"):
        Translator.from_dir(broken)


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
