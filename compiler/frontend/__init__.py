"""Front-end: a model source (fixture, .keras file, SavedModel folder, .tflite file) → tflc IR.

Keras models are lowered through `tf.lite.TFLiteConverter` (the reference path). Keras 3 LSTMs only
convert with a fixed batch size, so the model is exported through a Keras `ExportArchive` whose
input signature fixes the batch (to the model's own batch if it has one, else `--batch N`, else 1).

Inputs and outputs of any structure Keras allows (a tensor, lists, dicts, nested) are flattened with
Keras's own `keras.tree.flatten` of `model.input` / `model.output` (dicts by sorted key, lists in order),
which is the order of `model.inputs` / `model.outputs`. A leaf under a dict is named by its key path
(`"audio"`, or `"audio.0"` inside a list under that key); other inputs keep their `keras.Input` name and
other outputs Keras's output name.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler import quiet
from compiler.errors import ConversionError, SourceError, UsageError
from compiler.files import export_tempdir, read_npz, sha256_file
from compiler.ir import Model
from compiler.ir import flatbuffer
from compiler.ir.layers import layer_of_name
from compiler.progress import spinner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass
class Source:
    """A model to compile and what comes with it (fixture data, the Keras model for reference)."""

    spec: str
    kind: str  # "fixture" | "keras" | "savedmodel" | "tflite"
    model: Model
    fixture: Any = None
    calibration: dict[str, np.ndarray] | None = None
    sample_inputs: dict[str, np.ndarray] | None = None
    batch: int = 1
    convert_seconds: float = 0.0
    frontend: str = "converter"  # how a Keras model was lowered: "native" or "converter"
    path: str | None = None  # absolute path of a file or folder source (None for fixtures)
    sha256: str | None = None  # of that file, or of a SavedModel folder's files (source_digest)
    _keras_loader: Callable[[], Any] | None = field(default=None, repr=False)
    _keras: Any = field(default=None, repr=False)

    def keras_model(self):
        """The Keras model this source came from (None for a .tflite source). Built lazily."""
        if self._keras is None and self._keras_loader is not None:
            self._keras = self._keras_loader()
        return self._keras


def _tf():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def _structure(keras_model, which: str):
    """`model.input` or `model.output` (the structure the model is called with / returns); a model that
    has none (a Sequential never called) falls back to `model.inputs` / `model.outputs`."""
    flat = list(getattr(keras_model, which + "s"))
    try:
        struct = getattr(keras_model, which)
    except (AttributeError, ValueError):
        return flat[0] if len(flat) == 1 else flat
    return struct


def _leaf_names(struct, fallback: list[str]) -> list[str]:
    """One name per leaf of `struct` in Keras's flattening order: the key path for leaves under a dict,
    else the fallback name at that position; made unique and safe as signature keys."""
    import keras

    names = []
    for i, (path, _) in enumerate(keras.tree.flatten_with_path(struct)):
        first_key = next((j for j, k in enumerate(path) if isinstance(k, str)), None)
        if first_key is not None:
            names.append(".".join(str(k) for k in path[first_key:]))
        else:
            names.append(fallback[i] if i < len(fallback) else f"output_{i}")
    return _unique_safe(names)


def _unique_safe(names: list[str]) -> list[str]:
    # TF op names (which signature keys become) allow [A-Za-z0-9_.-] and cannot start with _ or -.
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = re.sub(r"[^A-Za-z0-9_.-]", "_", n) or "t"
        if not re.match(r"[A-Za-z0-9.]", n):
            n = "t" + n
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


def _fixed_specs(keras_model, batch: int | None):
    """TensorSpecs for the model's flattened inputs with the batch dimension fixed, named like _leaf_names."""
    import keras

    tf = _tf()
    specs = []
    flat = keras.tree.flatten(_structure(keras_model, "input"))  # the order serve() packs them back in
    names = io_names(keras_model)[0]
    for inp, name in zip(flat, names):
        shape = list(inp.shape)
        if shape and shape[0] is None:
            shape[0] = batch or 1
        elif batch is not None and shape and shape[0] != batch:
            raise UsageError(f"model input {inp.name!r} has a fixed batch of {shape[0]}; --batch {batch} cannot change it")
        if any(d is None for d in shape[1:]):
            raise ConversionError(f"model input {inp.name!r} has an unknown non-batch dimension {shape}; "
                                  "TFLite needs static shapes: give the Input a full shape")
        specs.append(tf.TensorSpec(shape, inp.dtype, name=name))
    return specs


