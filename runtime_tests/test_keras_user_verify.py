"""A Keras user's day, verify/quantize/ops part, through the CLI: verify against the user's own .keras file
(or SavedModel) from another folder, a changed source refused, integer inputs, a batch-4 build, calibration
and --data mistakes as one line, keep-float that matches nothing, and the `tflc ops` keep-float suggestion
pasted back into the pipeline (issue 12 items 3-5).

Each model is tiny, built and compiled once per module; the numbers are checked against Keras and numpy."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, tflc

DYN = "strip-unused,dedupe-buffers,quantize{mode=int8-dynamic,min-elements=0}"
FLOAT = "strip-unused,dedupe-buffers"
N = 10  # examples: not a multiple of 4, so a batch-4 build has a partial last batch


def _two_outputs():
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="feat")
    h = keras.layers.Dense(16, activation="relu", name="hid")(x)
    return keras.Model(x, [keras.layers.Dense(3, activation="softmax", name="cls")(h),
                           keras.layers.Dense(1, name="reg")(h)])


def _embedding():
    import keras

    keras.utils.set_random_seed(1)
    t = keras.Input((5,), dtype="int32", name="tokens")
    e = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(20, 8, name="emb")(t))
    return keras.Model(t, keras.layers.Dense(2, activation="softmax", name="out")(e))


def _lstm():
    import keras

    keras.utils.set_random_seed(2)
    s = keras.Input((4, 16), name="seq")
    return keras.Model(s, keras.layers.Dense(2, name="head")(keras.layers.LSTM(32, name="branch_0_lstm")(s)))


def _ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Saved models, data files and their float Keras outputs."""
    root = tmp_path_factory.mktemp("user_verify")
    rng = np.random.default_rng(0)
    two = _two_outputs()
    two.save(root / "two.keras")
    feat = rng.standard_normal((N, 6)).astype(np.float32)
    labels = rng.integers(0, 3, N)
    np.savez(root / "two.npz", feat=feat, labels=labels)
    emb = _embedding()
    emb.save(root / "emb.keras")
    tokens = rng.integers(0, 20, (N, 5)).astype(np.int32)
    np.savez(root / "emb.npz", tokens=tokens)
    cls, reg = two.predict(feat, verbose=0)
    return {"root": root, "feat": feat, "labels": labels, "cls": cls, "reg": reg, "tokens": tokens,
            "emb_out": emb.predict(tokens, verbose=0)}


def _compile(work, source: str, pipeline: str, out: str, *extra: str) -> Path:
    _ok(tflc("compile", str(work["root"] / source), "--pipeline", pipeline, "-o", str(work["root"] / out), *extra))
    return work["root"] / out


def _staged(build: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The build's outputs for all examples, one batch at a time (a whole number of batches)."""
    from compiler.runtime import StagedModel

    model = StagedModel(build)
    b = model.inputs[0].shape[0]
    n = len(next(iter(x.values())))
    runs = [model({k: v[s:s + b] for k, v in x.items()}) for s in range(0, n - n % b, b)]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _snr(ref, out) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)))


# ------------------------------------------------------------------------------------ the user's model

