"""PNG charts for analysis: BLEU by source length, training curves, attention heatmaps.

matplotlib is an optional extra (``pip install 'translate[plots]'``), imported only here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from .errors import UserError, is_number


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'translate[plots]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def check_png_path(path: str | Path) -> Path:
    """Refuse, before any drawing, a PNG path that cannot be written: a directory, a file not
    named .png (only PNG is drawn: x.pdf would hold a PNG), or a folder that does not exist. A
    device or FIFO is written through, whatever its name."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name ending in .png")
    written_through = path.exists() and not path.is_file()  # /dev/null, /dev/stdout, a FIFO
    if path.suffix.lower() != ".png" and not written_through:
        raise UserError(f"{path}: plots are written as PNG; give a file name ending in .png")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _save(plt, fig, path: Path) -> None:
    """Draw ``fig`` in memory, then write it: a failed write names the file in one line."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as err:
        raise UserError(f"cannot write {path} ({err.strerror or err})") from None


def plot_length_buckets(table: dict, path: str | Path) -> None:
    """Grouped bars: BLEU of each system per source-length bucket (from ``bleu_by_length``)."""
    path = check_png_path(path)
    plt = _pyplot()
    systems = [k for k in table if k not in ("buckets", "sentences")]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(systems), 1)
    for i, name in enumerate(systems):
        xs = [b + i * width for b in range(len(table["buckets"]))]
        ax.bar(xs, [v or 0.0 for v in table[name]], width, label=name)
    ax.set_xticks([b + width * (len(systems) - 1) / 2 for b in range(len(table["buckets"]))])
    ax.set_xticklabels([f"{b}\n({n})" for b, n in zip(table["buckets"], table["sentences"])])
    ax.set_xlabel("source length in words (sentences)")
    ax.set_ylabel("BLEU")
    ax.legend()
    fig.tight_layout()
    _save(plt, fig, path)


def read_metrics(metrics_path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl. A last line cut short (a run killed mid-write) is left
    out; any other line that is not a JSON object is an error naming it."""
    metrics_path = Path(metrics_path)
    try:
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not UTF-8 text"
        raise UserError(f"cannot read {metrics_path} ({reason})") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:
            if number == len(lines):
                break
            record = None
        if not isinstance(record, dict):
            raise UserError(f"{metrics_path}:{number} is not a JSON record of training")
        if record:
            records.append(record)
    return records


def _curve(records: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the records with a finite number at ``key`` and at "step"."""
    points = [
        (r["step"], r[key]) for r in records if is_number(r.get("step")) and is_number(r.get(key))
    ]
    return [step for step, _ in points], [value for _, value in points]


def plot_training_curves(metrics_path: str | Path, path: str | Path) -> None:
    """Training loss, dev loss, dev BLEU and learning rate against steps, from metrics.jsonl."""
    path = check_png_path(path)
    records = read_metrics(metrics_path)
    curves = {key: _curve(records, key) for key in ("train_loss", "dev_loss", "dev_bleu", "lr")}
    if not any(steps for steps, _ in curves.values()):
        raise UserError(
            f"{metrics_path} holds no training numbers to plot (train_loss, dev_loss, dev_bleu "
            "or lr by step)"
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(*curves["train_loss"], label="train")
    axes[0].plot(*curves["dev_loss"], "o-", label="dev")
    axes[0].set_title("loss per token")
    axes[0].legend()
    axes[1].plot(*curves["dev_bleu"], "o-")
    axes[1].set_title("dev BLEU (greedy)")
    axes[2].plot(*curves["lr"])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    _save(plt, fig, path)


def plot_attention(weights, src_pieces: list[str], tgt_pieces: list[str], path: str | Path):
    """A heatmap of attention weights (target pieces × source pieces)."""
    path = check_png_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src_pieces), 1 + 0.4 * len(tgt_pieces)))
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_pieces)))
    ax.set_xticklabels(src_pieces, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_pieces)))
    ax.set_yticklabels(tgt_pieces)
    fig.tight_layout()
    _save(plt, fig, path)
