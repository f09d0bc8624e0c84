"""`tflc verify` on real builds of contect-small: a good build passes its budgets, a deliberately broken one
(one layer's weight scales x10) fails them, and the metrics agree with numpy on the same outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler import pipeline
from compiler.artifacts import write_build
from compiler.errors import UsageError
from compiler.ir import flatbuffer
from compiler.passes import PassContext
from compiler.verify import cosine, decisions, snr_db, verify
from runtime_tests.conftest import assert_user_error, tflc

PIPE = "strip-unused,dedupe-buffers,quantize{mode=int8-dynamic}"


@pytest.fixture(scope="module")
def src():
    from compiler.frontend import load_source

    return load_source("fixtures:contect-small")


def _compile(src, text):
    model = flatbuffer.loads(flatbuffer.dumps(src.model))
    model.keras_layers = src.model.keras_layers
    ctx = PassContext(source=src)
    return pipeline.run(model, pipeline.parse(text), ctx), ctx


@pytest.fixture(scope="module")
def builds(src, tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    good, ctx = _compile(src, PIPE)
    write_build(good, root / "good", source=src, pipeline=PIPE, report={"passes": ctx.report})
    broken, ctx = _compile(src, PIPE)
    # Break one layer: branch 0's last 3x3 conv gets its int8 weight scales x10.
    conv = [op for op in broken.main.operators if op.name == "CONV_2D" and op.inputs[1].shape == (32, 3, 3, 32)][0]
    conv.inputs[1].quantization.scale = conv.inputs[1].quantization.scale * 10
    write_build(broken, root / "broken", source=src, pipeline=PIPE, report={"passes": ctx.report})
    return root


def test_metrics_match_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    out = ref + 0.01 * rng.standard_normal(1000)
    assert snr_db(ref, out) == pytest.approx(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)))
    assert snr_db(ref, ref) == float("inf")
    assert cosine(ref, out) == pytest.approx(ref @ out / np.linalg.norm(ref) / np.linalg.norm(out))
    np.testing.assert_array_equal(decisions(np.array([[0.2], [0.5], [0.9]])), [0, 1, 1])
    np.testing.assert_array_equal(decisions(np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])), [1, 0])


def test_good_build_passes_and_broken_build_fails(builds):
    args = ["--data", "fixtures:contect-small", "--max-drop", "1.0", "--min-agreement", "0.97", "--min-snr", "30",
            "--limit", "300",
            "--no-layers"]
    ok = tflc("verify", str(builds / "good"), *args)
    assert ok.returncode == 0, ok.stderr
    report = json.loads((builds / "good" / "verify.json").read_text())
    assert report["examples"] == 300 and report["breaches"] == []
    assert report["float_accuracy"] > 85 and abs(report["accuracy_drop_pp"]) <= 1.0
    assert report["outputs"]["head_output"]["snr_db"] > 35
    assert "accuracy" in ok.stdout and "head_output" in ok.stdout

    bad = tflc("verify", str(builds / "broken"), *args)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.startswith("tflc: budget breached:")]
    assert any("SNR" in line for line in lines) and len(lines) == len(
        json.loads((builds / "broken" / "verify.json").read_text())["breaches"])
    report = json.loads((builds / "broken" / "verify.json").read_text())
    assert report["outputs"]["head_output"]["snr_db"] < 30


def test_usage_errors(builds, tmp_path, src):
    no_ref = tmp_path / "inputs.npz"
    x = src.fixture.sample_inputs(n=4, seed=0)
    np.savez(no_ref, **x)
    # A build that names no fixture, and data without references: nothing to compare with.
    model, _ = _compile(src, PIPE)
    write_build(model, tmp_path / "anon", pipeline=PIPE)
    assert_user_error(tflc("verify", str(tmp_path / "anon"), "--data", str(no_ref)), "reference", code=2)
    assert_user_error(tflc("verify", str(builds / "good"), "--data", "data.csv"), "npz", code=2)
    with pytest.raises(UsageError, match="labels"):
        verify(builds / "good", str(no_ref), max_drop=1.0, layers=False)  # Keras reference, but no labels


def test_npz_with_references_and_layer_localization(builds, src, tmp_path):
    """References from a .npz (here: the float build's own outputs) instead of Keras; per-layer SNR of
    the compiled tensors against the float build, worst first, named by Keras layer."""
    from compiler.runtime import run_tflite

    x, labels = src.fixture.evaluation()
    x = {k: v[:40] for k, v in x.items()}
    float_bytes = flatbuffer.dumps(_compile(src, "strip-unused,dedupe-buffers")[0])
    ref = np.concatenate([run_tflite(float_bytes, {k: v[i:i + 1] for k, v in x.items()})["head_output"]
                          for i in range(40)])
    data = tmp_path / "eval.npz"
    np.savez(data, labels=labels[:40], reference_head_output=ref, **x)
    report = verify(builds / "good", str(data), max_drop=5.0, layers=True)
    assert report["examples"] == 40 and report["reference"] == "npz references"
    assert report["outputs"]["head_output"]["snr_db"] > 35
    rows = report["layers"]
    assert rows, report.get("layers_skipped")
    snrs = [r["snr_db"] for r in rows if r["snr_db"] is not None]
    assert snrs == sorted(snrs)
    assert {r["layer"] for r in rows} >= {"head_dense", "branches_concat"}
    assert json.loads((builds / "good" / "verify.json").read_text())["examples"] == 40


def test_localize_against_a_reference_build(builds, src, tmp_path):
    """`--reference DIR` compares with a float build folder instead of recompiling the source: the same
    float build (the recorded pipeline minus quantize) gives the same per-tensor SNRs as the default.
    A partitioned reference is refused with one line (exit 2)."""
    from compiler.verify import float_steps, localize
    from compiler.manifest import read_manifest

    assert [s.name for s in float_steps(PIPE + ",partition{stages=2}")] == ["strip-unused", "dedupe-buffers"]
    ref_pipe = ",".join(s.text for s in float_steps(PIPE))
    model, _ = _compile(src, ref_pipe)
    write_build(model, tmp_path / "float", source=src, pipeline=ref_pipe)
    x, _ = src.fixture.evaluation()
    x = {k: v[:4] for k, v in x.items()}
    manifest = read_manifest(builds / "good")
    default = {r["tensor"]: r["snr_db"] for r in localize(builds / "good", manifest, x, examples=4)}
    given = {r["tensor"]: r["snr_db"] for r in localize(builds / "good", manifest, x, examples=4,
                                                       reference=tmp_path / "float")}
    assert default and set(default) <= set(given)
    assert all(given[t] == s for t, s in default.items())
    # Something is worse than infinitely good: the int8 weights do lose precision.
    assert any(s is not None and s < 60 for s in given.values())

    staged, _ = _compile(src, ref_pipe + ",partition{stages=2}")
    write_build(staged, tmp_path / "staged", source=src, pipeline=ref_pipe + ",partition{stages=2}")
    assert_user_error(tflc("verify", str(builds / "good"), "--data", "fixtures:contect-small", "--limit", "2",
                           "--reference", str(tmp_path / "staged")), "one stage", code=2)