def test_verify_compares_with_the_users_keras_file_from_another_folder(work, tmp_path):
    build = _compile(work, "two.keras", DYN, "b_two")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(work["root"] / "two.npz", elsewhere / "data.npz")
    proc = _ok(tflc("verify", str(build), "--data", "data.npz", "--no-layers", cwd=elsewhere))
    report = json.loads((build / "verify.json").read_text())
    assert report["reference"] == f"Keras model {work['root'] / 'two.keras'}"
    assert report["examples"] == N and report["label_output"] == "cls"

    # The same numbers from Keras and the staged runtime, computed here with numpy.
    got = _staged(build, {"feat": work["feat"]})
    for name in ("cls", "reg"):
        assert report["outputs"][name]["snr_db"] == pytest.approx(_snr(work[name], got[name]), abs=1e-3)
        assert report["outputs"][name]["max_abs_error"] == pytest.approx(
            float(np.max(np.abs(work[name] - got[name]))), rel=1e-5)
    assert 20 < report["outputs"]["cls"]["snr_db"] < 120  # int8 weights: close to, not equal to, float
    float_acc = 100 * np.mean(np.argmax(work["cls"], 1) == work["labels"])
    assert report["float_accuracy"] == pytest.approx(float_acc)
    assert report["compiled_accuracy"] == pytest.approx(100 * np.mean(np.argmax(got["cls"], 1) == work["labels"]))
    assert "labels and agreement score output cls" in proc.stdout

    # --label-output picks the other output; agreement then compares its decisions (reg >= 0.5).
    _ok(tflc("verify", str(build), "--data", "data.npz", "--no-layers", "--label-output", "reg", cwd=elsewhere))
    report = json.loads((build / "verify.json").read_text())
    agree = np.mean((work["reg"][:, 0] >= 0.5) == (got["reg"][:, 0] >= 0.5))
    assert report["label_output"] == "reg" and report["agreement"] == pytest.approx(agree)
    assert_user_error(tflc("verify", str(build), "--data", "data.npz", "--label-output", "nope", cwd=elsewhere),
                      "--label-output", "cls, reg", code=2)


def test_changed_or_missing_source_is_refused(work, tmp_path):
    src = tmp_path / "mine.keras"
    shutil.copy(work["root"] / "two.keras", src)
    build = tmp_path / "b"
    _ok(tflc("compile", str(src), "--pipeline", FLOAT, "-o", str(build)))
    _emb_model_bytes = (work["root"] / "emb.keras").read_bytes()
    src.write_bytes(_emb_model_bytes)  # another model under the same name
    data = str(work["root"] / "two.npz")
    assert_user_error(tflc("verify", str(build), "--data", data), "changed since it was compiled", code=2)
    assert not (build / "verify.json").exists()
    src.unlink()
    assert_user_error(tflc("verify", str(build), "--data", data), "gone", code=2)


def test_verify_against_a_saved_model_source(work, tmp_path):
    import keras

    keras.models.load_model(work["root"] / "two.keras").export(str(tmp_path / "sm"), verbose=False)
    build = tmp_path / "b_sm"
    _ok(tflc("compile", str(tmp_path / "sm"), "--pipeline", DYN, "-o", str(build)))
    _ok(tflc("verify", str(build), "--data", str(work["root"] / "two.npz"), "--no-layers"))
    report = json.loads((build / "verify.json").read_text())
    assert report["reference"] == f"SavedModel {tmp_path / 'sm'}"
    got = _staged(build, {"feat": work["feat"]})
    outs = list(report["outputs"])  # the SavedModel's signature names, in the build's order
    assert len(outs) == 2
    for name, want in zip(outs, (work["cls"], work["reg"])):
        assert report["outputs"][name]["snr_db"] == pytest.approx(_snr(want, got[name]), abs=1e-3)


# ------------------------------------------------------------------------------------ ordinary inputs

def test_integer_inputs_are_fed_as_integers(work, tmp_path):
    build = _compile(work, "emb.keras", FLOAT, "b_emb")
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["inputs"][0]["dtype"] == "int32"
    _ok(tflc("verify", str(build), "--data", str(work["root"] / "emb.npz")))
    report = json.loads((build / "verify.json").read_text())
    got = _staged(build, {"tokens": work["tokens"]})
    np.testing.assert_allclose(got["out"], work["emb_out"], rtol=1e-5, atol=1e-6)
    assert report["outputs"]["out"]["max_abs_error"] == pytest.approx(
        float(np.max(np.abs(got["out"] - work["emb_out"]))), abs=1e-7)
    assert report["outputs"]["out"]["max_abs_error"] < 1e-5 and report["agreement"] == 1.0
    assert any(r["layer"] == "emb" for r in report["layers"])  # localization ran on int inputs too

    # Token ids saved as whole floats are taken; fractional ones are one line.
    np.savez(tmp_path / "whole.npz", tokens=work["tokens"].astype(np.float64))
    _ok(tflc("verify", str(build), "--data", str(tmp_path / "whole.npz"), "--no-layers"))
    assert json.loads((build / "verify.json").read_text())["outputs"] == report["outputs"]
    np.savez(tmp_path / "frac.npz", tokens=work["tokens"] + 0.5)
    assert_user_error(tflc("verify", str(build), "--data", str(tmp_path / "frac.npz")), "int32", "non-integer",
                      code=2)


