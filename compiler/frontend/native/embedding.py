"""Embedding -> GATHER of the table rows (indices cast to int32 first when the input is float)."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.dense import value
from compiler.frontend.native.graph import OP, Node, options
from compiler.ir import Tensor


def _check(layer) -> str | None:
    if layer.mask_zero:
        return "mask_zero=True (masks are not lowered)"
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return "quantized or LoRA"
    return None


@rule("Embedding", check=_check)
def embedding(node: Node) -> list[Tensor]:
    ids = node.x
    if ids.dtype != np.int32:
        cast = node.tmp("indices", ids.shape, np.int32)
        node.op(OP.CAST, [ids], [cast])
        ids = cast
    out = node.out()
    table = node.layer.embeddings
    node.op(OP.GATHER, [node.lazy("embeddings", lambda: value(table), tuple(table.shape)), ids], [out],
            options("GatherOptions", axis=0, batchDims=0))
    return [out]
