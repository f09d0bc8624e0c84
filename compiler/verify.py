"""`tflc verify`: accuracy and fidelity of a build folder against the float Keras model.

The build runs in the real staged runtime (`compiler.runtime.StagedModel`) in batches of the build's
batch (a trailing partial batch is padded with copies of its last example, and the padding's outputs
dropped). Each input is fed in the dtype the manifest gives it: integer inputs (token ids) stay
integers; float data for a quantized input is quantized by the runtime. The reference is, first found,
`reference_<output>` arrays in a data .npz, the Keras model of `--data fixtures:NAME`, or the build's
recorded source (fixture, .keras/.h5, SavedModel) after checking its sha256.

Per-layer localization (single-stage builds) compares the build with a float reference build, tensor
by tensor: `--reference DIR` (a single-stage build, e.g. the same pipeline without quantize), or else
the float build of the build's source made with its recorded pipeline steps minus quantize.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import SourceError, TflcError, UsageError
from compiler.files import atomic_write

EPS = 1e-30


# ---------------------------------------------------------------------------------------- metrics

def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """10·log10(Σref² / Σ(ref−out)²); +inf when identical."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, EPS) / noise))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    a, b = np.asarray(ref, np.float64).reshape(-1), np.asarray(out, np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def decisions(y: np.ndarray) -> np.ndarray:
    """Binary (one output unit: >= 0.5) or multi-class (argmax over the last axis)."""
    y = np.asarray(y).reshape(len(y), -1)
    return (y[:, 0] >= 0.5).astype(np.int64) if y.shape[1] == 1 else np.argmax(y, axis=1)


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


# ---------------------------------------------------------------------------------------- data

def _load_data(data: str, manifest: dict, limit: int | None):
    """(inputs by name (N, ...) in the dtypes the build takes, labels or None, references by output name
    or None, the fixture named by `--data fixtures:NAME` or None)."""
    fixture = None
    refs = None
    if data.startswith("fixtures:") or data.startswith("fixture:"):
        import fixtures

        fixture = fixtures.get(data.split(":", 1)[1])
        if fixture.evaluation is not None:
            inputs, labels = fixture.evaluation()
        else:
            inputs, labels = fixture.sample_inputs(n=limit or 200, seed=0), None
    else:
        from compiler.frontend import load_npz

        if not data.endswith(".npz"):
            raise UsageError(f"--data {data!r}: expected fixtures:NAME or a .npz file")
        arrays = load_npz(data)
        labels = arrays.pop("labels", None)
        refs = {k[len("reference_"):]: v for k, v in arrays.items() if k.startswith("reference_")} or None
        inputs = {k: v for k, v in arrays.items() if not k.startswith("reference_")}
    names = [i["name"] for i in manifest.get("inputs", [])]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise UsageError(f"--data {data}: no array for the build's input(s) {', '.join(missing)}; "
                         f"it has {', '.join(sorted(inputs)) or 'none'}")
    n = min(len(inputs[k]) for k in names)
    if limit:
        n = min(n, limit)
    if n < 1:
        raise UsageError(f"--data {data}: no examples (the input arrays are empty)")
    inputs = {t["name"]: _as_input(inputs[t["name"]][:n], t, data) for t in manifest["inputs"]}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 0 or len(labels) < n:
            raise UsageError(f"--data {data}: 'labels' has {labels.size if labels.ndim == 0 else len(labels)} "
                             f"entries for {n} examples")
        labels = labels[:n]
    if refs is not None:
        short = [k for k, v in refs.items() if np.ndim(v) == 0 or len(v) < n]
        if short:
            raise UsageError(f"--data {data}: reference_{short[0]} has fewer entries than the {n} examples")
        refs = {k: np.asarray(v)[:n] for k, v in refs.items()}
    return inputs, labels, refs, fixture


