"""MaxPooling1D/2D, AveragePooling1D/2D, GlobalAverage/GlobalMaxPooling1D/2D."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.conv import PADDING, _pair
from compiler.frontend.native.graph import OP, Node, options
from compiler.frontend.native.reshape import reshape_to
from compiler.ir import Tensor

_POOL = {"MaxPooling1D": OP.MAX_POOL_2D, "MaxPooling2D": OP.MAX_POOL_2D,
         "AveragePooling1D": OP.AVERAGE_POOL_2D, "AveragePooling2D": OP.AVERAGE_POOL_2D}


def _check(layer) -> str | None:
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format}"
    return None if layer.padding in PADDING else f"padding={layer.padding!r}"


@rule(*_POOL, check=_check)
def pool(node: Node) -> list[Tensor]:
    layer, x = node.layer, node.x
    code = _POOL[type(layer).__name__]
    one_d = len(x.shape) == 3
    (ph, pw), (sh, sw) = _pair(layer.pool_size), _pair(layer.strides)
    if one_d:  # (B, T, C) pooled as (B, 1, T, C)
        ph, sh = 1, 1
        x4 = reshape_to(node, x, node.tmp("expand", (x.shape[0], 1, *x.shape[1:])))
        b, t, c = node.out_shapes[0]
        y = node.tmp("pool", (b, 1, t, c))
    else:
        x4, y = x, node.out()
    node.op(code, [x4], [y], options("Pool2DOptions", padding=PADDING[layer.padding], strideH=sh, strideW=sw,
                                     filterHeight=ph, filterWidth=pw))
    return [reshape_to(node, y, node.out()) if one_d else y]


_GLOBAL = {"GlobalAveragePooling1D": OP.MEAN, "GlobalAveragePooling2D": OP.MEAN,
           "GlobalMaxPooling1D": OP.REDUCE_MAX, "GlobalMaxPooling2D": OP.REDUCE_MAX}


@rule(*_GLOBAL, check=lambda layer: None if layer.data_format == "channels_last" else f"data_format={layer.data_format}")
def global_pool(node: Node) -> list[Tensor]:
    axes = np.arange(1, len(node.x.shape) - 1, dtype=np.int32)
    out = node.out()
    node.op(_GLOBAL[type(node.layer).__name__], [node.x, node.const("axes", axes)], [out],
            options("ReducerOptions", keepDims=bool(node.layer.keepdims)))
    return [out]
