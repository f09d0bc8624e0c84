"""check-opset: every violation in one OpsetError that names the op, version and Keras layer; targets and
the target file format; `tflc ops`."""

from __future__ import annotations

import json

import pytest

from compiler import pipeline
from compiler.errors import OpsetError, PipelineError
from compiler.ir import flatbuffer
from compiler.passes import PassContext
from compiler.passes.check_opset import check_opset
from conftest import assert_user_error, tflc
from kernels.registration import ops_table
from kernels.targets import Target, load_target, read_target_file, save_target


def _convert(keras_model, **flags):
    from compiler.frontend import convert_keras, keras_layer_names

    model = flatbuffer.loads(convert_keras(keras_model, batch=1, **flags))
    model.keras_layers = keras_layer_names(keras_model)
    return model


@pytest.fixture(scope="module")
def small():
    """Conv → pool → dense, float and int8-dynamic (dynamic-range FULLY_CONNECTED is v12, newer than TFLite 2.14)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 2), batch_size=1, name="x")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="pool_a")(h)
    h = keras.layers.Dense(64, name="dense_a")(keras.layers.Dense(256, name="wide_a")(h))
    # Not a Dense as the last layer: the model output tensor is renamed and then names no layer.
    m = keras.Model(inp, keras.layers.Activation("tanh", name="act")(h))
    return {"float": _convert(m), "dyn": _convert(m, optimizations=[tf.lite.Optimize.DEFAULT])}


@pytest.fixture(scope="module")
def flex_model():
    """A custom layer computing a determinant: no TFLite builtin, so the converter emits a Flex op."""
    import keras
    import tensorflow as tf

    class Determinant(keras.layers.Layer):
        def call(self, x):
            return tf.reshape(tf.linalg.det(x), (-1, 1))

    inp = keras.Input((3, 3), batch_size=1, name="x")
    out = keras.layers.Dense(2, name="head")(Determinant(name="det_layer")(inp))
    return _convert(keras.Model(inp, out),
                    supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS])


def test_flex_op_fails_builtins_naming_the_layer(flex_model):
    flex = [op for _, op in flex_model.operators() if op.name.startswith("CUSTOM:Flex")]
    assert flex, "the converter should have emitted a Flex op"
    with pytest.raises(OpsetError) as err:
        check_opset(flex_model, ctx=PassContext(), target="builtins")
    msg = str(err.value)
    assert msg.splitlines()[0].startswith("target builtins cannot run 1 operator(s)")
    assert flex[0].name in msg and "'det_layer'" in msg and "--batch 1" in msg and "select-tf" in msg
    ctx = PassContext()
    assert check_opset(flex_model, ctx=ctx, target="builtins+select-tf") is flex_model
    assert f"{flex[0].name} v1" in ctx.report["check-opset"]["ops"]


def test_target_file_lacking_an_op_fails_naming_the_layer(small, tmp_path):
    table = ops_table([small["float"]])
    provided = {e["op"]: e["version"] for e in table["union"] if e["op"] != "CONV_2D"}
    path = tmp_path / "phone.json"
    path.write_text(json.dumps({"name": "phone", "builtins": provided}))
    with pytest.raises(OpsetError) as err:
        check_opset(small["float"], ctx=PassContext(), target=str(path))
    lines = str(err.value).splitlines()
    assert lines[0] == "target phone cannot run 1 operator(s) of this model: CONV_2D v1"
    assert len(lines) == 2 and "'conv_a'" in lines[1] and "quantize{keep-float=conv_a}" in lines[1]


def test_tflite_2_14_rejects_newer_op_versions_and_reports_all(small):
    fcs = [op for _, op in small["dyn"].operators() if op.name == "FULLY_CONNECTED"]
    assert {op.version for op in fcs} == {12}
    check_opset(small["float"], ctx=PassContext(), target="tflite-2.14")
    with pytest.raises(OpsetError) as err:
        check_opset(small["dyn"], ctx=PassContext(), target="tflite-2.14")
    msg = str(err.value)
    assert "FULLY_CONNECTED v12" in msg.splitlines()[0] and "2 operator(s)" in msg.splitlines()[0]
    assert "'wide_a'" in msg and "'dense_a'" in msg and "needs TFLite >= 2.17.0" in msg
    check_opset(small["dyn"], ctx=PassContext(), target="litert-2.x")


def test_builtins_int8_rejects_float_compute(small):
    with pytest.raises(OpsetError, match=r"computes on float tensors.*quantize\{mode=int8\}"):
        check_opset(small["float"], ctx=PassContext(), target="builtins-int8")


def test_every_stage_is_checked(small, flex_model):
    staged = small["float"]
    staged.stages = [small["float"], flex_model]
    try:
        with pytest.raises(OpsetError, match=r"'det_layer' \(stage 1\)"):
            check_opset(staged, ctx=PassContext(), target="builtins")
    finally:
        staged.stages = None


def test_pipeline_text_and_report(small):
    ctx = PassContext()
    pipeline.run(small["float"], pipeline.parse("check-opset{target=tflite-2.14}"), ctx)
    want = [f"{e['op']} v{e['version']}" for e in ops_table([small["float"]])["union"]]
    assert ctx.report["check-opset"] == {"target": "tflite-2.14", "ops": want}
    with pytest.raises(PipelineError, match="unknown target 'armv7'"):
        check_opset(small["float"], ctx=PassContext(), target="armv7")


@pytest.mark.parametrize("spec", ["builtins", "builtins-int8", "tflite-2.14", "litert-2.x+select-tf"])
def test_target_file_round_trips(spec, tmp_path):
    target = load_target(spec)
    save_target(target, tmp_path / "t.json")
    back = read_target_file(tmp_path / "t.json")
    assert back == target
    assert load_target(str(tmp_path / "t.json")) == target
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["format"] == "tflc-opset" and data["builtins"]["CONV_2D"] >= 1


def test_release_targets_grow_with_the_release():
    old, new = load_target("tflite-2.3").builtins, load_target("tflite-2.14").builtins
    assert all(new[op] >= v for op, v in old.items())
    assert old["CONV_2D"] == 4 and new["CONV_2D"] == 7 and "GELU" not in old and new["GELU"] == 2
    assert Target("t", {"ADD": 2}).status("ADD", 3) == "too-new"


# ------------------------------------------------------------------------------------------ tflc ops

def test_tflc_ops_table_json_cc_and_target(small, tmp_path):
    path = tmp_path / "m.tflite"
    flatbuffer.save(small["dyn"], path)
    ok = tflc("ops", str(path))
    assert ok.returncode == 0, ok.stderr
    assert [ln.split()[:3] for ln in ok.stdout.splitlines() if ln.startswith("FULLY_CONNECTED")] == \
        [["FULLY_CONNECTED", "12", "2"]]
    js = tflc("ops", str(path), "--format", "json")
    assert json.loads(js.stdout)["union"] == ops_table([small["dyn"]])["union"]
    cc = tflc("ops", str(path), "--format", "cc")
    assert "Register_FULLY_CONNECTED(), /*min_version=*/12, /*max_version=*/12" in cc.stdout
    bad = tflc("ops", str(path), "--target", "tflite-2.14")
    assert_user_error(bad, "tflite-2.14", "FULLY_CONNECTED v12", code=1)
    assert "too-new" in bad.stdout
    missing = tflc("ops", str(tmp_path / "nope.tflite"))
    assert_user_error(missing, "no such file")


def test_tflc_ops_on_a_build_folder(small, tmp_path):
    from compiler.artifacts import write_build

    build = write_build(small["dyn"], tmp_path / "b")
    proc = tflc("ops", str(build), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((build / "ops.json").read_text())
    assert_user_error(tflc("ops", str(build), "--target", "builtins-int8"), "builtins-int8", code=1)


def test_ops_table_records_the_minimum_runtime_per_stage_and_build(small):
    """min_runtime is the newest runtime any (op, version) needs, from the catalogue's runtime_version.cc
    table: per stage, and for the build the newest of its stages'."""
    from kernels.catalogue import min_runtime, parse_version

    def newest(model):
        found = [min_runtime(op.name, int(op.version or 1)) for _, op in model.operators()]
        return max((f[0] for f in found if f), key=parse_version)

    table = ops_table([small["float"], small["dyn"]])
    assert [s["min_runtime"] for s in table["stages"]] == [newest(small["float"]), newest(small["dyn"])]
    assert table["stages"][1]["min_runtime"] == "2.17.0"  # FULLY_CONNECTED v12
    assert parse_version(table["stages"][0]["min_runtime"]) < parse_version("2.14")
    assert table["min_runtime"] == "2.17.0" and table["min_runtime_estimated"] is False
    assert {"conv_a", "wide_a", "dense_a"} <= set(table["keras_layers"])


