"""What a lowering rule writes into: one IR subgraph being built, with unique tensor names.

Rules see a `Node` (one call of a Keras layer): its input tensors, its output shapes (from Keras'
own shape inference, batch fixed) and helpers that name outputs after the layer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Buffer, Operator, Subgraph, Tensor, tensor_type_of

OP = schema.BuiltinOperator
ACT = schema.ActivationFunctionType
_OPTION_CODES = {k: v for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}


def options(kind: str, **fields):
    """A schema options object, e.g. options("Conv2DOptions", strideW=2)."""
    obj = getattr(schema, f"{kind}T")()
    for k, v in fields.items():
        if not hasattr(obj, k):
            raise AttributeError(f"{kind} has no field {k}")
        setattr(obj, k, v)
    return obj


class LazyBuffer(Buffer):
    """A weight computed from the Keras model's variables each time it is read, never held: the IR of a
    large model then costs no second copy of its weights. Passes that replace a weight (quantize) read
    it once; the writer reads what is left. `make` returns the array in the tensor's layout."""

    def __init__(self, make, shape, dtype):
        self._make, self._shape, self._dtype = make, tuple(shape), np.dtype(dtype)

    @property
    def data(self) -> np.ndarray:
        arr = np.ascontiguousarray(self._make(), dtype=self._dtype)
        if arr.shape != self._shape:
            raise ValueError(f"lazy weight has shape {arr.shape}, expected {self._shape}")
        return arr.reshape(-1).view(np.uint8)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) * self._dtype.itemsize

    def scaled(self, factor: np.ndarray) -> "LazyBuffer":
        """The same weight times `factor` (broadcast in the tensor's layout), also computed on read."""
        make = self._make
        return LazyBuffer(lambda: make() * factor, self._shape, self._dtype)


def variable(v):
    """A Keras variable's current value as float32 (read on demand by lazy weights)."""
    return lambda: np.asarray(v.numpy(), np.float32)


class Graph:
    def __init__(self, name: str = "main", lstm: str = "fused"):
        self.sg = Subgraph(name)
        self.lstm = lstm  # "fused": UNIDIRECTIONAL_SEQUENCE_LSTM; "unrolled": builtin ops per time step
        self.producer: dict[int, Operator] = {}
        self.uses: Counter = Counter()  # id(tensor) -> Keras consumers (incl. being a model output)
        self._names: set[str] = set()

    def unique(self, name: str) -> str:
        out, k = name, 1
        while out in self._names:
            out, k = f"{name}_{k}", k + 1
        self._names.add(out)
        return out

    def rename(self, t: Tensor, name: str) -> None:
        self._names.discard(t.name)
        t.name = self.unique(name)

    def tensor(self, name: str, shape, dtype=np.float32) -> Tensor:
        t = Tensor(self.unique(name), tuple(int(d) for d in shape), tensor_type_of(dtype))
        self.sg.tensors.append(t)
        return t

    def const(self, name: str, values, dtype=None) -> Tensor:
        arr = np.ascontiguousarray(values, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        t = Tensor(self.unique(name), tuple(arr.shape), tensor_type_of(arr.dtype),
                   buffer=Buffer(arr.reshape(-1).view(np.uint8)))
        self.sg.tensors.append(t)
        return t

    def lazy(self, name: str, make, shape, dtype=np.float32) -> Tensor:
        """A constant whose values `make()` computes when read (see LazyBuffer)."""
        t = Tensor(self.unique(name), tuple(int(d) for d in shape), tensor_type_of(dtype),
                   buffer=LazyBuffer(make, shape, dtype))
        self.sg.tensors.append(t)
        return t

    def variable(self, name: str, shape) -> Tensor:
        """A zero-initialised state tensor the kernel reads and writes (LSTM states)."""
        t = self.tensor(name, shape)
        t.is_variable = True
        return t

    def op(self, code: int, inputs, outputs, opts=None, version: int = 1) -> Operator:
        kind = 0 if opts is None else _OPTION_CODES[type(opts).__name__[:-1]]
        op = Operator(code, version=version, inputs=list(inputs), outputs=list(outputs), options_type=kind,
                      options=opts)
        self.sg.operators.append(op)
        for t in outputs:
            if t is not None:
                self.producer[id(t)] = op
        return op


@dataclass
class Node:
    """One call of a Keras layer, as its rule sees it."""

    graph: Graph
    layer: object
    name: str  # the layer's name, scoped by its enclosing models ("branch_0_resnet50/conv1_conv")
    inputs: list[Tensor]
    out_shapes: list[tuple[int, ...]]
    _made: list[Tensor] = field(default_factory=list)

    @property
    def x(self) -> Tensor:
        return self.inputs[0]

    def out(self, i: int = 0, dtype=np.float32) -> Tensor:
        """The layer's i-th output tensor, named after the layer (`name`, `name:1`, ...)."""
        return self.graph.tensor(self.name if i == 0 else f"{self.name}:{i}", self.out_shapes[i], dtype)

    def tmp(self, what: str, shape, dtype=np.float32) -> Tensor:
        """An intermediate tensor of a rule that emits several operators."""
        return self.graph.tensor(f"{self.name}/{what}", shape, dtype)

    def const(self, what: str, values, dtype=None) -> Tensor:
        return self.graph.const(f"{self.name}/{what}", values, dtype)

    def lazy(self, what: str, make, shape, dtype=np.float32) -> Tensor:
        return self.graph.lazy(f"{self.name}/{what}", make, shape, dtype)

    def op(self, code: int, inputs, outputs, opts=None, version: int = 1) -> Operator:
        return self.graph.op(code, inputs, outputs, opts, version)
