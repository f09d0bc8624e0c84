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
from compiler.frontend.native.dense import weights
from compiler.frontend.native.graph import ACT, OP, Node, options
from compiler.ir import Tensor

_CELL_ACT = {"tanh": ACT.TANH, "relu": ACT.RELU, "relu6": ACT.RELU6}
GATES = ("input", "forget", "cell", "output")


def _check(layer) -> str | None:
    if name_of(layer.recurrent_activation) != "sigmoid":
        return f"recurrent_activation={name_of(layer.recurrent_activation)!r}"
    if name_of(layer.activation) not in _CELL_ACT:
        return f"activation={name_of(layer.activation)!r}"
    for flag in ("return_state", "go_backwards", "stateful"):
        if getattr(layer, flag, False):
            return f"{flag}=True"
    return None


@rule("LSTM", check=_check)
def lstm(node: Node) -> list[Tensor]:
    layer, x = node.layer, node.x
    ws = weights(layer)
    kernel, recurrent = ws[0], ws[1]
    units = recurrent.shape[0]
    bias = ws[2] if layer.use_bias else np.zeros(4 * units, np.float32)
    batch = x.shape[0]
    ins: list[Tensor | None] = [x]
    ins += [node.const(f"{g}_kernel", kernel[:, k * units:(k + 1) * units].T) for k, g in enumerate(GATES)]
    ins += [node.const(f"{g}_recurrent_kernel", recurrent[:, k * units:(k + 1) * units].T)
            for k, g in enumerate(GATES)]
    ins += [None, None, None]
    ins += [node.const(f"{g}_bias", bias[k * units:(k + 1) * units]) for k, g in enumerate(GATES)]
    ins += [None, None]
    ins += [node.graph.variable(f"{node.name}/output_state", (batch, units)),
            node.graph.variable(f"{node.name}/cell_state", (batch, units))]
    ins += [None, None, None, None]
    seq_shape = (batch, x.shape[1], units)
    seq = node.out() if layer.return_sequences else node.tmp("sequence", seq_shape)
    node.op(OP.UNIDIRECTIONAL_SEQUENCE_LSTM, ins, [seq], options(
        "UnidirectionalSequenceLSTMOptions", fusedActivationFunction=_CELL_ACT[name_of(layer.activation)],
        cellClip=0.0, projClip=0.0, timeMajor=False, asymmetricQuantizeInputs=False))
    if layer.return_sequences:
        return [seq]
    # The last time step: seq[:, -1, :] with the time axis shrunk away.
    out = node.out()
    t = x.shape[1]
    node.op(OP.STRIDED_SLICE, [seq, node.const("begin", np.asarray([0, t - 1, 0], np.int32)),
                               node.const("end", np.asarray([batch, t, units], np.int32)),
                               node.const("strides", np.asarray([1, 1, 1], np.int32))], [out],
            options("StridedSliceOptions", shrinkAxisMask=2))
    return [out]
