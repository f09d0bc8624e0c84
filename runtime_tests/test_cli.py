"""End to end through the CLI, as a user runs it: compile, run, inspect, and every bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.commands.compile import DEFAULT_PIPELINE
from conftest import assert_user_error, tflc

FLOAT_PIPELINE = "strip-unused,dedupe-buffers"


@pytest.fixture(scope="session")
def small_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("builds") / "contect-small"
    proc = tflc("compile", "fixtures:contect-small", "--pipeline", FLOAT_PIPELINE, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "compile wall time" in proc.stdout and "peak RSS" in proc.stdout
    return out


@pytest.fixture(scope="session")
def small_keras():
    import fixtures

    return fixtures.get("contect-small").build()


def _keras_outputs(keras_model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    ordered = [inputs[i.name] for i in keras_model.inputs]
    return np.asarray(keras_model(ordered if len(ordered) > 1 else ordered[0], training=False))


def test_compile_writes_a_complete_build_folder(small_build):
    names = sorted(p.name for p in small_build.iterdir())
    for required in ("manifest.json", "report.json", "report.md", "ops.json", "register_ops.cc", "stage_00.tflite"):
        assert required in names
    manifest = json.loads((small_build / "manifest.json").read_text())
    assert manifest["pipeline"] == FLOAT_PIPELINE and manifest["fixture"] == "contect-small"
    assert [i["name"] for i in manifest["inputs"]] == ["spec_0", "spec_1", "spec_2"]
    assert all(i["shape"] == [1, 128, 64, 1] and i["dtype"] == "float32" for i in manifest["inputs"])
    stage = manifest["stages"][0]
    data = (small_build / stage["file"]).read_bytes()
    assert stage["bytes"] == len(data) and stage["sha256"] == hashlib.sha256(data).hexdigest()
    assert all(inp["source"] == {"model_input": inp["name"]} for inp in stage["inputs"])
    report = json.loads((small_build / "report.json").read_text())
    assert [t["pass"] for t in report["timings"]] == ["strip-unused", "dedupe-buffers"]
    assert report["op_histogram"]["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 6  # two fused LSTMs in each of three branches
    assert report["frontend"] == "native"
    assert not list(small_build.parent.glob(".contect-small.tmp-*"))


def test_run_equals_keras_float(small_build, small_keras, tmp_path):
    import fixtures

    inputs = fixtures.get("contect-small").sample_inputs(n=1, seed=7)
    np.savez(tmp_path / "in.npz", **inputs)
    proc = tflc("run", str(small_build), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as z:
        out = {k: z[k] for k in z.files}
    assert len(out) == 1
    got = next(iter(out.values()))
    np.testing.assert_allclose(got, _keras_outputs(small_keras, inputs), rtol=1e-5, atol=1e-5)


def test_run_without_input_uses_the_sample(small_build, small_keras):
    proc = tflc("run", str(small_build))
    assert proc.returncode == 0, proc.stderr
    with np.load(small_build / "sample_input.npz") as z:
        inputs = {k: z[k] for k in z.files}
    expected = float(_keras_outputs(small_keras, inputs).reshape(-1)[0])
    printed = float(proc.stdout.split(":")[-1].split()[0])
    assert abs(printed - expected) < 1e-5


def test_keras_file_from_mobilenet(tmp_path):
    import fixtures

    fx = fixtures.get("mobilenet_v2")
    model = fx.build()
    model.save(tmp_path / "mobilenet.keras")
    out = tmp_path / "build"
    proc = tflc("compile", str(tmp_path / "mobilenet.keras"), "--pipeline", FLOAT_PIPELINE, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    inputs = fx.sample_inputs(n=1, seed=3)
    np.savez(tmp_path / "in.npz", **inputs)
    proc = tflc("run", str(out), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as z:
        got = z[z.files[0]]
    np.testing.assert_allclose(got, _keras_outputs(model, inputs), rtol=1e-5, atol=1e-5)


def test_inspect_lists_ops_and_sizes(small_build):
    proc = tflc("inspect", str(small_build))
    assert proc.returncode == 0, proc.stderr
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in proc.stdout and "CONV_2D" in proc.stdout and "stage_00.tflite" in proc.stdout


def test_help_explains_each_command():
    proc = tflc("--help")
    assert proc.returncode == 0
    for cmd in ("compile", "run", "inspect", "verify", "ops"):
        assert cmd in proc.stdout
    proc = tflc("compile", "--help")
    assert "--pipeline" in proc.stdout and "--batch" in proc.stdout


# ----------------------------------------------------------------------------------------- bad inputs

def test_unknown_fixture(tmp_path):
    out = tmp_path / "o"
    assert_user_error(tflc("compile", "fixtures:nope", "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "unknown fixture", "contect-small")
    assert not out.exists()


def test_missing_path(tmp_path):
    out = tmp_path / "o"
    assert_user_error(tflc("compile", str(tmp_path / "missing.keras"), "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "no such file")
    assert not out.exists()


def test_unreadable_path(tmp_path):
    odd = tmp_path / "model.tflite"
    odd.mkdir()  # a folder where a file is expected (chmod would not stop root)
    out = tmp_path / "o"
    assert_user_error(tflc("compile", str(odd), "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "not a SavedModel")
    assert not out.exists()


def test_not_a_flatbuffer(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("these are my notes, not a model\n" * 4)
    out = tmp_path / "o"
    assert_user_error(tflc("compile", str(bad), "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "not a TFLite flatbuffer")
    assert not out.exists()


def test_truncated_tflite(small_build, tmp_path):
    data = (small_build / "stage_00.tflite").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o"
    assert_user_error(tflc("compile", str(bad), "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "truncated")
    assert not out.exists()


def test_flipped_bytes_tflite(small_build, tmp_path):
    data = bytearray((small_build / "stage_00.tflite").read_bytes())
    data[0] ^= 0x7F  # the root table offset
    data[len(data) // 64] ^= 0xFF
    bad = tmp_path / "flipped.tflite"
    bad.write_bytes(bytes(data))
    out = tmp_path / "o"
    assert_user_error(tflc("compile", str(bad), "--pipeline", FLOAT_PIPELINE, "-o", str(out)), "flatbuffer")
    assert not out.exists()


def test_unknown_pass_and_option(tmp_path):
    assert_user_error(tflc("compile", "fixtures:contect-small", "--pipeline", "strip-unused,fold-everything"),
                      "unknown pass 'fold-everything'", "dedupe-buffers")
    assert_user_error(tflc("compile", "fixtures:contect-small", "--pipeline", "dedupe-buffers{fast=1}"),
                      "unknown option 'fast'")


def test_stage_hash_mismatch(small_build, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_build, broken)
    stage = broken / "stage_00.tflite"
    data = bytearray(stage.read_bytes())
    data[-10] ^= 0x01
    stage.write_bytes(bytes(data))
    assert_user_error(tflc("run", str(broken), "-o", str(tmp_path / "out.npz")), "stage_00.tflite", "sha256")
    assert not (tmp_path / "out.npz").exists()


def test_missing_stage_file(small_build, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_build, broken)
    (broken / "stage_00.tflite").unlink()
    assert_user_error(tflc("run", str(broken), "-o", str(tmp_path / "out.npz")), "stage_00.tflite", "missing")
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("change, fragment", [
    ("name", "spec_9"), ("shape", "shape"), ("dtype", "dtype"), ("missing", "spec_2"),
])
def test_wrong_inputs(small_build, tmp_path, change, fragment):
    import fixtures

    inputs = fixtures.get("contect-small").sample_inputs(n=1, seed=0)
    if change == "name":
        inputs["spec_9"] = inputs.pop("spec_1")
    elif change == "shape":
        inputs["spec_1"] = inputs["spec_1"][:, :64]
    elif change == "dtype":
        inputs["spec_1"] = inputs["spec_1"].astype(np.int32)  # float64 is cast; an int array is not
    else:
        inputs.pop("spec_2")
    np.savez(tmp_path / "in.npz", **inputs)
    assert_user_error(tflc("run", str(small_build), "--input", str(tmp_path / "in.npz"),
                           "-o", str(tmp_path / "out.npz")), fragment)
    assert not (tmp_path / "out.npz").exists()


def test_failed_compile_keeps_existing_build(small_build, tmp_path):
    existing = tmp_path / "keep"
    shutil.copytree(small_build, existing)
    before = (existing / "manifest.json").read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    assert_user_error(tflc("compile", str(bad), "--pipeline", FLOAT_PIPELINE, "-o", str(existing)))
    assert (existing / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tflite", "keep"]


def test_default_pipeline_partitions_and_equals_unpartitioned(tmp_path):
    """Issue 5's done-when, through the CLI: the default pipeline (int8-dynamic, check-opset, partition{auto})
    runs stage by stage and gives exactly the unpartitioned build's output."""
    from compiler.ir import flatbuffer
    from kernels.catalogue import required_runtime

    staged, whole = tmp_path / "p", tmp_path / "w"
    # contect-small's branches add under 1 MiB each, so partition{auto} keeps one stage; cut it in 4.
    proc = tflc("compile", "fixtures:contect-small", "--pipeline",
                DEFAULT_PIPELINE.replace("partition{auto}", "partition{stages=4}"), "-o", str(staged))
    assert proc.returncode == 0, proc.stderr
    proc = tflc("compile", "fixtures:contect-small", "--pipeline",
                "strip-unused,dedupe-buffers,quantize{mode=int8-dynamic}", "-o", str(whole))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((staged / "manifest.json").read_text())
    assert len(manifest["stages"]) == 4 and manifest["quantization"] == "int8-dynamic"
    assert "check-opset{target=builtins}" in manifest["pipeline"]
    for build in (staged, whole):
        proc = tflc("run", str(build), "-o", str(build / "out.npz"))
        assert proc.returncode == 0, proc.stderr
    with np.load(staged / "out.npz") as a, np.load(whole / "out.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    # The converter's min_runtime_version metadata is rewritten for the raised op versions (FC v12).
    stage = flatbuffer.load(staged / manifest["stages"][-1]["file"])  # the head's FULLY_CONNECTED is there
    meta = dict(stage.metadata)["min_runtime_version"].data.tobytes().rstrip(b"\0").decode()
    assert meta == required_runtime([stage])[0] == "2.17.0"
