"""The build folder's manifest.json: typed, validated on read, written from the same types.

`Manifest.from_json(obj)` checks every field's type and range and the handoff contract (sources refer to
model inputs or earlier stages, `drop_after` agrees with later uses, no duplicate stage), so a hostile or
damaged manifest is one BuildFolderError line, never a KeyError deep in the runtime. `to_json()` writes
the same shape; `compiler/manifest.schema.json` describes it for other tools (a test keeps them in sync).

Kept free of heavy imports (no IR, no schema, no TensorFlow), because the staged runtime reads it
in the process whose memory we measure.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import BuildFolderError

MANIFEST = "manifest.json"
FORMAT = 1
MAX_BYTES = 16 << 20  # a 100-stage build's manifest is well under 1 MiB; refuse bigger before parsing
MAX_DIM = 2**31 - 1  # TFLite shapes are int32
MAX_ELEMENTS = 2**34  # per tensor: 64 GiB of float32, far beyond any phone, small enough to stop a shape bomb

# numpy names of the dtypes a tensor crossing the manifest may have (no resource/variant/string: they
# cannot be fed, read or handed off as arrays).
DTYPES = ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool", "complex64", "complex128")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")  # a plain name inside the build folder


class _Check:
    """Typed field access on a JSON object, with the field's path in every error."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, what: str):
        raise BuildFolderError(f"{self.where}: {path}: {what}")

    def obj(self, v: Any, path: str) -> dict:
        if not isinstance(v, dict):
            self.fail(path, f"expected an object, got {_kind(v)}")
        return v

    def lst(self, v: Any, path: str) -> list:
        if not isinstance(v, list):
            self.fail(path, f"expected a list, got {_kind(v)}")
        return v

    def str_(self, v: Any, path: str, *, empty: bool = False) -> str:
        if not isinstance(v, str):
            self.fail(path, f"expected a string, got {_kind(v)}")
        if (not v and not empty) or "\0" in v:
            self.fail(path, "expected a non-empty string without NUL bytes")
        return v

    def opt_str(self, v: Any, path: str) -> str | None:
        return None if v is None else self.str_(v, path, empty=True)

    def int_(self, v: Any, path: str, lo: int = 0, hi: int = 2**62) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(path, f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            self.fail(path, f"{v} is out of range [{lo}, {hi}]")
        return v

    def bool_(self, v: Any, path: str) -> bool:
        if not isinstance(v, bool):
            self.fail(path, f"expected true or false, got {_kind(v)}")
        return v

    def sha(self, v: Any, path: str) -> str:
        if not isinstance(v, str) or not _SHA256.fullmatch(v):
            self.fail(path, "expected a sha256 (64 lowercase hex digits)")
        return v

    def file(self, v: Any, path: str) -> str:
        if not isinstance(v, str) or not _FILE.fullmatch(v) or v in (".", ".."):
            self.fail(path, "expected a plain file name inside the build folder (no path, no '..')")
        return v

    def keys(self, d: dict, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        for k in required:
            if k not in d:
                self.fail(path, f"missing field {k!r}")
        extra = set(d) - set(required) - set(optional)
        if extra:
            self.fail(path, f"unknown field {sorted(extra)[0]!r}")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


# ------------------------------------------------------------------------------------------ types

@dataclass
class Quantization:
    scale: list[float]
    zero_point: list[int]
    quantized_dimension: int = 0

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str, shape: list[int]) -> "Quantization":
        rank = len(shape)
        c.obj(d, path)
        c.keys(d, path, ("scale", "zero_point"), ("quantized_dimension",))
        scale = c.lst(d["scale"], f"{path}.scale")
        zp = c.lst(d["zero_point"], f"{path}.zero_point")
        if not scale:
            c.fail(f"{path}.scale", "empty")
        for i, s in enumerate(scale):
            if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s <= 0:
                c.fail(f"{path}.scale[{i}]", "expected a finite positive number")
        if len(zp) != len(scale):
            c.fail(f"{path}.zero_point", f"{len(zp)} values for {len(scale)} scales")
        zps = [c.int_(z, f"{path}.zero_point[{i}]", -2**31, 2**31 - 1) for i, z in enumerate(zp)]
        axis = c.int_(d.get("quantized_dimension", 0), f"{path}.quantized_dimension", 0, max(rank - 1, 0))
        if len(scale) > 1 and (not rank or shape[axis] != len(scale)):
            c.fail(f"{path}.scale", f"{len(scale)} per-channel scales for axis {axis} of shape {shape}")
        return cls([float(s) for s in scale], zps, axis)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"scale": list(self.scale), "zero_point": list(self.zero_point)}
        if len(self.scale) > 1:
            out["quantized_dimension"] = self.quantized_dimension
        return out


