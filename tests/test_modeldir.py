"""Model directories: safe loading, weights in safetensors, clear errors for broken ones, and
directories saved by earlier versions that still load and translate as they did."""

import errno
import io
import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import tiny_model
from translate.config import Config
from translate.decoding import DecodeOptions
from translate.errors import UserError
from translate.modeldir import (
    FORMAT_VERSION,
    ModelDirError,
    atomic_save,
    dump_config,
    load_weights,
    read_config,
    read_model_dir,
    save_weights,
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


def as_format_3(model_dir: Path) -> Path:
    """Turn a directory written today into the format-3 directory the same run would have
    written: format 4 differs only in holding the weights as model.safetensors."""
    atomic_save(load_weights(model_dir / "model.safetensors"), model_dir / "model.pt")
    (model_dir / "model.safetensors").unlink()
    config = model_dir / "config.yaml"
    config.write_text(
        config.read_text().replace(f"format_version: {FORMAT_VERSION}\n", "format_version: 3\n")
    )
    return model_dir


def same_weights(a: dict, b: dict) -> bool:
    """The same names holding the same values, bit for bit, in the same dtypes."""
    return a.keys() == b.keys() and all(
        a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]) for key in a
    )


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
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert config["format_version"] == FORMAT_VERSION == 4
    assert not (model_dir / "model.pt").exists()
    after = load_weights(model_dir / "model.safetensors")
    assert "decoder.rnn.input.weight" in after and "decoder.upper.weight_hh_l0" in after
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]


@pytest.mark.parametrize("name", OLD_FORMATS)
def test_an_upgrade_turns_every_weight_file_into_safetensors(name, tmp_path):
    """model.pt, model.single.pt and checkpoints/step-N.pt become .safetensors in today's layout,
    holding what the old files held; checkpoint.pt stays a torch file, its weights upgraded."""
    model_dir = old_model_dir(name, tmp_path)
    expected = json.loads((model_dir / "expected.json").read_text(encoding="utf-8"))
    weights = read_model_dir(model_dir).weights  # model.pt, read in today's layout
    old = torch.load(model_dir / "model.pt", weights_only=True)
    halved = {key: value / 2 for key, value in old.items()}  # another step, in the old layout
    atomic_save(halved, model_dir / "model.single.pt")
    (model_dir / "checkpoints").mkdir()
    shutil.copyfile(model_dir / "model.pt", model_dir / "checkpoints" / "step-00000070.pt")
    atomic_save(halved, model_dir / "checkpoints" / "step-00000072.pt")
    atomic_save({"model": old, "optimizer": {}}, model_dir / "checkpoint.pt")

    cfg, version = read_config(model_dir / "config.yaml")
    write_config(model_dir, cfg)
    assert read_config(model_dir / "config.yaml") == (cfg, FORMAT_VERSION)
    files = sorted(str(path.relative_to(model_dir)) for path in model_dir.rglob("*.*"))
    assert files == [
        "checkpoint.pt",
        "checkpoints/step-00000070.safetensors",
        "checkpoints/step-00000072.safetensors",
        "config.yaml",
        "expected.json",
        "model.safetensors",
        "model.single.safetensors",
        "spm.model",
    ]
    halved_now = {key: value / 2 for key, value in weights.items()}
    assert same_weights(load_weights(model_dir / "model.safetensors"), weights)
    assert same_weights(load_weights(model_dir / "checkpoints/step-00000070.safetensors"), weights)
    for path in ("model.single.safetensors", "checkpoints/step-00000072.safetensors"):
        assert same_weights(load_weights(model_dir / path), halved_now)
    saved = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    assert same_weights(saved["model"], weights)
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]


@pytest.mark.parametrize("name", OLD_FORMATS)
def test_an_upgrade_cut_short_translates_as_before(name, tmp_path):
    """Stopped after writing model.safetensors but before removing model.pt and replacing the
    old config.yaml: the directory still translates as it did, and the next write finishes."""
    model_dir = old_model_dir(name, tmp_path)
    expected = json.loads((model_dir / "expected.json").read_text(encoding="utf-8"))
    save_weights(read_model_dir(model_dir).weights, model_dir / "model.safetensors")
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]
    write_config(model_dir, read_config(model_dir / "config.yaml")[0])
    assert not (model_dir / "model.pt").exists()
    translator = Translator.from_dir(model_dir, device="cpu")
    assert translator.translate(expected["lines"], beam=1) == expected["greedy"]


