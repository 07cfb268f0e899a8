"""translate.export: the graphs compute what the model does, for every cell and attention kind;
int8 graphs are quantized; the export directory and its refusals."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.conftest import tiny_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from translate.config import ModelConfig  # noqa: E402
from translate.errors import UserError  # noqa: E402
from translate.export import directory  # noqa: E402
from translate.export.directory import export_model  # noqa: E402
from translate.export.graphs import EncoderGraph, export_graphs  # noqa: E402
from translate.export.manifest import ExportError, read_manifest  # noqa: E402
from translate.export.quantize import quantize_graph  # noqa: E402
from translate.export.tied import store_tied_once  # noqa: E402
from translate.model.seq2seq import build_model  # noqa: E402

ATTENTION = [
    ("none", "after"),
    ("dot", "after"),
    ("general", "after"),
    ("additive", "after"),
    ("dot", "before"),
    ("general", "before"),
    ("additive", "before"),
]
VARIANTS = [
    {"dec_layers": 2, "enc_layers": 2, "context_pool": "mean", "reverse_source": True},
    {"dec_layers": 3, "context_pool": "max", "tie_embeddings": True},
    {"bidirectional": False, "tie_embeddings": True, "tie_source_embedding": True},
]


def graph_outputs(graph: bytes, feeds: dict) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    names = [entry.name for entry in session.get_inputs()]
    return session.run(None, {name: feeds[name] for name in names})


def run_both(model, encoder: bytes, step: bytes, src_tokens, src_lengths, beam: int):
    """The encoder and one step on ``beam`` rows per sentence, in PyTorch (model.encode,
    init_state, decode_step) and in ONNX Runtime: (ours, theirs) pairs of arrays."""
    got = graph_outputs(encoder, {"src_tokens": src_tokens.numpy(), "src_lengths": src_lengths})
    names = ["state", "rnn_context", "readout_context", "keys", "values", "mask"]
    memory_onnx = dict(zip(names, got))
    with torch.no_grad():
        memory = model.encode(src_tokens, torch.from_numpy(src_lengths))
        state = model.init_state(memory)
        tile = torch.arange(len(src_lengths)).repeat_interleave(beam)
        prev = torch.arange(len(tile)) % 7 + 2  # BOS and other tokens
        log_probs, new_state = model.decode_step(prev, state.index_select(0, tile), memory)
    feeds = {
        **memory_onnx,
        "prev_tokens": prev.numpy(),
        "state": memory_onnx["state"][tile.numpy()],
    }
    step_out = graph_outputs(step, feeds)
    pairs = [(state.numpy(), got[0]), (log_probs.numpy(), step_out[0])]
    pairs.append((new_state.numpy(), step_out[1]))
    for key in ("rnn_context", "readout_context", "keys", "values"):
        if key in memory:
            pairs.append((memory[key].numpy(), memory_onnx[key]))
    return pairs


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("attention,step", ATTENTION)
def test_every_cell_and_attention_kind_exports_and_computes_what_pytorch_does(
    cell, attention, step
):
    changes = {"enc_hidden_dim": 8} if attention == "dot" else {}  # dot: equal widths
    model = tiny_model(cell, attention=attention, attention_step=step, **changes).eval()
    encoder, step_graph = export_graphs(model)  # traced on 2 sentences of 5 tokens, 2 rows each
    # other shapes than the traced ones: 3 sentences x 3 rows, then 1 sentence of 1 token
    src_tokens = torch.tensor([[5, 6, 7, 8, 9, 3], [4, 3, 0, 0, 0, 0], [7, 7, 3, 0, 0, 0]])
    cases = [(src_tokens, np.array([6, 2, 3]), 3), (torch.tensor([[3]]), np.array([1]), 1)]
    for tokens, lengths, beam in cases:
        for ours, theirs in run_both(model, encoder, step_graph, tokens, lengths, beam):
            assert theirs.shape == ours.shape
            np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("changes", VARIANTS)
def test_layers_pooling_reversal_and_tied_tables_export(changes):
    model = tiny_model("gru", attention="general", **changes).eval()
    encoder, step = export_graphs(model)
    tokens = torch.tensor([[5, 6, 7, 3], [4, 3, 0, 0]])
    for ours, theirs in run_both(model, encoder, step, tokens, np.array([4, 2]), 4):
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


def test_a_model_with_dropout_exports_without_it_and_stays_in_eval_mode():
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=8, hidden_dim=16, dropout=0.5, attention="additive", dec_layers=3)
    model = build_model(cfg, 20, 20).eval()
    encoder, step = export_graphs(model)
    assert not any(module.training for module in model.modules())
    tokens = torch.tensor([[5, 6, 7, 3], [4, 3, 0, 0]])
    for ours, theirs in run_both(model, encoder, step, tokens, np.array([4, 2]), 2):
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


def test_the_step_gives_the_attention_weights_of_the_model():
    model = tiny_model("gru", attention="additive").eval()
    _, step = export_graphs(model)
    src_tokens, src_lengths = torch.tensor([[5, 6, 7, 3], [4, 3, 0, 0]]), torch.tensor([4, 2])
    with torch.no_grad():
        memory = model.encode(src_tokens, src_lengths)
        state = model.init_state(memory)
        prev = torch.tensor([2, 2])
        _, attended_weights = model.decoder(prev.unsqueeze(1), state, memory)
    feeds = {key: value.numpy() for key, value in memory.items()}
    feeds.update(prev_tokens=prev.numpy(), state=state.numpy())
    weights = graph_outputs(step, feeds)[2]  # (rows, src_len)
    np.testing.assert_allclose(weights, attended_weights[:, 0].numpy(), atol=1e-6)
    assert (weights[1, 2:] == 0).all()  # padding gets no weight


def test_int8_graphs_are_quantized_smaller_and_close():
    torch.manual_seed(0)  # wide enough that the weights, not the graph, make the file's size
    cfg = ModelConfig(emb_dim=64, hidden_dim=96, dropout=0.0, attention="general", dec_layers=2)
    model = build_model(cfg, 500, 500).eval()
    encoder, step = export_graphs(model)
    for fp32 in (encoder, step):
        int8 = quantize_graph(fp32)
        ops = [node.op_type for node in onnx.load_from_string(int8).graph.node]
        assert "MatMulInteger" in ops and "Gemm" not in ops
        graph = onnx.load_from_string(int8).graph
        constants = {init.name: init for init in graph.initializer}
        weighted = [  # products with a constant weight: every one is int8
            node for node in graph.node if node.op_type == "MatMul" and node.input[1] in constants
        ]
        assert not weighted
        for node in graph.node:
            if node.op_type == "GRU":  # W and R arrive through DequantizeLinear
                assert node.input[1].endswith("_dequantized")
                assert node.input[2].endswith("_dequantized")
        assert len(int8) < 0.6 * len(fp32)
    src_tokens, src_lengths = torch.tensor([[5, 6, 7, 3], [4, 3, 0, 0]]), np.array([4, 2])
    int8_pairs = run_both(
        model, quantize_graph(encoder), quantize_graph(step), src_tokens, src_lengths, 2
    )
    ours, theirs = int8_pairs[1]  # the log-probabilities
    assert np.abs(theirs - ours).max() < 0.05
    assert (theirs.argmax(axis=1) == ours.argmax(axis=1)).mean() >= 0.75


def table_copies(graph: bytes, vocab: int, width: int) -> int:
    """How many constants of a graph have a (vocab, width) table's size, either way round."""
    shapes = [tuple(init.dims) for init in onnx.load_from_string(graph).graph.initializer]
    return sum(shape in {(vocab, width), (width, vocab)} for shape in shapes)


