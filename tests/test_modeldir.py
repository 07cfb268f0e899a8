"""Model directories: safe loading, clear errors for broken ones, and directories saved by
earlier versions that still load and translate as they did."""

import errno
import io
import json
import os
import pickle
import re
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
OLD_FORMATS = ["format1", "format2_one_rnn", "format2", "format3"]


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


def test_a_planted_pickle_is_refused_without_running(trained_dir, tmp_path, monkeypatch, recwarn):
    """The refusal says what the file holds and never passes on torch's advice to load it with
    weights_only=False, which would run the planted code."""
    monkeypatch.chdir(tmp_path)
    for name, data in [
        ("raw", pickle.dumps({"weights": Planted()})),  # a plain pickle, not a torch archive
        ("archive", _torch_bytes({"weights": Planted()})),  # torch.save's zip with a pickle
    ]:
        bad = tmp_path / name
        shutil.copytree(trained_dir, bad)
        (bad / "model.pt").write_bytes(data)
        with pytest.raises(ModelDirError) as refused:
            Translator.from_dir(bad)
        message = str(refused.value)
        assert message.startswith(f"{bad / 'model.pt'} holds something other than tensors")
        assert "was not loaded" in message and "\n" not in message
        assert "weights_only" not in message and "trust" not in message
    assert "(it refers to exec)" in message  # the archive names what it asked for
    assert not (tmp_path / "PWNED").exists()
    assert not recwarn.list  # torch's warning about the pickle protocol is not passed on


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
    with pytest.raises(ModelDirError, match=r"model.pt cannot be loaded: it is truncated or dam"):
        Translator.from_dir(broken)


@pytest.fixture
def keep_threads():
    """translate sets torch's thread count: put it back for the tests that follow."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _not_yaml(folder: Path) -> None:
    (folder / "config.yaml").write_text("model: {cell: [gru\n")


def _unknown_cell(folder: Path) -> None:
    (folder / "config.yaml").write_text("format_version: 3\nmodel: {cell: foo}\n")


def _format_as_text(folder: Path) -> None:
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("format_version: 3", "format_version: '3'"))


def _not_sentencepiece(folder: Path) -> None:
    (folder / "spm.model").write_text("not a model\n")


def _empty_weights(folder: Path) -> None:
    (folder / "model.pt").write_bytes(b"")


def _text_weights(folder: Path) -> None:
    (folder / "model.pt").write_text("hello\n")


def _list_in_weights(folder: Path) -> None:
    weights = torch.load(folder / "model.pt", weights_only=True)
    weights["encoder.embed.weight"] = [1, 2, 3]
    atomic_save(weights, folder / "model.pt")


def _directory_is_a_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_text("a file\n")


@pytest.mark.parametrize(
    "damage, message",
    [
        (_directory_is_a_file, r"^{dir} is a file, not a model directory$"),
        (
            _not_yaml,
            r"^{dir}/config.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' "
            r"at line 2, column 1$",
        ),
        (_unknown_cell, r"^{dir}/config.yaml: 'model.cell' must be one of rnn, gru, lstm"),
        (_format_as_text, r"^{dir}/config.yaml: format_version must be an integer >= 1, got '3'$"),
        (_not_sentencepiece, r"^{dir}/spm.model is not a SentencePiece model \(damaged, or "),
        (_empty_weights, r"^{dir}/model.pt cannot be loaded: it is empty$"),
        (_text_weights, r"^{dir}/model.pt cannot be loaded: it is not a weight file$"),
        (_list_in_weights, r"^{dir}/model.pt does not hold model weights \(named tensors\)$"),
    ],
)
def test_a_broken_directory_is_one_line_from_the_cli(
    damage, message, trained_dir, tmp_path, capsys, keep_threads
):
    """What a user can do to a model directory (edit, truncate, copy the wrong file) ends in one
    line naming the file, from every command that reads one, not in a traceback."""
    from translate.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    damage(broken)
    (tmp_path / "dev.de").write_text("hund\n")
    (tmp_path / "dev.en").write_text("dog\n")
    pattern = message.format(dir=re.escape(str(broken)))
    for command in (
        ["translate", "-m", str(broken), "-i", str(tmp_path / "dev.de"), "--threads", "1"],
        [
            "tune",
            "-m",
            str(broken),
            "--src",
            str(tmp_path / "dev.de"),
            "--ref",
            str(tmp_path / "dev.en"),
        ],
    ):
        assert main(command) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("translate: error: ")
        assert re.search(pattern, err.removeprefix("translate: error: ").rstrip("\n")), err


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


def test_weights_of_another_size_are_one_line_naming_the_first_difference(trained_dir, tmp_path):
    import shutil

    import yaml

    from translate.translator import Translator

    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    config["model"]["hidden_dim"] += 8  # every layer of the decoder changes size
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(UserError) as refused:
        Translator.from_dir(model_dir)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"the weights in {model_dir} do not match its config")
    assert "size mismatch for " in message and message.endswith(" more)")
