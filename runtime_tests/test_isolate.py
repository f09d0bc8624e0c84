"""Isolation: LiteRT runs untrusted models in a child process, so its crashes become one-line errors.

The crasher is a RESHAPE whose shape input is -1: LiteRT's kernel reads the missing tensor and dies
with SIGSEGV while allocating tensors. tflc's validator rejects that file, so to see the last line of
defence work, the compile test switches the validator off in-process (the child never had it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from compiler import cli, isolate
from compiler.errors import FlatbufferError
from compiler.ir import Operator, flatbuffer
from conftest import assert_user_error, tflc
from ir_helpers import OP, act, model_of
from test_validate import two_ops


def reshape_crasher(path: Path) -> Path:
    x, y = act("x", (1, 8)), act("y", (2, 4))
    opts = schema.ReshapeOptionsT()
    opts.newShape = [2, 4]
    op = Operator(OP.RESHAPE, inputs=[x, None], outputs=[y], options_type=schema.BuiltinOptions.ReshapeOptions,
                  options=opts)
    path.write_bytes(flatbuffer.dumps(model_of([x], [y], [op], [x, y])))  # dumps does not validate
    return path


def test_smoke_turns_a_litert_crash_into_one_line(tmp_path):
    bad = reshape_crasher(tmp_path / "bad.tflite")
    with pytest.raises(isolate.LiteRTCrash) as info:
        isolate.smoke(bad)
    msg = str(info.value)
    assert msg == f"{bad}: LiteRT crashes on this model: SIGSEGV while allocating tensors (builtin kernels)"
    assert isinstance(info.value, FlatbufferError)
    with pytest.raises(FlatbufferError, match=r"operator 0 \(RESHAPE\) input 1 \(shape\) is -1"):
        flatbuffer.load(bad)  # and the validator keeps it from LiteRT in the first place


def test_smoke_passes_a_good_model_and_reports_refusals(tmp_path):
    good = tmp_path / "good.tflite"
    flatbuffer.save(two_ops(), good)
    assert isolate.smoke(good) is None
    m = two_ops()
    m.main.operators[0].inputs[1] = m.main.operators[0].inputs[1].__class__("i", (1, 8), schema.TensorType.INT32,
                                                                             m.main.operators[0].inputs[1].buffer)
    refused = tmp_path / "refused.tflite"
    refused.write_bytes(flatbuffer.dumps(m))  # float + int32 ADD: LiteRT refuses cleanly, no crash
    reason = isolate.smoke(refused)
    assert reason.startswith("builtin kernels: ") and "ADD" in reason, reason


def test_compile_writes_no_build_when_litert_crashes(tmp_path, monkeypatch, capsys):
    bad = reshape_crasher(tmp_path / "bad.tflite")
    monkeypatch.setattr(flatbuffer, "validate", lambda *a, **k: None)  # a file the validator would miss
    out = tmp_path / "build"
    code = cli.main(["compile", str(bad), "--pipeline", "strip-unused", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("tflc: error:")]
    assert errors == [f"tflc: error: {bad}: LiteRT crashes on this model: SIGSEGV while allocating tensors "
                      "(builtin kernels)"], err
    assert "Traceback" not in err
    assert not out.exists()


def test_inspect_deep_runs_litert_in_a_child(tmp_path):
    good = tmp_path / "good.tflite"
    flatbuffer.save(two_ops(), good)
    proc = tflc("inspect", "--deep", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "LiteRT: loads, allocates and invokes it with zeros (builtin kernels and XNNPACK)" in proc.stdout
    assert_user_error(tflc("inspect", "--deep", str(reshape_crasher(tmp_path / "bad.tflite"))),
                      "operator 0 (RESHAPE) input 1 (shape) is -1", code=2)


def test_run_isolate_gives_the_same_outputs_and_errors(tmp_path):
    src = tmp_path / "m.tflite"
    flatbuffer.save(two_ops(), src)
    build = tmp_path / "b"
    assert tflc("compile", str(src), "--pipeline", "strip-unused", "-o", str(build)).returncode == 0
    x = np.arange(8, dtype=np.float32).reshape(1, 8) - 3.0
    np.savez(tmp_path / "in.npz", x=x)
    outs = {}
    for mode in ("plain", "isolated"):
        extra = ["--isolate"] if mode == "isolated" else []
        proc = tflc("run", str(build), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / f"{mode}.npz"), *extra)
        assert proc.returncode == 0, proc.stderr
        outs[mode] = np.load(tmp_path / f"{mode}.npz")["y"]
    expected = (x + 2.0) * np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    np.testing.assert_allclose(outs["plain"], expected, rtol=1e-6)
    np.testing.assert_array_equal(outs["isolated"], outs["plain"])
    np.savez(tmp_path / "wrong.npz", nope=x)
    plain = assert_user_error(tflc("run", str(build), "--input", str(tmp_path / "wrong.npz")), "nope", code=2)
    isolated = assert_user_error(tflc("run", str(build), "--input", str(tmp_path / "wrong.npz"), "--isolate"),
                                 "nope", code=2)
    assert isolated == plain


def test_run_isolate_maps_a_signal_to_one_line(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -11))
    args = argparse.Namespace(build="b", input=None, output=None, checkpoint=None, resume=False, no_xnnpack=False,
                              threads=None, isolate=True)
    with pytest.raises(isolate.LiteRTCrash, match=r"^b: LiteRT crashes on this build: SIGSEGV while running its stages"):
        isolate.run_build(args)


def test_run_argv_carries_every_run_option():
    from compiler.commands import run as run_command

    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    argv = ["b", "-i", "a.npz", "-i", "c.npz", "-o", "o.npz", "--checkpoint", "ck", "--resume", "--no-xnnpack",
            "--threads", "2", "--isolate"]
    args = parser.parse_args(argv)
    again = parser.parse_args(isolate.run_argv(args)[1:])
    assert {k: v for k, v in vars(again).items() if k != "isolate"} == \
           {k: v for k, v in vars(args).items() if k != "isolate"}
    assert again.isolate is False and json.dumps(isolate.run_argv(args)[0]) == '"run"'


def test_litert_flatbuffer_verifier_runs_in_the_child(tmp_path):
    """The first one-byte change of a small model that tflc's reader accepts but LiteRT's flatbuffer
    verifier rejects (found by scanning): compile refuses it in one line and writes nothing, and no
    change before it crashes LiteRT."""
    data = flatbuffer.dumps(two_ops())
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        path = tmp_path / "flip.tflite"
        path.write_bytes(bytes(bad))
        try:
            flatbuffer.load(path)
        except FlatbufferError:
            continue  # tflc's own reader catches this one
        try:
            isolate.smoke(path)
        except isolate.LiteRTCrash:
            raise AssertionError(f"LiteRT crashes on byte {pos} flipped, and tflc's reader accepts it") from None
        except FlatbufferError as e:
            assert str(e) == f"{path}: LiteRT's flatbuffer verifier rejects this file (corrupt?)"
            proc = tflc("compile", str(path), "--pipeline", "strip-unused", "-o", str(tmp_path / "b"))
            assert_user_error(proc, "LiteRT's flatbuffer verifier rejects this file", code=2)
            assert not (tmp_path / "b").exists()
            return
    pytest.fail("no one-byte change of the model gets past tflc's reader to LiteRT's verifier")
