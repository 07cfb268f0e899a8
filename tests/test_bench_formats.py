"""bench/formats.py and bench/fairseq_generate.py without fairseq: the conversion each number
format makes, ours decoded in each, where a work directory's models are found, and the table."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import formats, transformer
from bench.fairseq_generate import convert, weight_bytes
from translate.modeldir import read_config, write_config
from translate.score import score
from translate.translator import Translator


class Attention(torch.nn.Module):
    """Stands in for fairseq's attention: projections, and the flag that routes through them."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(64, 64)
        self.out = torch.nn.Linear(64, 300)
        self.skip_embed_dim_check = False

    def forward(self, x):
        return self.out(torch.tanh(self.q_proj(x)))


def test_convert_quantizes_every_linear_layer_and_routes_attention_through_them():
    torch.manual_seed(0)
    model, x = Attention().eval(), torch.randn(5, 64)
    expected = model(x)
    int8 = convert(model, "int8")
    assert int8.skip_embed_dim_check is True
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(int8.q_proj, quantized) and isinstance(int8.out, quantized)
    assert torch.allclose(int8(x), expected, atol=0.05)
    # int8 weights: a quarter of fp32's, plus per-layer scales and the fp32 biases
    assert weight_bytes(int8) < 0.45 * weight_bytes(model)
    assert convert(model, "fp32") is model
    bf16 = convert(Attention(), "bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_decode_ours_in_int8_is_what_the_quantized_translator_says(
    trained_dir, word_corpus, tmp_path
):
    sources = (word_corpus / "dev.de").read_text().splitlines()[:20]
    refs = (word_corpus / "dev.en").read_text().splitlines()[:20]
    hyp_file = tmp_path / "int8.en"
    row = transformer.decode_ours(trained_dir, sources, refs, 1, 0, "int8", hyp_file)
    quantized = Translator.from_dir(trained_dir, device="cpu", quantize="int8")
    hyps = quantized.translate(sources, beam=5)
    assert hyp_file.read_text().splitlines() == hyps
    expected = score(hyps, refs)
    assert (row["bleu"], row["chrf"]) == (expected["bleu"], expected["chrf"])
    fp32 = transformer.decode_ours(trained_dir, sources, refs, 1, 0)
    assert fp32["model_bytes"] == weight_bytes(Translator.from_dir(trained_dir).model)
    assert row["model_bytes"] < fp32["model_bytes"]


def write_budget(workdir: Path, minutes: float, rows: list[dict], split="test_2016_flickr"):
    workdir.mkdir(parents=True, exist_ok=True)
    saved = {"cpu": "x", "args": {"minutes": minutes, "split": split}, "rows": rows}
    (workdir / f"transformer-{minutes:g}min.json").write_text(json.dumps(saved))


def test_budget_rows_keep_the_measured_rows_of_a_test_set_run(tmp_path):
    with pytest.raises(SystemExit, match="no transformer-"):
        formats.budget_rows(tmp_path)
    write_budget(tmp_path / "sweep", 10, [], split="val")
    with pytest.raises(SystemExit, match="not the test set"):
        formats.budget_rows(tmp_path / "sweep")
    rows = [{"system": "ours", "setup": "attention"}, {"system": "fairseq", "error": "x"}]
    write_budget(tmp_path / "ten", 10, rows)
    assert formats.budget_rows(tmp_path / "ten") == (10, rows[:1])


