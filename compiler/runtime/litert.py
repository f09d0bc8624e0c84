"""Run one .tflite with LiteRT, matching inputs and outputs by the main subgraph's tensor names.

Stages have no signature defs, so names come from the input/output tensors themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.errors import InputError, StageError, UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _litert():
    """LiteRT's Interpreter; the older `tflite-runtime` package (same API, no numpy-2 wheels) as a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    return Interpreter, OpResolverType


def litert_reason(e: BaseException) -> str:
    """LiteRT's own words for a failure, on one line (its messages span several lines and repeat)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    seen: list[str] = []
    for ln in lines:
        if ln not in seen:
            seen.append(ln)
    return "; ".join(seen[:3]) or type(e).__name__


def interpreter(model: str | os.PathLike | bytes, num_threads: int | None = None, use_xnnpack: bool = True,
                preserve_all_tensors: bool = False, label: str | None = None):
    """A LiteRT interpreter with tensors allocated. A path is memory-mapped by LiteRT (weights are not copied).

    LiteRT's refusals (not a flatbuffer, an unresolved custom op, XNNPACK setup, allocation) are a StageError
    naming the file."""
    if num_threads is not None and num_threads < 1:
        raise UsageError(f"threads must be a positive integer, got {num_threads}")
    Interpreter, OpResolverType = _litert()
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs: dict[str, Any] = dict(num_threads=num_threads, experimental_op_resolver_type=resolver,
                                  experimental_preserve_all_tensors=preserve_all_tensors)
    try:
        if isinstance(model, (bytes, bytearray, memoryview)):
            interp = Interpreter(model_content=bytes(model), **kwargs)
        else:
            interp = Interpreter(model_path=os.fspath(model), **kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise StageError(f"{label or _label(model)}: LiteRT cannot load it: {litert_reason(e)}") from None
    return interp


def invoke(interp, what: str) -> None:
    """interp.invoke(), with LiteRT's failure as a StageError naming `what`."""
    try:
        interp.invoke()
    except (ValueError, RuntimeError) as e:
        raise StageError(f"{what}: LiteRT failed to run it: {litert_reason(e)}") from None


def set_tensor(interp, index: int, value: np.ndarray, what: str, name: str) -> None:
    """interp.set_tensor(), with LiteRT's refusal (dimension or type mismatch) as a StageError."""
    try:
        interp.set_tensor(index, value)
    except (ValueError, RuntimeError) as e:
        raise StageError(f"{what}: LiteRT refused input {name!r}: {litert_reason(e)}") from None


# The affine arithmetic lives in compiler.affine (numpy only), shared with the quantize pass and verify.
from compiler import affine  # noqa: E402
from compiler.affine import dequantize, quantize  # noqa: E402,F401  (re-exported by compiler.runtime)


def conform_inputs(inputs: Mapping[str, Any], specs: list[tuple[str, tuple, Any, Any]],
                   what: str = "") -> dict[str, np.ndarray]:
    """Inputs checked against `specs` (name, shape, dtype, quantization) and made ready to set.

    The one casting rule of the runtime: a float array for a quantized integer input is quantized
    with that input's scale and zero point; a float array for a float input of another width is cast;
    any other dtype or shape mismatch is an InputError."""
    prefix = f"{what}: " if what else ""
    names = [s[0] for s in specs]
    for name in inputs:
        if name not in names:
            raise InputError(f"{prefix}unknown input {name!r}; the build's inputs are {', '.join(names)}")
    out = {}
    for name, shape, dtype, quant in specs:
        if name not in inputs:
            raise InputError(f"{prefix}missing input {name!r}; the build needs {', '.join(names)}")
        a = np.asarray(inputs[name])
        want = np.dtype(dtype)
        if a.shape != tuple(shape):
            raise InputError(f"{prefix}input {name!r}: shape {tuple(shape)} expected, got {a.shape}")
        if a.dtype != want:
            floats = np.issubdtype(a.dtype, np.floating)
            if floats and np.issubdtype(want, np.integer) and affine.params(quant) is not None:
                a = quantize(a, quant, want)
            elif floats and np.issubdtype(want, np.floating):
                a = a.astype(want)
            else:
                raise InputError(f"{prefix}input {name!r}: dtype {want} expected, got {a.dtype}")
        out[name] = np.ascontiguousarray(a)
    return out


def _set_inputs(interp, inputs: Mapping[str, np.ndarray], what: str) -> None:
    details = interp.get_input_details()
    specs = [(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"], d["quantization_parameters"])
             for d in details]
    ready = conform_inputs(inputs, specs, what)
    for d in details:
        set_tensor(interp, d["index"], ready[d["name"]], what, d["name"])


def _label(model) -> str:
    return "model" if isinstance(model, (bytes, bytearray, memoryview)) else Path(model).name


def run_tflite(model: str | os.PathLike | bytes, inputs: Mapping[str, np.ndarray], num_threads: int | None = None,
               use_xnnpack: bool = True) -> dict[str, np.ndarray]:
    """Run one .tflite (path or bytes). Inputs and outputs are keyed by the main subgraph's tensor names.

    A float array for an int8/int16/uint8 input with a scale is quantized with the tensor's parameters;
    outputs come back as stored (use `dequantize` with the output's quantization for floats)."""
    interp = interpreter(model, num_threads=num_threads, use_xnnpack=use_xnnpack)
    try:
        _set_inputs(interp, inputs, _label(model))
        invoke(interp, _label(model))
        return {d["name"]: np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()}
    finally:
        del interp


def intermediates(model: str | os.PathLike | bytes, inputs: Mapping[str, np.ndarray], num_threads: int | None = None,
                  use_xnnpack: bool = False) -> dict[str, np.ndarray]:
    """Every main-subgraph tensor that holds data after one invoke, keyed by name (copies).

    XNNPACK is off by default: tensors inside a delegated partition are never written, so
    with it on only the partition boundaries would come back."""
    interp = interpreter(model, num_threads=num_threads, use_xnnpack=use_xnnpack, preserve_all_tensors=True)
    try:
        _set_inputs(interp, inputs, _label(model))
        invoke(interp, _label(model))
        out: dict[str, np.ndarray] = {}
        for d in interp.get_tensor_details(0):
            try:
                value = interp.get_tensor(d["index"], 0)
            except ValueError:  # no data (e.g. a tensor inside a delegated partition)
                continue
            if value is None:
                continue
            out.setdefault(d["name"], np.array(value))
        return out
    finally:
        del interp
