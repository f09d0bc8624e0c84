"""Runtime: run_tflite against Keras, StagedModel checks (hashes, missing files, inputs), and
checkpoint/resume after a SIGKILL giving bit-identical outputs without re-running finished stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compiler.artifacts import write_build
from compiler.errors import BuildFolderError, InputError
from compiler.ir import Model, Subgraph, flatbuffer
from compiler.runtime import (StagedModel, dequantize, intermediates, load_inputs, quantize, run_tflite,
                              save_outputs)

REPO = Path(__file__).resolve().parent.parent


def split_plain(model: Model, cuts: list[int]) -> list[Model]:
    """Cut a model without control flow into stages after the given main-subgraph op positions.
    (A minimal stand-in for the partition pass, so these tests exercise only the runtime.)"""
    main = model.main
    ops = main.operators
    bounds = [0, *sorted(cuts), len(ops)]
    producer_pos = {id(t): i for i, op in enumerate(ops) for t in op.outputs if t is not None}
    last_use: dict[int, int] = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            if t is not None:
                last_use[id(t)] = i
    outputs = {id(t) for t in main.outputs}
    stages = []
    for a, b in zip(bounds, bounds[1:]):
        rng = ops[a:b]
        ins, outs, seen = [], [], set()
        for op in rng:
            for t in op.inputs:
                if t is not None and not t.is_constant and id(t) not in seen and producer_pos.get(id(t), -1) < a:
                    seen.add(id(t))
                    ins.append(t)
        for op in rng:
            for t in op.outputs:
                if t is not None and (id(t) in outputs or last_use.get(id(t), -1) >= b):
                    outs.append(t)
        tensors = [t for t in main.tensors if any(t is u for op in rng for u in op.tensors())]
        stages.append(Model(subgraphs=[Subgraph("main", tensors, ins, outs, list(rng))]))
    return stages


@pytest.fixture(scope="module")
def tiny():
    """Two inputs, two branches, an auxiliary output from the first branch, a merge head."""
    import keras

    from compiler.frontend import from_keras

    keras.utils.set_random_seed(0)
    a = keras.Input((8,), name="a", batch_size=1)
    b = keras.Input((8,), name="b", batch_size=1)
    h1 = keras.layers.Dense(16, activation="relu", name="d1")(a)
    h2 = keras.layers.Dense(16, activation="tanh", name="d2")(b)
    aux = keras.layers.Dense(2, name="aux")(h1)
    y = keras.layers.Dense(3, name="head")(keras.layers.Concatenate(name="cat")([h1, h2]))
    km = keras.Model([a, b], [y, aux])
    src = from_keras(km)
    rng = np.random.default_rng(0)
    inputs = {"a": rng.standard_normal((1, 8)).astype(np.float32), "b": rng.standard_normal((1, 8)).astype(np.float32)}
    return km, src.model, inputs


def build(model: Model, cuts: list[int], out: Path) -> Path:
    model.stages = split_plain(model, cuts)
    try:
        return write_build(model, out)
    finally:
        model.stages = None


def test_run_tflite_matches_keras(tiny):
    km, model, inputs = tiny
    data = flatbuffer.dumps(model)
    want = [np.asarray(v) for v in km([inputs["a"], inputs["b"]])]
    names = [t.name for t in model.outputs]
    for xnn in (True, False):
        got = run_tflite(data, inputs, use_xnnpack=xnn)
        assert sorted(got) == sorted(names)
        for name, w in zip(names, want):
            np.testing.assert_allclose(got[name], w, rtol=0, atol=1e-5)


def test_run_tflite_from_path_and_bad_inputs(tiny, tmp_path):
    _, model, inputs = tiny
    p = tmp_path / "m.tflite"
    flatbuffer.save(model, p)
    assert all(np.array_equal(run_tflite(p, inputs)[k], v) for k, v in run_tflite(flatbuffer.dumps(model), inputs).items())
    with pytest.raises(InputError, match="missing input 'b'"):
        run_tflite(p, {"a": inputs["a"]})
    with pytest.raises(InputError, match="unknown input 'c'"):
        run_tflite(p, {**inputs, "c": inputs["a"]})


def test_intermediates_hold_every_activation(tiny):
    _, model, inputs = tiny
    data = flatbuffer.dumps(model)
    inter = intermediates(data, inputs)
    for t in model.main.tensors:
        if not t.is_constant:
            assert t.name in inter, t.name
    out = run_tflite(data, inputs, use_xnnpack=False)
    for name, v in out.items():
        assert np.array_equal(inter[name], v)


def test_quantize_dequantize_round_trip():
    q = {"scale": [0.5], "zero_point": [3]}
    x = np.array([-100.0, -1.0, 0.0, 0.24, 0.26, 1.0, 100.0], np.float32)
    qi = quantize(x, q, np.int8)
    assert qi.tolist() == [-128, 1, 3, 3, 4, 5, 127]
    assert dequantize(qi, q).tolist() == [-65.5, -1.0, 0.0, 0.0, 0.5, 1.0, 62.0]
    per_axis = {"scale": [1.0, 2.0], "zero_point": [0, 0], "quantized_dimension": 1}
    assert quantize(np.array([[2.0, 2.0]]), per_axis, np.int8).tolist() == [[2, 1]]
    assert dequantize(np.float32([1.5]), q).tolist() == [1.5]  # floats pass through


@pytest.mark.parametrize("cuts", [[], [1], [1, 3], [2, 3, 4]])
def test_staged_equals_whole(tiny, tmp_path, cuts):
    _, model, inputs = tiny
    assert max(cuts, default=0) < len(model.main.operators), "the tiny model must have ops to cut between"
    d = build(model, cuts, tmp_path / "b")
    whole = run_tflite(flatbuffer.dumps(model), inputs, use_xnnpack=False)
    sm = StagedModel(d, use_xnnpack=False)
    assert len(sm.stages) == len(cuts) + 1
    got = sm(inputs)
    assert list(got) == [t.name for t in model.outputs]
    for k in whole:
        assert np.array_equal(got[k], whole[k]), k


def test_hash_mismatch_and_missing_stage(tiny, tmp_path):
    _, model, inputs = tiny
    d = build(model, [1, 3], tmp_path / "b")
    f = d / "stage_01.tflite"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BuildFolderError, match="stage_01.tflite does not match its sha256"):
        StagedModel(d)
    f.unlink()
    with pytest.raises(BuildFolderError, match="stage_01.tflite is missing or not a regular file inside the folder"):
        StagedModel(d)


def test_file_changed_after_load_is_caught_before_litert(tiny, tmp_path):
    _, model, inputs = tiny
    d = build(model, [1, 3], tmp_path / "b")
    sm = StagedModel(d)
    f = d / "stage_02.tflite"
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BuildFolderError, match="stage_02.tflite does not match"):
        sm(inputs)


def test_input_errors(tiny, tmp_path):
    _, model, inputs = tiny
    sm = StagedModel(build(model, [2], tmp_path / "b"))
    with pytest.raises(InputError, match=r"unknown input 'x'; the build's inputs are a, b"):
        sm({**inputs, "x": inputs["a"]})
    with pytest.raises(InputError, match="missing input 'b'"):
        sm({"a": inputs["a"]})
    with pytest.raises(InputError, match=r"input 'a': shape \(1, 8\) expected, got \(2, 8\)"):
        sm({**inputs, "a": np.zeros((2, 8), np.float32)})
    # One casting rule for run_tflite and StagedModel: floats are cast to the input's float width, and
    # nothing else is (an int array for a float input is an error in both).
    wide = {**inputs, "b": inputs["b"].astype(np.float64)}
    ref = sm(inputs)
    assert all(np.array_equal(sm(wide)[k], ref[k]) for k in ref)
    stage0 = tmp_path / "b" / "stage_00.tflite"
    a = {"a": inputs["a"]}  # stage 0 of this cut reads only 'a'
    first = run_tflite(stage0, {"a": inputs["a"].astype(np.float64)})
    assert all(np.array_equal(first[k], run_tflite(stage0, a)[k]) for k in first)
    with pytest.raises(InputError, match="input 'b': dtype float32 expected, got int32"):
        sm({**inputs, "b": inputs["b"].astype(np.int32)})
    with pytest.raises(InputError, match="input 'a': dtype float32 expected, got int32"):
        run_tflite(stage0, {"a": inputs["a"].astype(np.int32)})
    with pytest.raises(InputError, match="resume needs a checkpoint"):
        sm(inputs, resume=True)


def test_handoff_is_dropped_after_last_use(tiny, tmp_path):
    _, model, inputs = tiny
    d = build(model, [1, 2, 3], tmp_path / "b")
    manifest = json.loads((d / "manifest.json").read_text())
    sm = StagedModel(d, use_xnnpack=False)
    alive: list[set[str]] = []

    # The runtime's live set after each stage, seen through the callback's view of `values`.
    def spy(k, outs):
        frame = sys._getframe(1)
        alive.append(set(frame.f_locals["values"]))

    sm(inputs, on_stage=spy)
    drops = {h["name"]: h["drop_after"] for h in manifest["handoff"]}
    out_names = {o["name"] for o in manifest["outputs"]}
    for k, live in enumerate(alive):
        for name in live - out_names:
            assert drops.get(name) is not None and drops[name] > k, (k, name)
        # everything a later stage reads that exists by now is still there
        for st in manifest["stages"][k + 1:]:
            for t in st["inputs"]:
                src = t["source"]
                if src.get("stage", -1) <= k:
                    assert src.get("output", src.get("model_input")) in live


def test_save_outputs_and_load_inputs(tmp_path):
    outs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3), "functional/aux:0": np.int8([1, -2])}
    p = tmp_path / "o.npz"
    save_outputs(p, outs)
    assert sorted(os.listdir(tmp_path)) == ["o.npz"]
    back = load_inputs(p)
    assert sorted(back) == sorted(outs) and all(np.array_equal(back[k], outs[k]) for k in outs)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_inputs(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="no such file"):
        load_inputs(tmp_path / "missing.npz")


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from compiler.runtime import StagedModel, load_inputs
    build, inputs, ckpt, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def on_stage(k, outs):
        print("ran", k, flush=True)
        if k == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    StagedModel(build, use_xnnpack=True)(load_inputs(inputs), checkpoint=ckpt, on_stage=on_stage)
""")