def test_a_tied_table_is_stored_once_in_the_step_and_computes_the_same():
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=64, hidden_dim=64, attention="general", tie_embeddings=True)
    model = build_model(cfg, 500, 500).eval()
    encoder, traced = export_graphs(model)
    assert table_copies(traced, 500, 64) == 2  # what the exporter writes: table and transpose
    step, int8 = store_tied_once(traced), quantize_graph(traced)
    assert table_copies(step, 500, 64) == 1 and table_copies(int8, 500, 64) == 1
    assert len(step) < 0.75 * len(traced)
    tokens, lengths = torch.tensor([[5, 6, 7, 3], [4, 3, 0, 0]]), np.array([4, 2])
    for ours, theirs in run_both(model, encoder, step, tokens, lengths, 3):
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    ours, theirs = run_both(model, quantize_graph(encoder), int8, tokens, lengths, 3)[1]
    assert np.abs(theirs - ours).max() < 0.05
    untied = build_model(dataclasses.replace(cfg, tie_embeddings=False), 500, 500).eval()
    _, untied_step = export_graphs(untied)
    assert store_tied_once(untied_step) == untied_step  # nothing tied: left as it is


def test_an_export_directory_holds_what_the_manifest_names(trained_dir, tmp_path):
    out = export_model(trained_dir, tmp_path / "export")
    manifest = read_manifest(out)
    data = manifest.data
    assert data["format"] == "translate-onnx" and data["format_version"] == 1
    assert data["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert data["vocab"]["joint"] is True and data["vocab"]["src_spm"] == "spm.model"
    assert data["vocab"]["src_size"] == data["vocab"]["tgt_size"] > 0
    assert (out / "spm.model").read_bytes() == (trained_dir / "spm.model").read_bytes()
    assert data["decode"] == {
        "beam": 5,
        "length_penalty": 1.0,
        "max_len_a": 1.5,
        "max_len_b": 10,
        "batch_size": 16,
    }
    assert data["max_source_len"] == 200 and data["model"]["attention"] == "none"
    names = {"fp32": ("encoder.onnx", "step.onnx"), "int8": ("encoder.int8.onnx", "step.int8.onnx")}
    for precision, files in names.items():
        for graph, name in zip(("encoder", "step"), files):
            assert manifest.graph_path(precision, graph) == out / name
            model = onnx.load(out / name)
            onnx.checker.check_model(model)
            assert model.opset_import[0].version >= 17
            inputs = [entry["name"] for entry in data[graph]["inputs"]]
            assert [i.name for i in model.graph.input] == inputs
            outputs = [entry["name"] for entry in data[graph]["outputs"]]
            assert [o.name for o in model.graph.output] == outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "spm.model", *names["fp32"], *names["int8"]]
    )


