"""TimeDistributed: the wrapped layer's rule on (batch * time, ...) between two RESHAPEs."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import RULES, rule
from compiler.frontend.native.graph import OP, Node
from compiler.ir import Tensor


def _check(layer) -> str | None:
    inner = layer.layer
    cls = type(inner).__name__
    if cls not in RULES or cls == "TimeDistributed":
        return f"wraps {cls}"
    check = RULES[cls].check
    return check(inner) if check is not None else None


@rule("TimeDistributed", check=_check)
def time_distributed(node: Node) -> list[Tensor]:
    x, inner = node.x, node.layer.layer
    b, t = x.shape[:2]
    folded = node.tmp("folded", (b * t, *x.shape[2:]))
    node.op(OP.RESHAPE, [x, node.const("folded_shape", np.asarray(folded.shape, np.int32))], [folded])
    out_shape = node.out_shapes[0]
    sub = Node(node.graph, inner, f"{node.name}/{inner.name}", [folded], [(b * t, *out_shape[2:])])
    y = RULES[type(inner).__name__].lower(sub)[0]
    out = node.out()
    node.op(OP.RESHAPE, [y, node.const("shape", np.asarray(out.shape, np.int32))], [out])
    return [out]