@dataclass
class Source:
    """Where a stage input or model output comes from: a model input, or an output of an earlier stage."""

    model_input: str | None = None
    stage: int | None = None
    output: str | None = None

    @property
    def key(self) -> str:
        """The name of the value in the runtime's table of live tensors."""
        return self.model_input if self.model_input is not None else self.output  # type: ignore[return-value]

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str) -> "Source":
        c.obj(d, path)
        if "model_input" in d:
            c.keys(d, path, ("model_input",))
            return cls(model_input=c.str_(d["model_input"], f"{path}.model_input"))
        c.keys(d, path, ("stage", "output"))
        return cls(stage=c.int_(d["stage"], f"{path}.stage"), output=c.str_(d["output"], f"{path}.output"))

    def to_json(self) -> dict:
        if self.model_input is not None:
            return {"model_input": self.model_input}
        return {"stage": self.stage, "output": self.output}


@dataclass
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str
    quantization: Quantization | None = None
    shape_signature: list[int] | None = None  # present only when a dimension is dynamic (-1)
    source: Source | None = None  # stage inputs and model outputs

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str, *, source: bool) -> "TensorSpec":
        c.obj(d, path)
        c.keys(d, path, ("name", "shape", "dtype") + (("source",) if source else ()),
               ("quantization", "shape_signature"))
        name = c.str_(d["name"], f"{path}.name")
        shape = [c.int_(x, f"{path}.shape[{i}]", 0, MAX_DIM) for i, x in enumerate(c.lst(d["shape"], f"{path}.shape"))]
        if len(shape) > 16:
            c.fail(f"{path}.shape", f"rank {len(shape)} is more than 16")
        if math.prod(shape) > MAX_ELEMENTS:
            c.fail(f"{path}.shape", f"{math.prod(shape):,} elements is more than the cap of {MAX_ELEMENTS:,}")
        sig = d.get("shape_signature")
        if sig is not None:
            sig = [c.int_(x, f"{path}.shape_signature[{i}]", -1, MAX_DIM)
                   for i, x in enumerate(c.lst(sig, f"{path}.shape_signature"))]
            if len(sig) != len(shape) or any(s not in (-1, x) for s, x in zip(sig, shape)):
                c.fail(f"{path}.shape_signature", "must have the shape's rank and equal it except at -1")
        dtype = c.str_(d["dtype"], f"{path}.dtype")
        if dtype not in DTYPES:
            c.fail(f"{path}.dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
        q = d.get("quantization")
        quant = None if q is None else Quantization.from_json(q, c, f"{path}.quantization", shape)
        src = Source.from_json(d["source"], c, f"{path}.source") if source else None
        return cls(name, shape, dtype, quant, sig, src)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                               "quantization": self.quantization.to_json() if self.quantization else None}
        if self.shape_signature is not None:
            out["shape_signature"] = list(self.shape_signature)
        if self.source is not None:
            out["source"] = self.source.to_json()
        return out


@dataclass
class Stage:
    index: int
    file: str
    bytes: int
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: list[str] = field(default_factory=list)
    resident: bool = False  # holds resource variables: stays loaded across calls
    min_runtime: str | None = None
    extra: dict = field(default_factory=dict)  # fields a newer writer added, kept as they are

    _KNOWN = ("index", "file", "bytes", "sha256", "inputs", "outputs", "ops", "resident", "min_runtime")

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str) -> "Stage":
        c.obj(d, path)
        c.keys(d, path, ("index", "file", "sha256", "inputs", "outputs"), cls._KNOWN + tuple(d))
        ins = [TensorSpec.from_json(t, c, f"{path}.inputs[{i}]", source=True)
               for i, t in enumerate(c.lst(d["inputs"], f"{path}.inputs"))]
        outs = [TensorSpec.from_json(t, c, f"{path}.outputs[{i}]", source=False)
                for i, t in enumerate(c.lst(d["outputs"], f"{path}.outputs"))]
        ops = [c.str_(o, f"{path}.ops[{i}]") for i, o in enumerate(c.lst(d.get("ops", []), f"{path}.ops"))]
        return cls(index=c.int_(d["index"], f"{path}.index"), file=c.file(d["file"], f"{path}.file"),
                   bytes=c.int_(d.get("bytes", 0), f"{path}.bytes"), sha256=c.sha(d["sha256"], f"{path}.sha256"),
                   inputs=ins, outputs=outs, ops=ops, resident=c.bool_(d.get("resident", False), f"{path}.resident"),
                   min_runtime=c.opt_str(d.get("min_runtime"), f"{path}.min_runtime"),
                   extra={k: v for k, v in d.items() if k not in cls._KNOWN})

    def to_json(self) -> dict:
        out: dict[str, Any] = {"index": self.index, "file": self.file, "bytes": self.bytes, "sha256": self.sha256,
                               "inputs": [t.to_json() for t in self.inputs],
                               "outputs": [t.to_json() for t in self.outputs], "ops": list(self.ops),
                               "resident": self.resident}
        if self.min_runtime is not None:
            out["min_runtime"] = self.min_runtime
        out.update(self.extra)
        return out


