"""Keep stderr to tflc's own lines; `--verbose` lets the libraries' logs through.

TensorFlow and LiteRT log from C++ straight to file descriptor 2: absl's "WARNING: All log messages
before absl::InitializeLog() ..." and oneDNN's notice (once for each TF library loaded, so twice),
the converter's I/W lines, LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.".
TF_CPP_MIN_LOG_LEVEL does not reach absl's early logging, LiteRT reads no variable for its log level,
and TF_ENABLE_ONEDNN_OPTS=0 would silence oneDNN only by changing the kernels (and the numerics the
converter oracle is compared with). So the lines are sorted at fd 2 itself: `filtered_stderr()` points
fd 2 at a spool file whose reader thread forwards every line except library INFO/WARNING lines, while
Python's `sys.stderr` keeps the real stderr, so tflc's own lines (progress, errors) go out directly and
a terminal is still seen as one. Errors from the libraries (absl E/F lines, "ERROR: ...") pass.

Imports only the standard library: the runtime uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import tempfile
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
    """While inside, native writes to fd 2 pass through `library_noise`; sys.stderr writes directly.

    fd 2 points at an unlinked spool file, not a pipe: C++ code that writes to stderr while holding the
    GIL (the converter's diagnostics can be megabytes) would block forever on a full pipe whose reader
    is a Python thread waiting for that GIL. A file never blocks the writer; the reader follows it."""
    global _active
    if not enabled:
        yield
        return
    try:
        spool = tempfile.TemporaryFile(prefix="tflc-stderr-")
    except OSError:  # no writable temp folder: unfiltered is better than not running
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    fcntl.fcntl(spool.fileno(), fcntl.F_SETFL, fcntl.fcntl(spool.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    os.dup2(spool.fileno(), 2)  # child processes inherit it: their library lines are sorted too
    follower = _Follower(spool.fileno(), real)
    old_stderr = sys.stderr
    if _writes_fd2(old_stderr):  # else the caller redirected sys.stderr (tests, an embedding program): keep it
        sys.stderr = _Ordered(open(real, "w", buffering=1, errors="backslashreplace", closefd=False,
                                   encoding=getattr(old_stderr, "encoding", None) or "utf-8"), follower)
    stop = threading.Event()
    thread = threading.Thread(target=follower.follow, args=(stop,), daemon=True, name="tflc-stderr")
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
        os.dup2(real, 2)
        stop.set()
        thread.join()  # it drains what was written, then returns
        os.close(real)
        spool.close()


def _writes_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


class _Follower:
    """Reads the spool file from its start and writes the lines to keep to the real stderr."""

    def __init__(self, spool: int, out: int):
        self.spool, self.out = spool, out
        self.offset, self.pending, self.depth = 0, b"", 0  # depth: muted() blocks open
        self.lock = threading.Lock()

    def follow(self, stop: threading.Event) -> None:
        while not stop.wait(0.05):
            self.drain()
        self.drain(final=True)  # everything written before stop is in the file

    def drain(self, final: bool = False) -> None:
        with self.lock:
            while chunk := os.pread(self.spool, 1 << 20, self.offset):
                self.offset += len(chunk)
                lines = (self.pending + chunk).split(b"\n")
                self.pending = lines.pop()
                _write(self.out, [ln for ln in lines if self.keep(ln)])
            if final and self.pending and self.keep(self.pending):
                _write(self.out, [self.pending])

    def keep(self, line: bytes) -> bool:
        if line in (_MUTE, _UNMUTE):
            self.depth = max(0, self.depth + (1 if line == _MUTE else -1))
            return False
        return bool(_FATAL.match(line)) if self.depth else not library_noise(line)


class _Ordered:
    """sys.stderr while filtering: the library lines written so far go out before each of tflc's writes,
    so stderr keeps the order in which things happened."""

    def __init__(self, stream, follower: _Follower):
        self._stream, self._follower = stream, follower

    def write(self, text: str) -> int:
        self._follower.drain()
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _write(fd: int, lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n" if lines else b""
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]
