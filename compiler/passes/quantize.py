"""Quantize weights (float16, int8-dynamic) or weights and activations (int8, int16x8) on tflc's IR."""

from __future__ import annotations

import re
import sys

from compiler.errors import PipelineError, QuantizationError
from compiler.ir import Model, Operator, Subgraph
from compiler.ir.layers import layer_of_name, layer_of_op
from compiler.passes import PassContext, register

MODES = ("float16", "int8-dynamic", "int8", "int16x8")
IO = ("float", "int8", "int16")


def keep_float_matcher(model: Model, pattern: str | None):
    """(subgraph, op) -> True if the op must stay float: `pattern` (alternatives separated by `|`)
    fully matches the op's Keras layer, any Keras layer fused into it (conv+batchnorm+relu is one op
    whose output name lists all three), or the name of one of its output tensors."""
    if not pattern:
        return lambda sg, op: False
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise PipelineError(f"quantize: keep-float={pattern!r} is not a valid regular expression ({e})") from None
    cache: dict[int, bool] = {}

    def keep(sg: Subgraph, op: Operator) -> bool:
        if id(op) not in cache:
            names = [layer_of_op(model, op, sg)] + [t.name for t in op.outputs if t is not None]
            if model.keras_layers:
                names += [layer_of_name(part, model.keras_layers) or ""
                          for t in op.outputs if t is not None for part in t.name.split(";")]
            cache[id(op)] = any(rx.fullmatch(n) for n in names)
        return cache[id(op)]

    return keep


def _left_as_is(mode: str, found: dict) -> str | None:
    """One line about weights the mode did not change (they were float16 already), or None."""
    if mode == "float16" and found.get("already_float16") and not any(k.endswith(":float16") for k in found["ops"]):
        return (f"float16: the model's {found['already_float16']} weights are float16 already; "
                "nothing to do (weights unchanged)")
    if mode != "float16" and found.get("float16_left"):
        return (f"{mode}: {found['float16_left']} float16 weight(s) left as float16 (read by ops without an int8 "
                "kernel, smaller than min-elements, or kept float)")
    return None


@register("quantize")
def quantize(model: Model, *, ctx: PassContext, mode: str = "int8-dynamic", io: str = "float",
             keep_float: str | None = None, percentile: float = 0.0, per_channel: bool = True,
             min_elements: int = 1024) -> Model:
    """Quantize the model: float16 | int8-dynamic | int8 | int16x8 (see compiler/quant/).

    min-elements: in int8-dynamic (and for the float fallback ops of int8/int16x8), weights with fewer
    elements stay float, as the converter does (1024). 0 quantizes every weight: 6% smaller weights on
    contect-small, but the hybrid stem conv (1 input channel, raw spectrogram input) costs 9 dB output SNR.
    """
    from compiler.quant import precision, weights_only

    if mode not in MODES:
        raise PipelineError(f"quantize: unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    if io not in IO:
        raise PipelineError(f"quantize: unknown io {io!r}; valid values: {', '.join(IO)}")
    if not 0.0 <= percentile <= 100.0:
        raise PipelineError(f"quantize: percentile must be in [0, 100] (0 = min/max), got {percentile}")
    keep = keep_float_matcher(model, keep_float if isinstance(keep_float, str) else None)
    before = model.weight_bytes()
    if mode == "float16":
        found = weights_only.float16(model, keep)
    elif mode == "int8-dynamic":
        found = weights_only.hybrid_int8(model, keep, per_channel=per_channel, min_elements=min_elements)
    else:
        from compiler.quant import static

        calibration = getattr(ctx.source, "calibration", None) if ctx is not None else None
        if not calibration:
            raise QuantizationError(f"{mode} needs calibration data: use a fixture that has a calibration split "
                                    "or pass --calibration data.npz")
        found = static.quantize_static(model, keep, calibration, bits=16 if mode == "int16x8" else 8, io=io,
                                       percentile=percentile, per_channel=per_channel, min_elements=min_elements)
    after = model.weight_bytes()
    left = _left_as_is(mode, found)
    if left:
        print(f"tflc: quantize: {left}", file=sys.stderr)
    if ctx is not None:
        ctx.note("quantize", "left_as_is", left)
        ctx.note("quantize", "mode", mode)
        ctx.note("quantize", "weight_bytes_before", before)
        ctx.note("quantize", "weight_bytes_after", after)
        ctx.note("quantize", "weight_ratio", round(after / before, 4) if before else None)
        for key, value in found.items():
            ctx.note("quantize", key, value)
        ctx.note("quantize", "float_ops", found.get("float_ops", []))
        ctx.note("quantize", "precision", precision(model))
    return model
