"""The precision a model's weights and ops actually have, read from the IR (not from what was asked)."""

from __future__ import annotations

from collections import Counter

from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, type_name

OP = schema.BuiltinOperator
TT = schema.TensorType
_INTEGER_ACTS = (TT.INT8, TT.UINT8, TT.INT16)
_LOW_BITS = (TT.INT8, TT.INT4, TT.UINT8, TT.INT16)


def _kind(op) -> str:
    """conversion | integer (integer activations) | hybrid (float activations, int8/int4 weights) | float."""
    if op.builtin_code in (OP.QUANTIZE, OP.DEQUANTIZE):
        return "conversion"
    acts = [t for t in (*op.inputs, *op.outputs) if t is not None and not t.is_constant]
    if any(t.type in _INTEGER_ACTS for t in acts):
        return "integer"
    if any(t.type in _LOW_BITS for t in op.inputs if t is not None and t.is_constant):
        return "hybrid"
    return "float"


def precision(model: Model) -> dict:
    """{"weights": {dtype: {"count", "bytes"}}, "ops": {kind: n}, "mode": label}.

    weights: the constants ops read, each buffer counted once, by stored dtype (a float16 weight
    behind a DEQUANTIZE counts as float16). ops: how each op computes (see `_kind`). mode: the label
    the build deserves: int16x8 / int8 when integer ops exist, int8-dynamic when hybrid ops do,
    float16 when float16 weights do, float otherwise."""
    weights: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    ops: Counter = Counter()
    act_types: set[int] = set()
    for sg, op in model.operators():
        ops[_kind(op)] += 1
        for t in op.inputs:
            if t is None:
                continue
            if not t.is_constant:
                act_types.add(t.type)
            elif id(t.buffer) not in seen:
                seen.add(id(t.buffer))
                entry = weights.setdefault(type_name(t.type), {"count": 0, "bytes": 0})
                entry["count"] += 1
                entry["bytes"] += t.buffer.nbytes
    if ops["integer"]:
        mode = "int16x8" if TT.INT16 in act_types else "int8"
    elif ops["hybrid"]:
        mode = "int8-dynamic"
    elif "float16" in weights:
        mode = "float16"
    else:
        mode = "float"
    return {"weights": dict(sorted(weights.items())), "ops": dict(sorted(ops.items())), "mode": mode}
