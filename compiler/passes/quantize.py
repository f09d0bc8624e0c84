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
    whose output name lists all three), or the name of one of its output tensors. An alternative that
    matches nothing in the model (a typo, a converter scope like `lstm_1_1`) is a PipelineError naming
    the close matches, since it would otherwise keep nothing float without a word."""
    if not pattern:
        return lambda sg, op: False
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise PipelineError(f"quantize: keep-float={pattern!r} is not a valid regular expression ({e})") from None
    names = {id(op): _op_names(model, sg, op) for sg, op in model.operators()}
    _check_alternatives(pattern, names, model.keras_layers)
    cache = {key: any(rx.fullmatch(n) for n in found) for key, found in names.items()}
    return lambda sg, op: cache.get(id(op), False)


def _op_names(model: Model, sg: Subgraph, op: Operator) -> list[str]:
    """What keep-float may name for one op: its Keras layer, the layers fused into it, its outputs."""
    names = [layer_of_op(model, op, sg)] + [t.name for t in op.outputs if t is not None]
    if model.keras_layers:
        names += [layer_of_name(part, model.keras_layers) or ""
                  for t in op.outputs if t is not None for part in t.name.split(";")]
    return [n for n in names if n]


def alternatives(pattern: str) -> list[str]:
    """The top-level `|` alternatives of a regex (a `|` inside (), [] or after a backslash is not one)."""
    out, depth, klass, escaped, cur = [], 0, False, False, []
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif klass:
            klass = ch != "]"
        elif ch == "[":
            klass = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    return out + ["".join(cur)]


def _check_alternatives(pattern: str, names: dict[int, list[str]], keras_layers: list[str]) -> None:
    """Every alternative of `pattern` fully matches some layer or tensor name; else one line naming each
    one that does not, with its close matches."""
    import difflib

    layers = list(dict.fromkeys(keras_layers or (n[0] for n in names.values() if n)))
    known = set(layers) | {n for found in names.values() for n in found}
    unmatched = []
    for alt in alternatives(pattern):
        try:
            rx = re.compile(alt)
        except re.error:
            continue  # only valid as part of the whole pattern: the whole pattern matched above
        if not any(rx.fullmatch(n) for n in known):
            close = difflib.get_close_matches(alt, layers, n=5, cutoff=0.5)
            unmatched.append(f"{alt!r} (close matches: {', '.join(close)})" if close else repr(alt))
    if unmatched:
        some = f"{', '.join(layers[:8])}{' ...' if len(layers) > 8 else ''}"
        raise PipelineError(f"quantize: keep-float={' and '.join(unmatched)} matches no layer or tensor of this "
                            f"model; its layers include {some}")


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
