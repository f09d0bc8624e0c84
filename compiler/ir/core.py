"""The graph IR: Model, Subgraph, Operator, Tensor, Buffer.

Objects reference each other directly; flatbuffer indices exist only in `flatbuffer.py`.
Names follow the TFLite schema so that a reader who knows TFLite knows this IR.
Constant data lives in `Buffer.data` as a read-only uint8 numpy view of the source file
whenever possible, so importing a 1 GB model does not copy its weights.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from ai_edge_litert import schema_py_generated as schema

# TensorType -> numpy dtype (types without a numpy equivalent map to None).
_DTYPES: dict[int, Any] = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.BOOL: np.bool_,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.COMPLEX64: np.complex64,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.FLOAT64: np.float64,
    schema.TensorType.COMPLEX128: np.complex128,
    schema.TensorType.UINT64: np.uint64,
    schema.TensorType.UINT32: np.uint32,
    schema.TensorType.UINT16: np.uint16,
}
TENSOR_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
BUILTIN_CODES = {k: v for v, k in BUILTIN_NAMES.items()}


def numpy_dtype(tensor_type: int):
    """numpy dtype of a TensorType, or None if numpy has none (STRING, RESOURCE, INT4, ...)."""
    return _DTYPES.get(tensor_type)


def tensor_type_of(dtype) -> int:
    dtype = np.dtype(dtype)
    for t, d in _DTYPES.items():
        if np.dtype(d) == dtype:
            return t
    raise ValueError(f"no TFLite tensor type for numpy dtype {dtype}")


def type_name(tensor_type: int) -> str:
    return TENSOR_TYPE_NAMES.get(tensor_type, f"TYPE_{tensor_type}").lower()


def op_name(builtin_code: int) -> str:
    return BUILTIN_NAMES.get(builtin_code, f"BUILTIN_{builtin_code}")


@dataclass(eq=False)
class Buffer:
    """Raw bytes of a constant (uint8, 1-D). Shared by every tensor that reads it."""

    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def digest(self) -> bytes:
        return hashlib.sha256(memoryview(np.ascontiguousarray(self.data))).digest()


@dataclass(eq=False)
class Quantization:
    """QuantizationParameters: affine scale/zero point per tensor or per channel, plus min/max."""

    scale: np.ndarray | None = None  # float32
    zero_point: np.ndarray | None = None  # int64
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    quantized_dimension: int = 0
    details_type: int = 0
    details: Any = None

    def is_empty(self) -> bool:
        return all(v is None or len(v) == 0 for v in (self.scale, self.zero_point, self.min, self.max)) and (
            self.details_type == 0
        )

    def key(self) -> tuple:
        def arr(a):
            return None if a is None else (str(np.asarray(a).dtype), np.asarray(a).tobytes())

        return (arr(self.scale), arr(self.zero_point), arr(self.min), arr(self.max),
                self.quantized_dimension, self.details_type)

    def to_json(self) -> dict | None:
        if self.scale is None or len(self.scale) == 0:
            return None
        out = {"scale": [float(s) for s in self.scale],
               "zero_point": [int(z) for z in (self.zero_point if self.zero_point is not None else [0] * len(self.scale))]}
        if len(self.scale) > 1:
            out["quantized_dimension"] = int(self.quantized_dimension)
        return out


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: int = schema.TensorType.FLOAT32
    buffer: Buffer | None = None
    quantization: Quantization | None = None
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False
    has_rank: bool = False
    sparsity: Any = None  # SparsityParametersT, kept as is
    variant_tensors: Any = None  # list[VariantSubTypeT], kept as is

    @property
    def dtype(self):
        return numpy_dtype(self.type)

    @property
    def is_constant(self) -> bool:
        return self.buffer is not None and self.buffer.nbytes > 0

    @property
    def nbytes(self) -> int:
        """Bytes the tensor's values take at run time (0 if the element size is unknown)."""
        dtype = self.dtype
        if dtype is None or any(d < 0 for d in self.shape):
            return 0
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def numpy(self) -> np.ndarray:
        """The constant's values as a read-only numpy view in the tensor's shape."""
        if not self.is_constant:
            raise ValueError(f"tensor {self.name!r} is not a constant")
        return self.buffer.data.view(self.dtype).reshape(self.shape)

    def content_key(self) -> tuple:
        """Identity of a constant for deduplication: dtype, shape, quantization and bytes."""
        q = self.quantization.key() if self.quantization is not None and not self.quantization.is_empty() else None
        return (self.type, tuple(self.shape), q, self.sparsity is not None, self.buffer.nbytes, self.buffer.digest())