def test_without_int8_only_fp32_graphs_are_written(attention_dir, tmp_path):
    out = export_model(attention_dir, tmp_path / "export", int8=False)
    data = json.loads((out / "manifest.json").read_text())
    assert list(data["graphs"]) == ["fp32"]
    assert not (out / "step.int8.onnx").exists()
    step_inputs = [entry["name"] for entry in data["step"]["inputs"]]
    assert step_inputs[-3:] == ["keys", "values", "mask"]
    assert [entry["name"] for entry in data["step"]["outputs"]][-1] == "attention"
    with pytest.raises(ExportError, match="has no int8 graphs"):
        read_manifest(out).graph_path("int8", "step")


def test_an_export_never_destroys_other_files(trained_dir, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="is not empty and holds no export"):
        export_model(trained_dir, busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    with pytest.raises(ExportError, match="is a file"):
        export_model(trained_dir, busy / "notes.txt")
    with pytest.raises(UserError, match="model directory not found"):
        export_model(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # an earlier export is replaced whole; no staging folder is left beside it
    out = export_model(trained_dir, tmp_path / "out")
    (out / "stale.onnx").write_bytes(b"old")
    export_model(trained_dir, out, int8=False)
    assert not (out / "stale.onnx").exists() and not (out / "step.int8.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "out"]


def test_graphs_that_do_not_reproduce_the_model_are_refused(trained_dir, tmp_path, monkeypatch):
    real = directory.export_graphs

    def wrong_step(model):  # as a GRU lowered without linear_before_reset would: other numbers
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.decoder.rnn.hidden.bias.add_(0.5)
        return real(model)[0], real(changed)[1]

    monkeypatch.setattr(directory, "export_graphs", wrong_step)
    with pytest.raises(ExportError, match="the exported step graph differs from the model by"):
        export_model(trained_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing written, no staging folder left


def test_encoder_graph_matches_the_model_on_padded_batches():
    # padding after a sentence changes nothing: a batch equals its sentences one at a time
    model = tiny_model("lstm", attention="general").eval()
    encoder, _ = export_graphs(model)
    tokens = torch.tensor([[5, 6, 7, 8, 3], [4, 3, 0, 0, 0]])
    batch = graph_outputs(encoder, {"src_tokens": tokens.numpy(), "src_lengths": np.array([5, 2])})
    alone = graph_outputs(
        encoder, {"src_tokens": tokens[1:, :2].numpy(), "src_lengths": np.array([2])}
    )
    np.testing.assert_allclose(batch[0][1], alone[0][0], atol=1e-6)
    with torch.no_grad():
        expected = EncoderGraph(model)(tokens, torch.tensor([5, 2]))
    np.testing.assert_allclose(batch[0], expected[0].numpy(), atol=1e-6)