def test_a_training_run_writes_its_weights_as_safetensors(trained_dir):
    assert (trained_dir / "model.safetensors").is_file()
    assert not list(trained_dir.rglob("model*.pt"))
    assert yaml.safe_load((trained_dir / "config.yaml").read_text())["format_version"] == 4
    with open(trained_dir / "model.safetensors", "rb") as file:  # what safetensors begins with
        header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
    assert header["__metadata__"]["format"] == "pt"


def test_tied_weights_are_stored_once_and_come_back_tied(tmp_path):
    """One table under three names (source, target, output) is written once; the loaded state
    dict equals the saved one bit for bit and loads strictly into a new model."""
    model = tiny_model(tie_embeddings=True, tie_source_embedding=True)
    weights = model.state_dict()
    tied = ["decoder.embed.weight", "decoder.output.weight", "encoder.embed.weight"]
    assert len({weights[name].data_ptr() for name in tied}) == 1
    save_weights(weights, tmp_path / "model.safetensors")
    loaded = load_weights(tmp_path / "model.safetensors")
    assert same_weights(loaded, weights)
    assert len({loaded[name].data_ptr() for name in tied}) == 1
    with open(tmp_path / "model.safetensors", "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_length))
    stored = set(header) - {"__metadata__"}
    assert stored == set(weights) - set(tied[:2])  # the table under its first name only
    tensor_bytes = (tmp_path / "model.safetensors").stat().st_size - 8 - header_length
    assert tensor_bytes == sum(weights[name].numel() * 4 for name in stored)
    other = tiny_model(tie_embeddings=True, tie_source_embedding=True)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.zero_()
    other.load_state_dict(loaded)  # strict: every name there, every shape right
    assert same_weights(other.state_dict(), weights)


def test_views_dtypes_and_empty_tensors_round_trip(tmp_path):
    """What safetensors cannot store as it is (a tensor sharing memory without being the same
    view, a transposed one) is stored as a copy of its values."""
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    weights = {
        "base": base,
        "same": base,
        "rows": base[1:],
        "transposed": base.t(),
        "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "empty_too": torch.zeros(0, 4),
    }
    save_weights(weights, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    assert same_weights(loaded, weights)
    assert loaded["same"] is loaded["base"] and loaded["rows"] is not loaded["base"]


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
    with pytest.raises(ModelDirError, match=r"spm.model has \d+ pieces but .*model.safet.* was"):
        Translator.from_dir(other)


class Planted:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_planted_pickle_is_refused_without_running(trained_dir, tmp_path, monkeypatch, recwarn):
    """In a directory of format 3 or older, whose weights are a torch file: the refusal says
    what the file holds and never passes on torch's advice to load it with weights_only=False,
    which would run the planted code."""
    monkeypatch.chdir(tmp_path)
    for name, data in [
        ("raw", pickle.dumps({"weights": Planted()})),  # a plain pickle, not a torch archive
        ("archive", _torch_bytes({"weights": Planted()})),  # torch.save's zip with a pickle
    ]:
        bad = tmp_path / name
        shutil.copytree(trained_dir, bad)
        as_format_3(bad)
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
        ("model.safetensors", "model.safetensors is missing"),
        ("model.pt", "model.pt is missing"),  # from a directory of format 3
    ],
)
def test_an_incomplete_directory_names_the_missing_file(trained_dir, tmp_path, missing, message):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    if missing == "model.pt":
        as_format_3(broken)
    (broken / missing).unlink()
    with pytest.raises(ModelDirError, match=message):
        Translator.from_dir(broken)


def test_a_truncated_torch_weight_file_is_named(trained_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken)
    as_format_3(broken)
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
    config.write_text(config.read_text().replace("format_version: 4", "format_version: '4'"))


def _not_sentencepiece(folder: Path) -> None:
    (folder / "spm.model").write_text("not a model\n")


def _empty_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"")


def _text_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_text("hello\n")


