"""Affine quantization arithmetic, numpy only: real = scale * (q - zero_point).

One module for the runtime (quantizing inputs, dequantizing outputs), the quantize pass (weights,
activation params) and verify (comparing integer tensors with float ones). It imports neither the IR
nor the schema, so the runtime process stays small. Quantization parameters may be given as a manifest
dict ({"scale", "zero_point", "quantized_dimension"}), an IR `Quantization`, or LiteRT's
`quantization_parameters` ({"scales", "zero_points", "quantized_dimension"}).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT16_MAX = 32767

# The TF converter widens any range narrower than 1e-6 to at least [-5e-7, 5e-7] before computing a
# scale, for activations and weights alike (ExpandVerySmallRange and kNearZeroTolerance in
# tensorflow/compiler/mlir/quantization/common/quantization_lib/quantization_utils.cc, called from
# GetQuantizedType). Without it a near-constant activation gets a scale like 1e-12, a fused RELU6's
# bound 6/scale overflows int32, and LiteRT's builtin kernels refuse the model at prepare time.
NEAR_ZERO = 1.0e-6


def params(q: Any) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scale float32[], zero_point int64[], axis) from any of the three forms, or None when q has no scale."""
    if q is None:
        return None
    if isinstance(q, Mapping):
        scale = q.get("scale", q.get("scales"))
        zp = q.get("zero_point", q.get("zero_points"))
        axis = q.get("quantized_dimension", 0)
    else:
        scale, zp = getattr(q, "scale", None), getattr(q, "zero_point", None)
        axis = getattr(q, "quantized_dimension", 0)
    if scale is None or len(scale) == 0:
        return None
    scale = np.asarray(scale, np.float32).reshape(-1)
    zp = np.zeros(len(scale), np.int64) if zp is None or len(zp) == 0 else np.asarray(zp, np.int64).reshape(-1)
    return scale, zp, int(axis or 0)


def per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """`v` shaped to broadcast along `axis` of an ndim-array (a scalar when it has one element)."""
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def quantize(x: np.ndarray, q: Any, dtype) -> np.ndarray:
    """Real values -> integers of `dtype`: round(x / scale) + zero_point (half to even), clipped."""
    p = params(q)
    if p is None:
        raise ValueError("quantize: no scale given")
    scale, zp, axis = p
    x = np.asarray(x)
    info = np.iinfo(dtype)
    s = per_axis(scale.astype(np.float64), x.ndim, axis)
    z = per_axis(zp.astype(np.float64), x.ndim, axis)
    return np.clip(np.round(x.astype(np.float64) / s) + z, info.min, info.max).astype(dtype)


def dequantize(x: np.ndarray, q: Any) -> np.ndarray:
    """Integers -> float32 (scale * (q - zero_point)); float arrays, or no scale, pass through unchanged."""
    x = np.asarray(x)
    p = params(q)
    if p is None or not np.issubdtype(x.dtype, np.integer):
        return x
    scale, zp, axis = p
    s = per_axis(scale.astype(np.float64), x.ndim, axis)
    z = per_axis(zp.astype(np.float64), x.ndim, axis)
    return ((x.astype(np.float64) - z) * s).astype(np.float32)


def widen(lo: float, hi: float) -> tuple[float, float]:
    """The range including 0, widened as the converter does when it is narrower than NEAR_ZERO."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= NEAR_ZERO:
        lo, hi = min(lo, -NEAR_ZERO / 2), max(hi, NEAR_ZERO / 2)
    return lo, hi


def range_params(lo: float, hi: float, bits: int = 8) -> tuple[float, int]:
    """(scale, zero_point) covering [lo, hi] with 0 exact. 8 bits: asymmetric over [-128, 127];
    16 bits: symmetric, zero point 0 (what LiteRT's 16x8 kernels require)."""
    lo, hi = widen(lo, hi)
    if bits == 16:
        return max(-lo, hi) / INT16_MAX, 0
    scale = (hi - lo) / (INT8_MAX - INT8_MIN)
    # Half away from zero (std::round), as the converter nudges zero points: [-1, 1] gets -1, not 0.
    z = INT8_MIN - lo / scale
    zero_point = int(np.clip(np.sign(z) * np.floor(abs(z) + 0.5), INT8_MIN, INT8_MAX))
    return scale, zero_point


def symmetric_scales(w: np.ndarray, axis: int | None, bits: int = 8) -> np.ndarray:
    """Scales of symmetric weights over [-(2^(b-1)-1), 2^(b-1)-1], one per slice along `axis` (None:
    one for the tensor). A channel whose largest |w| is below NEAR_ZERO/2 is widened to it like the
    converter does; an all-zero channel gets scale 1 (any scale represents 0 exactly, and 1 keeps
    its bias, quantized at s_in * s_w, from overflowing int32)."""
    qmax = (1 << (bits - 1)) - 1
    w = np.asarray(w, np.float32)
    if axis is None:
        bound = np.array([np.max(np.abs(w))]) if w.size else np.array([0.0])
    else:
        axes = tuple(i for i in range(w.ndim) if i != axis)
        bound = np.max(np.abs(w), axis=axes) if axes else np.abs(w)
    bound = bound.astype(np.float64)
    return np.where(bound > 0, np.maximum(bound, NEAR_ZERO / 2) / qmax, 1.0).astype(np.float32)