@dataclass
class Handoff:
    name: str
    produced_by: int | None
    consumed_by: list[int]
    drop_after: int | None

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str) -> "Handoff":
        c.obj(d, path)
        c.keys(d, path, ("name", "consumed_by", "drop_after"), ("produced_by",))
        p = d.get("produced_by")
        drop = d["drop_after"]
        return cls(name=c.str_(d["name"], f"{path}.name"),
                   produced_by=None if p is None else c.int_(p, f"{path}.produced_by"),
                   consumed_by=[c.int_(x, f"{path}.consumed_by[{i}]")
                                for i, x in enumerate(c.lst(d["consumed_by"], f"{path}.consumed_by"))],
                   drop_after=None if drop is None else c.int_(drop, f"{path}.drop_after"))

    def to_json(self) -> dict:
        return {"name": self.name, "produced_by": self.produced_by, "consumed_by": list(self.consumed_by),
                "drop_after": self.drop_after}


@dataclass
class FileRef:
    """A file inside the build folder with its sha256 (the sample input)."""

    file: str
    sha256: str

    @classmethod
    def from_json(cls, d: Any, c: _Check, path: str) -> "FileRef":
        c.obj(d, path)
        c.keys(d, path, ("file", "sha256"))
        return cls(c.file(d["file"], f"{path}.file"), c.sha(d["sha256"], f"{path}.sha256"))

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256}


@dataclass
class Manifest:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    stages: list[Stage]
    handoff: list[Handoff] = field(default_factory=list)
    tflc_version: str = ""
    pipeline: str = ""
    source: str | None = None
    fixture: str | None = None
    source_sha256: str | None = None
    quantization: str = "float"
    sample_input: FileRef | None = None
    format: int = FORMAT
    extra: dict = field(default_factory=dict)

    _KNOWN = ("format", "tflc_version", "pipeline", "source", "fixture", "source_sha256", "quantization",
              "inputs", "outputs", "stages", "handoff", "sample_input")

    @classmethod
    def from_json(cls, d: Any, where: str = MANIFEST) -> "Manifest":
        c = _Check(where)
        c.obj(d, "manifest")
        if d.get("format") != FORMAT:
            c.fail("format", f"not a tflc manifest of format {FORMAT}")
        c.keys(d, "manifest", ("format", "inputs", "outputs", "stages"), cls._KNOWN + tuple(d))
        sha = d.get("source_sha256")
        sample = d.get("sample_input")
        m = cls(inputs=[TensorSpec.from_json(t, c, f"inputs[{i}]", source=False)
                        for i, t in enumerate(c.lst(d["inputs"], "inputs"))],
                outputs=[TensorSpec.from_json(t, c, f"outputs[{i}]", source=True)
                         for i, t in enumerate(c.lst(d["outputs"], "outputs"))],
                stages=[Stage.from_json(s, c, f"stages[{k}]") for k, s in enumerate(c.lst(d["stages"], "stages"))],
                handoff=[Handoff.from_json(h, c, f"handoff[{i}]")
                         for i, h in enumerate(c.lst(d.get("handoff", []), "handoff"))],
                tflc_version=c.str_(d.get("tflc_version", ""), "tflc_version", empty=True),
                pipeline=c.str_(d.get("pipeline", ""), "pipeline", empty=True),
                source=c.opt_str(d.get("source"), "source"), fixture=c.opt_str(d.get("fixture"), "fixture"),
                source_sha256=None if sha is None else c.sha(sha, "source_sha256"),
                quantization=c.str_(d.get("quantization", "float"), "quantization"),
                sample_input=None if sample is None else FileRef.from_json(sample, c, "sample_input"),
                extra={k: v for k, v in d.items() if k not in cls._KNOWN})
        m._check_contract(c)
        return m

    def _check_contract(self, c: _Check) -> None:
        """Cross-field rules: the handoff contract an app (and our runtime) relies on."""
        if not self.stages:
            c.fail("stages", "empty: a build has at least one stage")
        _unique([t.name for t in self.inputs], c, "inputs")
        _unique([t.name for t in self.outputs], c, "outputs")
        _unique([s.file for s in self.stages], c, "stages[].file")
        if self.sample_input is not None and self.sample_input.file in {s.file for s in self.stages}:
            c.fail("sample_input.file", "is also a stage file")
        model_inputs = {t.name for t in self.inputs}
        latest: dict[str, int] = {}  # output name -> latest stage producing it so far
        uses: dict[str, list[int]] = {}
        for k, st in enumerate(self.stages):
            if st.index != k:
                c.fail(f"stages[{k}].index", f"is {st.index}; stages must be listed in order 0, 1, ...")
            _unique([t.name for t in st.inputs], c, f"stages[{k}].inputs")
            _unique([t.name for t in st.outputs], c, f"stages[{k}].outputs")
            for i, t in enumerate(st.inputs):
                _check_source(t.source, model_inputs, latest, k, c, f"stages[{k}].inputs[{i}].source")
                uses.setdefault(t.source.key, []).append(k)
            for t in st.outputs:
                latest[t.name] = k
        n = len(self.stages)
        for i, t in enumerate(self.outputs):
            _check_source(t.source, model_inputs, latest, n, c, f"outputs[{i}].source")
        kept = {t.source.key for t in self.outputs}
        _unique([h.name for h in self.handoff], c, "handoff[].name")
        for i, h in enumerate(self.handoff):
            if h.name not in uses and h.name not in kept:
                c.fail(f"handoff[{i}]", f"{h.name!r} is used by no stage")
            last = max(uses.get(h.name, [0]))
            if h.drop_after is not None and (h.drop_after < last or h.drop_after >= n or h.name in kept):
                c.fail(f"handoff[{i}].drop_after", f"{h.name!r} is dropped after stage {h.drop_after} but "
                       + ("is a model output" if h.name in kept else f"stage {last} still uses it"))

    def drops(self) -> dict[str, int]:
        """Handoff tensor name -> the stage after which it can be freed."""
        return {h.name: h.drop_after for h in self.handoff if h.drop_after is not None}

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "format": self.format, "tflc_version": self.tflc_version, "pipeline": self.pipeline,
            "source": self.source, "fixture": self.fixture, "source_sha256": self.source_sha256,
            "quantization": self.quantization, "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs], "stages": [s.to_json() for s in self.stages],
            "handoff": [h.to_json() for h in self.handoff]}
        if self.sample_input is not None:
            out["sample_input"] = self.sample_input.to_json()
        out.update(self.extra)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False)


