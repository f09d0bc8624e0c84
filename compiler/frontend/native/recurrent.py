"""LSTM -> one fused UNIDIRECTIONAL_SEQUENCE_LSTM (batch-major), no WHILE loop.

Input layout (LiteRT's lstm_shared.h, 24 inputs): 0 input; 1-4 input-to-{input,forget,cell,output}
weights (n_cell, n_input); 5-8 recurrent-to-{input,forget,cell,output} weights (n_cell, n_output);
9-11 peephole weights (unused); 12-15 {input,forget,cell,output} gate biases (n_cell); 16-17 projection
weights and bias (unused); 18 output state and 19 cell state, variable tensors (n_batch, n_output/n_cell);
20-23 layer-norm coefficients (unused). Keras keeps the gates as i, f, c, o blocks of its kernels.
The gates always use sigmoid in the kernel; the options' activation is the cell/output activation.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.native import rule
from compiler.frontend.native.activations import name_of
from compiler.frontend.native.dense import value
from compiler.frontend.native.graph import ACT, OP, Node, options
from compiler.ir import Tensor

_CELL_ACT = {"tanh": ACT.TANH, "relu": ACT.RELU, "relu6": ACT.RELU6}
GATES = ("input", "forget", "cell", "output")


def _check(layer) -> str | None:
    if name_of(layer.recurrent_activation) != "sigmoid":
        return f"recurrent_activation={name_of(layer.recurrent_activation)!r}"
    if name_of(layer.activation) not in _CELL_ACT:
        return f"activation={name_of(layer.activation)!r}"
    for flag in ("return_state", "stateful"):
        if getattr(layer, flag, False):
            return f"{flag}=True"
    return None


def _reverse_time(node: Node, x: Tensor, name: str) -> Tensor:
    out = node.graph.tensor(name, x.shape)
    node.op(OP.REVERSE_V2, [x, node.graph.const(f"{name}_axis", np.asarray([1], np.int32))], [out])
    return out


def _fused(node: Node, layer, x: Tensor, name: str, out: Tensor | None) -> Tensor:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM over x (batch, time, features): its (batch, time, units) output,
    written into `out` if given. Tensors are named `name/...`."""
    g = node.graph
    kv, rv = layer.cell.kernel, layer.cell.recurrent_kernel
    units, fan_in = int(rv.shape[0]), int(kv.shape[0])
    bias = value(layer.cell.bias) if layer.use_bias else np.zeros(4 * units, np.float32)
    batch = x.shape[0]

    def block(w, k):
        return w[..., k * units:(k + 1) * units]

    def gate_weight(v, k, what, width):
        return g.lazy(f"{name}/{GATES[k]}_{what}", lambda: block(value(v), k).T, (units, width))

    ins: list[Tensor | None] = [x]
    ins += [gate_weight(kv, k, "kernel", fan_in) for k in range(4)]
    ins += [gate_weight(rv, k, "recurrent_kernel", units) for k in range(4)]
    ins += [None, None, None]
    ins += [g.const(f"{name}/{gate}_bias", block(bias, k)) for k, gate in enumerate(GATES)]
    ins += [None, None]
    ins += [g.variable(f"{name}/output_state", (batch, units)), g.variable(f"{name}/cell_state", (batch, units))]
    ins += [None, None, None, None]
    seq = out if out is not None else g.tensor(f"{name}/sequence", (batch, x.shape[1], units))
    node.op(OP.UNIDIRECTIONAL_SEQUENCE_LSTM, ins, [seq], options(
        "UnidirectionalSequenceLSTMOptions", fusedActivationFunction=_CELL_ACT[name_of(layer.activation)],
        cellClip=0.0, projClip=0.0, timeMajor=False, asymmetricQuantizeInputs=False))
    return seq


def _sequence(node: Node, layer, x: Tensor, name: str, out: Tensor | None) -> Tensor:
    """The LSTM's (batch, time, units) outputs over x, fused (default) or unrolled (Graph.lstm)."""
    if node.graph.lstm == "unrolled":
        return _unrolled(node, layer, x, name, out)
    return _fused(node, layer, x, name, out)


