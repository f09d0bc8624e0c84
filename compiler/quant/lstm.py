"""Hybrid int8 weights for the fused UNIDIRECTIONAL_SEQUENCE_LSTM (LiteRT's hybrid LSTM kernel).

The kernel takes its 8 gate weight matrices (inputs 1-8, and projection weights at 16) as int8 with
one symmetric scale each, keeps the biases, states and activations float, and quantizes its input
and recurrent activations on the fly (asymmetrically with `asymmetricQuantizeInputs`, as the
converter sets). All weight operands must be int8 together, so the op is quantized whole or not at
all. Versions follow LiteRT's op_version.cc: 2 hybrid, 3 hybrid with asymmetric inputs.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Operator, Subgraph, Tensor
from compiler.quant import graph, names
from compiler.quant.numerics import symmetric_weights

OP = schema.BuiltinOperator
F32 = schema.TensorType.FLOAT32
HYBRID = {OP.UNIDIRECTIONAL_SEQUENCE_LSTM: (1, 2, 3, 4, 5, 6, 7, 8, 16)}


def _weights(op: Operator) -> list[int]:
    return [i for i in HYBRID[op.builtin_code] if i < len(op.inputs) and op.inputs[i] is not None]


def quantizable(op: Operator) -> bool:
    """A float LSTM whose weight operands are all float32 constants."""
    x = op.inputs[0] if op.inputs else None
    ws = [op.inputs[i] for i in _weights(op)]
    return (x is not None and x.type == F32 and not x.is_constant and bool(ws)
            and all(t.type == F32 and t.is_constant for t in ws))


def hybrid(sg: Subgraph, op: Operator, cache: dict, min_elements: int, decisions: Counter,
           replaced: list[Tensor]) -> None:
    """int8 weights (one scale per tensor) for an LSTM whose weights hold at least `min_elements`."""
    idx = _weights(op)
    if sum(int(np.prod(op.inputs[i].shape)) for i in idx) < min_elements:
        decisions[f"{op.name}:float (small)"] += 1
        return
    for i in idx:
        w = op.inputs[i]
        if id(w) not in cache:
            ints, params = symmetric_weights(np.asarray(w.numpy(), np.float32), None)
            cache[id(w)] = graph.constant(sg, graph.short_name(w.name) + names.INT8, ints, params)
        op.inputs[i] = cache[id(w)]
        replaced.append(w)
    op.options.asymmetricQuantizeInputs = True
    op.version = max(op.version, 3)
    decisions[f"{op.name}:int8-weights"] += 1
