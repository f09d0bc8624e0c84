"""tflc run: several examples in one input file (a whole number of the build's batches), outputs of an
io=int8 build dequantized by default (--raw keeps the integers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fixtures
from conftest import assert_user_error, tflc


@pytest.fixture(scope="module")
def io8(tmp_path_factory):
    out = tmp_path_factory.mktemp("io8") / "b"
    proc = tflc("compile", "fixtures:contect-small", "--pipeline",
                "strip-unused,dedupe-buffers,quantize{mode=int8,io=int8},partition{stages=2}", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_several_examples_equal_one_at_a_time_and_are_dequantized(io8, tmp_path):
    x = fixtures.get("contect-small").sample_inputs(n=3, seed=1)
    np.savez(tmp_path / "three.npz", **x)
    assert tflc("run", str(io8), "--input", str(tmp_path / "three.npz"), "-o", str(tmp_path / "f.npz")).returncode == 0
    proc = tflc("run", str(io8), "--input", str(tmp_path / "three.npz"), "--raw", "-o", str(tmp_path / "q.npz"))
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "f.npz") as f, np.load(tmp_path / "q.npz") as q:
        y, raw = f["head_output"], q["head_output"]
    assert y.shape == raw.shape == (3, 1) and y.dtype == np.float32 and raw.dtype == np.int8
    out = json.loads((io8 / "manifest.json").read_text())["outputs"][0]["quantization"]
    np.testing.assert_array_equal(y, ((raw.astype(np.float64) - out["zero_point"][0]) * out["scale"][0]).astype(np.float32))
    for i in range(3):
        np.savez(tmp_path / "one.npz", **{k: v[i:i + 1] for k, v in x.items()})
        assert tflc("run", str(io8), "--input", str(tmp_path / "one.npz"), "-o", str(tmp_path / "o.npz")).returncode == 0
        with np.load(tmp_path / "o.npz") as o:
            np.testing.assert_array_equal(o["head_output"], y[i:i + 1])


def test_leading_axis_must_hold_whole_batches(io8, tmp_path):
    x = fixtures.get("contect-small").sample_inputs(n=2, seed=1)
    x["spec_1"] = x["spec_1"][:1]
    np.savez(tmp_path / "mixed.npz", **x)
    assert_user_error(tflc("run", str(io8), "--input", str(tmp_path / "mixed.npz")), "whole number of batches", code=2)
