"""Small IR edits used by the quantize pass: new constants and activations, conversion ops, cleanup."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Buffer, Operator, Quantization, Subgraph, Tensor, tensor_type_of

OP = schema.BuiltinOperator


def constant(sg: Subgraph, name: str, values: np.ndarray, quantization: Quantization | None = None,
             buffer: Buffer | None = None) -> Tensor:
    """A new constant tensor in `sg` (sharing `buffer` when given, so deduplicated weights stay shared)."""
    shape = tuple(int(d) for d in np.shape(values))  # before ascontiguousarray, which makes a scalar 1-D
    values = np.ascontiguousarray(values)
    if buffer is None:
        buffer = Buffer(values.reshape(-1).view(np.uint8))
    t = Tensor(name, shape, tensor_type_of(values.dtype), buffer=buffer,
               quantization=quantization)
    sg.tensors.append(t)
    return t


def activation(sg: Subgraph, like: Tensor, name: str, tensor_type: int,
               quantization: Quantization | None = None) -> Tensor:
    """A new non-constant tensor shaped like `like`."""
    t = Tensor(name, tuple(like.shape), tensor_type, quantization=quantization,
               shape_signature=like.shape_signature, has_rank=like.has_rank)
    sg.tensors.append(t)
    return t


def conversion_op(code: int, src: Tensor, dst: Tensor, version: int) -> Operator:
    """A QUANTIZE or DEQUANTIZE operator from `src` to `dst` (no options)."""
    return Operator(code, version, inputs=[src], outputs=[dst])


def dequantize_version(src: Tensor) -> int:
    """DEQUANTIZE: 1 uint8, 2 int8 (and per channel: 4), 3 float16, 5 int16 (LiteRT's version rules)."""
    if src.type == schema.TensorType.FLOAT16:
        return 3
    if src.type == schema.TensorType.INT16:
        return 5
    q = src.quantization
    if q is not None and q.scale is not None and len(q.scale) > 1:
        return 4
    return 2 if src.type == schema.TensorType.INT8 else 1


def quantize_version(dst: Tensor, src: Tensor) -> int:
    """QUANTIZE: 1 float->uint8, 2 float->int8 or requantize, 3 per channel, 4 float->int16."""
    if dst.type == schema.TensorType.INT16 or src.type == schema.TensorType.INT16:
        return 4
    return 2 if dst.type == schema.TensorType.INT8 else 1


def replace_inputs(op: Operator, old: Tensor, new: Tensor) -> None:
    op.inputs = [new if t is old else t for t in op.inputs]


def drop_unreferenced(sg: Subgraph, candidates: list[Tensor]) -> None:
    """Remove `candidates` from `sg.tensors` when nothing in the subgraph uses them any more
    (the writer keeps every tensor listed in `sg.tensors`, so replaced weights must go)."""
    used = {id(t) for t in sg.inputs} | {id(t) for t in sg.outputs}
    for op in sg.operators:
        used.update(id(t) for t in op.tensors())
    drop = {id(t) for t in candidates if id(t) not in used}
    if drop:
        sg.tensors = [t for t in sg.tensors if id(t) not in drop]


def short_name(name: str) -> str:
    """The first of a fused name (`a;b;c` -> `a`), to keep new tensors' names short."""
    return name.split(";")[0]
