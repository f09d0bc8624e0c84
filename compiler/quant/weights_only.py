"""Weight-only modes: float16 weights (+ DEQUANTIZE), and int8 weights for LiteRT's hybrid kernels."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Operator, Subgraph, Tensor
from compiler.quant import graph, kernels
from compiler.quant.numerics import symmetric_weights

OP = schema.BuiltinOperator
F32 = schema.TensorType.FLOAT32

KeepFloat = Callable[[Subgraph, Operator], bool]


def _float_constant(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and t.is_constant


def float16(model: Model, keep_float: KeepFloat, subgraphs: list[Subgraph] | None = None) -> dict:
    """Every float32 constant read by an op becomes float16 with one DEQUANTIZE (v3) to float32 at the
    start of its subgraph, as the converter does with supported_types=[float16]. Buffers shared by
    several tensors stay shared."""
    decisions: Counter = Counter()
    halves: dict[int, object] = {}  # id(float32 buffer) -> float16 Buffer
    for sg in subgraphs or model.subgraphs:
        converted: dict[int, Tensor] = {}  # id(float32 constant) -> its DEQUANTIZE output
        new_ops: list[Operator] = []
        replaced: list[Tensor] = []
        for op in sg.operators:
            if op.builtin_code == OP.DEQUANTIZE or not any(_float_constant(t) for t in op.inputs):
                continue
            if keep_float(sg, op):
                decisions[f"{op.name}:float"] += 1
                continue
            for t in list(op.inputs):
                if not _float_constant(t):
                    continue
                if id(t) not in converted:
                    half = np.asarray(t.numpy(), np.float16)
                    buf = halves.get(id(t.buffer))
                    w16 = graph.constant(sg, graph.short_name(t.name) + "_fp16", half, buffer=buf)
                    halves.setdefault(id(t.buffer), w16.buffer)
                    out = graph.activation(sg, t, t.name, F32)
                    new_ops.append(graph.conversion_op(OP.DEQUANTIZE, w16, out, 3))
                    converted[id(t)] = out
                    replaced.append(t)
                graph.replace_inputs(op, t, converted[id(t)])
            decisions[f"{op.name}:float16"] += 1
        sg.operators = new_ops + sg.operators
        graph.drop_unreferenced(sg, replaced)
    return {"ops": dict(sorted(decisions.items()))}


def hybrid_int8(model: Model, keep_float: KeepFloat, *, per_channel: bool = True, min_elements: int = 1024,
                subgraphs: list[Subgraph] | None = None) -> dict:
    """int8 weights (symmetric, per output channel where the kernel supports it) for conv, depthwise
    conv, fully connected and batch matmul; activations stay float and LiteRT's hybrid kernels quantize
    them on the fly (asymmetrically, as the converter sets). Weights smaller than `min_elements` stay
    float (the converter uses 1024: small weights save little, and the hybrid kernels' on-the-fly int8
    input quantization hurts most on the thin first layers). Ops inside WHILE bodies are rewritten too,
    like the converter does."""
    decisions: Counter = Counter()
    cache: dict[tuple, Tensor] = {}  # (id(float weight), axis) -> int8 weight
    for sg in subgraphs or model.subgraphs:
        replaced: list[Tensor] = []
        for op in sg.operators:
            spec = kernels.WEIGHTS.get(op.builtin_code) or kernels.HYBRID_ONLY.get(op.builtin_code)
            if spec is None or len(op.inputs) <= spec.index:
                continue
            w = op.inputs[spec.index]
            x = op.inputs[0]
            if not _float_constant(w) or x is None or x.type != F32 or x.is_constant:
                continue
            if keep_float(sg, op):
                decisions[f"{op.name}:float"] += 1
                continue
            if w.buffer.nbytes // 4 < min_elements:
                decisions[f"{op.name}:float (small)"] += 1
                continue
            axis = spec.axis if per_channel else None
            key = (id(w), axis)
            if key not in cache:
                values, q = symmetric_weights(w.numpy(), axis)
                cache[key] = graph.constant(sg, graph.short_name(w.name) + "_int8", values, q)
            elif cache[key] not in sg.tensors:
                sg.tensors.append(cache[key])
            op.inputs[spec.index] = cache[key]
            replaced.append(w)
            kernels.set_asymmetric_inputs(op)
            op.version = max(op.version, kernels.hybrid_version(op.builtin_code, axis is not None))
            decisions[f"{op.name}:int8-weights"] += 1
        graph.drop_unreferenced(sg, replaced)
    return {"ops": dict(sorted(decisions.items()))}
