"""Conv1D, Conv2D (groups too), DepthwiseConv2D, SeparableConv2D -> CONV_2D / DEPTHWISE_CONV_2D (channels_last)."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.activations import FUSED, finish, name_of, supported
from compiler.frontend.native.dense import value
from compiler.frontend.native.graph import ACT, OP, Node, options
from compiler.ir import Tensor
from ai_edge_litert import schema_py_generated as schema

PADDING = {"same": schema.Padding.SAME, "valid": schema.Padding.VALID}


def _check(layer) -> str | None:
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format}"
    if layer.padding not in PADDING:
        return f"padding={layer.padding!r}"
    if getattr(layer, "lora_enabled", False):
        return "LoRA enabled"
    return supported(layer.activation)


def _pair(v) -> tuple[int, int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return (int(v[0]), int(v[-1]))


def _bias(layer, channels: int) -> np.ndarray:
    return value(layer.bias) if layer.use_bias else np.zeros(channels, np.float32)


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding that SAME applies to one spatial axis (TF's rule: the extra one after)."""
    reach = (k - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + reach - size, 0)
    return total // 2, total - total // 2


def _unpad(node: Node, x: Tensor, kernel: tuple[int, int]) -> Tensor | None:
    """The input before a ZeroPadding2D whose padding is exactly what SAME would add for this VALID conv
    (MobileNetV2's stride-2 blocks): the conv then runs SAME on it and the PAD goes."""
    g = node.graph
    pad = g.producer.get(id(x))
    if (pad is None or pad.builtin_code != OP.PAD or g.uses[id(x)] != 1 or node.layer.padding != "valid"
            or len(x.shape) != 4 or any(x is o for o in g.sg.outputs)):
        return None
    src, amounts = pad.inputs[0], pad.inputs[1].numpy()
    (sh, sw), (dh, dw) = _pair(node.layer.strides), _pair(node.layer.dilation_rate)
    want = [(0, 0), _same_pads(src.shape[1], kernel[0], sh, dh), _same_pads(src.shape[2], kernel[1], sw, dw), (0, 0)]
    if [tuple(int(v) for v in row) for row in amounts] != want:
        return None
    g.sg.operators.remove(pad)
    del g.producer[id(x)]
    g.sg.tensors = [t for t in g.sg.tensors if t is not x and t is not pad.inputs[1]]
    return src


def _conv(node: Node, x: Tensor, out_shape, filt: Tensor, bias: np.ndarray, depthwise: int = 0):
    """One CONV_2D (depthwise=0) or DEPTHWISE_CONV_2D (depth multiplier), then the layer's activation."""
    layer = node.layer
    act = name_of(layer.activation)
    fused = FUSED.get(act, ACT.NONE)
    sh, sw = _pair(layer.strides)
    dh, dw = _pair(layer.dilation_rate)
    # Causal padding (Conv1D) was written as an explicit PAD of the past: the conv itself is VALID.
    padding = PADDING.get(layer.padding, PADDING["valid"])
    unpadded = _unpad(node, x, tuple(filt.shape[1:3]))
    if unpadded is not None:
        x, padding = unpadded, PADDING["same"]
    common = dict(padding=padding, strideH=sh, strideW=sw, dilationHFactor=dh,
                  dilationWFactor=dw, fusedActivationFunction=fused)
    done = fused != ACT.NONE or act == "linear"
    y = node.out() if done and tuple(out_shape) == tuple(node.out_shapes[0]) else node.tmp("conv", out_shape)
    ins = [x, filt, node.const("bias", bias)]
    if depthwise:
        node.op(OP.DEPTHWISE_CONV_2D, ins, [y], options("DepthwiseConv2DOptions", depthMultiplier=depthwise, **common))
    else:
        # A grouped conv (filter depth < input depth) needs CONV_2D v6 (LiteRT's op versioning).
        grouped = getattr(layer, "groups", 1) > 1
        node.op(OP.CONV_2D, ins, [y], options("Conv2DOptions", **common), version=6 if grouped else 1)
    return y, (None if fused != ACT.NONE else act)


@rule("Conv2D", check=_check)
def conv2d(node: Node) -> list[Tensor]:
    kv = node.layer.kernel
    h, w, i, o = (int(d) for d in kv.shape)
    filt = node.lazy("kernel", lambda: value(kv).transpose(3, 0, 1, 2), (o, h, w, i))  # HWIO -> OHWI
    y, act = _conv(node, node.x, node.out_shapes[0], filt, _bias(node.layer, o))
    return [finish(node, y, act)]


def _check_1d(layer) -> str | None:
    if layer.padding != "causal":
        return _check(layer)
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format}"
    return supported(layer.activation)