def io_names(keras_model) -> tuple[list[str], list[str]]:
    """The build's input and output names, in Keras's flattening order of `model.input` / `model.output`
    (see the module docstring); every front-end names a Keras model's I/O this way."""
    import keras

    flat = keras.tree.flatten(_structure(keras_model, "input"))
    return _leaf_names(_structure(keras_model, "input"), [_input_name(t) for t in flat]), _output_names(keras_model)


def _input_name(inp) -> str:
    name = getattr(inp, "name", None) or "input"
    return name.split(":")[0]


def _output_names(keras_model) -> list[str]:
    names = list(getattr(keras_model, "output_names", None) or [])
    if len(names) != len(keras_model.outputs):  # a Sequential has no output_names: its layers' names
        names = [_producer_name(t) or f"output_{i}" for i, t in enumerate(keras_model.outputs)]
    return _leaf_names(_structure(keras_model, "output"), names)


def _producer_name(tensor) -> str | None:
    """The name of the Keras layer that made a symbolic tensor (Keras 3 records it in _keras_history)."""
    return getattr(getattr(getattr(tensor, "_keras_history", None), "operation", None), "name", None)


def keras_layer_names(keras_model) -> list[str]:
    """Names of every layer, including those of nested models."""
    names: list[str] = []

    def walk(layer):
        names.append(layer.name)
        for sub in getattr(layer, "layers", []) or []:
            walk(sub)

    for layer in keras_model.layers:
        walk(layer)
    return names


def _export(keras_model, batch: int | None, directory: str) -> tuple[list[str], list[str]]:
    """Write a SavedModel whose `serving_default` takes fixed-batch inputs and returns named outputs."""
    import keras

    tf = _tf()
    specs = _fixed_specs(keras_model, batch)
    in_names = [s.name for s in specs]
    out_names = _output_names(keras_model)
    in_struct = _structure(keras_model, "input")

    @tf.autograph.experimental.do_not_convert
    def serve(*xs):
        outs = keras.tree.flatten(keras_model(keras.tree.pack_sequence_as(in_struct, list(xs)), training=False))
        if len(outs) != len(out_names):
            raise ConversionError(f"the Keras model returned {len(outs)} tensors where its outputs "
                                  f"declare {len(out_names)}")
        return dict(zip(out_names, outs))

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint("serving_default", tf.function(serve, input_signature=specs, autograph=False))
    archive.write_out(directory, verbose=False)
    return in_names, out_names


def _run_converter(directory: str, flags: dict, layers: list[str], label: str | None = None,
                   saved_model: Path | None = None) -> bytes:
    """tf.lite.TFLiteConverter on a SavedModel folder; failures become one ConversionError line."""
    tf = _tf()
    with spinner(label) if label else contextlib.nullcontext():
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        _apply_flags(converter, flags)
        try:
            with quiet.muted():  # its MLIR dump on stderr says what the exception says
                return converter.convert()
        except Exception as e:
            raise ConversionError(_explain_conversion_error(e, layers, saved_model)) from None


def _lower(keras_model, batch: int | None, flags: dict, label: str | None = None):
    """Export with a fixed batch, then convert: (flatbuffer bytes, input names, output names, layer names).
    With a label, each step shows a spinner on stderr."""
    layers = keras_layer_names(keras_model)
    with export_tempdir() as d:
        with spinner(f"exporting {label}") if label else contextlib.nullcontext():
            try:
                in_names, out_names = _export(keras_model, batch, d)
            except (UsageError, ConversionError):
                raise
            except Exception as e:
                raise ConversionError(f"cannot export the Keras model for conversion: {reason(e)}") from None
        data = _run_converter(d, flags, layers, f"converting {label} with the TFLite converter" if label else None)
    return data, in_names, out_names, layers


