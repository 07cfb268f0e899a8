"""A tied table stored once in an ONNX graph. The exporter writes a tied embedding and output
layer as two constants (the table, and its transpose for the MatMul); here the embedding gathers
columns of the MatMul's matrix instead, transposed back into rows, and the table goes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def tied_tables(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(table, matrix) names of the fp32 graph's Gather tables whose transpose is a MatMul's
    weight, gathered with one-dimensional indices (a graph input of rank 1: the step's previous
    tokens, whose rows the Transpose written here assumes)."""
    constants = initializers(model)
    rank_one = {i.name for i in model.graph.input if len(i.type.tensor_type.shape.dim) == 1}
    tables = {
        node.input[0]: numpy_helper.to_array(constants[node.input[0]])
        for node in model.graph.node
        if node.op_type == "Gather" and node.input[0] in constants and node.input[1] in rank_one
    }
    pairs = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in constants:
            continue
        weight = numpy_helper.to_array(constants[node.input[1]])
        for name, table in tables.items():
            if weight.shape == table.shape[::-1] and np.array_equal(weight, table.T):
                pairs.append((name, node.input[1]))
    return pairs


def share_tied_table(
    model: onnx.ModelProto, table: str, matrix: str, quantized: bool = False
) -> None:
    """Gather the embedding from ``matrix``'s columns instead of ``table``, in place. With
    ``quantized`` (after ONNX Runtime's quantization, which names them ``*_quantized``): the
    int8 columns, dequantized with the matrix's scale. A layout other than expected is left."""
    suffix = "_quantized" if quantized else ""
    gathers = [
        n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table + suffix
    ]
    if len(gathers) != 1 or matrix + suffix not in initializers(model):
        return
    gather = gathers[0]
    rows = gather.output[0]
    if quantized:
        dequantize = [
            n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == rows
        ]
        if len(dequantize) != 1:
            return
        dequantize[0].input[1:] = [matrix + "_scale", matrix + "_zero_point"]
    gather.input[0] = matrix + suffix
    gather.attribute.append(helper.make_attribute("axis", 1))
    gather.output[0] = rows + "_columns"
    nodes = list(model.graph.node)
    transpose = helper.make_node("Transpose", [rows + "_columns"], [rows], perm=[1, 0])
    nodes.insert(nodes.index(gather) + 1, transpose)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)


def store_tied_once(graph_bytes: bytes) -> bytes:
    """An fp32 graph (ONNX bytes) with each tied table stored once."""
    model = onnx.load_from_string(graph_bytes)
    pairs = tied_tables(model)
    for table, matrix in pairs:
        share_tied_table(model, table, matrix)
    return model.SerializeToString() if pairs else graph_bytes


def drop_unused_initializers(model: onnx.ModelProto) -> None:
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
