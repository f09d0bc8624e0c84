"""GRU (reset_after=True, Keras 3's default) unrolled over its static time axis into builtin ops: no
WHILE loop, no Flex. The input projection of all time steps is one FULLY_CONNECTED; each step then
does h @ recurrent_kernel and the gates:

    z, r = sigmoid(x_zr + h_zr);  hh = tanh(x_h + r * h_h);  h' = hh + z * (h - hh)

(the last line is Keras' z * h + (1 - z) * hh). Keras keeps the gates as z, r, h blocks and the
biases as two rows (input, recurrent)."""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.activations import name_of
from compiler.frontend.native.dense import value
from compiler.frontend.native.graph import OP, Node, options
from compiler.ir import Tensor


def _check(layer) -> str | None:
    if name_of(layer.recurrent_activation) != "sigmoid" or name_of(layer.activation) != "tanh":
        return f"activations {name_of(layer.activation)}/{name_of(layer.recurrent_activation)}"
    if not layer.reset_after:
        return "reset_after=False"
    for flag in ("return_state", "stateful"):
        if getattr(layer, flag, False):
            return f"{flag}=True"
    return None


@rule("GRU", check=_check)
def gru(node: Node) -> list[Tensor]:
    layer, x = node.layer, node.x
    kv, rv = layer.cell.kernel, layer.cell.recurrent_kernel
    units = int(rv.shape[0])
    bias = value(layer.cell.bias) if layer.use_bias else np.zeros((2, 3 * units), np.float32)
    b, steps, feat = x.shape

    flat = node.tmp("inputs_2d", (b * steps, feat))
    node.op(OP.RESHAPE, [x, node.const("inputs_2d_shape", np.asarray(flat.shape, np.int32))], [flat])
    proj = node.tmp("input_projection", (b * steps, 3 * units))
    node.op(OP.FULLY_CONNECTED, [flat, node.lazy("kernel", lambda: value(kv).T, (3 * units, feat)), node.const("input_bias", bias[0])], [proj],
            options("FullyConnectedOptions"))
    proj3 = node.tmp("input_projection_3d", (b, steps, 3 * units))
    node.op(OP.RESHAPE, [proj, node.const("projection_shape", np.asarray(proj3.shape, np.int32))], [proj3])
    per_step = [node.tmp(f"x_{t}", (b, 3 * units)) for t in range(steps)]
    node.op(OP.UNPACK, [proj3], per_step, options("UnpackOptions", num=steps, axis=1))

    rec_w = node.lazy("recurrent_kernel", lambda: value(rv).T, (3 * units, units))
    rec_b = node.const("recurrent_bias", bias[1])
    sizes = node.const("split_sizes", np.asarray([2 * units, units], np.int32))
    axis = node.const("split_axis", np.int32(1))
    h = node.const("initial_state", np.zeros((b, units), np.float32))
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    outs = []
    for k, t in enumerate(order):
        def tmp(what, shape=(b, units)):
            return node.tmp(f"step_{k}/{what}", shape)

        rec = tmp("recurrent", (b, 3 * units))
        node.op(OP.FULLY_CONNECTED, [h, rec_w, rec_b], [rec], options("FullyConnectedOptions"))
        x_zr, x_h = tmp("x_zr", (b, 2 * units)), tmp("x_h")
        node.op(OP.SPLIT_V, [per_step[t], sizes, axis], [x_zr, x_h], options("SplitVOptions", numSplits=2))
        r_zr, r_h = tmp("h_zr", (b, 2 * units)), tmp("h_h")
        node.op(OP.SPLIT_V, [rec, sizes, axis], [r_zr, r_h], options("SplitVOptions", numSplits=2))
        pre, zr = tmp("zr_pre", (b, 2 * units)), tmp("zr", (b, 2 * units))
        node.op(OP.ADD, [x_zr, r_zr], [pre], options("AddOptions"))
        node.op(OP.LOGISTIC, [pre], [zr])
        z, r = tmp("z"), tmp("r")
        node.op(OP.SPLIT, [axis, zr], [z, r], options("SplitOptions", numSplits=2))
        gated, cand_pre, cand = tmp("r_h"), tmp("candidate_pre"), tmp("candidate")
        node.op(OP.MUL, [r, r_h], [gated], options("MulOptions"))
        node.op(OP.ADD, [x_h, gated], [cand_pre], options("AddOptions"))
        node.op(OP.TANH, [cand_pre], [cand])
        diff, keep = tmp("h_minus_candidate"), tmp("z_diff")
        node.op(OP.SUB, [h, cand], [diff], options("SubOptions"))
        node.op(OP.MUL, [z, diff], [keep], options("MulOptions"))
        last = k == steps - 1 and not layer.return_sequences
        h = node.out() if last else tmp("h")
        node.op(OP.ADD, [cand, keep], [h], options("AddOptions"))
        outs.append(h)
    if not layer.return_sequences:
        return [h]
    out = node.out()
    node.op(OP.PACK, outs, [out], options("PackOptions", valuesCount=steps, axis=1))
    return [out]