def convert_keras(keras_model, batch: int | None = None, **flags) -> bytes:
    """Lower a Keras model with tf.lite.TFLiteConverter; `flags` set converter attributes:
    optimizations, representative_dataset, target_spec_supported_types, supported_ops,
    inference_input_type, inference_output_type, or any plain converter attribute."""
    return _lower(keras_model, batch, flags)[0]


def _apply_flags(converter, flags: dict) -> None:
    for key, value in flags.items():
        if key == "target_spec_supported_types":
            converter.target_spec.supported_types = value
        elif key == "supported_ops":
            converter.target_spec.supported_ops = value
        else:
            setattr(converter, key, value)


_FRAME = re.compile(r'^\s*File "')
_RAISED = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)): ")


def reason(e: BaseException, limit: int = 2000) -> str:
    """The library's own words for a failure, on one line.

    TF wraps errors raised while tracing as "in user code: File ... <code> ... ValueError: the reason";
    the reason is what follows the last "SomeError:" line. Other messages keep all their lines, joined.
    Only a message longer than `limit` is shortened, at a word boundary."""
    lines = [ln.rstrip() for ln in str(e).splitlines()]
    start = max((i for i, ln in enumerate(lines) if _RAISED.match(ln)), default=None)
    if start is not None and any(_FRAME.match(ln) or ln.strip() == "in user code:" for ln in lines[:start]):
        lines = lines[start:]
        lines[0] = _RAISED.sub("", lines[0], count=1)
    else:
        lines = [ln for ln in lines if ln.strip() != "in user code:" and not _FRAME.match(ln)]
    text = " ".join(ln.strip() for ln in lines if ln.strip()) or type(e).__name__
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def _explain_conversion_error(e: Exception, layers: list[str], saved_model: Path | None = None) -> str:
    """Turn a converter failure into one line naming the TF op and the Keras layer it came from."""
    text = str(e)
    if saved_model is not None and "TensorList" in text:
        # The loops were traced with an unknown batch when the SavedModel was written; fixing the
        # batch afterwards cannot retrace them.
        return (f"cannot convert {saved_model}: its LSTM/RNN loops were saved with an unknown batch size; "
                "re-export it with keras.Input(..., batch_size=1), or compile the .keras file instead")
    ops = re.findall(r"'(tf\.[A-Za-z0-9_]+)'", text) or re.findall(r"\b(tf\.[A-Za-z0-9_]+)\b", text)
    locs = re.findall(r'loc\((?:fused\[)?"([^"]+)"', text) + re.findall(r'"([^"]*/[^"]*)"', text)
    layer = None
    for loc in locs:
        layer = layer_of_name(loc, layers)
        if layer:
            break
    op = ops[0] if ops else "an operation"
    hint = ""
    if "TensorList" in text:
        hint = "; LSTM/RNN layers need a fixed batch size: compile with --batch 1"
    elif "Flex" in text or "select" in text.lower():
        hint = "; this op needs TF Select (Flex) ops, which the builtins op set lacks: replace the layer"
    where = f" in Keras layer {layer!r}" if layer else ""
    return f"cannot convert {op}{where} to TFLite builtins{hint} (converter: {_converter_reason(e)})"


def _converter_reason(e: Exception) -> str:
    """The converter's own diagnosis: its first MLIR `error:` (past the location), else its first line."""
    for line in str(e).splitlines():
        m = re.search(r"\berror: (.+)", line)
        if m and not m.group(1).startswith("failed while converting"):
            return re.sub(r"^loc\(.*?\)+: ", "", m.group(1)).strip()
    return reason(e, limit=300)


def _rename_io(model: Model, in_names: list[str], out_names: list[str]) -> None:
    """Give the main subgraph's inputs/outputs the Keras names, via the serving signature."""
    sig = next((s for s in model.signature_defs if s.subgraph is model.main), None)
    if sig is None:
        return
    for name, tensor in sig.inputs:
        tensor.name = name
    for name, tensor in sig.outputs:
        tensor.name = name
    # Order the main subgraph's inputs and outputs like the Keras model's.
    by_name = {t.name: t for t in model.main.inputs}
    if sorted(by_name) == sorted(in_names):
        model.main.inputs = [by_name[n] for n in in_names]
    by_name = {t.name: t for t in model.main.outputs}
    if sorted(by_name) == sorted(out_names):
        model.main.outputs = [by_name[n] for n in out_names]


