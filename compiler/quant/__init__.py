"""Quantization helpers behind the `quantize` pass: numerics, rules, IR edits, calibration, census.

- `numerics`: `compiler.affine`'s arithmetic on IR Quantizations (weights, biases, activation params).
- `kernels`: what LiteRT's kernels accept: hybrid weight operands and versions, and `RULES`, the
  per-op table of how full-integer quantization treats each op; `static` applies it.
- `names`: suffixes of the tensors the pass creates (verify maps them back to their float tensors).
- `graph`: small IR edits (new constants, inserting QUANTIZE/DEQUANTIZE, replacing uses).
- `calibrate`: per-tensor ranges from running the float model in LiteRT over calibration data.
- `weights_only`: float16 and int8-dynamic; `static`: int8 and int16x8.
- `census.precision(model)`: the precision weights and ops actually ended in.
"""

from compiler.quant.census import precision  # noqa: F401
