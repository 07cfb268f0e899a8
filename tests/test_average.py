"""Checkpoint averaging: ``translate average`` writes the mean of exactly the last N checkpoints
into model.safetensors, keeps the model training chose as model.single.safetensors, reads the
.pt files of older directories (upgrading them), and refuses in one line."""

import io
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from translate.cli import main
from translate.config import Config
from translate.errors import UserError
from translate.modeldir import atomic_save, dump_config, load_weights, save_weights
from translate.train.average import average_checkpoints, average_state_dicts
from translate.train.loop import train
from translate.translator import Translator


@pytest.fixture(scope="module")
def kept_dir(word_corpus, tmp_path_factory) -> Path:
    """A model directory whose training kept the weights of its last 3 validations."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kept") / "model"
    overrides = (f"out_dir={out}", "train.max_epochs=1", "train.valid_every=8")
    train(tiny_config(word_corpus, *overrides, "train.keep_checkpoints=3"), log=lambda m: None)
    return out


def exact_mean(paths: list[Path]) -> dict:
    """The element-wise mean, rounded once to fp32 (a float64 sum of a few fp32 values is exact)."""
    loaded = [load_weights(path) for path in paths]
    return {key: (sum(w[key].double() for w in loaded) / len(loaded)).float() for key in loaded[0]}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_average_writes_the_mean_of_exactly_the_last_checkpoints(kept_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(kept_dir, model_dir)
    kept = sorted((model_dir / "checkpoints").glob("step-*"))
    assert [path.suffix for path in kept] == [".safetensors"] * 3
    chosen = (model_dir / "model.safetensors").read_bytes()  # the best weights training chose
    # the cases differ, so the test tells which files were averaged
    assert not same_weights(exact_mean(kept[-2:]), exact_mean(kept))
    assert not same_weights(exact_mean(kept[-2:]), exact_mean(kept[:2]))

    assert main(["average", "-m", str(model_dir), "-n", "2"]) == 0
    assert capsys.readouterr().out == f"averaged 2 checkpoints into {model_dir}/model.safetensors\n"
    averaged = load_weights(model_dir / "model.safetensors")
    assert same_weights(averaged, exact_mean(kept[-2:]))
    assert (model_dir / "model.single.safetensors").read_bytes() == chosen

    # averaging again replaces model.safetensors but keeps the model training chose
    assert main(["average", "-m", str(model_dir), "-n", "3"]) == 0
    assert same_weights(load_weights(model_dir / "model.safetensors"), exact_mean(kept))
    assert (model_dir / "model.single.safetensors").read_bytes() == chosen
    assert not list(model_dir.rglob("model*.pt"))
    translator = Translator.from_dir(model_dir)  # the averaged model loads as any other
    assert same_weights(translator.model.state_dict(), exact_mean(kept))


def test_the_last_checkpoints_are_the_highest_steps(tmp_path):
    """step-9 comes before step-10, whatever the padding (sorting names would not)."""
    (tmp_path / "config.yaml").write_bytes(dump_config(Config()))
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (9, 10, 100):
        save_weights({"w": torch.full((2,), float(step))}, folder / f"step-{step}.safetensors")
    (folder / "notes.safetensors").write_text("not a checkpoint\n")  # not step-N: not averaged
    used = average_checkpoints(tmp_path, last=2)
    assert [path.name for path in used] == ["step-10.safetensors", "step-100.safetensors"]
    assert load_weights(tmp_path / "model.safetensors")["w"].tolist() == [55.0, 55.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_averaging_takes_the_mean_in_each_tensors_dtype(suffix, dtype, tmp_path):
    for i, value in enumerate((1.0, 2.0, 6.0)):
        weights = {"w": torch.full((2,), value, dtype=dtype)}
        path = tmp_path / f"{i}{suffix}"
        save_weights(weights, path) if suffix == ".safetensors" else atomic_save(weights, path)
    mean = average_state_dicts(sorted(tmp_path.glob(f"*{suffix}")))
    assert mean["w"].dtype == dtype and mean["w"].tolist() == [3.0, 3.0]


def test_a_directory_of_format_3_is_averaged_and_upgraded(kept_dir, tmp_path, capsys):
    """Its model.pt and checkpoints/step-N.pt are read, and every weight file is written again
    as safetensors with config.yaml at format 4: the directory stays of one format."""
    model_dir = tmp_path / "m"
    shutil.copytree(kept_dir, model_dir)
    kept = sorted((model_dir / "checkpoints").glob("step-*"))
    mean, chosen = exact_mean(kept[-2:]), load_weights(model_dir / "model.safetensors")
    for path in [model_dir / "model.safetensors", *kept]:  # as format 3 wrote them
        atomic_save(load_weights(path), path.with_suffix(".pt"))
        path.unlink()
    config = model_dir / "config.yaml"
    config.write_text(config.read_text().replace("format_version: 4\n", "format_version: 3\n"))

    assert main(["average", "-m", str(model_dir), "-n", "2"]) == 0
    assert not list(model_dir.rglob("model*.pt")) and not list(model_dir.rglob("step-*.pt"))
    assert "format_version: 4\n" in config.read_text()
    assert same_weights(load_weights(model_dir / "model.safetensors"), mean)
    assert same_weights(load_weights(model_dir / "model.single.safetensors"), chosen)
    for path in kept:
        assert same_weights(load_weights(path), exact_mean([path]))


def _one_checkpoint(model_dir: Path) -> None:
    for path in sorted((model_dir / "checkpoints").glob("step-*"))[:-1]:
        path.unlink()


def _another_model(model_dir: Path) -> None:
    last = sorted((model_dir / "checkpoints").glob("step-*"))[-1]
    weights = load_weights(last)
    weights["decoder.embed.weight"] = torch.zeros(3, 3)
    save_weights(weights, last)


def _truncated(model_dir: Path) -> None:
    last = sorted((model_dir / "checkpoints").glob("step-*"))[-1]
    last.write_bytes(last.read_bytes()[:500])


def _truncated_torch_file(model_dir: Path) -> None:
    last = sorted((model_dir / "checkpoints").glob("step-*"))[-1]
    data = io.BytesIO()
    torch.save(load_weights(last), data)
    last.unlink()
    last.with_suffix(".pt").write_bytes(data.getvalue()[:500])


def _a_file(model_dir: Path) -> None:
    shutil.rmtree(model_dir)
    model_dir.write_text("not a directory\n")


def _missing(model_dir: Path) -> None:
    shutil.rmtree(model_dir)


@pytest.mark.parametrize("last", [1, 0, -2])
def test_averaging_one_checkpoint_or_none_is_refused(last, kept_dir, tmp_path):
    """The CLI refuses -n below 2 as it parses; the library refuses it too, not averaging all
    (a slice [-0:]) or the wrong files."""
    model_dir = tmp_path / "m"
    shutil.copytree(kept_dir, model_dir)
    chosen = (model_dir / "model.safetensors").read_bytes()
    with pytest.raises(
        UserError, match=rf"^averaging takes 2 or more checkpoints, got last={last}$"
    ):
        average_checkpoints(model_dir, last)
    assert (model_dir / "model.safetensors").read_bytes() == chosen
    assert not (model_dir / "model.single.safetensors").exists()


STEP = r"{dir}/checkpoints/step-\d+\.safetensors"


@pytest.mark.parametrize(
    "damage, last, message",
    [
        (
            _one_checkpoint,
            "2",
            r"{dir}/checkpoints has 1 checkpoint\(s\); train with train.keep_checkpoints=N "
            r"\(N >= 2\) to average",
        ),
        (
            _another_model,
            "2",
            STEP + r" holds decoder.embed.weight of shape \(3, 3\), " + STEP + r" of shape "
            r"\(\d+, 32\): they come from different models",
        ),
        (
            _truncated,
            "3",
            STEP + r" cannot be loaded: it is truncated: it has 500 bytes of the \d+ its header "
            r"announces",
        ),
        (
            _truncated_torch_file,
            "3",
            r"{dir}/checkpoints/step-\d+\.pt cannot be loaded: it is truncated or damaged "
            r"\(not a complete torch archive\)",
        ),
        (_a_file, "2", r"{dir} is a file, not a model directory"),
        (_missing, "2", r"model directory not found: {dir}"),
    ],
    ids=["one-checkpoint", "another-model", "truncated", "truncated-pt", "a-file", "missing"],
)
def test_average_mistakes_are_one_line_and_write_nothing(
    damage, last, message, kept_dir, tmp_path, capsys
):
    model_dir = tmp_path / "m"
    shutil.copytree(kept_dir, model_dir)
    damage(model_dir)
    before = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else None
    chosen = (model_dir / "model.safetensors").read_bytes() if model_dir.is_dir() else None
    assert main(["average", "-m", str(model_dir), "-n", last]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    pattern = "translate: error: " + message.format(dir=re.escape(str(model_dir)))
    assert re.fullmatch(pattern, err.rstrip("\n")), err
    if before is not None:  # every check runs before anything is written
        assert sorted(p.name for p in model_dir.iterdir()) == before
        assert (model_dir / "model.safetensors").read_bytes() == chosen


def test_average_is_refused_while_a_training_run_holds_the_directory(kept_dir, tmp_path, capsys):
    from translate.data.outdir import hold

    model_dir = tmp_path / "m"
    shutil.copytree(kept_dir, model_dir)
    before = (model_dir / "model.safetensors").read_bytes()
    with hold(model_dir):  # as `translate train` holds it for the run's life
        assert main(["average", "-m", str(model_dir), "-n", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"translate: error: {model_dir} is in use by another translate process")
    assert err.count("\n") == 1
    assert (model_dir / "model.safetensors").read_bytes() == before
    assert not (model_dir / "model.single.safetensors").exists()
