"""Small helpers for building IR graphs by hand in tests, and for comparing IR structurally."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from compiler.ir import Buffer, Model, Operator, Subgraph, Tensor, flatbuffer, tensor_type_of

OP = schema.BuiltinOperator


def const(name: str, values) -> Tensor:
    arr = np.ascontiguousarray(values, dtype=np.float32)
    return Tensor(name, arr.shape, tensor_type_of(arr.dtype), buffer=Buffer(arr.view(np.uint8).reshape(-1)))


def act(name: str, shape) -> Tensor:
    return Tensor(name, tuple(shape))


def binary(code: int, a: Tensor, b: Tensor, out: Tensor) -> Operator:
    if code == OP.ADD:
        opts, kind = schema.AddOptionsT(), schema.BuiltinOptions.AddOptions
    elif code == OP.MUL:
        opts, kind = schema.MulOptionsT(), schema.BuiltinOptions.MulOptions
    else:
        opts, kind = schema.SubOptionsT(), schema.BuiltinOptions.SubOptions
    return Operator(code, inputs=[a, b], outputs=[out], options_type=kind, options=opts)


def model_of(inputs, outputs, ops, tensors) -> Model:
    sg = Subgraph("main", tensors=list(tensors), inputs=list(inputs), outputs=list(outputs), operators=list(ops))
    return Model(subgraphs=[sg])


def run(model_or_bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    data = model_or_bytes if isinstance(model_or_bytes, (bytes, bytearray)) else flatbuffer.dumps(model_or_bytes)
    it = Interpreter(model_content=bytes(data))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], inputs[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def _opts(obj):
    if obj is None:
        return None
    out = {}
    for k, v in sorted(vars(obj).items()):
        out[k] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def structure(model: Model) -> list:
    """A structural description of the IR (names, shapes, types, weights, ops, options, control flow),
    independent of object identity, for Before/Expected and round-trip comparisons."""
    sg_index = {id(sg): i for i, sg in enumerate(model.subgraphs)}
    out = []
    for sg in model.subgraphs:
        tensors = sg.referenced_tensors()
        tidx = {id(t): i for i, t in enumerate(tensors)}
        out.append({
            "name": sg.name,
            "tensors": [(t.name, tuple(t.shape), t.type, t.buffer.digest() if t.is_constant else None,
                         t.quantization.key() if t.quantization is not None else None) for t in tensors],
            "inputs": [tidx[id(t)] for t in sg.inputs],
            "outputs": [tidx[id(t)] for t in sg.outputs],
            "ops": [(op.builtin_code, op.version, op.custom_code,
                     [-1 if t is None else tidx[id(t)] for t in op.inputs],
                     [-1 if t is None else tidx[id(t)] for t in op.outputs],
                     op.options_type, _opts(op.options) if not op.subgraph_refs else None,
                     {k: sg_index[id(v)] for k, v in op.subgraph_refs.items() if not isinstance(v, list)})
                    for op in sg.operators],
        })
    return out
