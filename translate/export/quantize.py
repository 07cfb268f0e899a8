"""int8 graphs from fp32 ones: ONNX Runtime's dynamic quantization, completed.

ONNX Runtime quantizes MatMul (to MatMulInteger; a linear layer's Gemm is rewritten as MatMul
first) and Gather (an int8 embedding table), not the GRU and RNN ops; its LSTM op it turns into
one of its own (com.microsoft), which is left out here. So, after it, the weights of every RNN, GRU
and LSTM op are stored int8 with one scale per output row and a DequantizeLinear in front, which
ONNX Runtime folds when it loads the graph (smaller files; those products stay fp32). A tied
table (the step's embedding and output layer) is stored once: the embedding gathers columns of
the output layer's int8 matrix. Only standard ONNX ops result, which ONNX Runtime Web runs too.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from .tied import drop_unused_initializers, initializers, share_tied_table, tied_tables

RECURRENT_OPS = ("RNN", "GRU", "LSTM")


def quantize_graph(graph_bytes: bytes) -> bytes:
    """The int8 version of an fp32 graph (ONNX bytes)."""
    tied = tied_tables(onnx.load_from_string(graph_bytes))  # found before quantize renames them
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
    for table, matrix in tied:
        share_tied_table(model, table, matrix, quantized=True)
    return model.SerializeToString()


def recurrent_weights_to_int8(model: onnx.ModelProto) -> None:
    """Store, in place, the W and R weights of every RNN/GRU/LSTM op as int8 with a per-row
    scale, dequantized by a DequantizeLinear node in front of the op."""
    graph, constants = model.graph, initializers(model)
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
    drop_unused_initializers(model)
