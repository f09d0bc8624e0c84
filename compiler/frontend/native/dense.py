"""Dense of any input rank -> FULLY_CONNECTED (rank > 2: flattened to 2-D around it, as the converter does)."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.activations import FUSED, finish, name_of, supported
from compiler.frontend.native.graph import ACT, OP, Node, options
from compiler.ir import Tensor


def value(v) -> np.ndarray:
    """A Keras variable's current value as a float32 array (no TF tracing). Large weights are read
    through `Node.lazy`, so the IR never holds a second copy of them."""
    return np.asarray(v.numpy(), np.float32)


def _check(layer) -> str | None:
    if getattr(layer, "lora_enabled", False):
        return "LoRA enabled"
    if getattr(layer, "quantization_mode", None):
        return f"quantized ({layer.quantization_mode})"
    return supported(layer.activation)


@rule("Dense", check=_check)
def dense(node: Node) -> list[Tensor]:
    layer, x = node.layer, node.x
    kv = layer.weights[0]
    bias = value(layer.weights[1]) if layer.use_bias else None
    fan_in, units = (int(d) for d in kv.shape)
    act = name_of(layer.activation)
    fused = FUSED.get(act, ACT.NONE)
    rows = int(np.prod(x.shape[:-1]))
    if len(x.shape) > 2:
        flat = node.tmp("flatten", (rows, x.shape[-1]))
        node.op(OP.RESHAPE, [x, node.const("flatten_shape", np.asarray(flat.shape, np.int32))], [flat])
        x = flat
    last = len(node.out_shapes[0]) == 2 and (fused != ACT.NONE or act == "linear")
    y = node.out() if last else node.tmp("matmul", (rows, units))
    ins = [x, node.lazy("kernel", lambda: value(kv).T, (units, fan_in)),
           None if bias is None else node.const("bias", bias)]
    node.op(OP.FULLY_CONNECTED, ins, [y], options("FullyConnectedOptions", fusedActivationFunction=fused))
    if last:
        return [y]
    if len(node.out_shapes[0]) > 2:
        shaped = node.out() if fused != ACT.NONE or act == "linear" else node.tmp("unflatten", node.out_shapes[0])
        node.op(OP.RESHAPE, [y, node.const("shape", np.asarray(node.out_shapes[0], np.int32))], [shaped])
        y = shaped
    return [finish(node, y, None if fused != ACT.NONE else act)]
