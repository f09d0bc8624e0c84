"""Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.graph import OP, Node, options
from compiler.ir import Tensor

_BINARY = {"Add": (OP.ADD, "AddOptions"), "Multiply": (OP.MUL, "MulOptions"),
           "Maximum": (OP.MAXIMUM, "MaximumMinimumOptions"), "Minimum": (OP.MINIMUM, "MaximumMinimumOptions"),
           "Average": (OP.ADD, "AddOptions")}


def _chain(node: Node, code: int, kind: str, ins: list[Tensor], out: Tensor) -> Tensor:
    """ins[0] op ins[1] op ... (left to right, as Keras reduces), the last result into `out`."""
    acc = ins[0]
    for k, t in enumerate(ins[1:], start=1):
        shape = np.broadcast_shapes(tuple(acc.shape), tuple(t.shape))
        dst = out if k == len(ins) - 1 else node.tmp(f"partial_{k}", shape)
        node.op(code, [acc, t], [dst], options(kind))
        acc = dst
    return acc


@rule("Add", "Multiply", "Maximum", "Minimum", "Average")
def elementwise(node: Node) -> list[Tensor]:
    cls = type(node.layer).__name__
    code, kind = _BINARY[cls]
    if cls != "Average":
        return [_chain(node, code, kind, node.inputs, node.out())]
    total = _chain(node, code, kind, node.inputs, node.tmp("sum", node.out_shapes[0]))
    out = node.out()
    node.op(OP.MUL, [total, node.const("inverse_count", np.float32(1 / len(node.inputs)))], [out],
            options("MulOptions"))
    return [out]


@rule("Subtract")
def subtract(node: Node) -> list[Tensor]:
    out = node.out()
    node.op(OP.SUB, node.inputs[:2], [out], options("SubOptions"))
    return [out]


@rule("Concatenate")
def concatenate(node: Node) -> list[Tensor]:
    out = node.out()
    axis = node.layer.axis % len(out.shape)
    node.op(OP.CONCATENATION, node.inputs, [out], options("ConcatenationOptions", axis=axis))
    return [out]
