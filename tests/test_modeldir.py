"""Model directories: safe loading, clear errors for broken ones, and directories saved by
earlier versions that still load and translate as they did."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from translate.config import Config
from translate.decoding import DecodeOptions
from translate.errors import UserError
from translate.modeldir import (
    FORMAT_VERSION,
    ModelDirError,
    atomic_save,
    dump_config,
    read_config,
    write_config,
)
from translate.translator import Translator
from translate.tune import tune_decoding

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "model_dirs"
# Each was trained by the commit named in fixtures/model_dirs/README.md, which also wrote
# expected.json: its own translations (greedy, and 2-best of beam 3 with scores).
OLD_FORMATS = ["format1", "format2_one_rnn", "format2"]


def old_model_dir(name: str, folder: Path) -> Path:
    model_dir = folder / name
    shutil.copytree(FIXTURES / name, model_dir)
    shutil.copyfile(FIXTURES / "spm.model", model_dir / "spm.model")
    return model_dir


@pytest.mark.parametrize("name", OLD_FORMATS)
def test_directories_of_earlier_formats_translate_as_they_did(name, tmp_path):
    model_dir = old_model_dir(name, tmp_path)
    expected = json.loads((model_dir / "expected.json").read_text(encoding="utf-8"))
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]
    nbest = translator.translate_batch(expected["lines"], DecodeOptions(beam=3, n_best=2))
    for got, want in zip(nbest, expected["beam3"]):
        assert [c.text for c in got.candidates] == [text for text, _ in want]
        assert [c.score for c in got.candidates] == pytest.approx([s for _, s in want], abs=1e-5)


def test_writing_a_config_upgrades_the_weight_files_first(tmp_path):
    """tune rewrites config.yaml: the weights beside it must then be in the new layout too."""
    model_dir = old_model_dir("format2_one_rnn", tmp_path)
    expected = json.loads((model_dir / "expected.json").read_text(encoding="utf-8"))
    before = torch.load(model_dir / "model.pt", weights_only=True)
    assert "decoder.rnn.weight_ih_l0" in before  # the layout of one nn.LSTM
    tune_decoding(model_dir, ["hund katze"], ["dog cat"], [3], [1.0], progress=lambda line: None)
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["format_version"] == 3
    after = torch.load(model_dir / "model.pt", weights_only=True)
    assert "decoder.rnn.input.weight" in after and "decoder.upper.weight_hh_l0" in after
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]


def test_format_1_configs_keep_unscaled_embeddings(tmp_path):
    """Format 1 read tied tables unscaled; its models must translate as they were trained."""
    path = tmp_path / "config.yaml"
    path.write_bytes(dump_config(Config()))
    assert read_config(path) == (Config(), FORMAT_VERSION)
    values = yaml.safe_load(path.read_text())
    values["format_version"] = 1
    del values["model"]["scale_embeddings"]
    path.write_text(yaml.safe_dump(values))
    cfg, version = read_config(path)
    assert version == 1 and cfg.model.scale_embeddings is False


def test_a_newer_format_is_refused(trained_dir, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(trained_dir, newer)
    values = yaml.safe_load((newer / "config.yaml").read_text())
    values["format_version"] = 99
    (newer / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(ModelDirError, match="format 99.*upgrade translate"):
        Translator.from_dir(newer)


def test_a_sentencepiece_model_from_another_training_is_named(trained_dir, tmp_path):
    from translate.data.vocab import train_vocab

    other = tmp_path / "other"
    shutil.copytree(trained_dir, other)
    vocab = train_vocab(["ganz andere Wörter hier und dort"] * 50, vocab_size=30)
    (other / "spm.model").write_bytes(vocab.model_proto)
    with pytest.raises(ModelDirError, match=r"spm.model has \d+ pieces but .*model.pt was"):
        Translator.from_dir(other)


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
def test_an_incomplete_directory_names_the_missing_file(trained_dir, tmp_path, missing, message):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    (broken / missing).unlink()
    with pytest.raises(ModelDirError, match=message):
        Translator.from_dir(broken)


def test_a_truncated_weight_file_is_named(trained_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelDirError, match="model.pt cannot be loaded"):
        Translator.from_dir(broken)


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(3)}, target)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match="cannot write .*model.pt .*No space left.*intact"):
        atomic_save({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert not (tmp_path / "model.pt.tmp").exists()


def test_write_config_stamps_the_current_format(tmp_path):
    write_config(tmp_path, Config())
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["format_version"] == 3
