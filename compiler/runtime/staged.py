"""Run a build folder stage by stage, as the manifest says, with optional checkpoint and resume.

One interpreter lives at a time: each stage is loaded (memory-mapped), run, its outputs copied,
and the interpreter released before the next stage loads. Handoff tensors are dropped after the
stage named in the manifest's `drop_after`, so only what later stages still need stays alive.
Stages marked `resident` (they hold resource variables) keep their interpreter across calls of the
same StagedModel, so a streaming model's state persists; `reset()` releases them.

A build folder is untrusted input: every file is opened through `files.open_member` (inside the folder,
regular, no symlink), checked against its sha256, and each stage passes the IR's validating reader
before LiteRT sees it (cached per sha256, across processes under the user's HMAC key).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import numpy as np

from compiler import files
from compiler.errors import BuildFolderError, FlatbufferError, InputError, SourceError
from compiler.manifest import Manifest, Stage, TensorSpec, load
from compiler.runtime.litert import conform_inputs, interpreter, invoke, set_tensor

INPUT_ITEM_CAP = 16  # bytes per element an input array may declare (complex128); bounds an input file by its shapes


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
    files.atomic_write(Path(path), lambda f: np.savez(f, **{k: np.asarray(v) for k, v in outputs.items()}))


# `tflc run` takes up to this many batches of examples in one input file.
MAX_BATCHES = 4096


def load_inputs(path: str | os.PathLike, specs: list[TensorSpec] | None = None,
                batches: bool = False) -> dict[str, np.ndarray]:
    """Model inputs from an .npz (array name = input name), or an .npy for a single-input build.

    With `specs` (the manifest's inputs) member names and shapes are checked from the headers before
    any array is decompressed. With `batches`, the leading axis may hold any number of examples (up to
    MAX_BATCHES times the build's batch, which bounds what the file may declare)."""
    expect = None if specs is None else {t.name: (None if batches and t.shape else t.shape[0], *t.shape[1:])
                                         if t.shape else () for t in specs}
    single = specs[0].name if specs is not None and len(specs) == 1 else None
    cap = min(files.DATA_CAP, _input_cap(specs) * MAX_BATCHES) if batches and specs is not None else _input_cap(specs)
    return files.read_npz(path, InputError, expect=expect, max_bytes=cap, single=single)


def _input_cap(specs: list[TensorSpec] | None) -> int:
    if specs is None:
        return files.DATA_CAP
    return sum(int(np.prod(t.shape, dtype=np.int64)) for t in specs) * INPUT_ITEM_CAP + 4096


# ------------------------------------------------------------------------------------------ validation cache

_VALIDATED: set[str] = set()  # stage sha256s that passed the validating reader in this process


@functools.lru_cache(maxsize=1)
def _validator_id() -> str:
    """Changes whenever the validating reader's code does, so an old "validated" mark is not trusted."""
    import compiler

    root = Path(compiler.__file__).parent
    h = hashlib.sha256(compiler.__version__.encode())
    for p in sorted((root / "ir").glob("*.py")) + [root.parent / "kernels" / "catalogue.py"]:
        try:
            h.update(p.read_bytes())
        except OSError:
            pass
    return h.hexdigest()


def _mark_path(sha256: str) -> Path:
    return files.cache_dir() / "validated" / files.mac("validated-stage", _validator_id(), sha256)


def _was_validated(sha256: str) -> bool:
    if sha256 in _VALIDATED:
        return True
    try:
        if _mark_path(sha256).is_file():
            _VALIDATED.add(sha256)
            return True
    except OSError:
        pass
    return False


def _remember_validated(sha256: str) -> None:
    _VALIDATED.add(sha256)
    try:
        p = _mark_path(sha256)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        p.touch()
    except OSError:
        pass  # no cache folder: validate again next time


def validate_stage(fd: int, label: str) -> None:
    """The IR's validating reader on an open stage file (imported here only: the runtime stays light)."""
    from compiler.ir import flatbuffer

    data = files.map_fd(fd, label, FlatbufferError)
    try:
        flatbuffer.loads(data, origin=label)
    except (FlatbufferError, SourceError) as e:
        raise BuildFolderError(f"{e}; refusing to hand it to LiteRT") from None
    finally:
        try:
            data.close()
        except BufferError:
            pass  # the IR still holds views of the map; it goes when they do


# ------------------------------------------------------------------------------------------ the runtime

class StagedModel:
    """A build folder, checked (manifest, files, sha256, flatbuffer validity) and ready to run stage by stage."""

    def __init__(self, build_dir: str | os.PathLike, num_threads: int | None = None, use_xnnpack: bool = True):
        if num_threads is not None and num_threads < 1:
            raise InputError(f"threads must be a positive integer, got {num_threads}")
        self.dir = Path(build_dir)
        self.manifest: Manifest = load(self.dir)
        self.num_threads = num_threads
        self.use_xnnpack = use_xnnpack
        self.stages: list[Stage] = self.manifest.stages
        self.inputs: list[TensorSpec] = self.manifest.inputs
        self.outputs: list[TensorSpec] = self.manifest.outputs
        self._stat: dict[int, tuple] = {}
        for k in range(len(self.stages)):
            with self._open(k):
                pass
        # Build identity for checkpoints: the ordered stage hashes.
        self.build_id = hashlib.sha256("".join(s.sha256 for s in self.stages).encode()).hexdigest()
        self.last_run: dict[str, list[int]] = {"ran": [], "resumed": []}
        self._resident: dict[int, object] = {}  # stage index -> live interpreter (stateful stages)

    # ------------------------------------------------------------------ checks

    @contextmanager
    def _open(self, k: int) -> Iterator[int]:
        """Stage k's file, opened through the checked path; hashed (again only if it changed since) and
        validated once per sha256 before the fd is handed out."""
        st = self.stages[k]
        with files.open_member(self.dir, st.file) as fd:
            s = os.fstat(fd)
            key = (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)
            if self._stat.get(k) != key:
                if files.sha256_fd(fd) != st.sha256:
                    raise BuildFolderError(f"{self.dir}: stage file {st.file} does not match its sha256 in "
                                           "manifest.json (corrupt or modified); rebuild with tflc compile")
                if not _was_validated(st.sha256):
                    validate_stage(fd, f"{self.dir}/{st.file}")
                    _remember_validated(st.sha256)
                self._stat[k] = key
            yield fd

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs as the first stages need them: names, shapes, dtypes checked; floats quantized for int inputs."""
        specs = [(t.name, tuple(t.shape), t.dtype, t.quantization) for t in self.inputs]
        return conform_inputs(inputs, specs)

    def sample_inputs(self) -> dict[str, np.ndarray]:
        """The build's sample input, read through the checked path and its sha256."""
        ref = self.manifest.sample_input
        if ref is None:
            raise InputError(f"{self.dir}: the build names no sample input; pass inputs (--input in.npz)")
        with files.open_member(self.dir, ref.file) as fd:
            if files.sha256_fd(fd) != ref.sha256:
                raise BuildFolderError(f"{self.dir}: {ref.file} does not match its sha256 in manifest.json")
            expect = {t.name: tuple(t.shape) for t in self.inputs}
            return files.read_npz_fd(fd, f"{self.dir}/{ref.file}", BuildFolderError, expect=expect,
                                     max_bytes=_input_cap(self.inputs))

    # ------------------------------------------------------------------ running

    def _interpreter(self, k: int):
        if k in self._resident:
            return self._resident[k]
        st = self.stages[k]
        with self._open(k) as fd:  # LiteRT opens the very file we checked (/proc/self/fd), not the path again
            interp = interpreter(files.fd_path(fd, self.dir / st.file), num_threads=self.num_threads,
                                 use_xnnpack=self.use_xnnpack, label=f"{self.dir}/{st.file}")
        if st.resident:
            self._resident[k] = interp
        return interp

    def _run_stage(self, k: int, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        st = self.stages[k]
        label = f"{self.dir}/{st.file}"
        interp = self._interpreter(k)
        try:
            by_name = {d["name"]: d for d in interp.get_input_details()}
            for t in st.inputs:
                d = by_name.get(t.name)
                if d is None:
                    raise BuildFolderError(f"{label} has no input tensor {t.name!r} named in the manifest")
                _agree(label, "input", t, d)
                set_tensor(interp, d["index"], values[t.source.key], label, t.name)
            invoke(interp, label)
            outs = {d["name"]: d for d in interp.get_output_details()}
            result = {}
            for t in st.outputs:
                if t.name not in outs:
                    raise BuildFolderError(f"{label} has no output tensor {t.name!r} named in the manifest")
                _agree(label, "output", t, outs[t.name])
                result[t.name] = np.array(interp.get_tensor(outs[t.name]["index"]))
            return result
        finally:
            # Reference counting frees a non-resident interpreter (and unmaps the stage) right here; a full
            # gc.collect() per stage cost 3-8 ms each and freed nothing more (bench: same VmHWM).
            del interp

    def reset(self) -> None:
        """Release resident stages: the next call starts from the model's initial state."""
        self._resident.clear()

    def __call__(self, inputs: Mapping[str, np.ndarray], *, checkpoint: str | os.PathLike | None = None,
                 resume: bool = False, progress: bool = False,
                 on_stage: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
        """Run all stages; returns the model outputs by manifest name.

        checkpoint: folder where each stage's outputs are written atomically after it finishes.
        resume: continue after the last finished stage found in `checkpoint` (same build, same inputs).
        on_stage: called as on_stage(k, outputs) after stage k (and its checkpoint) is done."""
        values: dict[str, np.ndarray] = dict(self.check_inputs(inputs))
        if resume and checkpoint is None:
            raise InputError("resume needs a checkpoint folder (--checkpoint DIR)")
        drops = self.manifest.drops()
        kept = {t.source.key for t in self.outputs}
        ckpt = Checkpoint(Path(checkpoint), self, inputs_digest(values)) if checkpoint is not None else None
        start = 0
        self.last_run = {"ran": [], "resumed": []}
        if ckpt is not None:
            if resume:
                start = ckpt.finished()
                for k in range(start):
                    values.update(ckpt.load(k))
                    self.last_run["resumed"].append(k)
                for name, after in drops.items():
                    if after < start and name not in kept:
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
                if after == k and name not in kept:
                    values.pop(name, None)
            if progress:
                _say(f"stage {k + 1}/{n} {self.stages[k].file}: {time.perf_counter() - t0:.2f} s")
            if on_stage is not None:
                on_stage(k, outs)
            del outs
        return {o.name: values[o.source.key] for o in self.outputs}


def _agree(label: str, kind: str, spec: TensorSpec, detail: dict) -> None:
    """The stage file and the manifest must describe a tensor alike: an app sizes its buffers from the manifest."""
    shape = tuple(int(x) for x in detail["shape"])
    dtype = np.dtype(detail["dtype"]).name
    if shape != tuple(spec.shape) or dtype != spec.dtype:
        raise BuildFolderError(f"{label}: {kind} {spec.name!r} is {shape} {dtype} in the file but "
                               f"{tuple(spec.shape)} {spec.dtype} in manifest.json; rebuild with tflc compile")


def _say(line: str) -> None:
    if os.environ.get("TFLC_QUIET", "") == "":
        print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ checkpoints

class Checkpoint:
    """Per-stage checkpoint files in a folder: stage_KK.npz (outputs) then stage_KK.json (the commit record).

    The JSON is written last and names the stage's sha256, the build, the inputs' sha256 and the npz's
    sha256, sealed with an HMAC under the user's key (kept outside the checkpoint folder), so a resume
    trusts a stage only if all four match this run and nobody without the key wrote the record. A record
    that fails any check is not trusted: that stage runs again."""

    def __init__(self, folder: Path, model: StagedModel, inputs_sha256: str):
        self.dir = folder
        self.model = model
        self.inputs_sha256 = inputs_sha256
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--checkpoint {folder}: is a file, not a folder")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise files.write_error(folder, e) from None
        for p, _, _ in files.stale(self.dir):  # temp files of a run that was killed mid-write
            p.unlink(missing_ok=True)

    def _names(self, k: int) -> tuple[str, str]:
        return f"stage_{k:02d}.npz", f"stage_{k:02d}.json"

    def clear(self) -> None:
        for k in range(len(self.model.stages)):
            for name in reversed(self._names(k)):
                p = self.dir / name
                if p.is_symlink() or p.is_file():
                    p.unlink()

    def _seal(self, record: dict) -> str:
        return files.mac("checkpoint", json.dumps(record, sort_keys=True))

    def save(self, k: int, outputs: Mapping[str, np.ndarray]) -> None:
        npz, meta = (self.dir / n for n in self._names(k))
        for p in (npz, meta):  # an empty folder where a record goes (tampering): make room; anything else fails
            if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
                p.rmdir()
        names = list(outputs)
        # Positional keys: tensor names may hold '/' or ':' which do not round-trip as zip member names.
        files.atomic_write(npz, lambda f: np.savez(f, **{f"t{i}": np.asarray(outputs[n]) for i, n in enumerate(names)}))
        record = {"stage": k, "stage_sha256": self.model.stages[k].sha256, "build": self.model.build_id,
                  "inputs_sha256": self.inputs_sha256, "npz_sha256": files.sha256_file(npz), "outputs": names}
        record["mac"] = self._seal(record)
        files.atomic_write(meta, lambda f: f.write(json.dumps(record, indent=1).encode()))

    def _record(self, k: int) -> dict | None:
        """Stage k's record if it is well-formed and sealed with our key; None otherwise."""
        try:
            rec = json.loads(files.read_member(self.dir, self._names(k)[1], max_bytes=1 << 20))
        except (BuildFolderError, ValueError, RecursionError):
            return None
        if not isinstance(rec, dict) or not files.mac_ok(rec.get("mac"), "checkpoint", json.dumps(
                {key: v for key, v in rec.items() if key != "mac"}, sort_keys=True)):
            return None
        want = [t.name for t in self.model.stages[k].outputs]
        if rec.get("outputs") != want or rec.get("stage") != k:
            return None
        return rec

    def finished(self) -> int:
        """Number of leading stages with a valid checkpoint for this build and these inputs."""
        k = 0
        while k < len(self.model.stages):
            rec = self._record(k)
            if rec is None:
                if (self.dir / self._names(k)[1]).exists():
                    _say(f"{self.dir}: checkpoint of stage {k} is not valid (damaged or not written by this "
                         "user's tflc); running it again")
                break
            if rec["build"] != self.model.build_id or rec["stage_sha256"] != self.model.stages[k].sha256:
                raise BuildFolderError(f"{self.dir}: checkpoint of stage {k} was written by a different build; "
                                       "delete the folder or run without --resume")
            if rec["inputs_sha256"] != self.inputs_sha256:
                raise InputError(f"{self.dir}: checkpoint of stage {k} was written for different inputs; "
                                 "pass the same inputs, or run without --resume")
            try:
                with files.open_member(self.dir, self._names(k)[0]) as fd:
                    ok = files.sha256_fd(fd) == rec["npz_sha256"]
            except BuildFolderError:
                ok = False
            if not ok:
                break  # damaged: run this stage again
            k += 1
        return k

    def load(self, k: int) -> dict[str, np.ndarray]:
        st = self.model.stages[k]
        expect = {f"t{i}": tuple(t.shape) for i, t in enumerate(st.outputs)}
        cap = sum(int(np.prod(t.shape, dtype=np.int64)) for t in st.outputs) * INPUT_ITEM_CAP + 4096
        with files.open_member(self.dir, self._names(k)[0]) as fd:
            arrays = files.read_npz_fd(fd, f"{self.dir}/{self._names(k)[0]}", BuildFolderError, expect=expect,
                                       max_bytes=cap)
        return {t.name: arrays[f"t{i}"] for i, t in enumerate(st.outputs)}
