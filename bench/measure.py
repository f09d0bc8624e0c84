"""Measure one run of a build folder in this process: peak memory from /proc and load/inference times.

    python -m bench.measure BUILD_DIR --repeat 1 [--inputs in.npz] [--threads N] [--no-xnnpack]
    python -m bench.measure --baseline

prints one JSON line on stdout. Run it in a fresh process per measurement: VmHWM is the process's
high-water mark, so anything the process did before (or a second build) would count too. This module
imports only numpy, ai_edge_litert and tflc's runtime; never TensorFlow, whose ~1 GB import would
dwarf the runtime's own memory.

Time of a run = load (manifest and hash checks, then every stage's interpreter creation, which maps
the file, applies XNNPACK and allocates tensors) + inference (every stage's set_tensor, invoke and
output copies, and freeing the interpreter, which reference counting does at once). For a staged
build each is summed over the stages, as a phone app would see them; total_s is the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Fields of /proc/<pid>/status we report, all in kB there, in bytes here.
# VmHWM: peak resident set; VmRSS = RssAnon (heap, arenas, packed weights) + RssFile (mapped files,
# i.e. the .tflite pages touched, and shared libraries) + RssShmem.
STATUS_FIELDS = ("VmPeak", "VmSize", "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def read_status(pid: int | str = "self") -> dict[str, int]:
    """Memory fields of /proc/<pid>/status in bytes (fields the kernel does not report are left out)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                parts = value.split()
                # Every memory field is "<n> kB"; be strict so a format change fails loudly.
                if len(parts) != 2 or parts[1] != "kB":
                    raise ValueError(f"/proc/{pid}/status: unexpected {key} value {value.strip()!r}")
                out[key] = int(parts[0]) * 1024
    return out


def _forbidden_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch", "jax"))


def measure_build(build: str | os.PathLike, inputs_path: str | os.PathLike | None = None,
                  num_threads: int | None = None, use_xnnpack: bool = True) -> dict:
    """One timed run of `build` with StagedModel; returns times in seconds and per-stage times."""
    import numpy as np

    from compiler.runtime import StagedModel, staged
    from compiler.runtime.staged import load_inputs

    build = Path(build)
    if inputs_path is None:
        manifest = json.loads((build / "manifest.json").read_text())
        sample = manifest.get("sample_input")
        if not sample:
            raise SystemExit(f"{build}: the build has no sample input; pass --inputs in.npz")
        inputs_path = build / sample["file"]
    inputs = load_inputs(inputs_path)

    # Time each interpreter creation (load) separately from the rest of the stage (inference), by
    # wrapping the factory StagedModel calls; the runtime's code path is otherwise untouched.
    loads: list[float] = []
    make = staged.interpreter

    def timed_interpreter(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return make(*args, **kwargs)
        finally:
            loads.append(time.perf_counter() - t0)

    ends: list[float] = []
    staged.interpreter = timed_interpreter
    try:
        t0 = time.perf_counter()
        model = StagedModel(build, num_threads=num_threads, use_xnnpack=use_xnnpack)
        t1 = time.perf_counter()
        outputs = model(inputs, on_stage=lambda k, outs: ends.append(time.perf_counter()))
        t2 = time.perf_counter()
    finally:
        staged.interpreter = make
    check = t1 - t0
    stage_rows = []
    prev = t1
    for k, end in enumerate(ends):
        load = loads[k] if k < len(loads) else 0.0
        stage_rows.append({"stage": k, "load_s": load, "infer_s": max(0.0, end - prev - load)})
        prev = end
    load_s = check + sum(loads)
    total = t2 - t0
    digest = {name: [float(np.asarray(v, dtype=np.float64).mean()), list(np.shape(v))] for name, v in outputs.items()}
    return {"check_s": check, "load_s": load_s, "infer_s": total - load_s,
            "total_s": total,
            "stages": stage_rows, "outputs": digest}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("build", nargs="?", help="build folder written by tflc compile")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs in this process (default 1; memory is the process peak over all of them)")
    p.add_argument("--inputs", help="inputs .npz keyed by input name (default: the build's sample input)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: LiteRT's)")
    p.add_argument("--no-xnnpack", action="store_true", help="run without the XNNPACK delegate")
    p.add_argument("--baseline", action="store_true",
                   help="import the runtime and LiteRT but load no model (the process baseline)")
    p.add_argument("--save-outputs", metavar="NPZ", help="write the last run's outputs here")
    args = p.parse_args(argv)
    if args.baseline == bool(args.build):
        p.error("give a BUILD folder or --baseline (not both)")

    import numpy  # noqa: F401  (part of the baseline)
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    import compiler.manifest  # noqa: F401  (StagedModel reads the manifest with it)
    import compiler.runtime  # noqa: F401

    result: dict = {"build": args.build, "baseline": args.baseline, "repeat": args.repeat,
                    "threads": args.threads, "xnnpack": not args.no_xnnpack, "pid": os.getpid()}
    if args.build:
        runs = [measure_build(args.build, args.inputs, args.threads, not args.no_xnnpack) for _ in range(args.repeat)]
        result["runs"] = runs
        for key in ("load_s", "infer_s", "total_s"):
            result[key] = runs[0][key] if len(runs) == 1 else sorted(r[key] for r in runs)[len(runs) // 2]
    result["memory"] = read_status()
    if args.build and args.save_outputs:
        _save_outputs(args.build, args.inputs, args.threads, not args.no_xnnpack, args.save_outputs)
    result["forbidden_modules"] = _forbidden_modules()
    print(json.dumps(result), flush=True)
    return 0


def _save_outputs(build, inputs_path, threads, xnnpack, path) -> None:
    # After the memory-relevant runs: a separate run, so the measured ones are not disturbed.
    from compiler.runtime import StagedModel, load_inputs, save_outputs

    if inputs_path is None:
        manifest = json.loads((Path(build) / "manifest.json").read_text())
        inputs_path = Path(build) / manifest["sample_input"]["file"]
    outputs = StagedModel(build, num_threads=threads, use_xnnpack=xnnpack)(load_inputs(inputs_path))
    save_outputs(path, outputs)


if __name__ == "__main__":
    sys.exit(main())
