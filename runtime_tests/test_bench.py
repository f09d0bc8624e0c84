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


# ----------------------------------------------------------------------------------------- compile section

def test_peak_is_the_childs_own_not_the_parents_carried_over(tmp_path):
    """A parent holding 400 MB runs a 60 MB module through bench.peak: the module's VmHWM is its own,
    while the parent's RUSAGE_CHILDREN ru_maxrss inherits the parent's 400 MB (why bench.peak exists)."""
    (tmp_path / "small_alloc.py").write_text("import numpy as np\nb = np.ones(60 * 10**6 // 8)\nraise SystemExit(3)\n")
    out = tmp_path / "peak.json"
    code = textwrap.dedent(f"""
        import json, os, resource, subprocess, sys
        import numpy as np
        big = np.ones(400 * 10**6 // 8)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([{str(REPO)!r}, {str(tmp_path)!r}]))
        rc = subprocess.run([sys.executable, "-m", "bench.peak", {str(out)!r}, "small_alloc"], env=env).returncode
        print(json.dumps({{"rc": rc, "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    parent = json.loads(proc.stdout.strip().splitlines()[-1])
    child = json.loads(out.read_text())
    assert parent["rc"] == 3 and child["exit"] == 3      # the module's exit status is passed on
    assert 60 * MB <= child["peak"] < 200 * MB            # its 60 MB array, not the parent's 400 MB
    assert child["children_peak"] == 0                    # the module started no process
    assert parent["children"] >= 400 * MB                 # the carried-over number bench.peak avoids


def _fake_compile(frontend, wall, peak, hist, totals, infers):
    runs = [{"memory": {"VmHWM": 50 * MB}, "load_s": t - i, "infer_s": i, "total_s": t} for t, i in zip(totals, infers)]
    return {"frontend": frontend, "used_frontend": frontend, "wall_s": wall, "peak": peak, "children_peak": 0,
            "reported_compile_s": wall - 1, "op_histogram": hist, "stages": 1, "bytes": 2 * MB,
            "quantization": "int8-dynamic", "pipeline": "strip-unused", "runs": runs, "errors": []}


def test_compile_rows_ratios_targets_and_table():
    from bench import report

    native = report.compile_row(_fake_compile("native", 2.0, 100 * MB, {"CONV_2D": 3, "UNIDIRECTIONAL_SEQUENCE_LSTM": 2},
                                              [0.010, 0.030, 0.020], [0.004, 0.020, 0.006]))
    conv = report.compile_row(_fake_compile("converter", 30.0, 500 * MB, {"WHILE": 2, "ADD": 10, "CONV_2D": 3},
                                            [0.050, 0.040, 0.090], [0.030, 0.012, 0.080]))
    assert native["ops"] == 5 and conv["ops"] == 15
    assert list(conv["op_histogram"]) == ["ADD", "CONV_2D", "WHILE"]  # most frequent first
    assert native["total_s"] == pytest.approx(0.020) and native["infer_s"] == pytest.approx(0.006)
    assert native["run_peak"] == 50 * MB
    ratios = report.compile_ratios([native, conv])
    assert ratios["wall_s"] == pytest.approx(15.0)
    assert ratios["peak"] == pytest.approx(5.0)
    assert ratios["ops"] == pytest.approx(3.0)
    assert ratios["infer_s"] == pytest.approx(0.030 / 0.006)
    assert ratios["total_s"] == pytest.approx(0.050 / 0.020)
    assert [t["met"] for t in report.compile_targets(ratios)] == [True, True]
    # 9.9× and 3.9× miss the 10× and 4× targets.
    assert [t["met"] for t in report.compile_targets({"wall_s": 9.9, "peak": 3.9})] == [False, False]
    assert [t["met"] for t in report.compile_targets({"wall_s": None, "peak": None})] == [False, False]

    md = "\n".join(report.compile_md([native, conv], ratios))
    assert "| `--frontend native` | 2.0 (1.0) | 100.0 | 5 | 1 | 2.0 | 50.0 |" in md
    assert "| `--frontend converter` | 30.0 (29.0) | 500.0 | 15 |" in md
    assert "| converter / native | 15.00× | 5.00× | 3.00× |" in md
    assert "ops: ADD 10, CONV_2D 3, WHILE 2" in md


def test_failed_compile_shows_its_error_and_no_ratio():
    from bench import report, suite

    results = suite.compile_section("no-such-fixture", runs=1, timeout=60, compile_timeout=120)
    assert [r["frontend"] for r in results] == ["native", "converter"]
    for r in results:
        assert r["error"].startswith("tflc: error: unknown fixture 'no-such-fixture'")
        assert r["runs"] == []  # nothing to measure
    rows = [report.compile_row(r) for r in results]
    ratios = report.compile_ratios(rows)
    assert all(v is None for v in ratios.values())
    md = "\n".join(report.compile_md(rows, ratios))
    assert "| `--frontend converter` | compile failed: tflc: error: unknown fixture" in md
    assert "| converter / native | – | – | – |" in md
    assert [t["met"] for t in report.compile_targets(ratios)] == [False, False]


def test_skipped_compile_section_says_so():
    from bench.__main__ import compile_md, main

    assert compile_md("m", {"skipped": True}, 3)[-2] == "Skipped (`--skip-compile`)."
    with pytest.raises(SystemExit):  # the flag exists and takes no value
        main(["--skip-compile=yes"])