def _unique(names: list[str], c: _Check, path: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            c.fail(path, f"{n!r} appears twice")
        seen.add(n)


def _check_source(src: Source | None, model_inputs: set[str], latest: dict[str, int], k: int, c: _Check,
                  path: str) -> None:
    assert src is not None  # from_json(source=True) always sets it
    if src.model_input is not None:
        if src.model_input not in model_inputs:
            c.fail(path, f"model input {src.model_input!r} does not exist")
    elif src.stage >= k or latest.get(src.output) != src.stage:  # type: ignore[operator]
        c.fail(path, f"output {src.output!r} of stage {src.stage} is not produced before this point")


# ------------------------------------------------------------------------------------------ reading

def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse(text: bytes | str, where: str) -> Manifest:
    """A Manifest from manifest.json's bytes (size-capped, no NaN/Infinity, nesting depth bounded)."""
    if len(text) > MAX_BYTES:
        raise BuildFolderError(f"{where}: {len(text):,} bytes is more than a manifest's cap of {MAX_BYTES:,}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BuildFolderError(f"{where}: nested too deeply to be a tflc manifest") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BuildFolderError(f"{where}: unreadable manifest ({str(e).splitlines()[0]})") from None
    return Manifest.from_json(obj, where)


def load(build_dir: str | os.PathLike) -> Manifest:
    """The validated manifest of a build folder."""
    from compiler.files import read_member

    d = Path(build_dir)
    if not d.exists():
        raise BuildFolderError(f"{d}: no such build folder")
    if not d.is_dir():
        raise BuildFolderError(f"{d}: not a folder (expected a build folder with {MANIFEST})")
    if not (d / MANIFEST).exists():
        raise BuildFolderError(f"{d}: no {MANIFEST}; is this a tflc build folder?")
    return parse(read_member(d, MANIFEST, max_bytes=MAX_BYTES), str(d / MANIFEST))


def read_manifest(build_dir: str | os.PathLike) -> dict:
    """The validated manifest as a plain dict (for callers that index it by key)."""
    return load(build_dir).to_json()
