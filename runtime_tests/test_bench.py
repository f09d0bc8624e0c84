"""The benchmark's measurement helpers: the /proc parser and `python -m bench.measure` (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench.measure import read_status
from runtime_tests.conftest import REPO
from runtime_tests.ir_helpers import OP, act, binary, const, model_of

MB = 10**6


def _env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFLC_QUIET="1", PYTHONPATH=str(REPO))


def _child(code: str) -> subprocess.Popen:
    """A Python child that runs `code`, prints 'ready', then waits for a line on stdin before exiting."""
    script = textwrap.dedent(code) + "\nprint('ready', flush=True)\nimport sys; sys.stdin.readline()\n"
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=_env(), cwd=REPO)


def _read_while_alive(code: str) -> dict[str, int]:
    proc = _child(code)
    try:
        assert proc.stdout.readline().strip() == "ready"
        return read_status(proc.pid)
    finally:
        proc.communicate("done\n", timeout=60)


def test_status_sees_a_200mb_anonymous_array_of_another_process():
    before = _read_while_alive("import numpy as np")
    after = _read_while_alive("import numpy as np\na = np.ones(200 * 10**6 // 8)")  # touched: resident
    for key in ("VmHWM", "VmRSS", "RssAnon"):
        assert after[key] >= 200 * MB, key
        assert after[key] - before[key] >= 195 * MB, key
    assert after["VmRSS"] == after["RssAnon"] + after["RssFile"] + after.get("RssShmem", 0)


def test_status_counts_a_mapped_file_in_rssfile(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(1 << 20) * 64)  # 64 MiB
    status = _read_while_alive(f"""
        import mmap
        f = open({str(path)!r}, 'rb')
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        total = sum(m[i] for i in range(0, len(m), 4096))  # touch every page
    """)
    assert status["RssFile"] >= 64 * 2**20
    assert status["VmHWM"] >= status["RssFile"]


def test_status_of_self_and_peak_survives_freeing():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, numpy as np
        from bench.measure import read_status
        a = np.ones(200 * 10**6 // 8); del a
        print(json.dumps(read_status()))
    """)], capture_output=True, text=True, env=_env(), cwd=REPO, check=True)
    status = json.loads(out.stdout)
    assert status["VmHWM"] >= 200 * MB          # the high-water mark keeps the freed array
    assert status["VmRSS"] < status["VmHWM"] - 150 * MB


def _measure(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.measure", *args], capture_output=True, text=True,
                         env=_env(), cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stdout  # exactly one JSON line
    return json.loads(lines[0])


def test_baseline_imports_the_runtime_but_not_tensorflow():
    result = _measure("--baseline")
    assert result["baseline"] and "runs" not in result
    assert result["forbidden_modules"] == []
    assert 10 * MB < result["memory"]["VmHWM"] < 200 * MB


@pytest.fixture
def weighty_build(tmp_path):
    """x + w with a 32 MB constant w, as a 2-stage build folder (y = (x + w) + w)."""
    from compiler.artifacts import write_build
    from compiler.passes import PassContext
    from compiler.passes.partition import partition

    w = np.arange(8 * 10**6, dtype=np.float32).reshape(1, -1) % 7
    x, mid, y, wt = act("x", w.shape), act("mid", w.shape), act("y", w.shape), const("w", w)
    model = model_of([x], [y], [binary(OP.ADD, x, wt, mid), binary(OP.ADD, mid, wt, y)], [x, mid, y, wt])
    model = partition(model, ctx=PassContext(), stages=2)
    sample = {"x": np.full(w.shape, 0.5, np.float32)}
    write_build(model, tmp_path / "b", sample_inputs=sample)
    return tmp_path / "b", float((2 * w + 0.5).mean())


def test_measure_runs_a_staged_build_in_a_fresh_process(weighty_build):
    build, mean = weighty_build
    result = _measure(str(build), "--repeat", "1")
    assert result["forbidden_modules"] == []
    run = result["runs"][0]
    assert [s["stage"] for s in run["stages"]] == [0, 1]
    assert run["outputs"]["y"][1] == [1, 8 * 10**6]
    assert run["outputs"]["y"][0] == pytest.approx(mean, rel=1e-6)
    for key in ("load_s", "infer_s", "total_s"):
        assert run[key] >= 0
    assert run["total_s"] == pytest.approx(run["load_s"] + run["infer_s"], rel=1e-6)
    # The 32 MB weight and the 32 MB input/handoff/output arrays are all in the peak.
    base = _measure("--baseline")["memory"]["VmHWM"]
    assert result["memory"]["VmHWM"] - base >= 64 * MB