def test_a_fairseq_row_finds_its_checkpoint_and_its_pieces(tmp_path):
    model = tmp_path / "fairseq-transformer_tiny" / "model"
    model.mkdir(parents=True)
    for name in ("checkpoint_3_900.pt", "checkpoint_4_940.pt", "checkpoint_4_1940.pt"):
        (model / name).touch()
    row = {"setup": "transformer_tiny", "steps": 940, "pieces": "8000 (ours attention)"}
    assert formats.fairseq_checkpoint(tmp_path, row) == model / "checkpoint_4_940.pt"
    with pytest.raises(SystemExit, match="step 941"):
        formats.fairseq_checkpoint(tmp_path, {**row, "steps": 941})
    (model / "checkpoint_budget.pt").touch()  # kept at the budget: it wins over the glob
    assert formats.fairseq_checkpoint(tmp_path, row) == model / "checkpoint_budget.pt"
    assert formats.fairseq_pieces(tmp_path, row) == tmp_path / "pieces-attention/data/test.de"
    own = {**row, "pieces": "4000 (its own)"}
    assert formats.fairseq_pieces(tmp_path, own) == tmp_path / "pieces-4000/data/test.de"


def test_the_table_has_a_line_per_row_and_an_error_in_its_own_row():
    rows = [
        {
            "minutes": 10,
            "system": "ours",
            "setup": "attention",
            "format": "int8",
            "bleu": 41.0,
            "chrf": 60.5,
            "sentences_per_s": 150.0,
            "single_sentences_per_s": 40.0,
            "model_bytes": 16_000_000,
        },
        {"minutes": 30, "system": "fairseq", "setup": "t", "format": "bf16", "error": "no\nmore"},
    ]
    table = formats.format_table(rows, "AMD EPYC, 2 cores", 2, 1000).splitlines()
    assert table[0] == (
        "Multi30k test_2016_flickr (1000 sentences), beam 5, 2 thread(s); AMD EPYC, 2 cores"
    )
    assert table[4] == "| 10 min | ours | attention | int8 | 41.00 | 60.50 | 150.0 | 40.0 | 16.0 |"
    assert table[5] == "| 30 min | fairseq | t | bf16 | error: no |"


def test_parse_args_refuses_unknown_formats_and_missing_folders(tmp_path, capsys):
    args = formats.parse_args(["--data-dir", "d", "--workdirs", f"{tmp_path},"])
    assert args.workdirs == [tmp_path.resolve()] and args.formats == ["fp32", "bf16", "int8"]
    with pytest.raises(SystemExit):
        formats.parse_args(["--data-dir", "d", "--workdirs", str(tmp_path), "--formats", "fp8"])
    assert "unknown format fp8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        formats.parse_args(["--data-dir", "d", "--workdirs", str(tmp_path / "none")])
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        formats.parse_args(["--data-dir", "d"])
    assert "give work directories or model directories" in capsys.readouterr().err


def test_a_model_directory_of_translate_train_is_decoded_as_a_row_of_ours(
    trained_dir, word_corpus, tmp_path
):
    """``--models``: a folder trained by ``translate train`` joins the run as ours, under its
    own name, with its hypotheses in its own formats/ folder."""
    with pytest.raises(SystemExit, match="no config.yaml"):
        formats.model_rows(tmp_path)
    model = tmp_path / "mine"
    shutil.copytree(trained_dir, model)
    set_minutes(model / "config.yaml", 7.5)
    assert formats.model_rows(model) == (
        7.5, [{"system": "ours", "setup": "mine", "model_dir": str(model)}]
    )  # fmt: skip
    args = formats.parse_args(
        ["--data-dir", "d", "--models", str(model), "--formats", "int8", "--single-sentences", "0"]
    )
    sources = (word_corpus / "dev.de").read_text().splitlines()[:10]
    refs = (word_corpus / "dev.en").read_text().splitlines()[:10]
    [row] = formats.measure(args, (sources, refs))
    hyps = (model / "formats" / "ours-mine-int8.en").read_text().splitlines()
    assert hyps == Translator.from_dir(model, quantize="int8").translate(sources, beam=5)
    assert (row["minutes"], row["setup"], row["format"]) == (7.5, "mine", "int8")
    assert row["bleu"] == score(hyps, refs)["bleu"]


