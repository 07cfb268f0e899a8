"""After training: averaging checkpoints and choosing beam size and length penalty on dev."""

import random
import shutil

import pytest
import torch
import yaml

from tests.conftest import ENGLISH, GERMAN
from translate.cli import main
from translate.decoding import DecodingError
from translate.modeldir import atomic_save
from translate.train.average import average_checkpoints, average_state_dicts
from translate.translator import Translator
from translate.tune import tune_decoding


def test_averaging_identical_checkpoints_is_the_identity(trained_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    (model_dir / "checkpoints").mkdir()
    for step in (10, 20, 30):
        atomic_save(weights, model_dir / "checkpoints" / f"step-{step:08d}.pt")
    used = average_checkpoints(model_dir, last=3)
    assert len(used) == 3
    averaged = torch.load(model_dir / "model.pt", weights_only=True)
    assert all(torch.equal(averaged[k], weights[k]) for k in weights)
    assert (model_dir / "model.single.pt").is_file()


def test_averaging_takes_the_mean(tmp_path):
    for i, value in enumerate((1.0, 2.0, 6.0)):
        atomic_save({"w": torch.full((2,), value)}, tmp_path / f"{i}.pt")
    mean = average_state_dicts(sorted(tmp_path.glob("*.pt")))
    assert mean["w"].tolist() == [3.0, 3.0]


def test_tune_writes_the_best_choice(trained_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    sources = ["hund katze", "baum auto buch", "haus", "tisch stuhl hund"]
    refs = ["dog cat", "tree car book", "house", "table chair dog"]
    result = tune_decoding(
        model_dir, sources, refs, beams=[1, 3], alphas=[0.0, 1.0], progress=lambda line: None
    )
    assert [(r["beam"], r["length_penalty"]) for r in result["all"]] == [
        (1, 0.0),
        (3, 0.0),
        (3, 1.0),
    ]
    saved = yaml.safe_load((model_dir / "config.yaml").read_text())["decode"]
    assert (saved["beam"], saved["length_penalty"]) == (
        result["best"]["beam"],
        result["best"]["length_penalty"],
    )
    assert result["best"]["bleu"] == max(r["bleu"] for r in result["all"])
    assert Translator.from_dir(model_dir).cfg.decode.beam == saved["beam"]


def test_every_choice_is_checked_as_decoding_options_before_any_work(tmp_path):
    nowhere = tmp_path / "no-model"  # refused before the model directory is even read
    with pytest.raises(DecodingError, match=r"^beam must be an integer >= 1, got 0$"):
        tune_decoding(nowhere, ["hund"], ["dog"], beams=[3, 0], alphas=[1.0])
    with pytest.raises(DecodingError, match="^length_penalty must be a number from 0 to 10"):
        tune_decoding(nowhere, ["hund"], ["dog"], beams=[1, 3], alphas=[0.0, -1.0])


def test_translate_applies_the_length_penalty_tune_wrote(trained_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    rng = random.Random(0)  # sentences longer than the training ones: the penalty shows there
    sources = [" ".join(rng.choice(GERMAN) for _ in range(rng.randint(7, 12))) for _ in range(30)]
    (model_dir / "dev.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    refs = [" ".join(ENGLISH[word] for word in s.split()) for s in sources]
    threads = torch.get_num_threads()

    def translate(*flags: str) -> str:
        command = ["translate", "-m", str(model_dir), "-i", str(model_dir / "dev.de"), *flags]
        assert main([*command, "--threads", "1"]) == 0
        return capsys.readouterr().out

    before = translate()  # the model's own length penalty
    assert Translator.from_dir(model_dir).cfg.decode.length_penalty == 1.0
    tune_decoding(model_dir, sources, refs, beams=[5], alphas=[5.0], progress=lambda line: None)
    try:
        assert translate() == translate("--beam", "5", "--length-penalty", "5") != before
    finally:
        torch.set_num_threads(threads)