def test_recorded_layers_of_a_hostile_ops_json(tmp_path):
    from kernels.registration import recorded_layers

    for text in ("{", "[]", '{"keras_layers": "conv"}', '{"keras_layers": {"a": 1}}', "[" * 100_000 + "]" * 100_000,
                 json.dumps({"keras_layers": ["x"] * 10_001})):
        (tmp_path / "ops.json").write_text(text)
        assert recorded_layers(tmp_path) == []
    (tmp_path / "ops.json").write_text(json.dumps({"keras_layers": ["conv", 3, "", "x" * 2000, None, "head"]}))
    assert recorded_layers(tmp_path) == ["conv", "head"]
    (tmp_path / "ops.json").unlink()
    assert recorded_layers(tmp_path) == []


def test_tflc_ops_on_a_build_names_keras_layers_and_the_runtime(small, tmp_path):
    from compiler.artifacts import write_build

    build = write_build(small["dyn"], tmp_path / "b")
    proc = tflc("ops", str(build), "--target", "tflite-2.14")
    assert_user_error(proc, "FULLY_CONNECTED v12", code=1)
    assert "'wide_a'" in proc.stderr and "'dense_a'" in proc.stderr
    assert "keep-float=wide_a|dense_a" in proc.stderr or "keep-float=dense_a|wide_a" in proc.stderr
    assert "minimum TFLite runtime: 2.17.0" in proc.stdout