def set_minutes(config: Path, minutes: float) -> None:
    cfg, _ = read_config(config)
    write_config(config.parent, replace(cfg, train=replace(cfg.train, max_minutes=minutes)))


def test_repeat_passes_alternate_order_and_give_the_median_speed(tmp_path, monkeypatch, capsys):
    rows = [{"system": "ours", "setup": "small4k"}, {"system": "fairseq", "setup": "t"}]
    monkeypatch.setattr(formats, "budget_rows", lambda workdir: (5, rows))
    calls = []

    def decode(workdir, row, number_format, args, test):
        calls.append((row["setup"], number_format))
        if row["setup"] == "t" and number_format == "fp32" and len(calls) > 4:
            raise formats.FAILURES[0]("fairseq-generate failed")
        speed = 100.0 * len(calls)
        scores = {"bleu": 40.0, "chrf": 60.0, "model_bytes": 8_000_000}
        return {**scores, "sentences_per_s": speed, "single_sentences_per_s": speed / 10}

    monkeypatch.setattr(formats, "decode", decode)
    args = formats.parse_args(
        ["--data-dir", "d", "--workdirs", str(tmp_path), "--formats", "int8,fp32", "--repeat", "3"]
    )
    measured = formats.measure(args, ([], []))
    jobs = [("small4k", "int8"), ("small4k", "fp32"), ("t", "int8"), ("t", "fp32")]
    assert calls == jobs + jobs[::-1] + jobs  # every other pass in reverse order
    first = measured[0]  # decoded 1st, 8th and 9th: 100, 800 and 900 sentences/s
    assert first["sentences_per_s"] == 800.0 and first["all_sentences_per_s"] == [100, 800, 900]
    assert first["single_sentences_per_s"] == 80.0 and first["bleu"] == 40.0
    assert measured[3] == {
        "minutes": 5, "system": "fairseq", "setup": "t", "format": "fp32",
        "error": "fairseq-generate failed",
    }  # fmt: skip
    table = formats.format_table(measured, "AMD EPYC, 2 cores", 2, 1000, repeat=3).splitlines()
    assert table[0].endswith("sentences/s: the median of 3 decodes")
    assert table[4] == "| 5 min | ours | small4k | int8 | 40.00 | 60.00 | 800.0 | 80.0 | 8.0 |"
    with pytest.raises(SystemExit):
        formats.parse_args(["--data-dir", "d", "--workdirs", str(tmp_path), "--repeat", "0"])
    assert "--repeat must be at least 1" in capsys.readouterr().err


def test_the_ratio_table_pairs_ours_with_fairseq_in_the_same_format():
    def row(system, number_format, speeds, bleu=40.0):
        setup = "small4k" if system == "ours" else "t"
        return {
            "minutes": 5, "system": system, "setup": setup, "format": number_format, "bleu": bleu,
            "sentences_per_s": sorted(speeds)[1], "all_sentences_per_s": speeds,
            "single_sentences_per_s": 10.0, "all_single_sentences_per_s": [10.0] * 3,
        }  # fmt: skip

    rows = [
        row("ours", "int8", [200.0, 300.0, 400.0], bleu=40.05),
        row("ours", "fp32", [100.0, 100.0, 100.0]),
        row("fairseq", "int8", [100.0, 100.0, 250.0], bleu=39.35),
        {"minutes": 5, "system": "fairseq", "setup": "t", "format": "fp32", "error": "failed"},
    ]
    lines = formats.ratio_table(rows).splitlines()
    assert len(lines) == 3  # the head, its rule and one pair: fp32 has no fairseq speed
    # medians 300 and 100; pass by pass 2.0, 3.0 and 1.6
    assert lines[2] == (
        "| small4k, 5 min | t, 5 min | int8 | 40.05 / 39.35 | 3.00× (1.60-3.00) | 1.00× (1.00-1.00) |"
    )
    assert formats.ratio_table(rows[:2]) == ""  # no fairseq row to compare with
