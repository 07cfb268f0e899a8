"""int8 graphs from fp32 ones: ONNX Runtime's dynamic quantization, completed.

ONNX Runtime quantizes MatMul (to MatMulInteger; a linear layer's Gemm is rewritten as MatMul
first) and Gather (an int8 embedding table), not the GRU and RNN ops; its LSTM op it turns into
one of its own (com.microsoft), which is left out here. So, after it, the weights of every RNN, GRU
and LSTM op are stored int8 with one scale per output row and a DequantizeLinear in front, which
ONNX Runtime folds when it loads the graph (smaller files; those products stay fp32). Only
standard ONNX ops result, which ONNX Runtime Web runs too.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

RECURRENT_OPS = ("RNN", "GRU", "LSTM")


def quantize_graph(graph_bytes: bytes) -> bytes:
    """The int8 version of an fp32 graph (ONNX bytes)."""
    with tempfile.TemporaryDirectory() as folder:
        fp32_path, path = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        fp32_path.write_bytes(graph_bytes)
        logging.disable(logging.WARNING)  # its advice to pre-process, printed on every call
        try:
            quantize_dynamic(
                str(fp32_path),
                path,
                op_types_to_quantize=["MatMul", "Gather"],
                weight_type=QuantType.QInt8,
            )
        finally:
            logging.disable(logging.NOTSET)
        model = onnx.load(path)
    recurrent_weights_to_int8(model)
    return model.SerializeToString()


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def recurrent_weights_to_int8(model: onnx.ModelProto) -> None:
    """Store, in place, the W and R weights of every RNN/GRU/LSTM op as int8 with a per-row
    scale, dequantized by a DequantizeLinear node in front of the op."""
    graph, constants = model.graph, _initializers(model)
    nodes = []
    for node in graph.node:
        if node.op_type in RECURRENT_OPS:
            for slot in (1, 2):  # W (directions, gates*hidden, input), R (..., hidden)
                name = node.input[slot]
                if name not in constants:
                    continue
                weight = numpy_helper.to_array(constants[name])
                scale = np.abs(weight).max(axis=(0, 2)) / 127.0  # (gates*hidden,)
                scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
                quantized = np.clip(np.round(weight / scale[None, :, None]), -127, 127)
                graph.initializer.extend(
                    [
                        numpy_helper.from_array(quantized.astype(np.int8), name + "_int8"),
                        numpy_helper.from_array(scale, name + "_scale"),
                    ]
                )
                nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [name + "_int8", name + "_scale"],
                        [name + "_dequantized"],
                        axis=1,
                    )
                )
                node.input[slot] = name + "_dequantized"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(model)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = _inputs_used(graph) | {output.name for output in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _inputs_used(graph: onnx.GraphProto) -> set[str]:
    """The names that the nodes of ``graph`` and of its subgraphs (If branches) read."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                used |= _inputs_used(attribute.g)
    return used
