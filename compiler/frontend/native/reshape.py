"""Reshape, Flatten, Permute, ZeroPadding1D/2D, Cropping1D/2D, UpSampling2D (nearest)."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.graph import OP, Node, options
from compiler.ir import Tensor


def reshape_to(node: Node, x: Tensor, out: Tensor) -> Tensor:
    node.op(OP.RESHAPE, [x, node.const("shape", np.asarray(out.shape, np.int32))], [out])
    return out


@rule("Reshape", "Flatten")
def reshape(node: Node) -> list[Tensor]:
    return [reshape_to(node, node.x, node.out())]


@rule("Permute")
def permute(node: Node) -> list[Tensor]:
    out = node.out()
    perm = np.asarray([0, *node.layer.dims], np.int32)
    node.op(OP.TRANSPOSE, [node.x, node.const("perm", perm)], [out])
    return [out]


def _pads(padding, spatial: int) -> list[tuple[int, int]]:
    """Keras' padding/cropping argument as ((before, after), ...) per spatial axis."""
    if isinstance(padding, int):
        return [(padding, padding)] * spatial
    out = []
    for p in padding:
        out.append((int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])))
    if spatial == 1 and len(out) == 2 and not isinstance(padding[0], (tuple, list)):
        out = [(out[0][0], out[1][0])]
    return out


def _check_format(layer) -> str | None:
    fmt = getattr(layer, "data_format", "channels_last")
    return None if fmt == "channels_last" else f"data_format={fmt}"


@rule("ZeroPadding1D", "ZeroPadding2D", check=_check_format)
def zero_padding(node: Node) -> list[Tensor]:
    spatial = len(node.x.shape) - 2
    pads = [(0, 0), *_pads(node.layer.padding, spatial), (0, 0)]
    out = node.out()
    node.op(OP.PAD, [node.x, node.const("paddings", np.asarray(pads, np.int32))], [out])
    return [out]


@rule("Cropping1D", "Cropping2D", check=_check_format)
def cropping(node: Node) -> list[Tensor]:
    spatial = len(node.x.shape) - 2
    crops = _pads(node.layer.cropping, spatial)
    begin = [0, *(c[0] for c in crops), 0]
    out = node.out()
    node.op(OP.SLICE, [node.x, node.const("begin", np.asarray(begin, np.int32)),
                       node.const("size", np.asarray(out.shape, np.int32))], [out])
    return [out]


@rule("UpSampling2D", check=lambda layer: _check_format(layer) or (
    None if layer.interpolation in ("nearest", "bilinear") else f"interpolation={layer.interpolation!r}"))
def upsampling(node: Node) -> list[Tensor]:
    out = node.out()
    size = node.const("size", np.asarray(out.shape[1:3], np.int32))
    if node.layer.interpolation == "nearest":
        node.op(OP.RESIZE_NEAREST_NEIGHBOR, [node.x, size], [out],
                options("ResizeNearestNeighborOptions", alignCorners=False, halfPixelCenters=False))
    else:  # Keras resizes with half-pixel centers (tf.image.resize), no corner alignment
        node.op(OP.RESIZE_BILINEAR, [node.x, size], [out],
                options("ResizeBilinearOptions", alignCorners=False, halfPixelCenters=True), version=3)
    return [out]
