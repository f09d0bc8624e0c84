"""Write a build folder atomically: stage files, manifest.json, ops.json, register_ops.cc, reports.

The folder is assembled in a temporary sibling and renamed into place, so a failed compile
leaves no partial folder and an existing build is replaced only by a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import compiler
from compiler.files import fsync_dir, sha256_file
from compiler.manifest import FORMAT, MANIFEST, Manifest
from compiler.finish import finish
from compiler.ir import Model, Tensor, flatbuffer, type_name
from compiler.progress import bar



def tensor_entry(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": type_name(t.type),
            "quantization": t.quantization.to_json() if t.quantization is not None else None,
            **({"shape_signature": [int(d) for d in t.shape_signature]}
               if t.shape_signature is not None and -1 in t.shape_signature else {})}


def write_build(model: Model, out_dir: str | os.PathLike, *, source: Any = None, pipeline: str = "",
                report: dict[str, Any] | None = None, sample_inputs: dict[str, np.ndarray] | None = None) -> Path:
    """Write `model` (and its stages, if partitioned) as a build folder. Returns the folder path."""
    from kernels.registration import ops_table, register_ops_cc

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        done = finish(model)
        stages, plan = done.parts, done.plan
        stage_entries = []
        for k, st in enumerate(bar(stages, label="writing stages")):
            fname = f"stage_{k:02d}.tflite"
            data = flatbuffer.dumps(st)
            (tmp / fname).write_bytes(data)
            stage_entries.append({
                "index": k, "file": fname, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "inputs": [dict(tensor_entry(t), source=src) for t, src in zip(st.inputs, plan.stage_sources[k])],
                "outputs": [tensor_entry(t) for t in st.outputs],
                "ops": sorted({op.name for _, op in st.operators()}),
                "resident": done.resident[k],
                "min_runtime": done.min_runtime[k],
            })
            del data
        table = ops_table(stages)
        (tmp / "ops.json").write_text(json.dumps(table, indent=1))
        (tmp / "register_ops.cc").write_text(register_ops_cc(table))
        rep = dict(report or {})
        # The precision the weights and ops ended in, read from the IR, not the mode the pipeline asked for.
        quant = done.quantization
        asked = (rep.get("passes", {}).get("quantize") or {}).get("mode")
        if asked and asked != quant:
            rep["quantization_note"] = f"quantize{{mode={asked}}} was asked; the build's precision is {quant}"
        manifest = {
            "format": FORMAT,
            "tflc_version": compiler.__version__,
            "pipeline": pipeline,
            # A file source is recorded by absolute path and digest, so verify can reload it from any
            # folder and refuse it once changed.
            "source": getattr(source, "path", None) or getattr(source, "spec", None),
            "fixture": getattr(getattr(source, "fixture", None), "name", None),
            "source_sha256": getattr(source, "sha256", None) or _source_sha256(source),
            "quantization": quant,
            # How a Keras source was lowered ("native" or "converter"); absent for .tflite sources.
            **({"frontend": source.frontend} if getattr(source, "kind", None) in ("keras", "fixture") else {}),
            "precision": done.precision,
            "inputs": [tensor_entry(t) for t in model.inputs],
            "outputs": [dict(tensor_entry(t), source=src) for t, src in zip(model.outputs, plan.output_sources)],
            "stages": stage_entries,
            "handoff": plan.handoff_json(),
        }
        if sample_inputs:
            np.savez(tmp / "sample_input.npz", **sample_inputs)
            manifest["sample_input"] = {"file": "sample_input.npz", "sha256": sha256_file(tmp / "sample_input.npz")}
        # Through the typed manifest: what we write is exactly what the runtime's reader accepts.
        (tmp / MANIFEST).write_text(Manifest.from_json(manifest, str(out / MANIFEST)).dumps())
        rep.update(_sizes(stages, stage_entries))
        rep["memory_estimate"] = done.memory
        (tmp / "report.json").write_text(json.dumps(rep, indent=1, default=_jsonable))
        (tmp / "report.md").write_text(report_markdown(manifest, rep))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _source_sha256(source: Any) -> str | None:
    """sha256 of a file source (.tflite/.keras), so caches can tell whether a build is stale."""
    spec = getattr(source, "spec", None)
    if not spec or getattr(source, "kind", None) not in ("tflite", "keras"):
        return None
    path = Path(spec)
    return sha256_file(path) if path.is_file() else None


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` to `out`. The previous build is recoverable at every instant: it is first
    renamed to `.X.old-PID` and deleted only once the new one is in place; a kill between the two renames
    leaves `.X.old-PID`, which the next compile or run restores (files.recover_folder)."""
    old = None
    if os.path.lexists(out):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    fsync_dir(out.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _sizes(stages: list[Model], stage_entries: list[dict]) -> dict[str, Any]:
    hist: dict[str, int] = {}
    for st in stages:
        for name, n in st.op_histogram().items():
            hist[name] = hist.get(name, 0) + n
    out: dict[str, Any] = {
        "total_bytes": sum(s["bytes"] for s in stage_entries),
        "stage_bytes": [s["bytes"] for s in stage_entries],
        "parameter_count": sum(st.parameter_count() for st in stages),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
    }
    return out


def _mib(n) -> str:
    return f"{n / 2**20:.1f} MiB" if isinstance(n, (int, float)) else str(n)


def report_markdown(manifest: dict, rep: dict) -> str:
    lines = [f"# tflc build report: {manifest.get('source')}", "",
             f"- tflc {manifest['tflc_version']}, pipeline `{manifest['pipeline']}`",
             f"- quantization: {manifest['quantization']}",
             f"- stages: {len(manifest['stages'])}, total {_mib(rep.get('total_bytes', 0))}, "
             f"parameters {rep.get('parameter_count', 0):,}"]
    if "compile_seconds" in rep:
        lines.append(f"- compile wall time {rep['compile_seconds']:.1f} s, peak RSS {_mib(rep.get('peak_rss_bytes', 0))}")
    lines += ["", "## Passes", "", "| pass | seconds |", "|---|---|"]
    for t in rep.get("timings", []):
        lines.append(f"| `{t['pass']}` | {t['seconds']:.3f} |")
    lines += ["", "## Stages", "", "| stage | bytes | inputs | outputs | ops |", "|---|---|---|---|---|"]
    for s in manifest["stages"]:
        lines.append(f"| {s['file']} | {s['bytes']:,} | {len(s['inputs'])} | {len(s['outputs'])} | {len(s['ops'])} kinds |")
    est = rep.get("memory_estimate")
    if isinstance(est, dict):
        lines += ["", "## Memory estimate", "", "```", json.dumps(est, indent=1, default=str)[:4000], "```"]
    lines += ["", "## Op histogram", "", "| op | count |", "|---|---|"]
    for name, n in rep.get("op_histogram", {}).items():
        lines.append(f"| {name} | {n} |")
    for name, notes in rep.get("passes", {}).items():
        lines += ["", f"## {name}", "", "```", json.dumps(notes, indent=1, default=_jsonable)[:4000], "```"]
    return "\n".join(lines) + "\n"
