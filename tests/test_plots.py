"""PNG charts through the CLI: ``translate plot`` draws every curve of metrics.jsonl,
``translate attention`` one heatmap per sentence (from arguments, a file or stdin, into -o FILE
or --out-dir DIR), each says what it wrote, and each user mistake is one line."""

import io
import json
import re
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from translate.cli import main
from translate.plots import plot_attention
from translate.translator import Translator

BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two line colours
DPI = 120


@pytest.fixture(autouse=True)
def keep_threads():
    """main() sets torch's threads for the process; leave them as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pixels(path: Path) -> np.ndarray:
    """A PNG as (height, width, 3) RGB in 0-1."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)[..., :3]


def coloured(image: np.ndarray, colour: tuple) -> np.ndarray:
    """The (row, column) of each pixel of ``colour``."""
    return np.argwhere(np.abs(image - np.array(colour) / 255).max(axis=-1) < 0.02)


def panels(image: np.ndarray) -> list[np.ndarray]:
    """The three side-by-side panels of the training-curves chart."""
    width = image.shape[1]
    return [image[:, i * width // 3 : (i + 1) * width // 3] for i in range(3)]


def training_records() -> list[dict]:
    """A run's metrics: falling losses, BLEU rising, the learning rate warming up."""
    train = [
        {"step": s, "train_loss": 5 / s**0.5, "lr": 0.001 * min(1, s / 400)}
        for s in range(50, 1001, 50)
    ]
    dev = [
        {"step": s, "dev_loss": 4 / s**0.5, "dev_bleu": 30 * (1 - 100 / s), "lr": 0.001}
        for s in (200, 400, 600, 800, 1000)
    ]
    return sorted(train + dev, key=lambda r: r["step"])


def write_metrics(model_dir: Path, records: list[dict], tail: str = "") -> None:
    model_dir.mkdir(exist_ok=True)
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (model_dir / "metrics.jsonl").write_text(lines + tail, encoding="utf-8")


def test_plot_draws_each_curve_where_it_belongs(tmp_path, capsys):
    model_dir = tmp_path / "m"
    write_metrics(model_dir, training_records())
    assert main(["plot", "-m", str(model_dir), "-o", str(tmp_path / "curves.png")]) == 0
    assert capsys.readouterr().err == f"wrote {tmp_path / 'curves.png'}\n"
    image = pixels(tmp_path / "curves.png")
    assert image.shape == (3.6 * DPI, 13 * DPI, 3)
    loss, bleu, lr = panels(image)
    # a drawn curve is hundreds of pixels; a legend's sample of a missing one is ~100
    assert len(coloured(loss, BLUE)) > 400 and len(coloured(loss, ORANGE)) > 400
    assert len(coloured(bleu, BLUE)) > 400 and len(coloured(lr, BLUE)) > 400
    assert len(coloured(bleu, ORANGE)) == len(coloured(lr, ORANGE)) == 0
    for panel in bleu, lr:  # both rise with the step: higher (smaller row) on the right
        rows, columns = coloured(panel, BLUE).T
        middle = (columns.min() + columns.max()) / 2
        assert rows[columns > middle].mean() < rows[columns < middle].mean() - 20


def test_plot_of_a_trained_directory(trained_dir, tmp_path):
    assert main(["plot", "-m", str(trained_dir), "-o", str(tmp_path / "curves.png")]) == 0
    loss, bleu, lr = panels(pixels(tmp_path / "curves.png"))
    assert len(coloured(loss, BLUE)) > 300 and len(coloured(lr, BLUE)) > 300  # lr: flat


def test_plot_writes_through_a_link_or_a_device(tmp_path):
    model_dir = tmp_path / "m"
    write_metrics(model_dir, training_records())
    (tmp_path / "link.png").symlink_to(tmp_path / "target.png")
    assert main(["plot", "-m", str(model_dir), "-o", str(tmp_path / "link.png")]) == 0
    assert (tmp_path / "link.png").is_symlink()  # the link stays; its target holds the chart
    assert pixels(tmp_path / "target.png").shape == (3.6 * DPI, 13 * DPI, 3)
    assert main(["plot", "-m", str(model_dir), "-o", "/dev/null"]) == 0
    assert Path("/dev/null").is_char_device()


def test_a_last_line_cut_by_a_kill_is_left_out(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    write_metrics(whole, training_records())
    write_metrics(cut, training_records(), tail='{"step": 1050, "train_lo')
    for model_dir in whole, cut:
        assert main(["plot", "-m", str(model_dir), "-o", str(model_dir / "c.png")]) == 0
    assert np.array_equal(pixels(whole / "c.png"), pixels(cut / "c.png"))


@pytest.mark.parametrize(
    "metrics, output, message",
    [
        ("no folder", "c.png", r"model directory not found: {dir}"),
        (None, "c.png", r"{dir}/metrics.jsonl not found"),
        ("", "c.png", r"{dir}/metrics.jsonl holds no training numbers to plot \(.*\)"),
        (
            '{"step": 1, "lr": "high", "train_loss": null}\n{"step": true, "dev_bleu": 3}\n',
            "c.png",
            r"{dir}/metrics.jsonl holds no training numbers to plot \(.*\)",
        ),
        ('{"step": 1, "lr": 0.1}\nnot json\n{"step": 2, "lr": 0.1}\n', "c.png", "{dir}/metrics"),
        ('[1, 2]\n{"step": 2, "lr": 0.1}\n', "c.png", "{dir}/metrics.jsonl:1 is not a JSON"),
        ('{"step": 1, "lr": 0.1}\n', "missing/c.png", r"cannot write {out}: folder .* not exist"),
        ('{"step": 1, "lr": 0.1}\n', ".", r"{out} is a directory; give a file name ending in .png"),
        ('{"step": 1, "lr": 0.1}\n', "c.pdf", r"{out}: plots are written as PNG; give a .*\.png"),
    ],
    ids=[
        "no-model",
        "no-metrics",
        "empty",
        "no-numbers",
        "bad-line",
        "not-a-record",
        "no-folder",
        "dir",
        "pdf",
    ],
)
def test_plot_mistakes_are_one_line(metrics, output, message, tmp_path, capsys):
    model_dir = tmp_path / "m"
    if metrics != "no folder":
        model_dir.mkdir()
    if metrics not in (None, "no folder"):
        (model_dir / "metrics.jsonl").write_text(metrics, encoding="utf-8")
    out = tmp_path / output
    assert main(["plot", "-m", str(model_dir), "-o", str(out)]) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1, stderr
    pattern = message.format(dir=re.escape(str(model_dir)), out=re.escape(str(out)))
    assert re.match("translate: error: " + pattern, stderr), stderr
    assert not list(tmp_path.rglob("*.p[nd][gf]"))  # nothing drawn


def test_attention_writes_one_heatmap_per_sentence(attention_dir, tmp_path, capsys):
    sentences = ["hund katze baum auto tisch", "haus"]
    folder = tmp_path / "att"
    assert main(["attention", "-m", str(attention_dir), "--out-dir", str(folder), *sentences]) == 0
    paths = [folder / "attention-1.png", folder / "attention-2.png"]
    assert capsys.readouterr().err == f"wrote 2 attention plots: {paths[0]}, {paths[1]}\n"
    assert sorted(folder.iterdir()) == paths
    translator = Translator.from_dir(attention_dir)
    for n, sentence in enumerate(sentences, 1):
        src, tgt, weights = translator.attention(sentence)
        image = pixels(folder / f"attention-{n}.png")
        # one column per source piece and one row per target piece: the sentence in its file
        height, width = round((1 + 0.4 * len(tgt)) * DPI), round((1 + 0.45 * len(src)) * DPI)
        assert image.shape == (height, width, 3)
        # the weights are drawn: far more ink than the same chart of zero weights
        blank = tmp_path / f"zeros-{n}.png"
        plot_attention(np.zeros(tuple(weights.shape)), src, tgt, blank)
        ink = (image.min(axis=-1) < 0.95).sum()
        assert ink > 3 * (pixels(blank).min(axis=-1) < 0.95).sum()


def test_attention_draws_one_sentence_into_o_and_reads_a_file_or_stdin(
    attention_dir, tmp_path, capsys, monkeypatch
):
    """-o FILE is one sentence's chart; -i FILE and stdin give a sentence a line, each file
    numbered by its line (blank lines have none); all draw what the arguments draw."""
    model = ["attention", "-m", str(attention_dir)]
    assert main([*model, "--out-dir", str(tmp_path / "args"), "haus", "hund katze baum"]) == 0
    one = tmp_path / "one.png"
    assert main([*model, "-o", str(one), "hund katze baum"]) == 0
    source = tmp_path / "in.de"
    source.write_text("haus\n\nhund katze baum\n", encoding="utf-8")
    assert main([*model, "--out-dir", str(tmp_path / "file"), "-i", str(source)]) == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source.read_bytes())))
    assert main([*model, "--out-dir", str(tmp_path / "stdin")]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said[1] == f"wrote 1 attention plot: {one}"
    assert said[2] == f"wrote 2 attention plots: {tmp_path}/file/attention-1.png, " + (
        f"{tmp_path}/file/attention-3.png"
    )
    drawn = pixels(tmp_path / "args" / "attention-2.png")
    assert not np.array_equal(drawn, pixels(tmp_path / "args" / "attention-1.png"))
    for read in "file", "stdin":
        assert sorted(p.name for p in (tmp_path / read).iterdir()) == [
            "attention-1.png",
            "attention-3.png",
        ]
        first = pixels(tmp_path / read / "attention-1.png")
        assert np.array_equal(first, pixels(tmp_path / "args" / "attention-1.png"))
        assert np.array_equal(pixels(tmp_path / read / "attention-3.png"), drawn)
    assert np.array_equal(pixels(one), drawn)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "{tmp}/folder", "hund"], "-o names one PNG file and {tmp}/folder is a folder: "),
        (["-o", "{tmp}/a.png", "hund", "katze"], "-o names one PNG file, but there are 2 "),
        (["-o", "{tmp}/a.pdf", "hund"], "{tmp}/a.pdf: plots are written as PNG; give a file"),
        (["--out-dir", "{tmp}/in.de", "hund"], "cannot write into {tmp}/in.de: it is not a fold"),
        (["--out-dir", "{tmp}/d", "-i", "{tmp}/in.de", "hund"], "give sentences as arguments "),
        (["--out-dir", "{tmp}/d", "-i", "{tmp}/blank.de"], "no sentences to draw: {tmp}/blank"),
        (["--out-dir", "{tmp}/d", "-i", "{tmp}/none.de"], "input file not found: {tmp}/none.de"),
        (["--out-dir", "{tmp}/d", "hund", " "], "attention needs sentences to translate, got a"),
    ],
    ids=["o-folder", "o-two", "o-pdf", "dir-file", "args-and-i", "blank-file", "no-file", "blank"],
)
def test_attention_mistakes_are_one_line_before_anything_is_drawn(
    args, message, attention_dir, tmp_path, capsys
):
    (tmp_path / "folder").mkdir()
    (tmp_path / "in.de").write_text("hund\n")
    (tmp_path / "blank.de").write_text("\n  \n")
    argv = ["attention", "-m", str(attention_dir), *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("translate: error: " + message.format(tmp=tmp_path)), stderr
    assert not list(tmp_path.rglob("*.png")) and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["hund"], "one of the arguments -o/--output --out-dir is required"),
        (
            ["-o", "a.png", "--out-dir", "d", "hund"],
            "argument --out-dir: not allowed with argument -o/--output",
        ),
    ],
)
def test_attention_needs_either_o_or_out_dir(args, message, capsys):
    with pytest.raises(SystemExit) as ended:
        main(["attention", "-m", "model", *args])
    assert ended.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(message)


def test_attention_from_a_model_without_it_is_one_line(trained_dir, tmp_path, capsys):
    code = main(["attention", "-m", str(trained_dir), "--out-dir", str(tmp_path / "att"), "hund"])
    assert code == 1
    stdout, stderr = capsys.readouterr()
    assert (
        stdout == ""
        and stderr == "translate: error: this model has no attention (model.attention is none)\n"
    )
    assert not (tmp_path / "att").exists()  # refused before the folder was made