@dataclass(eq=False)
class Operator:
    builtin_code: int
    version: int = 1
    custom_code: str | None = None
    inputs: list[Tensor | None] = field(default_factory=list)
    outputs: list[Tensor | None] = field(default_factory=list)
    intermediates: list[Tensor] = field(default_factory=list)
    options_type: int = 0
    options: Any = None  # the schema's *OptionsT object
    options2_type: int = 0
    options2: Any = None
    custom_options: bytes | None = None
    custom_options_format: int = 0
    mutating_variable_inputs: list[bool] | None = None
    # Control-flow references, e.g. {"bodySubgraphIndex": <Subgraph>} for WHILE. Lists for
    # fields that hold several subgraphs. flatbuffer.py turns these back into indices.
    subgraph_refs: dict[str, Subgraph | list[Subgraph]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.builtin_code == schema.BuiltinOperator.CUSTOM:
            return f"CUSTOM:{self.custom_code}"
        return op_name(self.builtin_code)

    def called_subgraphs(self) -> list[Subgraph]:
        out: list[Subgraph] = []
        for ref in self.subgraph_refs.values():
            out.extend(ref if isinstance(ref, list) else [ref])
        return out

    def tensors(self) -> Iterator[Tensor]:
        for t in (*self.inputs, *self.outputs, *self.intermediates):
            if t is not None:
                yield t


@dataclass(eq=False)
class Subgraph:
    name: str = ""
    tensors: list[Tensor] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)

    def producers(self) -> dict[int, Operator]:
        """id(tensor) -> the operator that writes it."""
        return {id(t): op for op in self.operators for t in op.outputs if t is not None}

    def consumers(self) -> dict[int, list[Operator]]:
        out: dict[int, list[Operator]] = {}
        for op in self.operators:
            for t in op.inputs:
                if t is not None:
                    out.setdefault(id(t), []).append(op)
        return out

    def referenced_tensors(self) -> list[Tensor]:
        """Tensors used by inputs, outputs and operators, in a stable order (tensor list order first)."""
        used = {id(t) for t in self.inputs} | {id(t) for t in self.outputs}
        for op in self.operators:
            used.update(id(t) for t in op.tensors())
        ordered = [t for t in self.tensors if id(t) in used]
        seen = {id(t) for t in ordered}
        for t in (*self.inputs, *self.outputs, *(t for op in self.operators for t in op.tensors())):
            if id(t) not in seen:
                seen.add(id(t))
                ordered.append(t)
        return ordered


def reachable_subgraphs(roots: list[Subgraph]) -> list[Subgraph]:
    """`roots` and every subgraph their operators call, transitively, in breadth-first order."""
    order: list[Subgraph] = []
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        sg = stack.pop(0)
        if id(sg) in seen:
            continue
        seen.add(id(sg))
        order.append(sg)
        for op in sg.operators:
            stack.extend(op.called_subgraphs())
    return order


@dataclass(eq=False)
class SignatureDef:
    key: str
    subgraph: Subgraph
    inputs: list[tuple[str, Tensor]] = field(default_factory=list)
    outputs: list[tuple[str, Tensor]] = field(default_factory=list)


@dataclass(eq=False)
class Model:
    subgraphs: list[Subgraph] = field(default_factory=list)
    version: int = 3
    description: str = ""
    signature_defs: list[SignatureDef] = field(default_factory=list)
    metadata: list[tuple[str, Buffer]] = field(default_factory=list)
    # Not part of the flatbuffer: what tflc knows about where the model came from.
    keras_layers: list[str] = field(default_factory=list)
    # Set by the partition pass: standalone stage models in execution order. Stage inputs and
    # outputs are named tensors; a stage input's value comes from the model input or the earlier
    # stage output of the same name (the handoff contract in manifest.json is derived from that).
    stages: list["Model"] | None = None

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    def parts(self) -> list["Model"]:
        """What gets written and run: the stages if the model is partitioned, else the model itself."""
        return self.stages if self.stages is not None else [self]

    @property
    def inputs(self) -> list[Tensor]:
        return self.main.inputs

    @property
    def outputs(self) -> list[Tensor]:
        return self.main.outputs

    def operators(self) -> Iterator[tuple[Subgraph, Operator]]:
        for sg in self.subgraphs:
            for op in sg.operators:
                yield sg, op

    def constant_tensors(self) -> Iterator[Tensor]:
        for sg in self.subgraphs:
            for t in sg.tensors:
                if t.is_constant:
                    yield t

    def buffers(self) -> list[Buffer]:
        """Distinct buffers holding data, in first-use order."""
        seen: dict[int, Buffer] = {}
        for t in self.constant_tensors():
            seen.setdefault(id(t.buffer), t.buffer)
        return list(seen.values())

    def buffer_count(self) -> int:
        return len(self.buffers())

    def weight_bytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def parameter_count(self) -> int:
        """Elements in distinct constant buffers (weights, biases, and small shape constants)."""
        seen: set[int] = set()
        total = 0
        for t in self.constant_tensors():
            if id(t.buffer) not in seen and t.dtype is not None:
                seen.add(id(t.buffer))
                total += t.buffer.nbytes // max(1, np.dtype(t.dtype).itemsize)
        return total

    def op_histogram(self) -> Counter:
        return Counter(op.name for _, op in self.operators())

    def reachable_subgraphs(self, roots: list[Subgraph] | None = None) -> list[Subgraph]:
        """Subgraphs reachable from `roots` (default: the main subgraph) through control-flow ops."""
        return reachable_subgraphs(roots or [self.main])

    def summary(self) -> str:
        """A human-readable dump of the IR (used by --print-ir-after-all and `tflc inspect`)."""
        lines = []
        for i, sg in enumerate(self.subgraphs):
            lines.append(f"subgraph {i} {sg.name!r}: {len(sg.operators)} ops, {len(sg.tensors)} tensors")
            lines.append("  inputs:  " + ", ".join(f"{t.name}{list(t.shape)}:{type_name(t.type)}" for t in sg.inputs))
            lines.append("  outputs: " + ", ".join(f"{t.name}{list(t.shape)}:{type_name(t.type)}" for t in sg.outputs))
            for op in sg.operators:
                ins = ", ".join("-" if t is None else t.name for t in op.inputs)
                outs = ", ".join("-" if t is None else t.name for t in op.outputs)
                calls = "".join(f" {k}->{self.subgraphs.index(s) if s in self.subgraphs else '?'}"
                                for k, s in op.subgraph_refs.items() if not isinstance(s, list))
                lines.append(f"  {op.name} v{op.version}({ins}) -> {outs}{calls}")
        return "\n".join(lines)