@rule("Conv1D", check=_check_1d)
def conv1d(node: Node) -> list[Tensor]:
    """(B, T, C) -> (B, 1, T, C), a 1xK CONV_2D, back to (B, T', C'); causal padding pads the past."""
    kv = node.layer.kernel
    k, i, o = (int(d) for d in kv.shape)
    x = node.x
    if node.layer.padding == "causal":
        dilation = _pair(node.layer.dilation_rate)[0]
        left = (k - 1) * dilation
        padded = node.tmp("causal_pad", (x.shape[0], x.shape[1] + left, x.shape[2]))
        node.op(OP.PAD, [x, node.const("causal_paddings", np.asarray([[0, 0], [left, 0], [0, 0]], np.int32))],
                [padded])
        x = padded
    b, t, c = x.shape
    x4 = node.tmp("expand", (b, 1, t, c))
    node.op(OP.RESHAPE, [x, node.const("expand_shape", np.asarray(x4.shape, np.int32))], [x4])
    filt = node.lazy("kernel", lambda: value(kv).transpose(2, 0, 1)[:, None], (o, 1, k, i))  # KIO -> O1KI
    bo, to, co = node.out_shapes[0]
    y, act = _conv(node, x4, (bo, 1, to, co), filt, _bias(node.layer, o))
    y3 = node.out() if act is None or act == "linear" else node.tmp("squeeze", (bo, to, co))
    node.op(OP.RESHAPE, [y, node.const("shape", np.asarray(node.out_shapes[0], np.int32))], [y3])
    return [finish(node, y3, act)]


@rule("DepthwiseConv2D", check=_check)
def depthwise(node: Node) -> list[Tensor]:
    kv = node.layer.kernel
    h, w, c, m = (int(d) for d in kv.shape)
    # Output channel c*m + k of TFLite's kernel is Keras' kernel[..., c, k].
    filt = node.lazy("kernel", lambda: value(kv).reshape(1, h, w, c * m), (1, h, w, c * m))
    y, act = _conv(node, node.x, node.out_shapes[0], filt, _bias(node.layer, c * m), depthwise=m)
    return [finish(node, y, act)]


def _check_separable(layer) -> str | None:
    return _check(layer) or (None if layer.depth_multiplier >= 1 else "depth_multiplier < 1")


@rule("SeparableConv2D", check=_check_separable)
def separable(node: Node) -> list[Tensor]:
    """A DEPTHWISE_CONV_2D (strides, dilation, padding) then a 1x1 CONV_2D with the bias and activation."""
    layer = node.layer
    dv, pv = layer.depthwise_kernel, layer.pointwise_kernel
    h, w, c, m = (int(d) for d in dv.shape)
    b, ho, wo, f = node.out_shapes[0]
    sh, sw = _pair(layer.strides)
    dh, dwf = _pair(layer.dilation_rate)
    mid = node.tmp("depthwise", (b, ho, wo, c * m))
    node.op(OP.DEPTHWISE_CONV_2D, [node.x, node.lazy("depthwise_kernel", lambda: value(dv).reshape(1, h, w, c * m),
                                                     (1, h, w, c * m)),
                                   node.const("depthwise_bias", np.zeros(c * m, np.float32))], [mid],
            options("DepthwiseConv2DOptions", padding=PADDING[layer.padding], strideH=sh, strideW=sw,
                    dilationHFactor=dh, dilationWFactor=dwf, depthMultiplier=m))
    act = name_of(layer.activation)
    fused = FUSED.get(act, ACT.NONE)
    done = fused != ACT.NONE or act == "linear"
    y = node.out() if done else node.tmp("pointwise", node.out_shapes[0])
    pointwise = node.lazy("pointwise_kernel", lambda: value(pv).reshape(c * m, f).T.reshape(f, 1, 1, c * m),
                          (f, 1, 1, c * m))
    node.op(OP.CONV_2D, [mid, pointwise, node.const("bias", _bias(layer, f))], [y],
            options("Conv2DOptions", padding=PADDING["valid"], strideH=1, strideW=1, dilationHFactor=1,
                    dilationWFactor=1, fusedActivationFunction=fused))
    return [finish(node, y, None if done else act)]


def _check_transpose(layer) -> str | None:
    if getattr(layer, "output_padding", None) is not None:
        return "output_padding"
    if _pair(layer.dilation_rate) != (1, 1):
        return f"dilation_rate={layer.dilation_rate}"
    return _check(layer)


@rule("Conv2DTranspose", check=_check_transpose)
def conv2d_transpose(node: Node) -> list[Tensor]:
    """TRANSPOSE_CONV with the bias as its 4th input (v3), relu/relu6 fused (v4, as the converter writes)."""
    layer = node.layer
    kv = layer.kernel
    h, w, o, i = (int(d) for d in kv.shape)  # Keras: (h, w, filters, in_channels)
    sh, sw = _pair(layer.strides)
    act = name_of(layer.activation)
    fused = FUSED.get(act, ACT.NONE)
    done = fused != ACT.NONE or act == "linear"
    y = node.out() if done else node.tmp("transpose_conv", node.out_shapes[0])
    filt = node.lazy("kernel", lambda: value(kv).transpose(2, 0, 1, 3), (o, h, w, i))
    ins = [node.const("output_shape", np.asarray(node.out_shapes[0], np.int32)), filt, node.x,
           node.const("bias", _bias(layer, o))]
    node.op(OP.TRANSPOSE_CONV, ins, [y], options("TransposeConvOptions", padding=PADDING[layer.padding],
                                                 strideH=sh, strideW=sw, fusedActivationFunction=fused),
            version=4 if fused != ACT.NONE else 3)
    return [finish(node, y, None if done else act)]
