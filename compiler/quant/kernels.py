"""What LiteRT's kernels accept, as the quantize pass needs it.

Versions follow LiteRT's op version rules (tensorflow/lite/tools/versioning/op_version.cc) and were
checked against what the TF converter writes for the same mode on the fixtures; every version used
here is registered by the installed runtime (kernels/data/litert_runtime.json).
"""

from __future__ import annotations

from dataclasses import dataclass

from ai_edge_litert import schema_py_generated as schema

OP = schema.BuiltinOperator


@dataclass(frozen=True)
class WeightOperand:
    """Where an op's weights are: input index, per-channel axis (None: per tensor only), bias index."""

    index: int
    axis: int | None
    bias: int | None


# Ops with a constant weight operand whose kernel has hybrid (float activations, int8 weights) and
# integer variants.
WEIGHTS: dict[int, WeightOperand] = {
    OP.CONV_2D: WeightOperand(1, 0, 2),
    OP.DEPTHWISE_CONV_2D: WeightOperand(1, 3, 2),
    OP.FULLY_CONNECTED: WeightOperand(1, 0, 2),
}
# Hybrid BATCH_MATMUL takes a per-tensor int8 right-hand side.
HYBRID_ONLY: dict[int, WeightOperand] = {
    OP.BATCH_MATMUL: WeightOperand(1, None, None),
}


def hybrid_version(code: int, per_channel: bool) -> int:
    """Version of a hybrid op (float input and output, int8 weights, asymmetric input quantization)."""
    if code == OP.CONV_2D:
        return 5 if per_channel else 2
    if code == OP.DEPTHWISE_CONV_2D:
        return 6 if per_channel else 4
    if code == OP.FULLY_CONNECTED:
        # 9: hybrid with asymmetric_quantize_inputs; 12: per-channel hybrid (what the converter writes).
        return 12 if per_channel else 9
    if code == OP.BATCH_MATMUL:
        return 4
    raise KeyError(code)


def set_asymmetric_inputs(op) -> None:
    """Hybrid kernels quantize the float input per batch row; asymmetric is more accurate (the converter sets it)."""
    if op.options is not None and hasattr(op.options, "asymmetricQuantizeInputs"):
        op.options.asymmetricQuantizeInputs = True


# ---- full integer (int8 activations, int8 weights) and 16x8 (int16 activations, int8 weights) ----
# One rule per op with an integer kernel in LiteRT: how `quant/static.py` quantizes its inputs, weights,
# bias and outputs. Kinds:
#   WEIGHT  constant weight operand (symmetric int8, per channel along `weight.axis`), int32 bias at
#           s_in * s_w (int64 in 16x8 where `int64_bias`), calibrated output;
#   SAME    the kernel moves values without rescaling: the data inputs (`data`, None: every input)
#           and the output share one scale and zero point;
#   FIXED   the kernel fixes the output's scale and zero point (`fixed`: int8 params, int16 params);
#   INTEGER every input and the output get their own calibrated params;
#   FLOAT   never quantized (control flow: the op's subgraphs run float; their weights still get
#           int8 for the hybrid kernels).
# Ops with no rule have no integer kernel and stay float. Versions (int8, 16x8; None: no 16x8 kernel)
# follow LiteRT's op version rules (tensorflow/lite/tools/versioning/op_version.cc).

WEIGHT, SAME, FIXED, INTEGER, FLOAT = "weight", "same-scale", "fixed-output", "integer", "float"


@dataclass(frozen=True)
class Rule:
    kind: str
    int8: int = 1  # version of the int8 kernel
    int16: int | None = None  # version of the 16x8 kernel; None: no 16x8 kernel
    weight: WeightOperand | None = None
    int64_bias: bool = False
    data: tuple[int, ...] | None = None
    fixed: tuple[tuple[float, int], tuple[float, int]] | None = None
    reason: str = ""


def _same(int8: int, int16: int | None, data: tuple[int, ...] | None = (0,)) -> Rule:
    return Rule(SAME, int8, int16, data=data)


def _int(int8: int, int16: int | None) -> Rule:
    return Rule(INTEGER, int8, int16)


_CONTROL = "control flow (e.g. an LSTM loop): runs float, loop weights int8 for hybrid kernels"

RULES: dict[int, Rule] = {
    # Full-integer FULLY_CONNECTED is per tensor, as the converter writes it.
    OP.CONV_2D: Rule(WEIGHT, 3, 4, weight=WeightOperand(1, 0, 2), int64_bias=True),
    OP.DEPTHWISE_CONV_2D: Rule(WEIGHT, 3, 5, weight=WeightOperand(1, 3, 2), int64_bias=True),
    OP.FULLY_CONNECTED: Rule(WEIGHT, 4, 7, weight=WeightOperand(1, None, 2), int64_bias=True),
    OP.LOGISTIC: Rule(FIXED, 2, 3, fixed=((1 / 256, -128), (1 / 32768, 0))),
    OP.SOFTMAX: Rule(FIXED, 2, 3, fixed=((1 / 256, -128), (1 / 32768, 0))),
    OP.TANH: Rule(FIXED, 2, 3, fixed=((1 / 128, 0), (1 / 32768, 0))),
    OP.RESHAPE: _same(1, 1), OP.SQUEEZE: _same(2, 2), OP.EXPAND_DIMS: _same(1, 1),
    OP.AVERAGE_POOL_2D: _same(2, 3), OP.MAX_POOL_2D: _same(2, 3), OP.STRIDED_SLICE: _same(2, 3),
    OP.SLICE: _same(2, 4), OP.TRANSPOSE: _same(2, 5), OP.GATHER: _same(2, 2), OP.SPLIT: _same(2, 4, (1,)),
    OP.SPLIT_V: _same(2, 3), OP.PAD: _same(2, 4), OP.PADV2: _same(2, None, (0, 2)), OP.MIRROR_PAD: _same(2, None),
    OP.SPACE_TO_DEPTH: _same(2, None), OP.DEPTH_TO_SPACE: _same(2, None),
    OP.RESIZE_NEAREST_NEIGHBOR: _same(2, None), OP.RESIZE_BILINEAR: _same(2, None), OP.UNPACK: _same(2, 4),
    OP.MAXIMUM: _same(2, 4, (0, 1)), OP.MINIMUM: _same(2, 4, (0, 1)),
    OP.CONCATENATION: _same(2, 3, None), OP.PACK: _same(2, 3, None),
    OP.ADD: _int(2, 3), OP.SUB: _int(2, 3), OP.MUL: _int(2, 4), OP.RELU: _int(2, 3), OP.RELU6: _int(2, 3),
    OP.LEAKY_RELU: _int(1, 2), OP.HARD_SWISH: _int(1, None), OP.MEAN: _int(2, 3), OP.ARG_MAX: _int(2, None),
    OP.ARG_MIN: _int(2, None),
    OP.WHILE: Rule(FLOAT, reason=_CONTROL), OP.IF: Rule(FLOAT, reason=_CONTROL),
    OP.CALL_ONCE: Rule(FLOAT, reason=_CONTROL),
}

# Ops with an int8 kernel in LiteRT, and those that also have a 16x8 kernel (derived from RULES).
INT8_OPS = frozenset(code for code, r in RULES.items() if r.kind != FLOAT)
INT16_OPS = frozenset(code for code, r in RULES.items() if r.kind != FLOAT and r.int16 is not None)


def integer_version(code: int, bits: int, current: int) -> int:
    r = RULES.get(code)
    v = current if r is None else (r.int8 if bits == 8 else r.int16 or current)
    return max(v, current)