def _random_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(torch.randint(256, (5000,)).byte().numpy().tobytes())


def _torch_file_as_weights(folder: Path) -> None:
    weights = load_weights(folder / "model.safetensors")
    atomic_save(weights, folder / "model.safetensors")  # a torch archive under the new name


def _truncated_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])


def _truncated_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _header_longer_than_the_file(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])


def _damaged_aliases(folder: Path) -> None:
    """A header whose aliases name a tensor that is not in the file."""
    from safetensors.torch import save_file

    weights = load_weights(folder / "model.safetensors")
    aliases = json.dumps({"decoder.output.weight": "decoder.output.weigth"})
    save_file(weights, folder / "model.safetensors", metadata={"aliases": aliases})


def _integer_weights(folder: Path) -> None:
    weights = load_weights(folder / "model.safetensors")
    weights["decoder.output.bias"] = weights["decoder.output.bias"].long()
    save_weights(weights, folder / "model.safetensors")


def _list_in_torch_weights(folder: Path) -> None:
    as_format_3(folder)
    weights = torch.load(folder / "model.pt", weights_only=True)
    weights["encoder.embed.weight"] = [1, 2, 3]
    atomic_save(weights, folder / "model.pt")


def _changed_weights(change):
    def damage(folder: Path) -> None:
        weights = load_weights(folder / "model.safetensors")
        change(weights)
        save_weights(weights, folder / "model.safetensors")

    return damage


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
        (_format_as_text, r"^{dir}/config.yaml: format_version must be an integer >= 1, got '4'$"),
        (_not_sentencepiece, r"^{dir}/spm.model is not a SentencePiece model \(damaged, or "),
        (_empty_weights, r"^{dir}/model.safetensors cannot be loaded: it is empty$"),
        (
            _text_weights,
            r"^{dir}/model.safetensors cannot be loaded: it is not a safetensors file$",
        ),
        (_random_weights, r"^{dir}/model.safetensors cannot be loaded: it is not a safetensors "),
        (_torch_file_as_weights, r"^{dir}/model.safetensors cannot be loaded: it is not a safet"),
        (
            _truncated_weights,
            r"^{dir}/model.safetensors cannot be loaded: it is truncated: it has (\d+) bytes of "
            r"the (\d+) its header announces$",
        ),
        (
            _truncated_header,
            r"^{dir}/model.safetensors cannot be loaded: it is truncated: it has 100 bytes of the "
            r"\d+ its header announces$",
        ),
        (
            _header_longer_than_the_file,
            r"^{dir}/model.safetensors cannot be loaded: it is truncated: it has (\d+) bytes of "
            r"the (\d+) its header announces$",
        ),
        (
            _damaged_aliases,
            r"^{dir}/model.safetensors cannot be loaded: its header's aliases are damaged$",
        ),
        (
            _integer_weights,
            r"^{dir}/model.safetensors does not hold model weights \(named float tensors\)$",
        ),
        (
            _changed_weights(lambda w: w.pop("decoder.output.bias")),
            r"^the weights in {dir} do not match its config and vocabularies: Missing key\(s\) in "
            r'state_dict: "decoder.output.bias"$',
        ),
        (
            _changed_weights(lambda w: w.update(extra=torch.zeros(2))),
            r"^the weights in {dir} do not match its config and vocabularies: Unexpected key\(s\) "
            r'in state_dict: "extra"$',
        ),
        (
            _changed_weights(lambda w: w.update({"decoder.output.bias": torch.zeros(2)})),
            r"^the weights in {dir} do not match its config and vocabularies: size mismatch for "
            r"decoder.output.bias: copying a param with shape torch.Size\(\[2\]\) from",
        ),
        (_list_in_torch_weights, r"^{dir}/model.pt does not hold model weights \(named float "),
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
    target = tmp_path / "model.safetensors"
    save_weights({"w": torch.ones(3)}, target)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match="cannot write .*model.safetensors .*No space left.*intact"):
        save_weights({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(load_weights(target)["w"], torch.ones(3))
    assert not (tmp_path / "model.safetensors.tmp").exists()


def test_write_config_stamps_the_current_format(tmp_path):
    write_config(tmp_path, Config())
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["format_version"] == 4


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
