"""Activations: the `Activation`, `ReLU`, `LeakyReLU`, `ELU` and `Softmax` layers, and the helper other
rules use for their own `activation=` argument."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.graph import ACT, OP, Node, options
from compiler.ir import Tensor

# Activations a conv or dense kernel applies itself (fusedActivationFunction).
FUSED = {"relu": ACT.RELU, "relu6": ACT.RELU6}


def name_of(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__) if fn is not None else "linear"


def _relu_x(node: Node, x: Tensor, out: Tensor, a: float, what: str) -> None:
    """relu6(x + a) / 6 (hard_sigmoid with out = that, hard_swish uses HARD_SWISH instead)."""
    shifted = node.tmp(f"{what}_add", x.shape)
    node.op(OP.ADD, [x, node.const(f"{what}_3", np.float32(a))], [shifted], options("AddOptions"))
    clipped = node.tmp(f"{what}_relu6", x.shape)
    node.op(OP.RELU6, [shifted], [clipped])
    node.op(OP.MUL, [clipped, node.const(f"{what}_sixth", np.float32(1 / 6))], [out], options("MulOptions"))


def _swish(node: Node, x: Tensor, out: Tensor) -> None:
    gate = node.tmp("sigmoid", x.shape)
    node.op(OP.LOGISTIC, [x], [gate])
    node.op(OP.MUL, [x, gate], [out], options("MulOptions"))


def emit(node: Node, x: Tensor, fn_name: str, out: Tensor, axis: int = -1) -> None:
    """Write `out = fn_name(x)`; the caller has checked `fn_name` with `supported`."""
    simple = {"relu": OP.RELU, "relu6": OP.RELU6, "sigmoid": OP.LOGISTIC, "tanh": OP.TANH, "elu": OP.ELU,
              "hard_silu": OP.HARD_SWISH}
    if fn_name in simple:
        node.op(simple[fn_name], [x], [out])
    elif fn_name == "softmax":
        node.op(OP.SOFTMAX, [x], [out], options("SoftmaxOptions", beta=1.0))
    elif fn_name == "log_softmax":
        node.op(OP.LOG_SOFTMAX, [x], [out])
    elif fn_name == "gelu":
        node.op(OP.GELU, [x], [out], options("GeluOptions", approximate=False))
    elif fn_name == "silu":
        _swish(node, x, out)
    elif fn_name == "hard_sigmoid":
        _relu_x(node, x, out, 3.0, "hard_sigmoid")
    elif fn_name == "leaky_relu":
        node.op(OP.LEAKY_RELU, [x], [out], options("LeakyReluOptions", alpha=0.2))
    elif fn_name == "linear":
        node.op(OP.RESHAPE, [x, node.const("shape", np.asarray(out.shape, np.int32))], [out])
    else:
        raise ValueError(f"unsupported activation {fn_name!r}")


SUPPORTED = {"relu", "relu6", "sigmoid", "tanh", "elu", "hard_silu", "softmax", "log_softmax", "gelu", "silu",
             "hard_sigmoid", "leaky_relu", "linear"}


def supported(fn) -> str | None:
    """None if the activation function lowers, else why not."""
    name = name_of(fn)
    return None if name in SUPPORTED else f"activation {name!r}"


def finish(node: Node, y: Tensor, fn_name: str) -> Tensor:
    """Apply a layer's own activation (not fused) to its pre-activation `y`, giving the layer output."""
    if fn_name in ("linear", None):
        return y
    out = node.out()
    emit(node, y, fn_name, out)
    return out


def _check_activation(layer) -> str | None:
    return supported(layer.activation)


@rule("Activation", check=_check_activation)
def activation(node: Node) -> list[Tensor]:
    name = name_of(node.layer.activation)
    if name in FUSED:
        fused = fuse(node, FUSED[name])
        if fused is not None:
            return [fused]
    out = node.out()
    emit(node, node.x, name, out)
    return [out]


def _check_relu(layer) -> str | None:
    max_value = None if layer.max_value is None else float(layer.max_value)
    slope, threshold = float(layer.negative_slope), float(layer.threshold)
    if threshold != 0.0:
        return "threshold != 0"
    if max_value not in (None, 6.0) or (max_value is not None and slope != 0.0):
        return f"max_value={max_value} with negative_slope={slope}"
    return None


# Ops whose options carry a fused activation the kernel applies to its own output.
_FUSES = (OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED, OP.ADD, OP.SUB, OP.MUL, OP.CONCATENATION)


def fuse(node: Node, act: int) -> Tensor | None:
    """Fold RELU/RELU6 into the op that writes the input, when nothing else reads that output."""
    g, x = node.graph, node.x
    op = g.producer.get(id(x))
    if (op is None or op.builtin_code not in _FUSES or g.uses[id(x)] != 1 or len(op.outputs) != 1
            or getattr(op.options, "fusedActivationFunction", None) != ACT.NONE
            or any(x is o for o in g.sg.outputs)):
        return None
    op.options.fusedActivationFunction = act
    g.rename(x, node.name)
    return x


@rule("ReLU", check=_check_relu)
def relu(node: Node) -> list[Tensor]:
    layer = node.layer
    if float(layer.negative_slope) == 0.0:
        fused = fuse(node, ACT.RELU if layer.max_value is None else ACT.RELU6)
        if fused is not None:
            return [fused]
    out = node.out()
    if layer.max_value is not None:
        node.op(OP.RELU6, [node.x], [out])
    elif float(layer.negative_slope) != 0.0:
        node.op(OP.LEAKY_RELU, [node.x], [out], options("LeakyReluOptions", alpha=float(layer.negative_slope)))
    else:
        node.op(OP.RELU, [node.x], [out])
    return [out]


@rule("LeakyReLU")
def leaky_relu(node: Node) -> list[Tensor]:
    out = node.out()
    node.op(OP.LEAKY_RELU, [node.x], [out], options("LeakyReluOptions", alpha=float(node.layer.negative_slope)))
    return [out]


@rule("ELU", check=lambda layer: None if float(layer.alpha) == 1.0 else f"alpha={layer.alpha}")
def elu(node: Node) -> list[Tensor]:
    out = node.out()
    node.op(OP.ELU, [node.x], [out])
    return [out]


def _check_softmax(layer) -> str | None:
    axis = layer.axis if isinstance(layer.axis, int) else tuple(layer.axis)
    return None if axis in (-1, (-1,)) else f"axis={axis}"


@rule("Softmax", check=_check_softmax)
def softmax(node: Node) -> list[Tensor]:
    out = node.out()
    node.op(OP.SOFTMAX, [node.x], [out], options("SoftmaxOptions", beta=1.0))
    return [out]


@rule("PReLU")
def prelu(node: Node) -> list[Tensor]:
    import keras

    alpha = np.asarray(keras.ops.convert_to_numpy(node.layer.alpha), np.float32)
    out = node.out()
    node.op(OP.PRELU, [node.x, node.const("alpha", alpha)], [out])
    return [out]