def _unrolled(node: Node, layer, x: Tensor, name: str, out: Tensor | None) -> Tensor:
    """The LSTM as builtin ops per time step (no variable tensors, no WHILE: runs where LiteRT's
    CompiledModel refuses the fused kernel's state variables, and every op has an integer kernel):

        z = x_t K + b + h R;  i, f, o = sigmoid(z_i, z_f, z_o);  c = f * c + i * act(z_c);  h = o * act(c)

    The input projection of all steps is one FULLY_CONNECTED."""
    from compiler.frontend.native.activations import emit

    g = node.graph
    kv, rv = layer.cell.kernel, layer.cell.recurrent_kernel
    units, fan_in = int(rv.shape[0]), int(kv.shape[0])
    bias = value(layer.cell.bias) if layer.use_bias else np.zeros(4 * units, np.float32)
    b, steps = x.shape[0], x.shape[1]
    act = name_of(layer.activation)

    def t(what, shape=(b, units)):
        return g.tensor(f"{name}/{what}", shape)

    flat = t("inputs_2d", (b * steps, fan_in))
    node.op(OP.RESHAPE, [x, g.const(f"{name}/inputs_2d_shape", np.asarray(flat.shape, np.int32))], [flat])
    proj = t("input_projection", (b * steps, 4 * units))
    node.op(OP.FULLY_CONNECTED, [flat, g.lazy(f"{name}/kernel", lambda: value(kv).T, (4 * units, fan_in)),
                                 g.const(f"{name}/bias", bias)], [proj], options("FullyConnectedOptions"))
    proj3 = t("input_projection_3d", (b, steps, 4 * units))
    node.op(OP.RESHAPE, [proj, g.const(f"{name}/projection_shape", np.asarray(proj3.shape, np.int32))], [proj3])
    per_step = [t(f"x_{k}", (b, 4 * units)) for k in range(steps)]
    node.op(OP.UNPACK, [proj3], per_step, options("UnpackOptions", num=steps, axis=1))
    rec_w = g.lazy(f"{name}/recurrent_kernel", lambda: value(rv).T, (4 * units, units))
    axis = g.const(f"{name}/split_axis", np.int32(1))
    h = c = g.const(f"{name}/initial_state", np.zeros((b, units), np.float32))
    outs = []
    for k, step in enumerate(range(steps)):  # a go_backwards caller has reversed x already
        rec, pre = t(f"step_{k}/recurrent", (b, 4 * units)), t(f"step_{k}/gates_pre", (b, 4 * units))
        node.op(OP.FULLY_CONNECTED, [h, rec_w, None], [rec], options("FullyConnectedOptions"))
        node.op(OP.ADD, [per_step[step], rec], [pre], options("AddOptions"))
        zi, zf, zc, zo = (t(f"step_{k}/z_{gate}") for gate in GATES)
        node.op(OP.SPLIT, [axis, pre], [zi, zf, zc, zo], options("SplitOptions", numSplits=4))
        gi, gf, go, gc = (t(f"step_{k}/{gate}") for gate in ("input", "forget", "output", "candidate"))
        for z, gate in ((zi, gi), (zf, gf), (zo, go)):
            node.op(OP.LOGISTIC, [z], [gate])
        emit(node, zc, act, gc)
        kept, new, cell = t(f"step_{k}/kept"), t(f"step_{k}/new"), t(f"step_{k}/cell")
        node.op(OP.MUL, [gf, c], [kept], options("MulOptions"))
        node.op(OP.MUL, [gi, gc], [new], options("MulOptions"))
        node.op(OP.ADD, [kept, new], [cell], options("AddOptions"))
        squashed = t(f"step_{k}/cell_act")
        emit(node, cell, act, squashed)
        h = t(f"step_{k}/h")
        node.op(OP.MUL, [go, squashed], [h], options("MulOptions"))
        c = cell
        outs.append(h)
    seq = out if out is not None else t("sequence", (b, steps, units))
    node.op(OP.PACK, outs, [seq], options("PackOptions", valuesCount=steps, axis=1))
    return seq


def _last_step(node: Node, seq: Tensor, out: Tensor) -> Tensor:
    """seq[:, -1, :], the time axis shrunk away."""
    g, (b, t, u) = node.graph, seq.shape
    consts = [g.const(f"{seq.name}_{what}", np.asarray(v, np.int32))
              for what, v in (("begin", [0, t - 1, 0]), ("end", [b, t, u]), ("strides", [1, 1, 1]))]
    node.op(OP.STRIDED_SLICE, [seq, *consts], [out], options("StridedSliceOptions", shrinkAxisMask=2))
    return out


@rule("LSTM", check=_check)
def lstm(node: Node) -> list[Tensor]:
    layer, x = node.layer, node.x
    if layer.go_backwards:  # Keras returns the outputs in processing (reversed) order, as the kernel does
        x = _reverse_time(node, x, f"{node.name}/reversed_input")
    if layer.return_sequences:
        return [_sequence(node, layer, x, node.name, node.out())]
    return [_last_step(node, _sequence(node, layer, x, node.name, None), node.out())]


_MERGE = {"sum": (OP.ADD, "AddOptions"), "mul": (OP.MUL, "MulOptions"), "ave": (OP.ADD, "AddOptions")}


def _check_bidirectional(layer) -> str | None:
    fw, bw = layer.forward_layer, layer.backward_layer
    if type(fw).__name__ != "LSTM" or type(bw).__name__ != "LSTM":
        return f"wraps {type(fw).__name__}"
    if layer.merge_mode not in ("concat", "sum", "mul", "ave"):
        return f"merge_mode={layer.merge_mode!r}"
    if getattr(layer, "return_state", False):
        return "return_state=True"
    return _check(fw) or _check(bw)


@rule("Bidirectional", check=_check_bidirectional)
def bidirectional(node: Node) -> list[Tensor]:
    """Two fused LSTMs, the backward one over the time-reversed input; its sequence is flipped back
    (as Keras does) before the merge."""
    layer, x = node.layer, node.x
    g, sequences = node.graph, layer.return_sequences
    parts = []
    for sub, tag in ((layer.forward_layer, "forward"), (layer.backward_layer, "backward")):
        name = f"{node.name}/{tag}"
        xin = _reverse_time(node, x, f"{name}/reversed_input") if sub.go_backwards else x
        seq = _sequence(node, sub, xin, name, None)
        if sequences and sub.go_backwards:
            seq = _reverse_time(node, seq, f"{name}/sequence_in_time_order")
        elif not sequences:
            b, _, u = seq.shape
            seq = _last_step(node, seq, g.tensor(f"{name}/last", (b, u)))
        parts.append(seq)
    out = node.out()
    if layer.merge_mode == "concat":
        node.op(OP.CONCATENATION, parts, [out], options("ConcatenationOptions", axis=len(out.shape) - 1))
        return [out]
    code, kind = _MERGE[layer.merge_mode]
    if layer.merge_mode != "ave":
        node.op(code, parts, [out], options(kind))
        return [out]
    total = node.tmp("sum", out.shape)
    node.op(code, parts, [total], options(kind))
    node.op(OP.MUL, [total, node.const("half", np.float32(0.5))], [out], options("MulOptions"))
    return [out]
