"""Quantization arithmetic, the way LiteRT's kernels and the TF converter define it.

real = scale * (q - zero_point). Weights are symmetric (zero point 0) with q in [-127, 127] so that
the kernels' int8 x int8 products never see -128; activations are asymmetric over [-128, 127]
(int8) or symmetric over [-32767, 32767] (int16, zero point 0).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Quantization

INT8_MIN, INT8_MAX = -128, 127
INT16_MAX = 32767


def _q(scale, zero_point, dim: int = 0) -> Quantization:
    return Quantization(scale=np.asarray(scale, np.float32).reshape(-1),
                        zero_point=np.asarray(zero_point, np.int64).reshape(-1), quantized_dimension=int(dim))


def activation_params(lo: float, hi: float, bits: int = 8) -> Quantization:
    """Per-tensor params covering [lo, hi] (always including 0, so zero is exact).
    int8: asymmetric; int16: symmetric with zero point 0 (what LiteRT's 16x8 kernels require)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if bits == 16:
        bound = max(abs(lo), abs(hi))
        scale = bound / INT16_MAX if bound > 0 else 1.0 / INT16_MAX
        return _q([scale], [0])
    if hi - lo <= 0:
        return _q([1.0 / 255], [INT8_MIN])
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(np.round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return _q([scale], [zero_point])


def quantize_values(x: np.ndarray, q: Quantization, dtype=np.int8) -> np.ndarray:
    """Affine quantization of real values with per-tensor or per-channel params."""
    info = np.iinfo(dtype)
    scale, zp = q.scale.astype(np.float64), q.zero_point.astype(np.float64)
    if len(scale) > 1:
        shape = [1] * x.ndim
        shape[q.quantized_dimension] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)


def dequantize_values(x: np.ndarray, q: Quantization) -> np.ndarray:
    scale, zp = q.scale.astype(np.float64), q.zero_point.astype(np.float64)
    if len(scale) > 1:
        shape = [1] * x.ndim
        shape[q.quantized_dimension] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x.astype(np.float64) - zp) * scale).astype(np.float32)


def symmetric_weights(w: np.ndarray, axis: int | None, bits: int = 8) -> tuple[np.ndarray, Quantization]:
    """Symmetric weights, per channel along `axis` (None: per tensor), q in [-(2^(b-1)-1), 2^(b-1)-1]."""
    qmax = (1 << (bits - 1)) - 1
    w = np.asarray(w, np.float32)
    if axis is None:
        bound = np.array([np.max(np.abs(w))]) if w.size else np.array([0.0])
    else:
        axes = tuple(i for i in range(w.ndim) if i != axis)
        bound = np.max(np.abs(w), axis=axes) if axes else np.abs(w)
    # An all-zero channel still needs a positive scale; any value represents 0 exactly.
    scale = np.where(bound > 0, bound / qmax, 1.0).astype(np.float32)
    q = _q(scale, np.zeros(len(scale), np.int64), 0 if axis is None else axis)
    values = quantize_values(w, q, np.int8 if bits == 8 else np.int16)
    return np.clip(values, -qmax, qmax), q


def bias_values(b: np.ndarray, input_scale: float, weight_scales: np.ndarray, dtype=np.int32
                ) -> tuple[np.ndarray, Quantization]:
    """Bias in int32 (int8 kernels) or int64 (16x8 kernels) with scale = s_in * s_w per channel."""
    scales = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    scales = np.where(scales > 0, scales, np.float32(1e-30))
    q = _q(scales, np.zeros(len(scales), np.int64), 0)
    info = np.iinfo(dtype)
    values = np.clip(np.round(b.astype(np.float64) / scales.astype(np.float64)), info.min, info.max).astype(dtype)
    return values, q
