"""int8 graphs from fp32 ones: ONNX Runtime's dynamic quantization, prepared and completed.

ONNX Runtime quantizes MatMul (to MatMulInteger) and Gather (an int8 embedding table), not the
Gemm that a linear layer over (rows, dim) exports as, nor the GRU and RNN ops. So, before it runs,
each Gemm with constant weights becomes MatMul + Add; after it, the weights of every RNN, GRU and
LSTM op are stored int8 with one scale per output row and a DequantizeLinear in front, which ONNX
Runtime folds when it loads the graph (smaller files; those products stay fp32). Only standard
ONNX ops result, which ONNX Runtime Web runs too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

RECURRENT_OPS = ("RNN", "GRU", "LSTM")


def quantize_graph(graph_bytes: bytes) -> bytes:
    """The int8 version of an fp32 graph (ONNX bytes)."""
    model = onnx.load_from_string(graph_bytes)
    gemm_to_matmul(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "int8.onnx"
        quantize_dynamic(
            model,
            path,
            op_types_to_quantize=["MatMul", "Gather"],
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        model = onnx.load(path)
    recurrent_weights_to_int8(model)
    return model.SerializeToString()


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def gemm_to_matmul(model: onnx.ModelProto) -> None:
    """Rewrite, in place, each Gemm whose B is an initializer (a linear layer) as MatMul + Add,
    the form ONNX Runtime's dynamic quantization covers."""
    graph, constants = model.graph, _initializers(model)
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in constants or attrs.get("transA", 0):
            nodes.append(node)
            continue
        if not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(constants[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        weight_name = node.output[0] + "_weight"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        if len(node.input) > 2 and node.input[2]:
            product = node.output[0] + "_product"
            nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product]))
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(model)


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
