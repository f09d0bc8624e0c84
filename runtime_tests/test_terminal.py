"""What tflc writes to stderr: progress (one line per step off a terminal, live on one) and the fd-2
filter that keeps the libraries' own log lines out unless --verbose."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from compiler import progress, quiet
from conftest import REPO

# Lines these libraries really wrote to a tflc user's stderr (TF 2.21, LiteRT 2.3).
NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795613451.120328   13839 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders.",
    b"W0000 00:00:1795613766.166229   19699 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format.",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    b"E0000 00:00:1795613766.166229   19699 mlir_graph_optimization_pass.cc:401] MLIR failed",
    b"F0000 00:00:1795613766.166229   19699 check.cc:12] Check failed: size > 0",
    b"ERROR: failed to allocate tensors",
    b"tflc: error: m.keras: no such file or folder",
    b"Traceback (most recent call last):",
]


def test_library_log_lines_are_noise_and_errors_are_not():
    assert all(quiet.library_noise(line) for line in NOISE)
    assert not any(quiet.library_noise(line) for line in KEPT)


def test_bar_off_a_terminal_is_two_lines(capsys):
    assert list(progress.bar(range(100), label="writing stages")) == list(range(100))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0] == "... writing stages (100)"
    assert lines[1].startswith("done: writing stages (100/100, ") and lines[1].endswith(" s)")


def test_bar_on_a_terminal_is_live_then_one_done_line(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_tty", lambda: True)
    list(progress.bar(range(5), label="calibrating"))
    err = capsys.readouterr().err
    assert "\rcalibrating [######" in err and " 1/5 " in err and " 5/5 " in err
    assert err.split("\r\033[K")[-1].startswith("done: calibrating (5/5, ")
    list(progress.bar(range(100_000), label="fast"))  # redraws are throttled, not one per item
    assert capsys.readouterr().err.count("\rfast [") < 50


def test_spinner_off_a_terminal_says_start_and_end(capsys):
    with progress.spinner("converting m.keras"):
        pass
    with pytest.raises(ValueError):
        with progress.spinner("exporting m.keras"):
            raise ValueError("x")
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["... converting m.keras", "done: converting m.keras",
                                                   "... exporting m.keras", "failed: exporting m.keras"]


_CHILD = textwrap.dedent("""
    import os, subprocess, sys
    from compiler import quiet
    NOISE, KEPT = {noise!r}, {kept!r}
    with quiet.filtered_stderr(enabled={enabled}):
        for line in NOISE + KEPT:
            os.write(2, line + b"\\n")           # as C++ writes: straight to fd 2
        print("tflc's own line", file=sys.stderr, flush=True)
        with quiet.muted():
            os.write(2, b"loc(fused[...]): error: 'tf.Foo' op is neither a custom op nor a flex op\\n")
            os.write(2, b"F0000 00:00:1.5 1 x.cc:1] fatal, kept while muted\\n")
        # A child process inherits fd 2: its library lines are sorted the same way.
        subprocess.run([sys.executable, "-c", "import os; os.write(2, {noise0!r} + b'\\\\n' + b'ERROR: child\\\\n')"])
    print("after", file=sys.stderr, flush=True)
""")


@pytest.mark.parametrize("enabled", [True, False])
def test_filtered_stderr_drops_library_logs_at_fd_2(enabled):
    code = _CHILD.format(noise=NOISE, kept=KEPT, enabled=enabled, noise0=NOISE[3])
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    if enabled:
        # In the order written: library lines before tflc's own line come out before it.
        assert lines == KEPT + [b"tflc's own line", b"F0000 00:00:1.5 1 x.cc:1] fatal, kept while muted",
                                b"ERROR: child", b"after"]
    else:  # --verbose: everything, muted blocks included
        assert all(line in lines for line in NOISE + KEPT) and any(b"neither a custom op" in ln for ln in lines)


_GIL_CHILD = textwrap.dedent("""
    import ctypes, sys
    from compiler import quiet
    libc = ctypes.PyDLL(None)  # keeps the GIL during write(), as a C++ extension that does not release it
    kept = b"ERROR: kept line\\n" * 20000                              # 340 KB, far above a pipe's 64 KiB
    dump = b"loc(x): error: " + b"m" * 200 + b"\\n"
    with quiet.filtered_stderr():
        assert libc.write(2, kept, len(kept)) == len(kept)
        with quiet.muted():
            assert libc.write(2, dump * 5000, len(dump) * 5000) == len(dump) * 5000
        print("done", file=sys.stderr)
""")


def test_megabytes_written_while_holding_the_gil_do_not_block():
    """The converter dumps its MLIR module to stderr from C++; a full pipe read by a Python thread would
    deadlock on the GIL. All of it arrives (or is muted), and nothing hangs."""
    proc = subprocess.run([sys.executable, "-c", _GIL_CHILD], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    lines = proc.stderr.splitlines()
    assert lines.count(b"ERROR: kept line") == 20000 and lines[-1] == b"done" and len(lines) == 20001