def test_quantized_io_takes_float_or_its_own_int8_data(work, tmp_path):
    """io=int8: float data is quantized by the runtime; int8 data is fed as is and dequantized for the
    float model. Both give the SNR numpy computes from the same arrays."""
    from compiler.affine import dequantize, quantize

    build = _compile(work, "two.keras", "strip-unused,quantize{mode=int8,io=int8}", "b_i8",
                     "--calibration", str(work["root"] / "two.npz"))
    spec = json.loads((build / "manifest.json").read_text())["inputs"][0]
    assert spec["dtype"] == "int8" and spec["quantization"]["scale"]
    q8 = quantize(work["feat"], spec["quantization"], np.int8)
    np.savez(tmp_path / "i8.npz", feat=q8, labels=work["labels"])
    for data, keras_in in ((work["root"] / "two.npz", work["feat"]),
                           (tmp_path / "i8.npz", dequantize(q8, spec["quantization"]))):
        _ok(tflc("verify", str(build), "--data", str(data), "--no-layers"))
        report = json.loads((build / "verify.json").read_text())
        cls, _ = _two_outputs_from_file(work["root"] / "two.keras").predict(keras_in.astype(np.float32), verbose=0)
        got = _staged(build, {"feat": q8})
        out = json.loads((build / "manifest.json").read_text())["outputs"][0]
        got_cls = dequantize(got["cls"], out["quantization"])
        assert report["outputs"]["cls"]["snr_db"] == pytest.approx(_snr(cls, got_cls), abs=1e-2)
        assert report["outputs"]["cls"]["snr_db"] > 25


def _two_outputs_from_file(path):
    import keras

    return keras.models.load_model(path)


def test_batch_4_build_verifies_every_example(work):
    """10 examples on a batch-4 build: two full batches and one padded with copies, trimmed back to 10."""
    build = _compile(work, "two.keras", FLOAT, "b_two4", "--batch", "4")
    assert json.loads((build / "manifest.json").read_text())["inputs"][0]["shape"] == [4, 6]
    _ok(tflc("verify", str(build), "--data", str(work["root"] / "two.npz")))
    report = json.loads((build / "verify.json").read_text())
    assert report["examples"] == N
    assert report["outputs"]["cls"]["max_abs_error"] < 1e-5 and report["outputs"]["reg"]["max_abs_error"] < 1e-5
    assert report["float_accuracy"] == pytest.approx(100 * np.mean(np.argmax(work["cls"], 1) == work["labels"]))
    assert report["layers"]  # localization runs on batches of 4 too


def test_data_and_calibration_mistakes_are_one_line(work, tmp_path):
    build = work["root"] / "b_two"
    if not build.exists():
        _compile(work, "two.keras", DYN, "b_two")
    assert_user_error(tflc("verify", str(build), "--data", str(tmp_path / "missing.npz")), "missing.npz", code=2)

    np.savez(tmp_path / "bad.npz", features=work["feat"])
    proc = tflc("compile", str(work["root"] / "two.keras"), "--pipeline", "strip-unused,quantize{mode=int8}",
                "--calibration", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "never"))
    assert_user_error(proc, "feat", "features", code=2)
    assert "converting" not in proc.stderr and "exporting" not in proc.stderr  # checked before the conversion
    assert not (tmp_path / "never").exists()

    np.savez(tmp_path / "shape.npz", feat=work["feat"][:, :5])
    assert_user_error(tflc("compile", str(work["root"] / "two.keras"), "--pipeline",
                           "strip-unused,quantize{mode=int8}", "--calibration", str(tmp_path / "shape.npz"),
                           "-o", str(tmp_path / "never")), "shape", code=2)