def _as_input(a, spec: dict, data: str) -> np.ndarray:
    """One input array in the dtype the build takes. Float data for a quantized integer input stays
    float (the runtime quantizes it with the input's scale; the float reference needs the floats);
    integer inputs without a scale (token ids, indices) are never cast to float: float data for them
    must hold whole numbers in the dtype's range."""
    from compiler.affine import params

    a = np.asarray(a)
    want = np.dtype(spec["dtype"])
    what = f"--data {data}: input {spec['name']!r}"
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise UsageError(f"{what}: expected numbers ({want}), got dtype {a.dtype}")
    if np.issubdtype(want, np.floating):
        return a.astype(want)
    if np.issubdtype(a.dtype, np.floating):
        if params(spec.get("quantization")) is not None:
            return a.astype(np.float32)
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise UsageError(f"{what}: the build takes {want} (e.g. token ids) and the data holds non-integer "
                             "values; save the array as integers")
    if want != np.bool_ and a.size:
        info = np.iinfo(want)
        if a.min() < info.min or a.max() > info.max:
            raise UsageError(f"{what}: values {a.min()}..{a.max()} do not fit the build's {want}")
    return a.astype(want)


def _float_inputs(manifest: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the float model takes: integer data for a quantized input (io=int8) dequantized with its
    scale; everything else (float data, token ids) as is."""
    from compiler.affine import dequantize, params

    out = dict(inputs)
    for t in manifest["inputs"]:
        a = inputs[t["name"]]
        if np.issubdtype(a.dtype, np.integer) and params(t.get("quantization")) is not None:
            out[t["name"]] = np.asarray(dequantize(a, t["quantization"]), np.float32)
    return out


def _pad(x: np.ndarray, batch: int) -> np.ndarray:
    """`x` with its last example repeated up to `batch` rows (a trailing partial batch)."""
    short = batch - len(x)
    return x if short <= 0 else np.concatenate([x, np.repeat(x[-1:], short, axis=0)])


def _batches(n: int, batch: int):
    """(start, kept rows) of each batch over n examples; the last may be partial (padded, then trimmed)."""
    for start in range(0, n, batch):
        yield start, min(batch, n - start)


# ---------------------------------------------------------------------------------------- reference

def _source_kind(manifest: dict) -> str:
    """How the float reference can be made from the recorded source: fixture | keras | savedmodel |
    tflite | none. A file source that is gone or changed since the build is one SourceError line,
    checked here (no TensorFlow yet), before the build runs."""
    spec = manifest.get("source")
    if not spec or spec.startswith(("fixtures:", "fixture:")):
        return "fixture" if spec or manifest.get("fixture") else "none"
    path = Path(spec)
    if path.suffix == ".tflite":
        return "tflite"
    kind = "savedmodel" if path.suffix not in (".keras", ".h5") else "keras"
    if not path.exists():
        raise SourceError(f"{spec}: the build's source is gone (moved or deleted since it was compiled); give "
                          "reference_<output> arrays in the .npz, or recompile")
    # The path comes from an untrusted manifest: hash only a regular file or a real SavedModel folder
    # (not a device, a FIFO or the whole disk).
    if kind == "keras" and not path.is_file() or kind == "savedmodel" and not (path / "saved_model.pb").is_file():
        raise SourceError(f"{spec}: the build's recorded source is not a {'.keras file' if kind == 'keras' else 'SavedModel folder'}")
    from compiler.frontend import source_digest

    have, want = source_digest(path), manifest.get("source_sha256")
    if want and have != want:
        raise SourceError(f"{spec}: the build's source changed since it was compiled (sha256 {have[:12]}, "
                          f"recorded {want[:12]}): recompile, or give reference_<output> arrays in the .npz")
    return kind


def _no_reference(data: str, kind: str) -> UsageError:
    why = {"tflite": "the build was compiled from a .tflite file (no float model to compare with)",
           "none": "the manifest records no source"}[kind]
    return UsageError(f"no float reference for {data}: {why}; add reference_<output> arrays to the .npz "
                      "or use --data fixtures:NAME")


def _reference(kind: str, fixture, manifest: dict, inputs: dict[str, np.ndarray], imports=(), unsafe=False):
    """(outputs by name, what they came from) of the float model: the --data fixture's Keras model, or
    the build's recorded source (fixture, .keras/.h5, SavedModel)."""
    names = [o["name"] for o in manifest["outputs"]]
    if fixture is not None or kind == "fixture":
        import fixtures

        fx = fixture or fixtures.get(manifest.get("fixture") or manifest["source"].split(":", 1)[1])
        try:
            model = fx.build(batch_size=None)  # any batch: the reference runs in large batches
        except TypeError:
            model = fx.build()
        return _keras_outputs(model, inputs, names), f"Keras model of fixture {fx.name}"
    if kind == "keras":
        from compiler.frontend import reload_keras

        model = reload_keras(manifest, imports, unsafe)
        return _keras_outputs(model, inputs, names), f"Keras model {manifest['source']}"
    return _saved_model_outputs(manifest["source"], inputs, names), f"SavedModel {manifest['source']}"


def _structure(model, which: str):
    """What a Keras model is called with / returns (`model.input`), else its flat list."""
    try:
        return getattr(model, which)
    except (AttributeError, ValueError):
        flat = list(getattr(model, which + "s"))
        return flat[0] if len(flat) == 1 else flat


def _by_name(flat_names: list[str], wanted: list[str], what: str) -> list[int]:
    """Positions of `wanted` in `flat_names`; by position when the names differ but the counts agree."""
    if set(wanted) <= set(flat_names):
        return [flat_names.index(n) for n in wanted]
    if len(wanted) == len(flat_names):
        return list(range(len(wanted)))
    raise UsageError(f"the float model's {what} ({', '.join(flat_names)}) do not match the build's "
                     f"({', '.join(wanted)}): recompile the build from it")


def _keras_outputs(model, inputs: dict[str, np.ndarray], out_names: list[str]) -> dict[str, np.ndarray]:
    """The Keras model on all examples, in batches (its own batch if it has a fixed one, padded at the
    end), fed and read in Keras's flattening order under the build's names."""
    import keras

    from compiler.frontend import io_names

    in_flat, out_flat = io_names(model)
    order = _by_name(in_flat, list(inputs), "inputs")
    arrays = [None] * len(in_flat)
    for pos, name in zip(order, inputs):
        arrays[pos] = inputs[name]
    pick = _by_name(out_flat, out_names, "outputs")
    fixed = model.inputs[0].shape[0] if model.inputs and model.inputs[0].shape else None
    batch = int(fixed) if fixed else 64
    n = len(arrays[0])
    outs: list[list[np.ndarray]] = [[] for _ in out_names]
    struct = _structure(model, "input")
    for start, keep in _batches(n, batch):
        chunk = [_pad(a[start:start + batch], batch) if fixed else a[start:start + batch] for a in arrays]
        y = keras.tree.flatten(model(keras.tree.pack_sequence_as(struct, chunk), training=False))
        for k, pos in enumerate(pick):
            outs[k].append(np.asarray(keras.ops.convert_to_numpy(y[pos]), np.float32)[:keep])
    return {name: np.concatenate(o) for name, o in zip(out_names, outs)}


def _saved_model_outputs(path: str, inputs: dict[str, np.ndarray], out_names: list[str]) -> dict[str, np.ndarray]:
    """The SavedModel's serving_default on all examples (its keyword names are the build's input names)."""
    from compiler.frontend import reason

    import tensorflow as tf

    try:
        fn = tf.saved_model.load(path).signatures["serving_default"]
    except Exception as e:  # noqa: BLE001  (TF raises many kinds for a bad folder)
        raise SourceError(f"{path}: cannot load the SavedModel for the reference ({reason(e)})") from None
    _, kwargs = fn.structured_input_signature
    first = next(iter(kwargs.values()), None)
    fixed = first.shape[0] if first is not None and first.shape.rank else None
    batch = int(fixed) if fixed else 64
    n = len(next(iter(inputs.values())))
    outs: dict[str, list[np.ndarray]] = {o: [] for o in out_names}
    for start, keep in _batches(n, batch):
        feed = {k: tf.constant(_pad(v[start:start + batch], batch) if fixed else v[start:start + batch],
                               dtype=kwargs[k].dtype) for k, v in inputs.items() if k in kwargs}
        y = fn(**feed)
        names = list(y)
        pick = _by_name(names, out_names, "outputs")
        for name, pos in zip(out_names, pick):
            outs[name].append(np.asarray(y[names[pos]].numpy(), np.float32)[:keep])
    return {k: np.concatenate(v) for k, v in outs.items()}


# ---------------------------------------------------------------------------------------- running

def _batch(manifest: dict) -> int:
    """The build's batch: the first input's leading dimension (1 for a scalar input)."""
    shape = manifest["inputs"][0]["shape"] if manifest["inputs"] else []
    return max(int(shape[0]), 1) if shape else 1


def _run_build(build_dir: Path, manifest: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The build on every example, in batches of the build's batch; a trailing partial batch is padded
    with copies of its last example and the padding's outputs are dropped."""
    from compiler.affine import params
    from compiler.progress import bar
    from compiler.runtime import StagedModel, dequantize

    model = StagedModel(build_dir)
    batch = _batch(manifest)
    n = len(next(iter(inputs.values())))
    outs: dict[str, list[np.ndarray]] = {o["name"]: [] for o in manifest["outputs"]}
    for start, keep in bar(list(_batches(n, batch)), label="verifying"):
        y = model({name: _pad(v[start:start + batch], batch) for name, v in inputs.items()})
        for o in manifest["outputs"]:
            v = y[o["name"]]
            if np.issubdtype(v.dtype, np.integer) and params(o.get("quantization")) is not None:
                v = dequantize(v, o["quantization"])
            outs[o["name"]].append(np.asarray(v, np.float32)[:keep])
    return {k: np.concatenate(v) for k, v in outs.items()}


def float_steps(pipeline_text: str) -> list:
    """The build's recorded steps minus quantize (and partition: localization needs one stage), through
    the public pipeline API."""
    from compiler import pipeline

    return [s for s in pipeline.parse(pipeline_text or "") if s.name not in ("quantize", "partition")]


def _recorded(build: Path) -> dict:
    """How the build was made, from its report.json (front-end, batch); {} when absent or unreadable."""
    from compiler.files import read_member

    try:
        report = json.loads(read_member(build, "report.json", 64 << 20))
    except (TflcError, ValueError, RecursionError):  # the folder is untrusted: JSON nested too deep
        return {}
    return report if isinstance(report, dict) else {}


def _float_build(build: Path, manifest: dict, imports=(), unsafe: bool = False) -> tuple[bytes, set[str]]:
    """The float build of the manifest's source, lowered as the build was (same front-end and batch,
    so tensor names match) with its steps minus quantize; and the Keras layer names. A source changed
    since the build is refused (its tensors would not be the build's)."""
    from compiler import pipeline
    from compiler.frontend import load_source
    from compiler.ir import flatbuffer
    from compiler.passes import PassContext

    made = _recorded(build)
    batch = made.get("batch") if isinstance(made.get("batch"), int) else None
    frontend = made.get("frontend") if made.get("frontend") in ("native", "converter") else "converter"
    _source_kind(manifest)
    src = load_source(manifest["source"], batch=batch, frontend=frontend, imports=imports, unsafe=unsafe)
    if manifest.get("source_sha256") and src.sha256 and src.sha256 != manifest["source_sha256"]:
        raise SourceError(f"{manifest['source']}: the build's source changed since it was compiled: recompile")
    ref = pipeline.run(src.model, float_steps(manifest.get("pipeline") or ""), PassContext(source=src))
    return flatbuffer.dumps(ref), set(src.model.keras_layers or ref.keras_layers or ())


def _check_reference(reference: Path) -> None:
    from compiler.manifest import read_manifest

    if len(read_manifest(reference)["stages"]) != 1:
        raise UsageError(f"--reference {reference}: a reference build must have one stage (compile it without "
                         "partition)")


def _single_stage(build: Path, manifest: dict) -> bytes | None:
    from compiler.files import read_member

    if len(manifest["stages"]) != 1:
        return None
    return read_member(build, manifest["stages"][0]["file"], 1 << 36)


def _layer(name: str, layers: set[str]) -> str | None:
    """The Keras layer a tensor belongs to; without layer names, its first name scope."""
    from compiler.ir.layers import layer_of_name

    if layers:
        return layer_of_name(name, layers)
    parts = [p for p in name.split(";")[0].split("/") if p]
    return (parts[1] if len(parts) > 2 else parts[0]) if parts else None


def localize(build_dir: Path, manifest: dict, inputs: dict[str, np.ndarray], examples: int = 8,
             reference: str | os.PathLike | None = None, imports=(), unsafe: bool = False) -> list[dict]:
    """SNR of every compiled main-subgraph tensor that maps to a layer, against the same tensor of a
    float reference, worst first. The reference is a single-stage build folder (`reference`) or else
    the float build of the build's source and recorded steps minus quantize. Empty for multi-stage builds.

    We compare against a float *build* rather than Keras layer outputs because TFLite fuses layers
    (conv+batchnorm+relu are one tensor), so only a float build has a tensor for every compiled
    tensor, with the same name (quantize-made copies carry a suffix from `quant.names`)."""
    from compiler.ir import flatbuffer
    from compiler.manifest import read_manifest
    from compiler.quant import names

    compiled = _single_stage(build_dir, manifest)
    if compiled is None:
        return []
    if reference is not None:
        _check_reference(Path(reference))
        ref_bytes = _single_stage(Path(reference), read_manifest(Path(reference)))
        layers: set[str] = set()
    elif manifest.get("source"):
        ref_bytes, layers = _float_build(build_dir, manifest, imports, unsafe)
    else:
        return []
    cmodel = flatbuffer.loads(compiled)
    # Tensors nothing reads (e.g. pass-through outputs of WHILE loops) hold stale arena data: skip them.
    consumed = cmodel.main.consumers()
    live = {names.original(t.name) for t in cmodel.main.referenced_tensors()
            if id(t) in consumed or any(t is o for o in cmodel.main.outputs)}
    quant = {t.name: t.quantization for t in cmodel.main.tensors}
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    batch = _batch(manifest)
    for start, _ in _batches(min(examples, len(next(iter(inputs.values())))), batch):
        x = {n: _pad(v[start:start + batch], batch) for n, v in inputs.items()}
        a = _float_tensors(ref_bytes, _float_inputs(manifest, x), {})
        b = _float_tensors(compiled, x, quant)
        for name, v in b.items():
            r = a.get(name)
            if name not in live or r is None or r.shape != v.shape or r.size < 2:
                continue
            signal[name] = signal.get(name, 0.0) + float(np.sum(r ** 2))
            noise[name] = noise.get(name, 0.0) + float(np.sum((r - v) ** 2))
    rows = []
    for name in signal:
        layer = _layer(name, layers)
        if layer is None:
            continue
        snr = float("inf") if noise[name] == 0 else 10 * np.log10(max(signal[name], EPS) / noise[name])
        rows.append({"layer": layer, "tensor": name, "snr_db": _finite(snr)})
    rows.sort(key=lambda r: (r["snr_db"] is None, r["snr_db"] if r["snr_db"] is not None else 0))
    return rows


def _float_tensors(model: bytes, x: dict, quant: dict) -> dict[str, np.ndarray]:
    """Every float or (dequantized, per-tensor) integer tensor of the main subgraph after one run
    (`runtime.intermediates`), as float64, keyed by the name of the float tensor it stands for."""
    from compiler.affine import dequantize
    from compiler.quant import names
    from compiler.runtime import intermediates

    out = {}
    for name, v in intermediates(model, x).items():
        q = quant.get(name)
        if v.dtype in (np.int8, np.int16, np.uint8) and q is not None and q.scale is not None and len(q.scale) == 1:
            v = dequantize(v, q)
        elif v.dtype != np.float32:
            continue
        out.setdefault(names.original(name), np.asarray(v, np.float64))
    return out


# ---------------------------------------------------------------------------------------- verify

def verify(build_dir: str | os.PathLike, data: str, *, max_drop: float | None = None,
           min_agreement: float | None = None, min_snr: float | None = None, limit: int | None = None,
           layers: bool = True, reference: str | os.PathLike | None = None, label_output: str | None = None,
           imports: list[str] | tuple[str, ...] = (), unsafe: bool = False) -> dict[str, Any]:
    """Run the build over `data` and compare with the float reference; writes DIR/verify.json.
    Returns the report; report["breaches"] lists the budgets breached (one line each).

    The reference is, first found: `reference_<output>` arrays in a data .npz; the Keras model of the
    `--data fixtures:NAME` fixture; the build's recorded source (its fixture, .keras/.h5 file or
    SavedModel folder, refused if changed since the build). Labels and decision agreement score the
    output `label_output` (default: the build's first output)."""
    from compiler.manifest import read_manifest

    start = time.perf_counter()
    build = Path(build_dir)
    manifest = read_manifest(build)
    if reference is not None and layers:
        _check_reference(Path(reference))
    out_names = [o["name"] for o in manifest["outputs"]]
    scored = label_output or out_names[0]
    if scored not in out_names:
        raise UsageError(f"--label-output {scored!r}: the build's outputs are {', '.join(out_names)}")
    inputs, labels, refs, fixture = _load_data(data, manifest, limit)
    kind = None
    if refs is not None:
        missing = [n for n in out_names if n not in refs]
        if missing:
            raise UsageError(f"no reference for output(s) {', '.join(missing)}; the data has "
                             f"{', '.join(sorted(refs)) or 'none'}")
    elif fixture is None:
        kind = _source_kind(manifest)  # a changed source fails here, before the build runs
        if kind in ("tflite", "none"):
            raise _no_reference(data, kind)
    # The build runs before TensorFlow is used: in a process where TF has run, LiteRT's WHILE loops
    # run many times slower (measured ~20x on contect-small), so the Keras reference comes second.
    compiled = _run_build(build, manifest, inputs)
    ref_label = "npz references"
    if refs is None:
        refs, ref_label = _reference(kind, fixture, manifest, _float_inputs(manifest, inputs), imports, unsafe)
    n = len(next(iter(compiled.values())))
    report: dict[str, Any] = {"build": str(build), "data": data, "examples": n,
                              "quantization": manifest.get("quantization"), "reference": ref_label,
                              "label_output": scored, "outputs": {}}
    for name in out_names:
        r, c = refs[name][:n].reshape(n, -1), compiled[name].reshape(n, -1)
        report["outputs"][name] = {"snr_db": _finite(snr_db(r, c)), "max_abs_error": float(np.max(np.abs(r - c))),
                                   "cosine": round(cosine(r, c), 6)}
    ref_dec, out_dec = decisions(refs[scored][:n]), decisions(compiled[scored])
    report["agreement"] = round(float(np.mean(ref_dec == out_dec)), 6)
    if labels is not None:
        lab = np.asarray(labels).reshape(n, -1)
        lab = lab[:, 0].astype(np.int64) if lab.shape[1] == 1 else np.argmax(lab, axis=1)
        report["float_accuracy"] = round(float(np.mean(ref_dec == lab)) * 100, 4)
        report["compiled_accuracy"] = round(float(np.mean(out_dec == lab)) * 100, 4)
        report["accuracy_drop_pp"] = round(report["float_accuracy"] - report["compiled_accuracy"], 4)
    if layers:
        try:
            report["layers"] = localize(build, manifest, inputs, reference=reference, imports=imports,
                                        unsafe=unsafe)
        except TflcError as e:
            report["layers"] = []
            report["layers_skipped"] = str(e).splitlines()[0]
    breaches = []
    if max_drop is not None:
        if "accuracy_drop_pp" not in report:
            raise UsageError("--max-drop needs labels: use a fixture with an evaluation split or a .npz with 'labels'")
        if report["accuracy_drop_pp"] > max_drop:
            breaches.append(f"accuracy drop {report['accuracy_drop_pp']:.2f} pp > --max-drop {max_drop:g} pp")
    if min_agreement is not None and report["agreement"] < min_agreement:
        breaches.append(f"decision agreement {report['agreement']:.4f} < --min-agreement {min_agreement:g}")
    if min_snr is not None:
        for name, o in report["outputs"].items():
            if o["snr_db"] is not None and o["snr_db"] < min_snr:
                breaches.append(f"output {name} SNR {o['snr_db']:.1f} dB < --min-snr {min_snr:g} dB")
    report["budgets"] = {"max_drop": max_drop, "min_agreement": min_agreement, "min_snr": min_snr}
    report["breaches"] = breaches
    report["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write(build / "verify.json", lambda f: f.write(json.dumps(report, indent=1).encode()))
    return report


def format_table(report: dict) -> str:
    lines = [f"verify {report['build']} on {report['data']} ({report['examples']} examples, "
             f"quantization {report.get('quantization')}, reference: {report['reference']})"]
    if "accuracy_drop_pp" in report:
        if len(report["outputs"]) > 1:
            lines.append(f"  labels and agreement score output {report['label_output']}")
        lines.append(f"  accuracy   float {report['float_accuracy']:.2f}%   compiled {report['compiled_accuracy']:.2f}%"
                     f"   drop {report['accuracy_drop_pp']:+.2f} pp")
    lines.append(f"  agreement  {report['agreement'] * 100:.2f}% of decisions")
    lines.append(f"  {'output':<24} {'SNR dB':>8} {'max |err|':>11} {'cosine':>9}")
    for name, o in report["outputs"].items():
        snr = "inf" if o["snr_db"] is None else f"{o['snr_db']:.1f}"
        lines.append(f"  {name:<24} {snr:>8} {o['max_abs_error']:>11.4g} {o['cosine']:>9.6f}")
    rows = report.get("layers") or []
    if rows:
        lines.append(f"  worst layers (SNR of compiled tensors vs the float build, {len(rows)} tensors):")
        for r in rows[:10]:
            snr = "inf" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
            lines.append(f"    {snr:>7} dB  {r['layer']:<32} {r['tensor'][:70]}")
    elif report.get("layers_skipped"):
        lines.append(f"  per-layer localization skipped: {report['layers_skipped']}")
    for b in report["breaches"]:
        lines.append(f"  BUDGET BREACHED: {b}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", metavar="DIR", help="build folder written by tflc compile")
    parser.add_argument("--data", required=True, metavar="fixtures:NAME|data.npz",
                        help="evaluation data: a fixture (its evaluation split, reference = its Keras model) or a "
                             ".npz with one array per input, optional 'labels' and 'reference_<output>' arrays "
                             "(without them the reference is the build's recorded source model)")
    parser.add_argument("--max-drop", type=float, default=None, metavar="PP",
                        help="fail (exit 1) if accuracy drops by more than PP percentage points")
    parser.add_argument("--min-agreement", type=float, default=None, metavar="F",
                        help="fail if fewer than this fraction of decisions agree with the float model")
    parser.add_argument("--min-snr", type=float, default=None, metavar="DB", help="fail if an output's SNR is below DB")
    parser.add_argument("--label-output", metavar="NAME", default=None,
                        help="the output that 'labels' and decision agreement score (default: the build's first "
                             "output, in manifest order)")
    from compiler.commands import add_user_code_arguments

    add_user_code_arguments(parser, "reloading the source Keras model")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N examples")
    parser.add_argument("--no-layers", action="store_true", help="skip per-layer localization")
    parser.add_argument("--reference", metavar="DIR", default=None,
                        help="single-stage float build to compare tensor by tensor (default: the float build "
                             "of the build's source, made with its pipeline minus quantize)")


def run(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive integer, got {args.limit}")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise UsageError(f"--min-agreement is a fraction in [0, 1], got {args.min_agreement}")
    report = verify(args.build, args.data, max_drop=args.max_drop, min_agreement=args.min_agreement,
                    min_snr=args.min_snr, limit=args.limit, layers=not args.no_layers,
                    reference=args.reference, label_output=args.label_output, imports=args.imports,
                    unsafe=args.unsafe_deserialization)
    print(format_table(report))
    print(f"wrote {Path(args.build) / 'verify.json'}")
    for b in report["breaches"]:
        print(f"tflc: budget breached: {b}", file=sys.stderr)
    return 1 if report["breaches"] else 0
