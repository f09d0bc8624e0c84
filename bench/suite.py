"""The benchmark scenarios, their cached builds and their measurements.

Every heavy step is a subprocess, one at a time (this is a 2-core machine):
- `python -m bench.convert`: the fixture's Keras model → bench/cache/<model>/float.tflite (once);
- `python -m compiler compile float.tflite --pipeline P -o bench/cache/<model>/<scenario>` per
  unpartitioned scenario (float, int8); each partitioned one compiles from its unpartitioned sibling's
  stage_00.tflite with just its partition step (quantizing once); a compile is skipped when the build
  folder already has the same pipeline from a source of the same sha256 (and calibration);
- `python -m bench.measure <build> --repeat 1`, `runs` times per scenario, round-robin over the
  scenarios so a slow drift of the machine spreads over all of them instead of biasing one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.files import atomic_write, sha256_file

ROOT = Path(__file__).resolve().parent.parent
BASE = "strip-unused,dedupe-buffers"
FIG4_STAGES = (1, 2, 3, 5, 8, 11, 16, 24, 32)
# Budgets count what the stages add to the runtime's idle process (peak minus baseline). Contect's
# forces it into many stages; contect-small (~6.9 MB above the baseline unpartitioned, most of it the first
# interpreter's own pages) and mobilenet_v2
# get budgets below their unpartitioned cost, which forces a real cut.
BUDGETS = {"contect": "100MiB", "contect-small": "6.5MiB", "mobilenet_v2": "14MiB"}
# int8 "works" if its outputs on the probe examples stay this close to float's (sigmoid/softmax outputs).
INT8_MAX_ABS = 0.1
INT8_MEAN_ABS = 0.02


def say(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["TFLC_QUIET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Scenario:
    key: str                 # build folder name under the cache
    label: str
    pipeline: str
    group: str               # "table1" or "fig4"
    quant: str
    stages_asked: int | None = None
    # Partitioned scenarios compile from their unpartitioned sibling's stage_00.tflite with only the
    # partition step (`step`), so the slow quantization (int8 calibration runs the float model) runs once
    # per precision; `pipeline` is the equivalent one-shot pipeline, recorded in the results.
    parent: "Scenario | None" = None
    step: str | None = None
    build: Path | None = None
    compile_error: str | None = None
    compiled: bool = False   # compiled in this run (not taken from the cache)
    runs: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def quant_step(mode: str) -> str:
    return f",quantize{{mode={mode}}}" if mode != "float" else ""


def unpartitioned(mode: str) -> Scenario:
    return Scenario(f"{mode}-1", f"{mode}, unpartitioned", BASE + quant_step(mode), "table1", mode)


def partitioned(parent: Scenario, step: str, group: str, key: str, stages_asked: int | None = None) -> Scenario:
    return Scenario(key, f"{parent.quant}, {step}", parent.pipeline + "," + step, group, parent.quant,
                    stages_asked=stages_asked, parent=parent, step=step)


def table1(float1: Scenario, int81: Scenario, budget: str) -> list[Scenario]:
    q = int81.quant
    return [float1, int81,
            partitioned(float1, "partition{auto}", "table1", "float-auto"),
            partitioned(int81, "partition{auto}", "table1", f"{q}-auto"),
            partitioned(int81, f"partition{{budget={budget}}}", "table1", f"{q}-budget")]


def fig4(int81: Scenario, counts: tuple[int, ...]) -> list[Scenario]:
    return [partitioned(int81, f"partition{{stages={n}}}", "fig4", f"{int81.quant}-stages-{n}", stages_asked=n)
            for n in counts]


# ----------------------------------------------------------------------------------------- cache

class Cache:
    """bench/cache/<model>/: float.tflite, inputs.npz, probe.npz, calibration.npz and one build per scenario."""

    def __init__(self, root: Path, model: str):
        self.model = model
        self.dir = root / model
        self.float = self.dir / "float.tflite"
        self.inputs = self.dir / "inputs.npz"
        self.probe = self.dir / "probe.npz"
        self.calibration = self.dir / "calibration.npz"
        self._source_sha: str | None = None

    def ensure_float(self) -> float:
        """Convert the fixture unless float.tflite is cached; returns the seconds spent (0 if cached)."""
        if self.float.is_file() and self.inputs.is_file() and self.probe.is_file():
            say(f"using cached {self.float} ({self.float.stat().st_size / 1e6:.1f} MB)")
            return 0.0
        say(f"converting fixtures:{self.model} to {self.float} (once; cached afterwards)")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.convert", self.model, str(self.dir)], env=_env(),
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench: converting {self.model} failed:\n{_tail(proc.stderr)}")
        return time.perf_counter() - t0

    @property
    def source_sha(self) -> str:
        if self._source_sha is None:
            self._source_sha = sha256_file(self.float)
        return self._source_sha

    def _source(self, sc: Scenario) -> tuple[Path, str]:
        """(the .tflite this scenario compiles from, the pipeline it runs on it)."""
        if sc.parent is not None:
            return sc.parent.build / "stage_00.tflite", sc.step
        return self.float, sc.pipeline

    def _sha(self, path: Path) -> str:
        return self.source_sha if path == self.float else sha256_file(path)

    def stamp(self, sc: Scenario) -> dict:
        src, pipeline = self._source(sc)
        calib = sha256_file(self.calibration) if self.calibration.is_file() and "mode=int8}" in pipeline else None
        return {"pipeline": pipeline, "equivalent_pipeline": sc.pipeline, "source": src.name if sc.parent is None
                else f"{sc.parent.key}/{src.name}", "source_sha256": self._sha(src), "calibration_sha256": calib}

    def is_fresh(self, sc: Scenario) -> bool:
        build = self.dir / sc.key
        stamp_file = self.dir / f"{sc.key}.stamp.json"
        try:
            manifest = json.loads((build / "manifest.json").read_text())
            stamp = json.loads(stamp_file.read_text())
            want = self.stamp(sc)
        except (OSError, ValueError):
            return False
        # The manifest records the pipeline; the source's sha256 is in our stamp next to the build
        # (the manifest does not record it).
        source_sha = manifest.get("source_sha256", stamp.get("source_sha256"))
        return manifest.get("pipeline") == want["pipeline"] and stamp == want and source_sha == want["source_sha256"]

    def compile(self, sc: Scenario, force: bool = False, timeout: float | None = None) -> None:
        build = self.dir / sc.key
        sc.build = build
        if sc.parent is not None and (sc.parent.compile_error or sc.parent.build is None):
            sc.compile_error = f"its unpartitioned build {sc.parent.key} failed"
            return
        if not force and self.is_fresh(sc):
            say(f"{sc.key}: cached build ({sc.pipeline})")
            return
        src, pipeline = self._source(sc)
        say(f"{sc.key}: compiling {src.relative_to(self.dir)} with {pipeline}")
        cmd = [sys.executable, "-m", "compiler", "compile", str(src), "--pipeline", pipeline, "-o", str(build)]
        if self.calibration.is_file() and "mode=int8}" in pipeline:
            cmd += ["--calibration", str(self.calibration)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            sc.compile_error = f"compile timed out after {timeout:.0f} s"
            say(f"{sc.key}: {sc.compile_error}")
            return
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tflc: error")] or proc.stderr.splitlines()[-3:]
            sc.compile_error = " ".join(lines).strip() or f"exit status {proc.returncode}"
            say(f"{sc.key}: compile failed: {sc.compile_error}")
            return
        (self.dir / f"{sc.key}.stamp.json").write_text(json.dumps(self.stamp(sc), indent=1))
        sc.compiled = True
        say(f"{sc.key}: compiled in {time.perf_counter() - t0:.1f} s")


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# ----------------------------------------------------------------------------------------- measure

def measure_once(build: Path | None, inputs: Path | None, timeout: float) -> dict:
    """One fresh `python -m bench.measure` process; its JSON line, or {'error': ...}."""
    cmd = [sys.executable, "-m", "bench.measure"]
    cmd += [str(build), "--repeat", "1"] if build is not None else ["--baseline"]
    if build is not None and inputs is not None:
        cmd += ["--inputs", str(inputs)]
    try:
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}: {_tail(proc.stderr, 3)}"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"no JSON line on stdout: {_tail(proc.stdout, 3)}"}
    result = json.loads(lines[-1])
    if result.get("forbidden_modules"):
        result["error"] = f"the measuring process imported {result['forbidden_modules'][:3]}"
    return result


def run_round_robin(scenarios: list[Scenario], inputs: Path, runs: int, timeout: float) -> list[dict]:
    """`runs` measurements of every compiled scenario and of the baseline; returns the baseline runs."""
    baseline: list[dict] = []
    todo = [sc for sc in scenarios if sc.build is not None and sc.compile_error is None]
    for r in range(runs):
        res = measure_once(None, None, timeout)
        baseline.append(res)
        say(f"run {r + 1}/{runs} baseline: {_short(res)}")
        for sc in todo:
            res = measure_once(sc.build, inputs, timeout)
            if "error" in res:
                sc.errors.append(res["error"])
            else:
                sc.runs.append(res)
            say(f"run {r + 1}/{runs} {sc.key}: {_short(res)}")
    return baseline


def _short(res: dict) -> str:
    if "error" in res:
        return f"ERROR {res['error']}"
    mem = res["memory"]["VmHWM"] / 1e6
    if res.get("baseline"):
        return f"VmHWM {mem:.1f} MB"
    return f"VmHWM {mem:.1f} MB, load {res['load_s']:.2f} s, infer {res['infer_s']:.2f} s"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------- int8 probe

def int8_works(float_build: Path, int8_build: Path, probe: Path) -> dict:
    """Compare an int8 build's outputs with the float build's on the probe examples (one at a time)."""
    from compiler.runtime import StagedModel, load_inputs

    data = load_inputs(probe)
    f_model, q_model = StagedModel(float_build), StagedModel(int8_build)
    batch = int(f_model.inputs[0].shape[0]) if f_model.inputs and f_model.inputs[0].shape else 1
    n = min(len(v) for v in data.values()) // batch
    diffs = []
    for i in range(n):
        x = {k: v[i * batch:(i + 1) * batch] for k, v in data.items()}
        a, b = f_model(x), q_model(x)
        for name in a:
            diffs.append(np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64)).reshape(-1))
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    verdict = {"examples": n, "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}
    verdict["works"] = verdict["max_abs_diff"] <= INT8_MAX_ABS and verdict["mean_abs_diff"] <= INT8_MEAN_ABS
    return verdict


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, default=str).encode()))



# ----------------------------------------------------------------------------------------- compile section

COMPILE_FRONTENDS = ("native", "converter")


def compile_once(model: str, frontend: str, out: Path, timeout: float) -> dict:
    """`tflc compile fixtures:MODEL --frontend F -o OUT` (default pipeline) in a fresh process, through
    bench.peak so the peak is the compile's own; wall time is the parent's view (interpreter start included)."""
    probe = out.parent / f"{out.name}.peak.json"
    cmd = [sys.executable, "-m", "bench.peak", str(probe), "compiler", "compile", f"fixtures:{model}",
           "--frontend", frontend, "-o", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"frontend": frontend, "error": f"compile timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tflc: error")] or proc.stderr.splitlines()[-3:]
        return {"frontend": frontend, "error": " ".join(lines).strip() or f"exit status {proc.returncode}"}
    try:
        peak = json.loads(probe.read_text())
        rep = json.loads((out / "report.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        return {"frontend": frontend, "error": f"compile left no readable result: {e}"}
    return {"frontend": frontend, "used_frontend": rep.get("frontend"), "wall_s": wall, "peak": peak["peak"],
            "children_peak": peak["children_peak"], "in_process_s": peak["seconds"],
            "reported_compile_s": rep.get("compile_seconds"), "op_histogram": rep.get("op_histogram") or {},
            "stages": len(manifest["stages"]), "bytes": sum(s["bytes"] for s in manifest["stages"]),
            "quantization": manifest.get("quantization"), "pipeline": manifest.get("pipeline"),
            "inputs": str(out / manifest["sample_input"]["file"]) if manifest.get("sample_input") else None}


def compile_section(model: str, runs: int, timeout: float, compile_timeout: float) -> list[dict]:
    """Compile with each front-end (one after the other, into a temp folder), then time each build's
    inference in `runs` fresh `bench.measure` processes, round-robin; returns one result per front-end."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tflc-bench-compile-") as tmp:
        results = []
        for fe in COMPILE_FRONTENDS:
            say(f"compile section: tflc compile fixtures:{model} --frontend {fe}")
            res = compile_once(model, fe, Path(tmp) / fe, compile_timeout)
            res["build"] = str(Path(tmp) / fe)
            res["runs"], res["errors"] = [], []
            say(f"compile section: {fe}: " + (f"ERROR {res['error']}" if "error" in res else
                                               f"{res['wall_s']:.1f} s, peak {res['peak'] / 2**20:.0f} MiB"))
            results.append(res)
        ok = [r for r in results if "error" not in r]
        for r in range(runs):
            for res in ok:
                m = measure_once(Path(res["build"]), Path(res["inputs"]) if res["inputs"] else None, timeout)
                (res["errors"] if "error" in m else res["runs"]).append(m.get("error") or m)
                say(f"compile section: run {r + 1}/{runs} {res['frontend']} build: {_short(m)}")
    return results
