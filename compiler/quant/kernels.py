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

# Ops with an int8 kernel in LiteRT, and those that also have a 16x8 kernel.
INT8_OPS = {
    OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED, OP.ADD, OP.SUB, OP.MUL, OP.AVERAGE_POOL_2D,
    OP.MAX_POOL_2D, OP.RESHAPE, OP.SQUEEZE, OP.EXPAND_DIMS, OP.CONCATENATION, OP.LOGISTIC, OP.TANH,
    OP.SOFTMAX, OP.RELU, OP.RELU6, OP.LEAKY_RELU, OP.HARD_SWISH, OP.MEAN, OP.PAD, OP.PADV2,
    OP.STRIDED_SLICE, OP.SLICE, OP.TRANSPOSE, OP.GATHER, OP.SPLIT, OP.SPLIT_V, OP.MAXIMUM, OP.MINIMUM,
    OP.PACK, OP.UNPACK, OP.RESIZE_BILINEAR, OP.RESIZE_NEAREST_NEIGHBOR, OP.SPACE_TO_DEPTH,
    OP.DEPTH_TO_SPACE, OP.ARG_MAX, OP.ARG_MIN, OP.MIRROR_PAD,
}
INT16_OPS = {
    OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED, OP.ADD, OP.SUB, OP.MUL, OP.AVERAGE_POOL_2D,
    OP.MAX_POOL_2D, OP.RESHAPE, OP.SQUEEZE, OP.EXPAND_DIMS, OP.CONCATENATION, OP.LOGISTIC, OP.TANH,
    OP.SOFTMAX, OP.RELU, OP.RELU6, OP.LEAKY_RELU, OP.MEAN, OP.PAD, OP.STRIDED_SLICE, OP.SLICE,
    OP.TRANSPOSE, OP.GATHER, OP.SPLIT, OP.SPLIT_V, OP.MAXIMUM, OP.MINIMUM, OP.PACK, OP.UNPACK,
}

# Output scale and zero point fixed by the kernel: (int8 params, int16 params).
FIXED_OUTPUT = {
    OP.LOGISTIC: ((1 / 256, -128), (1 / 32768, 0)),
    OP.SOFTMAX: ((1 / 256, -128), (1 / 32768, 0)),
    OP.TANH: ((1 / 128, 0), (1 / 32768, 0)),
}

# Ops whose kernels move values without rescaling: the output must have the input's scale and zero
# point (multi-input ones: all inputs share the output's). Value: indices of the data inputs.
SAME_SCALE: dict[int, tuple[int, ...] | None] = {
    OP.RESHAPE: (0,), OP.SQUEEZE: (0,), OP.EXPAND_DIMS: (0,), OP.AVERAGE_POOL_2D: (0,),
    OP.MAX_POOL_2D: (0,), OP.STRIDED_SLICE: (0,), OP.SLICE: (0,), OP.TRANSPOSE: (0,), OP.GATHER: (0,),
    OP.SPLIT: (1,), OP.SPLIT_V: (0,), OP.PAD: (0,), OP.PADV2: (0, 2), OP.MIRROR_PAD: (0,),
    OP.SPACE_TO_DEPTH: (0,), OP.DEPTH_TO_SPACE: (0,), OP.RESIZE_NEAREST_NEIGHBOR: (0,),
    OP.RESIZE_BILINEAR: (0,), OP.UNPACK: (0,), OP.MAXIMUM: (0, 1), OP.MINIMUM: (0, 1),
    OP.CONCATENATION: None, OP.PACK: None,  # None: every input
}

# Weight ops whose kernels take an int64 bias in 16x8 mode.
INT64_BIAS_16X8 = {OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED}

# Versions of integer kernels (int8, 16x8), from LiteRT's op version rules.
_INTEGER_VERSIONS = {
    OP.CONV_2D: (3, 4), OP.DEPTHWISE_CONV_2D: (3, 5), OP.FULLY_CONNECTED: (4, 7), OP.ADD: (2, 3),
    OP.SUB: (2, 3), OP.MUL: (2, 4), OP.AVERAGE_POOL_2D: (2, 3), OP.MAX_POOL_2D: (2, 3), OP.RESHAPE: (1, 1),
    OP.SQUEEZE: (2, 2), OP.EXPAND_DIMS: (1, 1), OP.CONCATENATION: (2, 3), OP.LOGISTIC: (2, 3),
    OP.TANH: (2, 3), OP.SOFTMAX: (2, 3), OP.RELU: (2, 3), OP.RELU6: (2, 3), OP.LEAKY_RELU: (1, 2),
    OP.HARD_SWISH: (1, 1), OP.MEAN: (2, 3), OP.PAD: (2, 4), OP.PADV2: (2, 4), OP.STRIDED_SLICE: (2, 3),
    OP.SLICE: (2, 4), OP.TRANSPOSE: (2, 5), OP.GATHER: (2, 2), OP.SPLIT: (2, 4), OP.SPLIT_V: (2, 3),
    OP.MAXIMUM: (2, 4), OP.MINIMUM: (2, 4), OP.PACK: (2, 3), OP.UNPACK: (2, 4),
    OP.RESIZE_BILINEAR: (2, 2), OP.RESIZE_NEAREST_NEIGHBOR: (2, 2), OP.SPACE_TO_DEPTH: (2, 2),
    OP.DEPTH_TO_SPACE: (2, 2), OP.ARG_MAX: (2, 2), OP.ARG_MIN: (2, 2), OP.MIRROR_PAD: (2, 2),
}


def integer_version(code: int, bits: int, current: int) -> int:
    v = _INTEGER_VERSIONS.get(code, (current, current))[0 if bits == 8 else 1]
    return max(v, current)
