"""Per-tensor ranges of the main subgraph's float activations, from LiteRT runs over calibration data.

The float model is written once and run with `experimental_preserve_all_tensors=True` and without the
default delegates (XNNPACK would hide intermediate tensors), one calibration example at a time.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.errors import QuantizationError
from compiler.ir import Model, Tensor, flatbuffer
from compiler.progress import bar

F32 = schema.TensorType.FLOAT32
SAMPLES_PER_RUN = 4096  # values kept per tensor and example for percentile calibration


def match_inputs(model: Model, calibration: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """id(model input tensor) -> its calibration array, by the input's name. A missing name, or an
    array whose per-example shape is not the input's, is one QuantizationError line naming what the
    model expects (no guessing by position: a wrong key is a mistake the user should hear about)."""
    check_names([t.name for t in model.inputs], calibration)
    out = {}
    for t in model.inputs:
        a = np.asarray(calibration[t.name])
        want = tuple(int(d) for d in t.shape[1:])
        if a.ndim != len(t.shape) or tuple(a.shape[1:]) != want:
            raise QuantizationError(f"calibration array {t.name!r} has shape {a.shape}; the model's input takes "
                                    f"(examples, {', '.join(map(str, want))})")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise QuantizationError(f"calibration array {t.name!r} has dtype {a.dtype}; expected numbers")
        out[id(t)] = a
    return out


def check_names(names: list[str], calibration: dict[str, np.ndarray]) -> None:
    """Every model input has a calibration array of its name; else one line naming the expected names.
    Needs only the names, so a compile can check them before the slow conversion."""
    missing = [n for n in names if n not in calibration]
    if missing:
        given = [k for k in calibration if not k.startswith("reference_") and k != "labels"]
        raise QuantizationError(f"calibration data has no array for model input(s) {', '.join(missing)}: "
                                f"it has {', '.join(sorted(given)) or 'none'}; the model's inputs are "
                                f"{', '.join(names)} (name each array after one)")


def collect_ranges(model: Model, calibration: dict[str, np.ndarray], percentile: float = 0.0,
                   max_examples: int | None = None) -> dict[int, tuple[float, float]]:
    """id(tensor) -> (lo, hi) for every float32 non-constant tensor of the main subgraph (inputs included).
    lo/hi are the min/max over all examples, or the (100-p)th/p-th percentiles of the values seen."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = flatbuffer.dumps(model)
    order = flatbuffer.written_order(model.main)  # tensor index in the written file
    index = {id(t): i for i, t in enumerate(order)}
    inputs = match_inputs(model, calibration)
    batch = int(model.inputs[0].shape[0]) if model.inputs and model.inputs[0].shape else 1
    n = min(len(a) for a in inputs.values()) // max(batch, 1)
    if max_examples:
        n = min(n, max_examples)
    if n < 1:
        raise QuantizationError(f"calibration data has fewer examples than the model's batch size {batch}")
    interp = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    watched: list[Tensor] = [t for t in order if t.type == F32 and not t.is_constant and id(t) in index
                             and t.nbytes > 0]
    lo = {id(t): np.inf for t in watched}
    hi = {id(t): -np.inf for t in watched}
    samples: dict[int, list[np.ndarray]] = {id(t): [] for t in watched} if percentile else {}
    rng = np.random.default_rng(0)
    for k in bar(range(n), label="calibrating"):
        for t in model.inputs:
            x = inputs[id(t)][k * batch:(k + 1) * batch]
            interp.set_tensor(index[id(t)], np.ascontiguousarray(x, dtype=t.dtype).reshape(t.shape))
        interp.invoke()
        for t in watched:
            try:
                v = interp.get_tensor(index[id(t)])
            except ValueError:  # a tensor the runtime never allocated (e.g. optimized away)
                continue
            if v.size == 0:
                continue
            lo[id(t)] = min(lo[id(t)], float(v.min()))
            hi[id(t)] = max(hi[id(t)], float(v.max()))
            if percentile:
                flat = v.reshape(-1)
                if flat.size > SAMPLES_PER_RUN:
                    flat = rng.choice(flat, SAMPLES_PER_RUN, replace=False)
                samples[id(t)].append(flat.astype(np.float32))
    del interp
    ranges = {}
    for t in watched:
        if not np.isfinite(lo[id(t)]):
            continue
        a, b = lo[id(t)], hi[id(t)]
        if percentile and samples[id(t)]:
            values = np.concatenate(samples[id(t)])
            a = max(a, float(np.percentile(values, 100.0 - percentile)))
            b = min(b, float(np.percentile(values, percentile)))
        ranges[id(t)] = (a, b)
    return ranges
