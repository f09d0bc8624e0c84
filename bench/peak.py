"""Run a module as `python -m MODULE ARGS...` in this fresh process, then record its own peak memory.

    python -m bench.peak OUT.json compiler compile fixtures:contect-small --frontend native -o DIR

writes {"exit": status, "peak": VmHWM, "children_peak": ..., "seconds": ...} (bytes) to OUT.json.
Why not `getrusage(RUSAGE_CHILDREN).ru_maxrss` in the parent: Linux carries the high-water mark of
the address space a child replaces at exec (the bench process's own, shared through vfork) into the
child's ru_maxrss, so a child's peak can never read below its parent's. VmHWM belongs to the address
space exec created, so it is this process's own. Subprocesses the module starts (importing
TensorFlow starts a short helper) are reported apart, as children_peak: their ru_maxrss, which by the
same carry-over is at least this process's RSS when it started them, so an upper bound, not a measure.
"""

from __future__ import annotations

import json
import resource
import runpy
import sys
import time

from bench.measure import read_status


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m bench.peak OUT.json MODULE [ARGS...]", file=sys.stderr)
        return 2
    out, module, args = argv[0], argv[1], argv[2:]
    sys.argv = [module, *args]
    t0 = time.perf_counter()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    seconds = time.perf_counter() - t0
    sys.stdout.flush()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    result = {"exit": status, "peak": read_status()["VmHWM"], "children_peak": children, "seconds": seconds}
    with open(out, "w") as f:
        json.dump(result, f)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
