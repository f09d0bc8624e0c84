"""BatchNormalization (folded into the conv/dense before it when that is its only consumer, else MUL+ADD),
LayerNormalization, Rescaling and Normalization."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.graph import ACT, OP, LazyBuffer, Node, options
from compiler.ir import Buffer, Tensor


def value(v) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)


# Filter axis that holds the output channels, per kernel.
_OUT_AXIS = {OP.CONV_2D: 0, OP.DEPTHWISE_CONV_2D: 3, OP.FULLY_CONNECTED: 0}


def _axis(layer, rank: int) -> int:
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return axis % rank


def _scale_shift(layer) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization at inference as y = x * s + t."""
    var, mean = value(layer.moving_variance), value(layer.moving_mean)
    s = 1.0 / np.sqrt(var + float(layer.epsilon))
    if layer.scale:
        s = s * value(layer.gamma)
    t = -mean * s
    if layer.center:
        t = t + value(layer.beta)
    return s, t


def _fold(node: Node, s: np.ndarray, t: np.ndarray) -> Tensor | None:
    """Scale the weights of the conv/dense that writes the input, if the input has no other reader."""
    g, x = node.graph, node.x
    op = g.producer.get(id(x))
    if (op is None or op.builtin_code not in _OUT_AXIS or g.uses[id(x)] != 1
            or getattr(op.options, "fusedActivationFunction", ACT.NONE) != ACT.NONE
            or any(x is o for o in g.sg.outputs)):
        return None
    filt, axis = op.inputs[1], _OUT_AXIS[op.builtin_code]
    shape = [1] * len(filt.shape)
    shape[axis] = -1
    factor = s.astype(np.float32).reshape(shape)
    if isinstance(filt.buffer, LazyBuffer):  # still the Keras variable: scale it when it is read
        filt.buffer = filt.buffer.scaled(factor)
    else:
        filt.buffer = Buffer((filt.numpy() * factor).reshape(-1).view(np.uint8))
    bias = op.inputs[2] if len(op.inputs) > 2 else None
    old = np.zeros_like(s) if bias is None else bias.numpy().astype(np.float64)
    new = node.const("bias", (old * s + t).astype(np.float32))
    if len(op.inputs) > 2:
        op.inputs[2] = new
    else:
        op.inputs.append(new)
    g.rename(x, node.name)
    return x


def _mul_add(node: Node, x: Tensor, s: np.ndarray, t: np.ndarray, axis: int, out: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (len(x.shape) - 1 - axis)  # broadcasts along `axis` from the right
    scaled = node.tmp("mul", x.shape)
    node.op(OP.MUL, [x, node.const("scale", s.astype(np.float32).reshape(shape))], [scaled], options("MulOptions"))
    node.op(OP.ADD, [scaled, node.const("offset", t.astype(np.float32).reshape(shape))], [out], options("AddOptions"))
    return out


def _check_bn(layer) -> str | None:
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    return None if axis is not None and axis != 0 else f"axis={layer.axis}"


@rule("BatchNormalization", check=_check_bn)
def batch_norm(node: Node) -> list[Tensor]:
    s, t = _scale_shift(node.layer)
    axis = _axis(node.layer, len(node.x.shape))
    if axis == len(node.x.shape) - 1:
        folded = _fold(node, s, t)
        if folded is not None:
            return [folded]
    return [_mul_add(node, node.x, s, t, axis, node.out())]


def _check_ln(layer) -> str | None:
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if len(axes) != 1 or axes[0] == 0:
        return f"axis={layer.axis}"
    if getattr(layer, "rms_scaling", False):
        return "rms_scaling"
    return None


@rule("LayerNormalization", check=_check_ln)
def layer_norm(node: Node) -> list[Tensor]:
    """(x - mean) * rsqrt(var + eps) * gamma + beta over one axis."""
    x, layer = node.x, node.layer
    rank = len(x.shape)
    axis = _axis(layer, rank)
    kept = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    along = (-1,) + (1,) * (rank - 1 - axis)  # gamma/beta broadcast along `axis` from the right
    axes = node.const("axis", np.asarray([axis], np.int32))
    mean = node.tmp("mean", kept)
    node.op(OP.MEAN, [x, axes], [mean], options("ReducerOptions", keepDims=True))
    centred = node.tmp("centred", x.shape)
    node.op(OP.SUB, [x, mean], [centred], options("SubOptions"))
    sq = node.tmp("square", x.shape)
    node.op(OP.MUL, [centred, centred], [sq], options("MulOptions"))
    var = node.tmp("variance", kept)
    node.op(OP.MEAN, [sq, axes], [var], options("ReducerOptions", keepDims=True))
    var_eps = node.tmp("variance_eps", kept)
    node.op(OP.ADD, [var, node.const("epsilon", np.float32(layer.epsilon))], [var_eps], options("AddOptions"))
    inv = node.tmp("rsqrt", kept)
    node.op(OP.RSQRT, [var_eps], [inv])
    normed = node.out() if not (layer.scale or layer.center) else node.tmp("normalized", x.shape)
    node.op(OP.MUL, [centred, inv], [normed], options("MulOptions"))
    y = normed
    if layer.scale:
        scaled = node.out() if not layer.center else node.tmp("scaled", x.shape)
        node.op(OP.MUL, [y, node.const("gamma", value(layer.gamma).astype(np.float32).reshape(along))], [scaled],
                options("MulOptions"))
        y = scaled
    if layer.center:
        out = node.out()
        node.op(OP.ADD, [y, node.const("beta", value(layer.beta).astype(np.float32).reshape(along))], [out], options("AddOptions"))
        y = out
    return [y]


@rule("Rescaling")
def rescaling(node: Node) -> list[Tensor]:
    scale = np.asarray(node.layer.scale, np.float32)
    offset = np.asarray(node.layer.offset, np.float32)
    scaled = node.tmp("mul", node.x.shape)
    node.op(OP.MUL, [node.x, node.const("scale", scale)], [scaled], options("MulOptions"))
    out = node.out()
    node.op(OP.ADD, [scaled, node.const("offset", offset)], [out], options("AddOptions"))
    return [out]


def _check_norm(layer) -> str | None:
    if getattr(layer, "invert", False):
        return "invert=True"
    if not hasattr(layer, "mean") or layer.mean is None:
        return "not adapted"
    return None


@rule("Normalization", check=_check_norm)
def normalization(node: Node) -> list[Tensor]:
    """(x - mean) / max(sqrt(var), epsilon), as Keras computes it, written as x * a + b."""
    import keras

    layer = node.layer
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64)
    var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64)
    denom = np.maximum(np.sqrt(var), keras.config.epsilon())
    a, b = 1.0 / denom, -mean / denom
    # Keras keeps mean/variance broadcastable against the input with the batch axis: drop it.
    a, b = a.reshape(a.shape[1:]) if a.ndim == len(node.x.shape) else a, b.reshape(b.shape[1:]) if b.ndim == len(node.x.shape) else b
    scaled = node.tmp("mul", node.x.shape)
    node.op(OP.MUL, [node.x, node.const("scale", a.astype(np.float32))], [scaled], options("MulOptions"))
    out = node.out()
    node.op(OP.ADD, [scaled, node.const("offset", b.astype(np.float32))], [out], options("AddOptions"))
    return [out]
