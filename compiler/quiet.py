"""Keep stderr to tflc's own lines; `--verbose` lets the libraries' logs through.

TensorFlow and LiteRT log from C++ straight to file descriptor 2: absl's "WARNING: All log messages
before absl::InitializeLog() ..." and oneDNN's notice (once for each TF library loaded, so twice),
the converter's I/W lines, LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.".
TF_CPP_MIN_LOG_LEVEL does not reach absl's early logging, LiteRT reads no variable for its log level,
and TF_ENABLE_ONEDNN_OPTS=0 would silence oneDNN only by changing the kernels (and the numerics the
converter oracle is compared with). So the lines are sorted at fd 2 itself: `filtered_stderr()` points
fd 2 at a pipe whose reader thread forwards every line except library INFO/WARNING lines, while
Python's `sys.stderr` keeps the real stderr, so tflc's own lines (progress, errors) go out directly and
a terminal is still seen as one. Errors from the libraries (absl E/F lines, "ERROR: ...") pass.

Imports only the standard library: the runtime uses it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from typing import Iterator

# absl's C++ format: severity, MMDD hh:mm:ss.micros, thread id, file:line]. I and W are dropped.
_ABSL = re.compile(rb"^[IW]\d{4} [\d:.]+\s+\d+ [^\]]*\] ")
# TFLite's minimal logger and absl's pre-init notice: "INFO: ...", "WARNING: ...", "VERBOSE: ...".
_PLAIN = re.compile(rb"^(INFO|WARNING|VERBOSE): ")


# Kept even while muted: absl's fatal lines and Python's fault handler (a crash must say why).
_FATAL = re.compile(rb"^(F\d{4} |Fatal Python error|Current thread|Thread 0x|  File \")")
# Markers written to fd 2 by muted(); they travel in order with the libraries' own writes.
_MUTE, _UNMUTE = b"\x00tflc-mute\x00", b"\x00tflc-unmute\x00"
_active = False  # filtered_stderr() is running


def library_noise(line: bytes) -> bool:
    """Whether a line written to fd 2 by a library is a log line below error level."""
    return bool(_ABSL.match(line) or _PLAIN.match(line))


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Drop everything libraries write to fd 2 inside (but fatal lines), e.g. the converter's MLIR
    diagnostics, whose words reach the user through the exception. A no-op under --verbose or when
    no filter runs (tflc used as a library)."""
    if not _active:
        yield
        return
    os.write(2, _MUTE + b"\n")
    try:
        yield
    finally:
        os.write(2, _UNMUTE + b"\n")


def setup(verbose: bool) -> None:
    """Log levels for the libraries, before TensorFlow is imported."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    # Forced, not defaulted: TF's multi-line INFO records (the CPU-feature notice) have continuation
    # lines without a prefix, which the fd-2 filter cannot tell from other text. --verbose shows them.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Library warnings (Keras structure notes, deprecations) are not for the person running tflc.
    warnings.simplefilter("ignore")


@contextlib.contextmanager
def filtered_stderr(enabled: bool = True) -> Iterator[None]:
    """While inside, native writes to fd 2 pass through `library_noise`; sys.stderr writes directly."""
    global _active
    if not enabled:
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    old_stderr = sys.stderr
    if _writes_fd2(old_stderr):  # else the caller redirected sys.stderr (tests, an embedding program): keep it
        sys.stderr = open(real, "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                          errors="backslashreplace", closefd=False)
    # The reader owns its own copy of the real stderr: a child process still holding the pipe may
    # outlive the join below, and must not find a closed (or reused) descriptor.
    thread = threading.Thread(target=_forward, args=(read_end, os.dup(real)), daemon=True, name="tflc-stderr")
    thread.start()
    _active = True
    try:
        yield
    finally:
        _active = False
        sys.stderr.flush()
        if sys.stderr is not old_stderr:
            sys.stderr.close()  # our wrapper (closefd=False): `real` stays open until below
        sys.stderr = old_stderr
        os.dup2(real, 2)  # closes the pipe's last write end here; the reader sees EOF once children exit
        thread.join(timeout=2.0)
        os.close(real)


def _writes_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _forward(read_end: int, out: int) -> None:
    pending = b""
    depth = 0  # muted() blocks open

    def keep(line: bytes) -> bool:
        nonlocal depth
        if line == _MUTE or line == _UNMUTE:
            depth = max(0, depth + (1 if line == _MUTE else -1))
            return False
        return bool(_FATAL.match(line)) if depth else not library_noise(line)

    with open(read_end, "rb", buffering=0) as pipe, open(out, "wb", buffering=0) as sink:
        while chunk := pipe.read(65536):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            _write(sink, [ln for ln in lines if keep(ln)])
        if pending and keep(pending):
            _write(sink, [pending])


def _write(sink, lines: list[bytes]) -> None:
    if lines:
        with contextlib.suppress(OSError):
            sink.write(b"\n".join(lines) + b"\n")
