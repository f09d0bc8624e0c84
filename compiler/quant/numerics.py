"""Quantization arithmetic on IR `Quantization`s, the way LiteRT's kernels and the TF converter define it.

real = scale * (q - zero_point). Weights are symmetric (zero point 0) with q in [-127, 127] so that
the kernels' int8 x int8 products never see -128; activations are asymmetric over [-128, 127]
(int8) or symmetric over [-32767, 32767] (int16, zero point 0). The arithmetic itself lives in
`compiler.affine` (numpy only, shared with the runtime and verify); this module wraps it in IR types.
"""

from __future__ import annotations

import numpy as np

from compiler import affine
from compiler.affine import INT8_MAX, INT8_MIN, INT16_MAX  # noqa: F401  (re-exported)
from compiler.ir import Quantization


def params(scale, zero_point, dim: int = 0) -> Quantization:
    return Quantization(scale=np.asarray(scale, np.float32).reshape(-1),
                        zero_point=np.asarray(zero_point, np.int64).reshape(-1), quantized_dimension=int(dim))


def activation_params(lo: float, hi: float, bits: int = 8) -> Quantization:
    """Per-tensor params covering [lo, hi] (see `affine.range_params`)."""
    scale, zero_point = affine.range_params(lo, hi, bits)
    return params([scale], [zero_point])


def quantize_values(x: np.ndarray, q: Quantization, dtype=np.int8) -> np.ndarray:
    return affine.quantize(x, q, dtype)


def dequantize_values(x: np.ndarray, q: Quantization) -> np.ndarray:
    return affine.dequantize(x, q)


def symmetric_weights(w: np.ndarray, axis: int | None, bits: int = 8) -> tuple[np.ndarray, Quantization]:
    """Symmetric weights, per channel along `axis` (None: per tensor), q in [-(2^(b-1)-1), 2^(b-1)-1]."""
    qmax = (1 << (bits - 1)) - 1
    scale = affine.symmetric_scales(w, axis, bits)
    q = params(scale, np.zeros(len(scale), np.int64), 0 if axis is None else axis)
    values = affine.quantize(np.asarray(w, np.float32), q, np.int8 if bits == 8 else np.int16)
    return np.clip(values, -qmax, qmax), q


def bias_values(b: np.ndarray, input_scale: float, weight_scales: np.ndarray, dtype=np.int32
                ) -> tuple[np.ndarray, Quantization]:
    """Bias in int32 (int8 kernels) or int64 (16x8 kernels) with scale = s_in * s_w per channel (the
    converter's GetUniformQuantizedTypeForBias: no floor of its own; the activation and weight floors
    in `affine` bound it from below)."""
    scales = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    q = params(scales, np.zeros(len(scales), np.int64), 0)
    return affine.quantize(b, q, dtype), q
