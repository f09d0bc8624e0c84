"""Front-end: a model source (fixture, .keras file, SavedModel folder, .tflite file) → tflc IR.

Keras models are lowered through `tf.lite.TFLiteConverter` (the reference path). Keras 3 LSTMs only
convert with a fixed batch size, so the model is exported through a Keras `ExportArchive` whose
input signature fixes the batch (to the model's own batch if it has one, else `--batch N`, else 1).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler.errors import ConversionError, SourceError, UsageError
from compiler.files import export_tempdir, read_npz
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


def _fixed_specs(keras_model, batch: int | None):
    """TensorSpecs for the model's inputs with the batch dimension fixed."""
    tf = _tf()
    specs = []
    for inp in keras_model.inputs:
        shape = list(inp.shape)
        if shape and shape[0] is None:
            shape[0] = batch or 1
        elif batch is not None and shape and shape[0] != batch:
            raise UsageError(f"model input {inp.name!r} has a fixed batch of {shape[0]}; --batch {batch} cannot change it")
        if any(d is None for d in shape[1:]):
            raise ConversionError(f"model input {inp.name!r} has an unknown non-batch dimension {shape}; "
                                  "TFLite needs static shapes: give the Input a full shape")
        specs.append(tf.TensorSpec(shape, inp.dtype, name=_input_name(inp)))
    return specs


def _input_name(inp) -> str:
    name = getattr(inp, "name", None) or "input"
    return name.split(":")[0]


def _output_names(keras_model) -> list[str]:
    names = list(getattr(keras_model, "output_names", None) or [])
    if len(names) != len(keras_model.outputs):
        names = [f"output_{i}" for i in range(len(keras_model.outputs))]
    # Signature keys must be unique and simple.
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = re.sub(r"[^A-Za-z0-9_.-]", "_", n)
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out


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
    single_input = len(keras_model.inputs) == 1

    @tf.autograph.experimental.do_not_convert
    def serve(*xs):
        outs = keras_model(xs[0] if single_input else list(xs), training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {n: o for n, o in zip(out_names, outs)}

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint("serving_default", tf.function(serve, input_signature=specs, autograph=False))
    archive.write_out(directory, verbose=False)
    return in_names, out_names


def _run_converter(directory: str, flags: dict, layers: list[str], label: str | None = None,
                   saved_model: Path | None = None) -> bytes:
    """tf.lite.TFLiteConverter on a SavedModel folder; failures become one ConversionError line."""
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    _apply_flags(converter, flags)
    with spinner(label) if label else contextlib.nullcontext():
        try:
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
                raise ConversionError(f"cannot export the Keras model for conversion: {_first_line(e)}") from None
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


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


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
    return f"cannot convert {op}{where} to TFLite builtins{hint}"


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


def from_keras(keras_model, batch: int | None = None, spec: str = "<keras model>") -> Source:
    import time

    start = time.perf_counter()
    data, in_names, out_names, layers = _lower(keras_model, batch, {}, label=spec)
    model = flatbuffer.loads(data, origin=spec)
    model.keras_layers = layers
    _rename_io(model, in_names, out_names)
    src = Source(spec=spec, kind="keras", model=model, batch=_batch_of(model), _keras=keras_model)
    src.convert_seconds = time.perf_counter() - start
    return src


def load_npz(path: str) -> dict[str, np.ndarray]:
    return read_npz(path, SourceError)


def load_source(spec: str, batch: int | None = None, calibration: str | None = None) -> Source:
    """Resolve a model source: `fixtures:NAME`, a `.keras` file, a SavedModel folder or a `.tflite` file."""
    if batch is not None and batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch}")
    if spec.startswith("fixtures:") or spec.startswith("fixture:"):
        import fixtures

        fx = fixtures.get(spec.split(":", 1)[1])
        keras_model = _build_fixture(fx, batch)
        src = from_keras(keras_model, batch=batch, spec=spec)
        src.kind = "fixture"
        src.fixture = fx
        src.calibration = fx.calibration() if fx.calibration is not None else None
        src.sample_inputs = fx.sample_inputs(n=src.batch, seed=0)
    else:
        path = Path(spec)
        if not path.exists():
            raise SourceError(f"{spec}: no such file or folder (expected fixtures:NAME, .keras, SavedModel folder or .tflite)")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{spec}: permission denied")
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise SourceError(f"{spec}: a folder but not a SavedModel (no saved_model.pb)")
            src = _from_saved_model(path, batch)
        elif path.suffix == ".tflite":
            model = flatbuffer.load(path)
            src = Source(spec=spec, kind="tflite", model=model, batch=_batch_of(model))
        elif path.suffix in (".keras", ".h5"):
            keras_model = _load_keras_file(path)
            src = from_keras(keras_model, batch=batch, spec=spec)
        else:
            raise SourceError(f"{spec}: unknown model file type {path.suffix!r} (expected .keras, .h5, .tflite or a SavedModel folder)")
    if calibration is not None:
        src.calibration = load_npz(calibration)
    return src


def _build_fixture(fx, batch: int | None):
    with spinner(f"building Keras model {fx.name}"):
        try:
            return fx.build(batch_size=batch or 1)
        except TypeError:
            return fx.build()


def _load_keras_file(path: Path):
    import keras

    with spinner(f"loading {path}"):
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as e:
            text = str(e)
            cls = re.search(r"(?:Could not locate class|Unknown layer:?)\s*'?\"?([A-Za-z0-9_>.]+)", text)
            if cls:
                raise SourceError(f"{path}: unknown layer class {cls.group(1)!r}: import the module that defines it "
                                  "and register it with @keras.saving.register_keras_serializable") from None
            raise SourceError(f"{path}: cannot load Keras model ({_first_line(e)})") from None


def _from_saved_model(path: Path, batch: int | None) -> Source:
    """A SavedModel's `serving_default` is re-exported with the batch fixed, then converted."""
    import time

    tf = _tf()
    start = time.perf_counter()
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except KeyError:
        raise SourceError(f"{path}: SavedModel has no 'serving_default' signature") from None
    except Exception as e:
        raise SourceError(f"{path}: cannot load SavedModel ({_first_line(e)})") from None
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
