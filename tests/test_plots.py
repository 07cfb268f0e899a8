"""PNG charts: training curves and attention heatmaps."""


def test_training_curves_and_attention_heatmaps(trained_dir, tmp_path):
    from translate.plots import plot_attention, plot_training_curves

    plot_training_curves(trained_dir / "metrics.jsonl", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    plot_attention([[0.9, 0.1], [0.2, 0.8]], ["a", "b"], ["x", "y"], tmp_path / "att.png")
    assert (tmp_path / "att.png").read_bytes()[:4] == b"\x89PNG"
