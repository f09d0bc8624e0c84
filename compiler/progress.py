"""Progress on stderr: a spinner with elapsed time for work of unknown length, a bar for loops.

stdout stays for results. On a terminal the line animates; otherwise (CI logs) one line is
printed when the work starts and one when it ends, so logs stay readable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _enabled() -> bool:
    return os.environ.get("TFLC_QUIET", "") == ""


def _tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def spinner(message: str) -> Iterator[None]:
    if not _enabled():
        yield
        return
    start = time.perf_counter()
    stop = threading.Event()

    def spin():
        for ch in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{ch} {message} ... {time.perf_counter() - start:6.1f} s")
            sys.stderr.flush()
            if stop.wait(0.2):
                break

    thread = None
    if _tty():
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
    else:
        print(f"... {message}", file=sys.stderr, flush=True)
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        if thread is not None:
            thread.join()
            sys.stderr.write("\r\033[K")
        status = "done" if ok else "failed"
        print(f"{status}: {message} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


def bar(items: Iterable[T], total: int | None = None, label: str = "") -> Iterator[T]:
    """Iterate with a progress bar on stderr: live on a terminal; off one (CI logs), one line when the
    loop starts and one when it ends."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    total = total if total is not None else len(items)  # type: ignore[arg-type]
    if not _enabled() or total == 0:
        yield from items
        return
    tty = _tty()
    start = time.perf_counter()
    if not tty:
        print(f"... {label} ({total})", file=sys.stderr, flush=True)
    done, drawn = 0, 0.0
    ok = False
    try:
        for item in items:
            yield item
            done += 1
            now = time.perf_counter()
            if tty and (now - drawn >= 0.1 or done == total):  # at most 10 redraws a second
                _draw(label, done, total, start)
                drawn = now
        ok = True
    finally:
        if tty:
            sys.stderr.write("\r\033[K")  # the done line replaces the bar
        status = "done" if ok else "stopped"
        print(f"{status}: {label} ({done}/{total}, {time.perf_counter() - start:.1f} s)", file=sys.stderr,
              flush=True)


def _draw(label: str, i: int, total: int, start: float, width: int = 30) -> None:
    filled = int(width * i / total)
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {i}/{total} "
                     f"{time.perf_counter() - start:.1f} s")
    sys.stderr.flush()
