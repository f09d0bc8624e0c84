"""Run a build folder stage by stage, as the manifest says, with optional checkpoint and resume.

One interpreter lives at a time: each stage is loaded (memory-mapped), run, its outputs copied,
and the interpreter released before the next stage loads. Handoff tensors are dropped after the
stage named in the manifest's `drop_after`, so only what later stages still need stays alive.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from compiler.errors import BuildFolderError, InputError
from compiler.files import atomic_write, read_npz, sha256_file
from compiler.runtime.litert import interpreter, invoke, quantize, set_tensor



def inputs_digest(inputs: Mapping[str, np.ndarray]) -> str:
    """sha256 over the inputs' names, dtypes, shapes and bytes (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        a = np.ascontiguousarray(inputs[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def save_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray]) -> None:
    """Write outputs to an .npz atomically (a crash leaves either the old file or the complete new one)."""
    atomic_write(Path(path), lambda f: np.savez(f, **{k: np.asarray(v) for k, v in outputs.items()}))


def load_inputs(npz_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read model inputs from an .npz (array name = model input name)."""
    return read_npz(npz_path, InputError)


class StagedModel:
    """A build folder, checked (manifest, files, sha256) and ready to run stage by stage."""

    def __init__(self, build_dir: str | os.PathLike, num_threads: int | None = None, use_xnnpack: bool = True):
        from compiler.manifest import read_manifest

        self.dir = Path(build_dir)
        self.manifest = read_manifest(self.dir)
        self.num_threads = num_threads
        self.use_xnnpack = use_xnnpack
        self.stages: list[dict] = self.manifest["stages"]
        self.inputs: list[dict] = self.manifest.get("inputs", [])
        self.outputs: list[dict] = self.manifest.get("outputs", [])
        self._check_manifest()
        self._stat: dict[int, tuple] = {}
        for k, st in enumerate(self.stages):
            self._verify(k)
        # Build identity for checkpoints: the ordered stage hashes.
        self.build_id = hashlib.sha256("".join(s["sha256"] for s in self.stages).encode()).hexdigest()
        self.last_run: dict[str, list[int]] = {"ran": [], "resumed": []}

    # ------------------------------------------------------------------ checks

    def _check_manifest(self) -> None:
        where = self.dir / "manifest.json"
        names = {i["name"] for i in self.inputs}
        produced: dict[str, int] = {}
        for k, st in enumerate(self.stages):
            for key in ("file", "sha256", "inputs", "outputs"):
                if key not in st:
                    raise BuildFolderError(f"{where}: stage {k} has no {key!r}")
            for t in st["inputs"]:
                src = t.get("source") or {}
                if "model_input" in src:
                    if src["model_input"] not in names:
                        raise BuildFolderError(f"{where}: stage {k} input {t['name']!r} comes from unknown model "
                                               f"input {src['model_input']!r}")
                elif "stage" in src:
                    if src["stage"] >= k or produced.get(src["output"]) is None:
                        raise BuildFolderError(f"{where}: stage {k} input {t['name']!r} comes from "
                                               f"{src} which is not produced before stage {k}")
                else:
                    raise BuildFolderError(f"{where}: stage {k} input {t['name']!r} has no source")
            for t in st["outputs"]:
                produced[t["name"]] = k
        for o in self.outputs:
            src = o.get("source") or {"stage": produced.get(o["name"]), "output": o["name"]}
            if src.get("stage") is None or src["output"] not in produced:
                raise BuildFolderError(f"{where}: model output {o['name']!r} is produced by no stage")

    def _verify(self, k: int) -> None:
        """Check stage k's file exists and matches its sha256 (hashing again only if the file changed)."""
        st = self.stages[k]
        path = self.dir / st["file"]
        try:
            s = path.stat()
        except FileNotFoundError:
            raise BuildFolderError(f"{self.dir}: stage file {st['file']} is missing; rebuild with tflc compile") from None
        key = (s.st_ino, s.st_size, s.st_mtime_ns)
        if self._stat.get(k) == key:
            return
        if sha256_file(path) != st["sha256"]:
            raise BuildFolderError(f"{self.dir}: stage file {st['file']} does not match its sha256 in manifest.json "
                                   "(corrupt or modified); rebuild with tflc compile")
        self._stat[k] = key

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs as the first stages need them: names, shapes, dtypes checked; floats quantized for int inputs."""
        expected = [i["name"] for i in self.inputs]
        for name in inputs:
            if name not in expected:
                raise InputError(f"unknown input {name!r}; the build's inputs are {', '.join(expected)}")
        out = {}
        for spec in self.inputs:
            name = spec["name"]
            if name not in inputs:
                raise InputError(f"missing input {name!r}; the build needs {', '.join(expected)}")
            a = np.asarray(inputs[name])
            shape = tuple(int(d) for d in spec["shape"])
            if a.shape != shape:
                raise InputError(f"input {name!r}: shape {shape} expected, got {a.shape}")
            want = np.dtype(spec["dtype"])  # manifest dtypes are numpy names ("float32", "int8", ...)
            if a.dtype != want:
                if spec.get("quantization") and np.issubdtype(want, np.integer) and np.issubdtype(a.dtype, np.floating):
                    a = quantize(a, spec["quantization"], want)
                else:
                    raise InputError(f"input {name!r}: dtype {want} expected, got {a.dtype}"
                                     + (f" (convert with .astype(np.{want}))" if np.can_cast(a.dtype, want, "same_kind") else ""))
            out[name] = np.ascontiguousarray(a)
        return out

    # ------------------------------------------------------------------ running

    def _run_stage(self, k: int, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        st = self.stages[k]
        self._verify(k)  # the hash is checked before the file reaches LiteRT
        interp = interpreter(self.dir / st["file"], num_threads=self.num_threads, use_xnnpack=self.use_xnnpack)
        try:
            by_name = {d["name"]: d for d in interp.get_input_details()}
            for t in st["inputs"]:
                d = by_name.get(t["name"])
                if d is None:
                    raise BuildFolderError(f"{self.dir}: {st['file']} has no input tensor {t['name']!r} named in the manifest")
                src = t["source"]
                key = src["model_input"] if "model_input" in src else src["output"]
                set_tensor(interp, d["index"], values[key], f"{self.dir}/{st['file']}", t["name"])
            invoke(interp, f"{self.dir}/{st['file']}")
            outs = {d["name"]: d for d in interp.get_output_details()}
            result = {}
            for t in st["outputs"]:
                if t["name"] not in outs:
                    raise BuildFolderError(f"{self.dir}: {st['file']} has no output tensor {t['name']!r} named in the manifest")
                result[t["name"]] = np.array(interp.get_tensor(outs[t["name"]]["index"]))
            return result
        finally:
            # Reference counting frees the interpreter (and unmaps the stage) right here; a full
            # gc.collect() per stage cost 3-8 ms each and freed nothing more (bench: same VmHWM).
            del interp

    def _drop_after(self) -> dict[str, int]:
        out_names = {o["name"] for o in self.outputs}
        drops: dict[str, int] = {}
        for h in self.manifest.get("handoff", []):
            if h.get("drop_after") is not None and h["name"] not in out_names:
                drops[h["name"]] = int(h["drop_after"])
        return drops

    def __call__(self, inputs: Mapping[str, np.ndarray], *, checkpoint: str | os.PathLike | None = None,
                 resume: bool = False, progress: bool = False,
                 on_stage: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
        """Run all stages; returns the model outputs by manifest name.

        checkpoint: folder where each stage's outputs are written atomically after it finishes.
        resume: continue after the last finished stage found in `checkpoint` (same build, same inputs).
        on_stage: called as on_stage(k, outputs) after stage k (and its checkpoint) is done."""
        values: dict[str, np.ndarray] = dict(self.check_inputs(inputs))
        digest = inputs_digest(values)
        drops = self._drop_after()
        ckpt = Checkpoint(Path(checkpoint), self, digest) if checkpoint is not None else None
        if resume and ckpt is None:
            raise InputError("resume needs a checkpoint folder (--checkpoint DIR)")
        start = 0
        self.last_run = {"ran": [], "resumed": []}
        if ckpt is not None:
            if resume:
                start = ckpt.finished()
                for k in range(start):
                    values.update(ckpt.load(k))
                    self.last_run["resumed"].append(k)
                for name, after in drops.items():
                    if after < start:
                        values.pop(name, None)
                if progress and start:
                    _say(f"resuming after stage {start - 1} from {ckpt.dir}")
            else:
                ckpt.clear()
        n = len(self.stages)
        for k in range(start, n):
            t0 = time.perf_counter()
            outs = self._run_stage(k, values)
            values.update(outs)
            self.last_run["ran"].append(k)
            if ckpt is not None:
                ckpt.save(k, outs)
            for name, after in drops.items():
                if after == k:
                    values.pop(name, None)
            if progress:
                _say(f"stage {k + 1}/{n} {self.stages[k]['file']}: {time.perf_counter() - t0:.2f} s")
            if on_stage is not None:
                on_stage(k, outs)
            del outs
        return {o["name"]: values[(o.get("source") or {}).get("output", o["name"])] for o in self.outputs}


def _say(line: str) -> None:
    if os.environ.get("TFLC_QUIET", "") == "":
        print(line, file=sys.stderr, flush=True)


class Checkpoint:
    """Per-stage checkpoint files in a folder: stage_KK.npz (outputs) then stage_KK.json (the commit record).

    The JSON is written last and names the stage's sha256, the build, the inputs' sha256 and the
    npz's sha256, so a resume trusts a stage only if all four match this run."""

    def __init__(self, folder: Path, model: StagedModel, inputs_sha256: str):
        self.dir = folder
        self.model = model
        self.inputs_sha256 = inputs_sha256
        self.dir.mkdir(parents=True, exist_ok=True)

    def _paths(self, k: int) -> tuple[Path, Path]:
        return self.dir / f"stage_{k:02d}.npz", self.dir / f"stage_{k:02d}.json"

    def clear(self) -> None:
        for k in range(len(self.model.stages)):
            for p in reversed(self._paths(k)):
                p.unlink(missing_ok=True)

    def save(self, k: int, outputs: Mapping[str, np.ndarray]) -> None:
        npz, meta = self._paths(k)
        names = list(outputs)
        # Positional keys: tensor names may hold '/' or ':' which do not round-trip as zip member names.
        atomic_write(npz, lambda f: np.savez(f, **{f"t{i}": np.asarray(outputs[n]) for i, n in enumerate(names)}))
        record = {"stage": k, "stage_sha256": self.model.stages[k]["sha256"], "build": self.model.build_id,
                  "inputs_sha256": self.inputs_sha256, "npz_sha256": sha256_file(npz), "outputs": names}
        atomic_write(meta, lambda f: f.write(json.dumps(record, indent=1).encode()))

    def _record(self, k: int) -> dict | None:
        npz, meta = self._paths(k)
        if not meta.is_file() or not npz.is_file():
            return None
        try:
            return json.loads(meta.read_text())
        except (OSError, ValueError):
            return None

    def finished(self) -> int:
        """Number of leading stages with a valid checkpoint for this build and these inputs."""
        k = 0
        while k < len(self.model.stages):
            rec = self._record(k)
            if rec is None:
                break
            if (rec.get("build") != self.model.build_id or rec.get("stage_sha256") != self.model.stages[k]["sha256"]
                    or rec.get("stage") != k):
                raise BuildFolderError(f"{self.dir}: checkpoint of stage {k} was written by a different build; "
                                       "delete the folder or run without --resume")
            if rec.get("inputs_sha256") != self.inputs_sha256:
                raise InputError(f"{self.dir}: checkpoint of stage {k} was written for different inputs; "
                                 "pass the same inputs, or run without --resume")
            if sha256_file(self._paths(k)[0]) != rec.get("npz_sha256"):
                break  # damaged: run this stage again
            k += 1
        return k

    def load(self, k: int) -> dict[str, np.ndarray]:
        npz, _ = self._paths(k)
        rec = self._record(k)
        with np.load(npz, allow_pickle=False) as z:
            return {name: np.array(z[f"t{i}"]) for i, name in enumerate(rec["outputs"])}
