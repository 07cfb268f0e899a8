"""bench/curves.py without fairseq: which checkpoints a work directory kept, at which training
seconds, and that each is scored with its own weights (the best one as the model directory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import curves
from tests.conftest import tiny_config
from translate.score import score
from translate.train.loop import train
from translate.translator import Translator


@pytest.fixture(scope="module")
def kept_run(word_corpus, tmp_path_factory) -> Path:
    """A bench.transformer work directory whose ours-attention run kept every validation."""
    workdir = tmp_path_factory.mktemp("curves")
    out = workdir / "ours-attention"
    torch.manual_seed(0)
    cfg = tiny_config(
        word_corpus,
        f"out_dir={out}",
        "train.valid_every=15",
        "train.max_steps=45",
        "train.keep_checkpoints=1000",
        "train.valid_bleu_sentences=0",
    )
    train(cfg, log=lambda message: None)
    rows = [{"system": "ours", "setup": "attention", "bleu": 0.0}]
    args = {"split": "test_2016_flickr", "minutes": 1}
    (workdir / "transformer-1min.json").write_text(json.dumps({"args": args, "rows": rows}))
    return workdir


def test_ours_points_are_every_validation_at_its_seconds(kept_run):
    out = kept_run / "ours-attention"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validations = [(r["step"], r["elapsed"]) for r in records if "dev_loss" in r]
    points = curves.ours_points(out)
    assert [(step, seconds) for step, seconds, _ in points] == validations
    assert [step for step, _, _ in points] == [15, 30, 45]
    (out / "checkpoints" / "step-00000099.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit, match="no validation at step 99"):
        curves.ours_points(out)
    (out / "checkpoints" / "step-00000099.safetensors").unlink()


def test_every_checkpoint_is_scored_once_with_its_own_weights(kept_run, word_corpus, monkeypatch):
    rows = curves.measure(kept_run, 1, str(word_corpus), "dev")
    assert [(row["system"], row["step"]) for row in rows] == [
        ("ours", 15),
        ("ours", 30),
        ("ours", 45),
    ]
    sources = (word_corpus / "dev.de").read_text().splitlines()
    refs = (word_corpus / "dev.en").read_text().splitlines()
    best = Translator.from_dir(kept_run / "ours-attention", device="cpu")
    expected = score(best.translate(sources, beam=5), refs)["bleu"]
    assert expected in [row["bleu"] for row in rows]  # the best weights are one of them
    assert len({row["bleu"] for row in rows}) > 1  # and the others are not the same weights
    saved = json.loads((kept_run / "curves.json").read_text())
    assert sorted(r["step"] for r in saved) == [15, 30, 45]
    # measured again, nothing is decoded: every score is read back
    monkeypatch.setattr(curves, "score_ours", lambda *args: pytest.fail("decoded again"))
    assert curves.measure(kept_run, 1, str(word_corpus), "dev") == rows
    table = curves.format_table(rows, "a CPU", 1)
    assert "| 45 |" in table and "ours attention" in table and "nrefs:1|case:mixed" in table


def test_fairseq_points_are_the_kept_checkpoints_at_their_log_seconds(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    lines = ["2026-01-01 10:00:00 | INFO | fairseq_cli.train | Start iterating over samples"]
    for updates, second in ((250, 40), (255, 41), (500, 80)):
        path = model / f"checkpoint_1_{updates}.pt"
        if updates != 255:  # deleted by fairseq: not a point
            path.write_bytes(b"")
        lines.append(
            f"2026-01-01 10:{second // 60:02d}:{second % 60:02d} | INFO | "
            f"fairseq.checkpoint_utils | Saved checkpoint "
            f"{path} (epoch 1 @ {updates} updates, score None) (writing took 0.1 seconds)"
        )
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    points = curves.fairseq_points(tmp_path)
    assert [(step, seconds) for step, seconds, _ in points] == [(250, 40.0), (500, 80.0)]
