"""A trained model as two ONNX graphs: the encoder, and one decoder step (see :mod:`.manifest`).

Both graphs are traced from the model's own modules (PyTorch's TorchScript exporter,
``dynamo=False``: the dynamo exporter has been seen to lower nn.GRU without
``linear_before_reset``, which gives wrong numbers without an error). The decoder's first layer
is already written out as matrix products (:class:`~translate.model.rnn.ContextRNN`), so the step
quantizes; the encoder's RNNs and the decoder's upper layers become ONNX RNN/GRU/LSTM ops, whose
weights the int8 graphs store as int8 and dequantize when loaded (:mod:`.quantize`).
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from ..model.seq2seq import Seq2Seq
from .manifest import OPSET, ExportError, tensor

ATTENTION_MEMORY = ("keys", "values", "mask")


class EncoderGraph(nn.Module):
    """The encoder's inputs to everything the step reads per sentence, and the first state."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor):
        memory = self.model.encode(src_tokens, src_lengths)
        outputs = [self.model.init_state(memory), memory["rnn_context"], memory["readout_context"]]
        if self.model.decoder.attention is not None:
            outputs += [memory[name] for name in ATTENTION_MEMORY]
        return tuple(outputs)


class StepGraph(nn.Module):
    """One decoder step: log-probabilities, the new state and (with attention) its weights."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, prev_tokens, state, rnn_context, readout_context, *attention_memory):
        decoder = self.decoder
        memory = {"rnn_context": rnn_context, "readout_context": readout_context}
        memory.update(zip(ATTENTION_MEMORY, attention_memory))
        embedded = (decoder.embed(prev_tokens) * decoder.embed_scale).unsqueeze(1)
        rnn_out, attended, weights, state = decoder._steps(embedded, state, memory)
        logits = decoder._readout(rnn_out, embedded, memory, attended).squeeze(1)
        outputs = (torch.log_softmax(logits.float(), dim=-1), state)
        return outputs if weights is None else (*outputs, weights.squeeze(1))


def graph_tensors(model: Seq2Seq) -> dict:
    """The inputs and outputs of both graphs, as the manifest lists them."""
    cfg, decoder = model.cfg, model.decoder
    rows, hidden = decoder.state_rows, cfg.hidden_dim
    gates = decoder.rnn.context.out_features
    memory = [
        tensor("rnn_context", "float32", "sentences", gates),
        tensor("readout_context", "float32", "sentences", cfg.emb_dim),
    ]
    if decoder.attention is not None:
        key_dim = hidden if cfg.attention != "dot" else model.encoder.out_dim
        memory += [
            tensor("keys", "float32", "sentences", "src_len", key_dim),
            tensor("values", "float32", "sentences", "src_len", model.encoder.out_dim),
            tensor("mask", "bool", "sentences", "src_len"),
        ]
    step_outputs = [
        tensor("log_probs", "float32", "rows", decoder.output.out_features),
        tensor("new_state", "float32", "rows", rows, hidden),
    ]
    if decoder.attention is not None:
        step_outputs.append(tensor("attention", "float32", "rows", "src_len"))
    return {
        "encoder": {
            "inputs": [
                tensor("src_tokens", "int64", "sentences", "src_len"),
                tensor("src_lengths", "int64", "sentences"),
            ],
            "outputs": [tensor("state", "float32", "sentences", rows, hidden), *memory],
        },
        "step": {
            "inputs": [
                tensor("prev_tokens", "int64", "rows"),
                tensor("state", "float32", "rows", rows, hidden),
                *memory,
            ],
            "outputs": step_outputs,
        },
    }


def _dynamic_axes(entries: list[dict]) -> dict:
    return {
        entry["name"]: {
            axis: dim for axis, dim in enumerate(entry["shape"]) if isinstance(dim, str)
        }
        for entry in entries
    }


def _export(module: nn.Module, args: tuple, spec: dict) -> bytes:
    """``module`` traced on ``args`` as an ONNX model with the names and dynamic axes of
    ``spec`` (the manifest's entry for the graph)."""
    buffer = io.BytesIO()
    inputs, outputs = spec["inputs"], spec["outputs"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[entry["name"] for entry in inputs],
            output_names=[entry["name"] for entry in outputs],
            dynamic_axes=_dynamic_axes(inputs + outputs),
        )
    return buffer.getvalue()


def check_exportable(model: Seq2Seq) -> None:
    """Refuse in one line a model whose graphs would not compute what it does."""
    if not isinstance(model, Seq2Seq):
        raise ExportError("an ensemble cannot be exported; export each model directory on its own")


def export_graphs(model: Seq2Seq) -> tuple[bytes, bytes]:
    """The fp32 encoder and step graphs of ``model`` (eval mode, on the CPU), as ONNX bytes."""
    check_exportable(model)
    model = model.float().cpu().eval()
    spec = graph_tensors(model)
    # example inputs: 2 sentences of 3 and 5 tokens (the shapes stay free; see _dynamic_axes)
    src_tokens = torch.tensor([[4, 5, 3, 0, 0], [4, 5, 6, 7, 3]])
    src_lengths = torch.tensor([3, 5])
    # eval() on the wrappers too: the exporter puts each module back in its mode when it is
    # done, and a new module is in training mode, which would switch dropout on in the model
    encoder = EncoderGraph(model).eval()
    with torch.no_grad():
        memory = encoder(src_tokens, src_lengths)
    encoder_bytes = _export(encoder, (src_tokens, src_lengths), spec["encoder"])
    # the step's example has 2 rows per sentence, so that beams' layout is what is traced
    tile = torch.tensor([0, 0, 1, 1])
    prev_tokens = torch.tensor([2, 5, 2, 6])
    step_args = (prev_tokens, memory[0].index_select(0, tile), *memory[1:])
    step_bytes = _export(StepGraph(model).eval(), step_args, spec["step"])
    return encoder_bytes, step_bytes
