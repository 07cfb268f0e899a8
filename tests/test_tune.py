"""After training: averaging checkpoints and choosing beam size and length penalty on dev."""

import shutil

import torch
import yaml

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