# ------------------------------------------------------------------------------------ fix suggestions

def test_keep_float_that_matches_nothing_names_close_matches(work, tmp_path):
    proc = tflc("compile", str(work["root"] / "two.keras"), "--pipeline",
                "quantize{mode=int8-dynamic,min-elements=0,keep-float=cls|hidd|zzz_no_such_layer}",
                "-o", str(tmp_path / "x"))
    line = assert_user_error(proc, "keep-float='hidd' (close matches: hid) and 'zzz_no_such_layer' matches no layer",
                             code=2)
    assert "'cls'" not in line  # it matches a layer
    assert not (tmp_path / "x").exists()


def test_alternatives_split_only_at_top_level():
    from compiler.passes.quantize import alternatives

    assert alternatives("a|b_(c|d)|[|x]|e\\|f") == ["a", "b_(c|d)", "[|x]", "e\\|f"]
    assert alternatives("lstm_.*") == ["lstm_.*"]


def test_ops_suggestion_round_trip(work, tmp_path):
    """`tflc ops DIR --target tflite-2.14` names the Keras layer (not the converter's `_1` scope); pasting
    its keep-float suggestion into the pipeline gives a build tflite-2.14 runs. The minimum runtime is in
    ops.json (per stage and for the build), in the manifest and in the `tflc ops` output."""
    _lstm().save(tmp_path / "lstm.keras")
    pipe = "strip-unused,dedupe-buffers,quantize{mode=int8-dynamic}"
    build = tmp_path / "b"
    _ok(tflc("compile", str(tmp_path / "lstm.keras"), "--pipeline", pipe + ",partition{stages=2}",
             "--frontend", "converter", "-o", str(build)))
    table = json.loads((build / "ops.json").read_text())
    manifest = json.loads((build / "manifest.json").read_text())
    assert table["min_runtime"] == "2.17.0"  # hybrid FULLY_CONNECTED v12 in the LSTM's loop
    assert [s["min_runtime"] for s in table["stages"]] == [s["min_runtime"] for s in manifest["stages"]]
    assert "branch_0_lstm" in table["keras_layers"]

    proc = tflc("ops", str(build), "--target", "tflite-2.14")
    assert proc.returncode == 1, proc.stderr
    assert "minimum TFLite runtime: 2.17.0" in proc.stdout
    suggestion = re.search(r"quantize\{keep-float=([^}]*)\}", proc.stderr)
    assert suggestion, proc.stderr
    assert suggestion.group(1) == "branch_0_lstm", proc.stderr

    fixed = tmp_path / "fixed"
    text = f"strip-unused,dedupe-buffers,quantize{{mode=int8-dynamic,keep-float={suggestion.group(1)}}}"
    _ok(tflc("compile", str(tmp_path / "lstm.keras"), "--pipeline", text + ",partition{stages=2}",
             "--frontend", "converter", "-o", str(fixed)))
    proc = _ok(tflc("ops", str(fixed), "--target", "tflite-2.14"))
    runtime = json.loads((fixed / "ops.json").read_text())["min_runtime"]
    from kernels.catalogue import parse_version

    assert parse_version(runtime) <= parse_version("2.14")
    assert f"minimum TFLite runtime: {runtime}" in proc.stdout


def test_recorded_source_from_an_untrusted_manifest_is_checked_before_hashing(tmp_path):
    """A manifest's `source` names a path on this machine: only a regular .keras file or a folder with a
    saved_model.pb is hashed (not a FIFO, which would block, nor the whole disk)."""
    import os

    from compiler.errors import SourceError
    from compiler.verify import _source_kind

    os.mkfifo(tmp_path / "pipe.keras")
    for spec in (str(tmp_path / "pipe.keras"), "/"):
        with pytest.raises(SourceError, match="not a"):
            _source_kind({"source": spec, "source_sha256": "0" * 64})
    assert _source_kind({"source": "model.tflite"}) == "tflite" and _source_kind({}) == "none"
