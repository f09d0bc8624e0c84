"""Weight-only modes: float16 weights (+ DEQUANTIZE), and int8 weights for LiteRT's hybrid kernels."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Operator, Subgraph, Tensor
from compiler.quant import graph, kernels, lstm, names
from compiler.quant.numerics import symmetric_weights

OP = schema.BuiltinOperator
F32 = schema.TensorType.FLOAT32
F16 = schema.TensorType.FLOAT16

KeepFloat = Callable[[Subgraph, Operator], bool]


def _float_constant(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and t.is_constant


def _elements(t: Tensor) -> int:
    return int(np.prod(t.shape, dtype=np.int64))


def half_weights(sg: Subgraph) -> dict[int, Tensor]:
    """id(float32 activation) -> the float16 constant it is expanded from, for each DEQUANTIZE of a
    float16 constant in `sg` (how converters store float16 weights)."""
    return {id(op.outputs[0]): op.inputs[0] for op in sg.operators
            if op.builtin_code == OP.DEQUANTIZE and op.inputs[0] is not None and op.inputs[0].type == F16
            and op.inputs[0].is_constant}


def float16(model: Model, keep_float: KeepFloat, subgraphs: list[Subgraph] | None = None) -> dict:
    """Every float32 constant read by an op becomes float16, read through one DEQUANTIZE (v3) placed
    immediately before the constant's first consumer, as the converter does with supported_types=[float16]
    (it puts them first; next to the consumer, partitioning never hands a weight from one stage to the
    next). A constant read by several ops gets one DEQUANTIZE, before the first of them. Buffers shared
    by several tensors stay shared. Weights that already are float16 are counted in `already_float16`."""
    decisions: Counter = Counter()
    halves: dict[int, object] = {}  # id(float32 buffer) -> float16 Buffer
    already = 0
    for sg in subgraphs or model.subgraphs:
        already += len(half_weights(sg))
        converted: dict[int, Tensor] = {}  # id(float32 constant) -> its DEQUANTIZE output
        new_ops: list[Operator] = []
        replaced: list[Tensor] = []
        for op in sg.operators:
            if op.builtin_code == OP.DEQUANTIZE or not any(_float_constant(t) for t in op.inputs):
                new_ops.append(op)
                continue
            if keep_float(sg, op):
                decisions[f"{op.name}:float"] += 1
                new_ops.append(op)
                continue
            for t in list(op.inputs):
                if not _float_constant(t):
                    continue
                if id(t) not in converted:
                    half = np.asarray(t.numpy(), np.float16)
                    buf = halves.get(id(t.buffer))
                    w16 = graph.constant(sg, graph.short_name(t.name) + names.FP16, half, buffer=buf)
                    halves.setdefault(id(t.buffer), w16.buffer)
                    out = graph.activation(sg, t, t.name, F32)
                    new_ops.append(graph.conversion_op(OP.DEQUANTIZE, w16, out, 3))
                    converted[id(t)] = out
                    replaced.append(t)
                graph.replace_inputs(op, t, converted[id(t)])
            decisions[f"{op.name}:float16"] += 1
            new_ops.append(op)
        sg.operators = new_ops
        graph.drop_unreferenced(sg, replaced)
    return {"ops": dict(sorted(decisions.items())), "already_float16": already}


def hybrid_int8(model: Model, keep_float: KeepFloat, *, per_channel: bool = True, min_elements: int = 1024,
                subgraphs: list[Subgraph] | None = None) -> dict:
    """int8 weights (symmetric, per output channel where the kernel supports it) for conv, depthwise
    conv, fully connected and batch matmul; activations stay float and LiteRT's hybrid kernels quantize
    them on the fly (asymmetrically, as the converter sets). Weights smaller than `min_elements` stay
    float (the converter uses 1024: small weights save little, and the hybrid kernels' on-the-fly int8
    input quantization hurts most on the thin first layers). Ops inside WHILE bodies are rewritten too,
    like the converter does.

    A weight stored as float16 behind a DEQUANTIZE (converters' float16 models) is quantized from its
    float16 values, and the DEQUANTIZE goes when nothing else reads it. `float16_left` counts the
    float16 weights that stay float16 (read by ops without a hybrid kernel, small, or kept float)."""
    decisions: Counter = Counter()
    cache: dict[tuple, Tensor] = {}  # (id(float weight), axis) -> int8 weight
    lstm_cache: dict[int, Tensor] = {}  # id(float LSTM weight) -> int8 weight
    left = 0
    for sg in subgraphs or model.subgraphs:
        halves = half_weights(sg)
        floats: dict[int, Tensor] = {}  # id(float16 bias) -> its float32 constant
        replaced: list[Tensor] = []
        for op in sg.operators:
            if op.builtin_code in lstm.HYBRID and lstm.quantizable(op):  # fused LSTMs: all weights or none
                if keep_float(sg, op):
                    decisions[f"{op.name}:float"] += 1
                else:
                    lstm.hybrid(sg, op, lstm_cache, min_elements, decisions, replaced)
                continue
            spec = kernels.WEIGHTS.get(op.builtin_code) or kernels.HYBRID_ONLY.get(op.builtin_code)
            if spec is None or len(op.inputs) <= spec.index:
                continue
            w = op.inputs[spec.index]
            x = op.inputs[0]
            source = halves.get(id(w)) if w is not None else None
            if not (_float_constant(w) or source is not None) or x is None or x.type != F32 or x.is_constant:
                continue
            if keep_float(sg, op):
                decisions[f"{op.name}:float"] += 1
                continue
            if _elements(w) < min_elements:
                decisions[f"{op.name}:float (small)"] += 1
                continue
            axis = spec.axis if per_channel else None
            key = (id(w), axis)
            if key not in cache:
                values = np.asarray((w if source is None else source).numpy(), np.float32)
                ints, params = symmetric_weights(values, axis)
                cache[key] = graph.constant(sg, graph.short_name(w.name) + names.INT8, ints, params)
            elif cache[key] not in sg.tensors:
                sg.tensors.append(cache[key])
            op.inputs[spec.index] = cache[key]
            replaced.append(w)
            bias = op.inputs[spec.bias] if spec.bias is not None and len(op.inputs) > spec.bias else None
            if bias is not None and id(bias) in halves:
                # A hybrid kernel with a bias computed at run time is refused by XNNPACK: a float32
                # constant bias (few bytes) keeps every operand static.
                op.inputs[spec.bias] = _float_copy(sg, bias, halves[id(bias)], floats)
            kernels.set_asymmetric_inputs(op)
            op.version = max(op.version, kernels.hybrid_version(op.builtin_code, axis is not None))
            decisions[f"{op.name}:int8-weights" + (" (from float16)" if source is not None else "")] += 1
        replaced += _drop_dead_dequantizes(sg, halves)
        graph.drop_unreferenced(sg, replaced)
        left += len(half_weights(sg))
    return {"ops": dict(sorted(decisions.items())), "float16_left": left}


def expand_half_weights(sg: Subgraph, specs: dict[int, kernels.WeightOperand]) -> int:
    """Weight and bias operands of ops in `specs` that are float16 behind a DEQUANTIZE become float32
    constants of the same values (so full-integer quantization sees them as constant weights); the
    DEQUANTIZEs nothing else reads go. Returns how many operands were expanded."""
    halves = half_weights(sg)
    floats: dict[int, Tensor] = {}
    n = 0
    for op in sg.operators:
        spec = specs.get(op.builtin_code)
        if spec is None:
            continue
        for i in (spec.index, spec.bias):
            t = op.inputs[i] if i is not None and i < len(op.inputs) else None
            if t is not None and id(t) in halves:
                op.inputs[i] = _float_copy(sg, t, halves[id(t)], floats)
                n += 1
    graph.drop_unreferenced(sg, _drop_dead_dequantizes(sg, halves))
    return n


def _float_copy(sg: Subgraph, t: Tensor, half: Tensor, floats: dict[int, Tensor]) -> Tensor:
    """A float32 constant holding `half`'s values, standing for `t` (one per float16 constant)."""
    if id(half) not in floats:
        floats[id(half)] = graph.constant(sg, t.name, np.asarray(half.numpy(), np.float32))
    return floats[id(half)]


def _drop_dead_dequantizes(sg: Subgraph, halves: dict[int, Tensor]) -> list[Tensor]:
    """Remove the float16 DEQUANTIZEs whose outputs nothing reads any more; returns their tensors."""
    read = set(sg.consumers()) | {id(t) for t in sg.outputs}
    dead = [op for op in sg.operators if op.builtin_code == OP.DEQUANTIZE and id(op.outputs[0]) in halves
            and id(op.outputs[0]) not in read]
    if not dead:
        return []
    gone = {id(op) for op in dead}
    sg.operators = [op for op in sg.operators if id(op) not in gone]
    return [t for op in dead for t in (*op.inputs, *op.outputs)]