@pytest.mark.parametrize("kill_after", [0, 2])
def test_sigkill_then_resume_is_bit_identical(tiny, tmp_path, kill_after):
    _, model, inputs = tiny
    d = build(model, [1, 2, 3], tmp_path / "b")
    save_outputs(tmp_path / "in.npz", inputs)
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(d), str(tmp_path / "in.npz"), str(ckpt), str(kill_after)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout.split() == " ".join(f"ran {k}" for k in range(kill_after + 1)).split()
    assert not list(ckpt.glob(".*tmp*"))

    sm = StagedModel(d)
    ran: list[int] = []
    resumed = sm(inputs, checkpoint=ckpt, resume=True, on_stage=lambda k, o: ran.append(k))
    assert ran == list(range(kill_after + 1, 4))
    assert sm.last_run == {"ran": ran, "resumed": list(range(kill_after + 1))}
    fresh = StagedModel(d)(inputs)
    assert list(resumed) == list(fresh)
    for k in fresh:
        assert resumed[k].dtype == fresh[k].dtype and np.array_equal(resumed[k], fresh[k]), k

    # A finished run resumes to the same outputs without running anything.
    again = sm(inputs, checkpoint=ckpt, resume=True)
    assert sm.last_run["ran"] == [] and all(np.array_equal(again[k], fresh[k]) for k in fresh)
    # Other inputs must not reuse these checkpoints.
    with pytest.raises(InputError, match="different inputs"):
        sm({k: v + 1 for k, v in inputs.items()}, checkpoint=ckpt, resume=True)
    # A damaged checkpoint file is recomputed, not trusted.
    (ckpt / "stage_01.npz").write_bytes(b"garbage")
    ran.clear()
    again = sm(inputs, checkpoint=ckpt, resume=True, on_stage=lambda k, o: ran.append(k))
    assert ran == [1, 2, 3] and all(np.array_equal(again[k], fresh[k]) for k in fresh)
