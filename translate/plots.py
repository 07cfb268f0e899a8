"""PNG charts for analysis: BLEU by source length, training curves, attention heatmaps.

matplotlib is an optional extra (``pip install 'translate[plots]'``), imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'translate[plots]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_length_buckets(table: dict, path: str | Path) -> None:
    """Grouped bars: BLEU of each system per source-length bucket (from ``bleu_by_length``)."""
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(metrics_path: str | Path, path: str | Path) -> None:
    """Training loss, dev loss, dev BLEU and learning rate against steps, from metrics.jsonl."""
    plt = _pyplot()
    entries = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    train = [e for e in entries if "train_loss" in e]
    dev = [e for e in entries if "dev_loss" in e]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([e["step"] for e in train], [e["train_loss"] for e in train], label="train")
    axes[0].plot([e["step"] for e in dev], [e["dev_loss"] for e in dev], "o-", label="dev")
    axes[0].set_title("loss per token")
    axes[0].legend()
    with_bleu = [e for e in dev if "dev_bleu" in e]
    axes[1].plot([e["step"] for e in with_bleu], [e["dev_bleu"] for e in with_bleu], "o-")
    axes[1].set_title("dev BLEU (greedy)")
    axes[2].plot([e["step"] for e in train], [e["lr"] for e in train])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(weights, src_pieces: list[str], tgt_pieces: list[str], path: str | Path):
    """A heatmap of attention weights (target pieces × source pieces)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src_pieces), 1 + 0.4 * len(tgt_pieces)))
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_pieces)))
    ax.set_xticklabels(src_pieces, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_pieces)))
    ax.set_yticklabels(tgt_pieces)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