def _batch_of(model: Model) -> int:
    """The batch the lowered model runs with: the first input's leading dimension (1 for scalars)."""
    return int(model.inputs[0].shape[0]) if model.inputs and model.inputs[0].shape else 1


def from_keras(keras_model, batch: int | None = None, spec: str = "<keras model>",
               frontend: str = "converter", lstm: str = "fused") -> Source:
    import time

    start = time.perf_counter()
    if frontend != "converter":
        from compiler.frontend import native

        if native.choose(keras_model, frontend):
            model = native.lower(keras_model, batch, lstm=lstm)
            return Source(spec=spec, kind="keras", model=model, batch=_batch_of(model), _keras=keras_model,
                          frontend="native", convert_seconds=time.perf_counter() - start)
    data, in_names, out_names, layers = _lower(keras_model, batch, {}, label=spec)
    model = flatbuffer.loads(data, origin=spec)
    model.keras_layers = layers
    _rename_io(model, in_names, out_names)
    src = Source(spec=spec, kind="keras", model=model, batch=_batch_of(model), _keras=keras_model)
    src.convert_seconds = time.perf_counter() - start
    return src


def load_npz(path: str) -> dict[str, np.ndarray]:
    return read_npz(path, SourceError)


CALIBRATED_MODES = ("int8", "int16x8")


def check_calibration(spec: str, steps: list, calibration: str | None) -> dict[str, np.ndarray] | None:
    """Before any conversion: read `--calibration` (a missing or bad file is one line), and refuse a
    pipeline whose quantize mode needs calibration data when neither the file nor the fixture has any.
    Returns the arrays read, or None."""
    data = load_npz(calibration) if calibration is not None else None
    modes = [s.options.get("mode") for s in steps if s.name == "quantize"]
    mode = next((m for m in modes if m in CALIBRATED_MODES), None)
    if mode is None or data is not None:
        return data
    if spec.startswith(("fixtures:", "fixture:")):
        import fixtures

        if fixtures.get(spec.split(":", 1)[1]).calibration is not None:
            return None
    # The quantize pass says the same words when it finds no data; here nothing slow has run yet.
    from compiler.errors import QuantizationError

    raise QuantizationError(f"{mode} needs calibration data: use a fixture that has a calibration split "
                            "or pass --calibration data.npz")


def load_source(spec: str, batch: int | None = None, calibration: str | dict | None = None,
                imports: list[str] | tuple[str, ...] = (), unsafe: bool = False,
                frontend: str = "converter", lstm: str = "fused") -> Source:
    """Resolve a model source: `fixtures:NAME`, a `.keras` file, a SavedModel folder or a `.tflite` file.

    `calibration` is an .npz path or the arrays already read (check_calibration). `imports` are modules
    or .py files to import first (the user's registered Keras classes); `unsafe` lets Keras run the
    Python code stored in Lambda layers (safe_mode=False)."""
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch}")
    calib = load_npz(calibration) if isinstance(calibration, (str, os.PathLike)) else calibration
    import_user_code(imports)
    if spec.startswith("fixtures:") or spec.startswith("fixture:"):
        import fixtures

        fx = fixtures.get(spec.split(":", 1)[1])
        keras_model = _build_fixture(fx, batch)
        _check_calibration_names(keras_model, calib)
        src = from_keras(keras_model, batch=batch, spec=spec, frontend=frontend, lstm=lstm)
        src.kind = "fixture"
        src.fixture = fx
        src.calibration = fx.calibration() if fx.calibration is not None else None
        src.sample_inputs = fx.sample_inputs(n=src.batch, seed=0)
    else:
        path = _source_path(spec)
        digest = source_digest(path)
        if path.is_dir():
            src = _from_saved_model(path, batch)
        elif path.suffix == ".tflite":
            model = flatbuffer.load(path)
            src = Source(spec=spec, kind="tflite", model=model, batch=_batch_of(model))
        else:
            keras_model = _load_keras_file(path, unsafe, imports)
            _check_calibration_names(keras_model, calib)
            src = from_keras(keras_model, batch=batch, spec=spec, frontend=frontend, lstm=lstm)
        src.path, src.sha256 = str(path.resolve()), digest
    if calib is not None:
        src.calibration = calib
    return src


