"""Size and fidelity of each quantization mode for a model without labels (full Contect).

    python -m bench.fidelity contect [--modes float16,int8-dynamic,int8] [--examples 16]

Uses the float .tflite cached by `make bench` (bench/cache/<model>/float.tflite, probe.npz,
calibration.npz). For each mode it compiles that file with `quantize{mode=...}` (a fresh `tflc
compile` subprocess), runs the float build and the quantized build with the staged runtime on the
probe examples, and reports size vs float, SNR (dB), max abs error and cosine similarity of the
outputs against the float build. Writes bench/results/<model>_fidelity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from compiler.files import atomic_write
from compiler.verify import cosine, snr_db


def _compile(src: Path, pipeline: str, out: Path, calibration: Path | None) -> None:
    cmd = [sys.executable, "-m", "compiler", "compile", str(src), "--pipeline", pipeline, "-o", str(out)]
    if calibration is not None:
        cmd += ["--calibration", str(calibration)]
    subprocess.run(cmd, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _run(build: Path, probe: dict[str, np.ndarray], n: int) -> np.ndarray:
    # A fresh process per build keeps each run's memory and LiteRT state separate.
    code = ("import sys, numpy as np; from compiler.runtime import StagedModel; "
            "p = dict(np.load(sys.argv[2])); n = int(sys.argv[3]); m = StagedModel(sys.argv[1]); "
            "outs = [np.concatenate([np.asarray(v).reshape(-1) for v in "
            "m({k: a[i:i + 1] for k, a in p.items()}).values()]) for i in range(n)]; "
            "np.save(sys.argv[4], np.stack(outs))")
    out = build / "fidelity_outputs.npy"
    subprocess.run([sys.executable, "-c", code, str(build), str(build / "probe.npz"), str(n), str(out)], check=True)
    return np.load(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="contect")
    p.add_argument("--modes", default="float16,int8-dynamic,int8")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--cache", default="bench/cache")
    p.add_argument("--results", default="bench/results")
    args = p.parse_args(argv)

    cache = Path(args.cache) / args.model
    src = cache / "float.tflite"
    if not src.is_file():
        raise SystemExit(f"{src}: missing; run `make bench BENCH_MODEL={args.model}` first")
    with np.load(cache / "probe.npz") as z:
        probe = {k: z[k] for k in z.files}
    n = min(args.examples, len(next(iter(probe.values()))))
    calibration = cache / "calibration.npz" if (cache / "calibration.npz").is_file() else None

    rows = []
    builds = {"float": "strip-unused,dedupe-buffers"}
    builds.update({m: f"strip-unused,dedupe-buffers,quantize{{mode={m}}}" for m in args.modes.split(",")})
    ref = None
    float_bytes = None
    for mode, pipeline in builds.items():
        out = cache / f"fidelity-{mode}"
        print(f"[fidelity] {mode}: compiling", file=sys.stderr, flush=True)
        _compile(src, pipeline, out, calibration if mode in ("int8", "int16x8") else None)
        np.savez(out / "probe.npz", **probe)
        got = _run(out, probe, n)
        size = sum(s["bytes"] for s in json.loads((out / "manifest.json").read_text())["stages"])
        if ref is None:
            ref, float_bytes = got, size
        snr = snr_db(ref, got)
        rows.append({"mode": mode, "bytes": size, "size_vs_float": size / float_bytes,
                     "snr_db": None if np.isinf(snr) else snr,  # None: bit-identical
                     "max_abs_error": float(np.max(np.abs(ref - got))), "cosine": cosine(ref, got), "examples": n})
        print(f"[fidelity] {rows[-1]}", file=sys.stderr, flush=True)

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"# Quantization fidelity: {args.model}", "",
             f"Outputs of each build against the float build on {n} probe examples (no labels).", "",
             "| mode | bytes | size vs float | SNR dB | max abs error | cosine |", "|---|---|---|---|---|---|"]
    for r in rows:
        snr = "exact" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
        lines.append(f"| {r['mode']} | {r['bytes']:,} | {r['size_vs_float']:.3f} | {snr} "
                     f"| {r['max_abs_error']:.2e} | {r['cosine']:.6f} |")
    md = "\n".join(lines) + "\n"
    atomic_write(results / f"{args.model}_fidelity.json", lambda f: f.write(json.dumps(rows, indent=1).encode()))
    atomic_write(results / f"{args.model}_fidelity.md", lambda f: f.write(md.encode()))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
