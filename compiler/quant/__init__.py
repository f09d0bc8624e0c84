"""Quantization helpers behind the `quantize` pass: numerics, IR edits, calibration and op versions.

- `numerics`: scales, zero points, symmetric per-channel weights, int32/int64 biases, float16.
- `graph`: small IR edits (new constants, inserting QUANTIZE/DEQUANTIZE, replacing uses).
- `calibrate`: per-tensor ranges from running the float model in LiteRT over calibration data.
- `kernels`: what LiteRT's kernels accept (weight operands, channel axes, int8/int16 support,
  fixed output scales, ops whose inputs and outputs must share a scale) and the op versions to set.
"""