def _check_calibration_names(keras_model, calib: dict | None) -> None:
    """A --calibration array named after no model input fails now, not after the conversion."""
    if calib is not None:
        from compiler.quant.calibrate import check_names

        check_names(io_names(keras_model)[0], calib)


def _source_path(spec: str) -> Path:
    """A file or folder source, checked to exist, be readable and be of a kind tflc compiles."""
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder (expected fixtures:NAME, .keras, SavedModel folder or .tflite)")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{spec}: permission denied")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise SourceError(f"{spec}: a folder but not a SavedModel (no saved_model.pb)")
    elif path.suffix not in (".tflite", ".keras", ".h5"):
        raise SourceError(f"{spec}: unknown model file type {path.suffix!r} (expected .keras, .h5, .tflite or a SavedModel folder)")
    return path


def source_digest(path: str | os.PathLike) -> str:
    """sha256 of a source file; for a SavedModel folder, of its files' relative paths and sha256s
    (sorted), so any changed, added or removed file changes it."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def reload_keras(manifest, imports: list[str] | tuple[str, ...] = (), unsafe: bool = False):
    """The Keras model a build was compiled from, for a reference: the fixture rebuilt with the build's
    batch, or the recorded .keras/.h5 file after checking its sha256. None for .tflite and SavedModel
    sources (no Keras model). A source that is gone or changed since the build is one SourceError line.
    `manifest` is a compiler.manifest.Manifest or its JSON dict."""
    get = manifest.get if isinstance(manifest, dict) else lambda k: getattr(manifest, k, None)
    spec, want = get("source"), get("source_sha256")
    if not spec:
        raise SourceError("the build records no source (compiled by an older tflc): recompile it")
    import_user_code(imports)
    if spec.startswith(("fixtures:", "fixture:")):
        import fixtures

        inputs = get("inputs") or []
        first = inputs[0] if inputs else None
        shape = (first.get("shape") if isinstance(first, dict) else getattr(first, "shape", None)) or [1]
        return _build_fixture(fixtures.get(spec.split(":", 1)[1]), int(shape[0]) if shape else 1)
    path = Path(spec)
    if path.suffix not in (".keras", ".h5"):
        return None
    if not path.is_file():
        raise SourceError(f"{spec}: the build's source is gone (moved or deleted since it was compiled)")
    have = source_digest(path)
    if want and have != want:
        raise SourceError(f"{spec}: the build's source changed since it was compiled (sha256 {have[:12]}, "
                          f"recorded {want[:12]}): recompile, or compare against reference arrays")
    return _load_keras_file(path, unsafe, imports)


def import_user_code(specs: list[str] | tuple[str, ...] | None) -> None:
    """Import each `--import` spec: a .py file (by path) or a module name (found on sys.path or in the
    current folder), so the Keras classes it registers are known when a model is loaded."""
    for spec in specs or ():
        with spinner(f"importing {spec}"):  # user code usually imports Keras: seconds
            if spec.endswith(".py") or os.sep in spec or Path(spec).is_file():
                _import_file(Path(spec), spec)
            else:
                _import_module(spec)


def _import_file(path: Path, spec: str) -> None:
    if not path.is_file():
        raise UsageError(f"--import {spec}: no such file")
    path = path.resolve()
    name = re.sub(r"\W", "_", path.stem)
    if getattr(sys.modules.get(name), "__file__", None) == str(path):
        return
    mspec = importlib.util.spec_from_file_location(name, path)
    if mspec is None or mspec.loader is None:
        raise UsageError(f"--import {spec}: not a Python file")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # so the file can import its sibling modules
    try:
        mspec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[name]
        raise UsageError(f"--import {spec}: {type(e).__name__}: {reason(e)}") from None


def _import_module(spec: str) -> None:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", spec):
        raise UsageError(f"--import {spec}: not a module name or a .py file")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `tflc` is a script: the current folder is not on its path
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name and spec.startswith(e.name):
            raise UsageError(f"--import {spec}: no module named {e.name!r} on the Python path or in the "
                             "current folder (or give the .py file's path)") from None
        raise UsageError(f"--import {spec}: {type(e).__name__}: {reason(e)}") from None
    except (Exception, SystemExit) as e:
        raise UsageError(f"--import {spec}: {type(e).__name__}: {reason(e)}") from None


def _build_fixture(fx, batch: int | None):
    with spinner(f"building Keras model {fx.name}"):
        try:
            return fx.build(batch_size=batch or 1)
        except TypeError:
            return fx.build()


_UNKNOWN_CLASS = re.compile(r"(?:Could not locate class|Unknown layer:?)\s*'?\"?([A-Za-z0-9_>.]+)")


def _load_keras_file(path: Path, unsafe: bool = False, imports: list[str] | tuple[str, ...] = ()):
    with spinner(f"loading {path}"):
        import keras  # inside the step: importing TensorFlow is the first few seconds of work

        try:
            return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
        except Exception as e:
            raise SourceError(_explain_load_error(path, e, imports)) from None


def _explain_load_error(path: Path, e: Exception, imports: list[str] | tuple[str, ...] = ()) -> str:
    text = reason(e)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return (f"{path}: it holds Python code (a Lambda layer) that loading would run; if you trust the file, "
                f"pass --unsafe-deserialization. Keras: {text}")
    cls = _UNKNOWN_CLASS.search(str(e))
    if cls and imports:
        return (f"{path}: unknown layer class {cls.group(1)!r}: --import {' '.join(imports)} did not register "
                "it; decorate the class with @keras.saving.register_keras_serializable (same package name "
                "as when the model was saved)")
    if cls:
        return (f"{path}: unknown layer class {cls.group(1)!r}: pass --import MODULE_OR_FILE with the module "
                "that defines it (registered with @keras.saving.register_keras_serializable)")
    return f"{path}: cannot load Keras model: {text}"


def _from_saved_model(path: Path, batch: int | None) -> Source:
    """A SavedModel's `serving_default` is re-exported with the batch fixed, then converted."""
    import time

    start = time.perf_counter()
    with spinner(f"loading {path}"):  # importing TensorFlow is the first seconds of work
        tf = _tf()
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except KeyError:
            raise SourceError(f"{path}: SavedModel has no 'serving_default' signature") from None
        except Exception as e:
            raise SourceError(f"{path}: cannot load SavedModel ({reason(e)})") from None
    _, kwargs = fn.structured_input_signature
    names = sorted(kwargs)
    specs = []
    for name in names:
        shape = list(kwargs[name].shape)
        if shape and shape[0] is None:
            shape[0] = batch or 1
        specs.append(tf.TensorSpec(shape, kwargs[name].dtype, name=name))

    @tf.autograph.experimental.do_not_convert
    def serve(*xs):
        return fn(**dict(zip(names, xs)))

    module = tf.Module()
    module.loaded = loaded
    module.serve = tf.function(serve, input_signature=specs, autograph=False)
    with export_tempdir() as d:
        with spinner(f"re-exporting {path} with a fixed batch"):
            tf.saved_model.save(module, d, signatures={"serving_default": module.serve})
        data = _run_converter(d, {}, [], f"converting {path} with the TFLite converter", saved_model=path)
    model = flatbuffer.loads(data, origin=str(path))
    out_names = [s.name for s in model.main.outputs]
    sig = next((s for s in model.signature_defs if s.subgraph is model.main), None)
    if sig is not None:
        out_names = [n for n, _ in sig.outputs]
    _rename_io(model, names, out_names)
    src = Source(spec=str(path), kind="savedmodel", model=model, batch=_batch_of(model))
    src.convert_seconds = time.perf_counter() - start
    return src
