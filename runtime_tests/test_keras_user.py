"""A Keras user's day through the CLI: dict and list I/O, their own layers (--import), Lambda layers
(--unsafe-deserialization), a quiet stderr, required data checked first, and the recorded source."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, tflc

FLOAT = "strip-unused,dedupe-buffers"

# tflc's own stderr lines: step start/end, a bar's start/end, an error, note or warning.
OWN_LINE = re.compile(r"^(\.\.\. |done: |failed: |stopped: |tflc: (error|note|warning): )")


def _save(model, folder: Path, name: str) -> Path:
    path = folder / name
    model.save(path)
    return path


def _compile_and_run(source: Path, inputs: dict[str, np.ndarray], tmp: Path, *extra: str) -> dict[str, np.ndarray]:
    build, data, out = tmp / f"build_{source.stem}", tmp / "in.npz", tmp / "out.npz"
    proc = tflc("compile", str(source), "--pipeline", FLOAT, "-o", str(build), *extra)
    assert proc.returncode == 0, proc.stderr
    np.savez(data, **inputs)
    proc = tflc("run", str(build), "--input", str(data), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def _io(build: Path) -> tuple[list[str], list[str]]:
    m = json.loads((build / "manifest.json").read_text())
    return [t["name"] for t in m["inputs"]], [t["name"] for t in m["outputs"]]


# ------------------------------------------------------------------------------------ I/O structures

def _dict_model():
    import keras

    keras.utils.set_random_seed(1)
    a, b = keras.Input((4,), name="in_a"), keras.Input((3,), name="in_b")  # keys, not these, name them
    h = keras.layers.Dense(5, activation="tanh", name="mix")(keras.layers.Concatenate(name="cat")([a, b]))
    outs = {"score": keras.layers.Dense(2, name="head_s")(h), "emb": keras.layers.Dense(3, name="head_e")(h)}
    return keras.Model({"b": b, "a": a}, outs)


def _list_in_dict_out_model():
    import keras

    keras.utils.set_random_seed(2)
    x, y = keras.Input((6,), name="x"), keras.Input((2,), name="y")
    h = keras.layers.Dense(4, activation="relu", name="hx")(x)
    z = keras.layers.Concatenate(name="cat")([h, y])
    return keras.Model([x, y], {"logits": keras.layers.Dense(3, name="cls")(z), "hidden": h})


def _nested_model():
    import keras

    keras.utils.set_random_seed(3)
    left, right, meta = keras.Input((3,), name="left"), keras.Input((3,), name="right"), keras.Input((2,), name="meta")
    s = keras.layers.Add(name="sum")([left, right])
    m = keras.layers.Dense(3, name="proj")(meta)
    return keras.Model({"audio": [left, right], "meta": meta},
                       [keras.layers.Multiply(name="gate")([s, m]), {"aux": keras.layers.Dense(1, name="aux")(s)}])


@pytest.mark.parametrize("frontend", ["default", "converter"])
def test_dict_inputs_and_outputs_keep_their_keys_and_equal_keras(tmp_path, frontend):
    model = _dict_model()
    src = _save(model, tmp_path, "dict_io.keras")
    rng = np.random.default_rng(0)
    x = {"a": rng.standard_normal((1, 4), np.float32), "b": rng.standard_normal((1, 3), np.float32)}
    extra = ("--frontend", "converter") if frontend == "converter" else ()
    got = _compile_and_run(src, x, tmp_path, *extra)
    want = model.predict(x, verbose=0)
    assert _io(tmp_path / "build_dict_io") == (["a", "b"], ["emb", "score"])  # keras.tree order: sorted keys
    assert sorted(got) == ["emb", "score"]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_list_inputs_with_dict_outputs_equal_keras(tmp_path):
    model = _list_in_dict_out_model()
    src = _save(model, tmp_path, "list_dict.keras")
    rng = np.random.default_rng(1)
    x = {"x": rng.standard_normal((1, 6), np.float32), "y": rng.standard_normal((1, 2), np.float32)}
    got = _compile_and_run(src, x, tmp_path)  # the default front-end (native here: every layer has a rule)
    want = model.predict([x["x"], x["y"]], verbose=0)
    assert _io(tmp_path / "build_list_dict") == (["x", "y"], ["hidden", "logits"])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_nested_structures_flatten_in_keras_order(tmp_path):
    model = _nested_model()
    src = _save(model, tmp_path, "nested.keras")
    rng = np.random.default_rng(2)
    feed = {"audio": [rng.standard_normal((1, 3), np.float32), rng.standard_normal((1, 3), np.float32)],
            "meta": rng.standard_normal((1, 2), np.float32)}
    flat_in = {"audio.0": feed["audio"][0], "audio.1": feed["audio"][1], "meta": feed["meta"]}
    got = _compile_and_run(src, flat_in, tmp_path, "--frontend", "converter")
    gate, aux = model.predict(feed, verbose=0)
    ins, outs = _io(tmp_path / "build_nested")
    assert ins == ["audio.0", "audio.1", "meta"]
    assert outs == ["gate", "aux"]  # a list position keeps the layer name, a dict leaf its key
    np.testing.assert_allclose(got["gate"], gate, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[outs[1]], aux["aux"], rtol=1e-5, atol=1e-5)


def test_export_failure_shows_the_layers_own_reason(tmp_path):
    """An error raised while tracing reaches the user as the layer's words, not TF's "in user code:"."""
    import keras

    class NeedsDynamicBatch(keras.layers.Layer):
        def call(self, x):
            if x.shape[0] is not None:
                raise ValueError("NeedsDynamicBatch wants an unknown batch dimension, got a fixed one")
            return x

    from compiler.errors import ConversionError
    from compiler.frontend import from_keras

    inp = keras.Input((3,), name="x")
    model = keras.Model(inp, NeedsDynamicBatch(name="dyn")(inp))
    with pytest.raises(ConversionError) as e:
        from_keras(model, frontend="converter")
    assert "NeedsDynamicBatch wants an unknown batch dimension, got a fixed one" in str(e.value)
    assert "in user code" not in str(e.value) and "\n" not in str(e.value)


_DET_FILE = '''
import keras
import tensorflow as tf

@keras.saving.register_keras_serializable(package="tflc_user")
class Determinant(keras.layers.Layer):
    def call(self, x):
        return tf.reshape(tf.linalg.det(x), (-1, 1))
'''


def test_conversion_failure_is_one_line_with_the_converters_words(tmp_path):
    """No MLIR dump on stderr: tflc's line names the layer and quotes the converter's own error."""
    import importlib.util

    import keras

    (tmp_path / "det_layer.py").write_text(_DET_FILE)
    spec = importlib.util.spec_from_file_location("det_layer_for_saving", tmp_path / "det_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inp = keras.Input((3, 3), batch_size=1, name="m")
    src = _save(keras.Model(inp, module.Determinant(name="weird_det")(inp)), tmp_path, "det.keras")
    proc = tflc("compile", str(src), "--import", str(tmp_path / "det_layer.py"), "--frontend", "converter",
                "-o", str(tmp_path / "b"))
    err = assert_user_error(proc, "tf.MatrixDeterminant", "weird_det", code=2)
    assert "(converter: 'tf.MatrixDeterminant' op is neither a custom op nor a flex op)" in err
    assert all(OWN_LINE.match(ln) for ln in proc.stderr.splitlines()), proc.stderr


# ------------------------------------------------------------------------------------ user code

_LAYER_FILE = '''
import keras

@keras.saving.register_keras_serializable(package="tflc_user")
class ScaledTanh(keras.layers.Layer):
    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return keras.ops.tanh(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
'''


def _custom_layer_model(tmp_path: Path):
    import importlib.util

    (tmp_path / "my_layers.py").write_text(_LAYER_FILE)
    spec = importlib.util.spec_from_file_location("my_layers_for_saving", tmp_path / "my_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import keras

    keras.utils.set_random_seed(4)
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, module.ScaledTanh(3.0, name="st")(keras.layers.Dense(4, name="d")(inp)))


def test_custom_layer_needs_import_and_loads_with_it(tmp_path):
    model = _custom_layer_model(tmp_path)
    src = _save(model, tmp_path, "custom.keras")
    err = assert_user_error(tflc("compile", str(src), "-o", str(tmp_path / "b")), "ScaledTanh", "--import", code=2)
    assert "unknown layer class" in err
    (tmp_path / "unrelated.py").write_text("import keras\n")
    assert_user_error(tflc("compile", str(src), "-o", str(tmp_path / "b"), "--import", str(tmp_path / "unrelated.py")),
                      "ScaledTanh", "did not register it", "register_keras_serializable", code=2)
    x = {"x": np.random.default_rng(3).standard_normal((1, 5), np.float32)}
    got = _compile_and_run(src, x, tmp_path, "--import", str(tmp_path / "my_layers.py"))
    np.testing.assert_allclose(got["st"], model.predict(x["x"], verbose=0), rtol=1e-5, atol=1e-5)
    # As a module name, found in the current folder.
    proc = tflc("compile", str(src), "--pipeline", FLOAT, "-o", str(tmp_path / "b2"), "--import", "my_layers",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_bad_import_is_one_line_with_the_reason(tmp_path):
    (tmp_path / "broken.py").write_text("import keras\nraise RuntimeError('my module refuses to load')\n")
    src = tmp_path / "m.keras"
    src.write_bytes(b"unused: the import fails first")
    assert_user_error(tflc("compile", str(src), "--import", str(tmp_path / "broken.py")),
                      "--import", "RuntimeError: my module refuses to load", code=2)
    assert_user_error(tflc("compile", str(src), "--import", "no_such_module_xyz"), "no module named", code=2)
    assert_user_error(tflc("compile", str(src), "--import", str(tmp_path / "absent.py")), "no such file", code=2)


def test_lambda_needs_unsafe_deserialization(tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine")(inp))
    src = _save(model, tmp_path, "lambda.keras")
    err = assert_user_error(tflc("compile", str(src), "-o", str(tmp_path / "b")), "--unsafe-deserialization", code=2)
    # Keras's whole reason, to its last words (the message used to be cut mid-word).
    assert "arbitrary code execution" in err and err.rstrip().endswith("keras.config.enable_unsafe_deserialization().")
    x = {"x": np.random.default_rng(4).standard_normal((1, 4), np.float32)}
    got = _compile_and_run(src, x, tmp_path, "--unsafe-deserialization")
    np.testing.assert_allclose(got["affine"], model.predict(x["x"], verbose=0), rtol=1e-5, atol=1e-5)
    help_text = tflc("compile", "--help").stdout
    assert "--unsafe-deserialization" in help_text and "arbitrary code" in help_text.replace("\n", " ")


# ------------------------------------------------------------------------------------ the terminal

def test_compile_stderr_holds_only_tflcs_own_lines(tmp_path):
    proc = tflc("compile", "fixtures:contect-small", "-o", str(tmp_path / "cs"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(OWN_LINE.match(ln) for ln in lines), proc.stderr
    for noise in ("absl", "oneDNN", "INFO:", "WARNING"):
        assert noise not in proc.stderr
    # Off a terminal: each step is one start line and one end line, nothing in between.
    starts = [ln[4:] for ln in lines if ln.startswith("... ")]
    ends = [re.sub(r" \([^()]*\)$", "", ln.split(": ", 1)[1]) for ln in lines if ln.startswith("done: ")]
    assert [re.sub(r" \(\d+\)$", "", s) for s in starts] == ends and len(lines) == 2 * len(starts)
    run = tflc("run", str(tmp_path / "cs"))
    assert run.returncode == 0 and "INFO" not in run.stderr and "XNNPACK" not in run.stderr, run.stderr
    loud = tflc("run", str(tmp_path / "cs"), "--verbose")
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in loud.stderr


def test_verbose_lets_library_logs_through(tmp_path):
    import keras

    inp = keras.Input((2,), name="x")
    src = _save(keras.Model(inp, keras.layers.Dense(1, name="d")(inp)), tmp_path, "tiny.keras")
    proc = tflc("compile", str(src), "--pipeline", FLOAT, "-o", str(tmp_path / "b"), "--frontend", "converter",
                "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "oneDNN" in proc.stderr  # TF's own notice, which only --verbose shows


def test_missing_calibration_fails_before_any_conversion(tmp_path):
    int8 = "strip-unused,quantize{mode=int8}"
    start = time.perf_counter()
    proc = tflc("compile", "fixtures:contect-small", "--pipeline", int8, "--calibration",
                str(tmp_path / "absent.npz"), "-o", str(tmp_path / "b"))
    assert time.perf_counter() - start < 3.0
    assert_user_error(proc, "absent.npz", "no such file", code=2)
    assert "building" not in proc.stderr  # nothing slow started

    import keras

    inp = keras.Input((2,), name="x")
    src = _save(keras.Model(inp, keras.layers.Dense(1, name="d")(inp)), tmp_path, "tiny.keras")
    for mode in ("int8", "int16x8"):
        start = time.perf_counter()
        proc = tflc("compile", str(src), "--pipeline", f"quantize{{mode={mode}}}", "-o", str(tmp_path / "b"))
        assert time.perf_counter() - start < 3.0
        assert_user_error(proc, f"{mode} needs calibration data", "--calibration", code=2)
        assert "loading" not in proc.stderr


# ------------------------------------------------------------------------------------ the recorded source

def test_manifest_records_the_source_and_reload_checks_it(tmp_path):
    from compiler.errors import SourceError
    from compiler.frontend import reload_keras
    from compiler.manifest import load

    model = _dict_model()
    src = _save(model, tmp_path, "dict_io.keras")
    build = tmp_path / "b"
    proc = tflc("compile", "dict_io.keras", "--pipeline", FLOAT, "-o", str(build), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((build / "manifest.json").read_text())
    import hashlib

    assert manifest["source"] == str(src.resolve())
    assert manifest["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    x = {"a": np.ones((1, 4), np.float32), "b": np.full((1, 3), -0.5, np.float32)}
    for m in (manifest, load(build)):  # the JSON dict and the typed manifest
        again = reload_keras(m)
        np.testing.assert_allclose(again.predict(x, verbose=0)["score"], model.predict(x, verbose=0)["score"],
                                   rtol=0, atol=0)
    _save(_list_in_dict_out_model(), tmp_path, "dict_io.keras")  # the same path, another model
    with pytest.raises(SourceError, match="changed since it was compiled"):
        reload_keras(manifest)
    src.unlink()
    with pytest.raises(SourceError, match="is gone"):
        reload_keras(manifest)


def test_savedmodel_digest_covers_every_file(tmp_path):
    from compiler.frontend import source_digest

    (tmp_path / "sm" / "variables").mkdir(parents=True)
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / "sm" / "variables" / "variables.index").write_bytes(b"index")
    first = source_digest(tmp_path / "sm")
    (tmp_path / "sm" / "variables" / "variables.index").write_bytes(b"indeX")
    second = source_digest(tmp_path / "sm")
    (tmp_path / "sm" / "extra").write_bytes(b"")
    assert len({first, second, source_digest(tmp_path / "sm")}) == 3
