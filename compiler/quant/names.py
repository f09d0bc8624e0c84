"""Suffixes of the tensors the quantize pass creates, shared with `verify`, which compares a quantized
tensor with the float tensor it stands for (no imports: verify and tests read it cheaply)."""

from __future__ import annotations

INT8 = "_int8"  # an int8 copy of a float activation (QUANTIZE output) or an int8 weight
INT16 = "_int16"  # an int16 copy of a float activation (16x8)
FLOAT = "_float"  # a float copy of an integer activation (DEQUANTIZE output)
REQUANT = "_requant"  # an integer activation requantized to another op's scale
FP16 = "_fp16"  # a float16 weight (read through a DEQUANTIZE)
BIAS = "_bias"  # an int32/int64 bias

SUFFIXES = (INT8, INT16, FLOAT, REQUANT, FP16, BIAS)


def original(name: str) -> str:
    """The name of the float tensor a quantize-made tensor stands for (`conv_int8` -> `conv`)."""
    for s in SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name
