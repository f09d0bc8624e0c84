"""Structure-aware mutants of .tflite files, for the fuzz test and the fuzz campaign.

A mutant is the seed model read with the schema's object API (`ModelT`, where indices are plain
integers and nothing is checked), changed in one to three places, and packed again: tensor indices,
arities, options removed or swapped, opcodes swapped, shapes and types, aliasing, buffers and
their offsets, subgraph inputs and outputs, quantization, control-flow targets, sparsity; a few
mutants also get raw byte flips. Every mutant is reproducible from (seed file, integer seed).
"""

from __future__ import annotations

import random

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

BUILTINS = sorted(v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))
OPTION_TYPES = sorted(v for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_"))
TENSOR_TYPES = sorted(v for k, v in vars(schema.TensorType).items() if not k.startswith("_"))


def _ops(mt):
    return [(sg, op) for sg in mt.subgraphs or [] for op in sg.operators or []]


def _index(rng: random.Random, n: int) -> int:
    """A tensor index: usually in range, sometimes -1 or out of range."""
    return rng.choice([rng.randrange(max(n, 1))] * 6 + [-1, -2, n, n + rng.randrange(1, 1000), 2**31 - 1])


def _vec(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _pick_op(mt, rng):
    ops = _ops(mt)
    return rng.choice(ops) if ops else (None, None)


# ----------------------------------------------------------------------------------------- mutations

def m_op_input(mt, rng):
    sg, op = _pick_op(mt, rng)
    ins = _vec(op.inputs)
    if not ins:
        return "no inputs"
    k = rng.randrange(len(ins))
    ins[k] = _index(rng, len(sg.tensors or []))
    op.inputs = ins
    return f"op input {k} -> {ins[k]}"


def m_op_output(mt, rng):
    sg, op = _pick_op(mt, rng)
    outs = _vec(op.outputs)
    if not outs:
        return "no outputs"
    k = rng.randrange(len(outs))
    outs[k] = _index(rng, len(sg.tensors or []))
    op.outputs = outs
    return f"op output {k} -> {outs[k]}"


def m_alias_input(mt, rng):
    sg, op = _pick_op(mt, rng)
    ins, outs = _vec(op.inputs), _vec(op.outputs)
    if not ins or not outs:
        return "nothing to alias"
    outs[rng.randrange(len(outs))] = rng.choice(ins)
    op.outputs = outs
    return "op output aliases its input"


def m_alias_writer(mt, rng):
    sg, op = _pick_op(mt, rng)
    others = [o for o in sg.operators if o is not op and o.outputs is not None and len(o.outputs)]
    outs = _vec(op.outputs)
    if not others or not outs:
        return "no other writer"
    outs[rng.randrange(len(outs))] = int(rng.choice(_vec(rng.choice(others).outputs)))
    op.outputs = outs
    return "two writers"


def m_arity(mt, rng):
    sg, op = _pick_op(mt, rng)
    field = rng.choice(["inputs", "outputs"])
    vals = _vec(getattr(op, field))
    if vals and rng.random() < 0.5:
        del vals[rng.randrange(len(vals))]
        what = "dropped"
    else:
        vals.insert(rng.randrange(len(vals) + 1), _index(rng, len(sg.tensors or [])))
        what = "added"
    setattr(op, field, vals)
    return f"{what} one of {field}"


def m_options_remove(mt, rng):
    _, op = _pick_op(mt, rng)
    op.builtinOptionsType, op.builtinOptions = 0, None
    return "options removed"


def m_options_swap(mt, rng):
    ops = _ops(mt)
    _, a = rng.choice(ops)
    _, b = rng.choice(ops)
    a.builtinOptionsType, a.builtinOptions = b.builtinOptionsType, b.builtinOptions
    return "options swapped with another op's"


def m_options_type(mt, rng):
    _, op = _pick_op(mt, rng)
    op.builtinOptionsType = rng.choice(OPTION_TYPES + [200, 255])
    return f"options type -> {op.builtinOptionsType}"


def m_options_field(mt, rng):
    _, op = _pick_op(mt, rng)
    opts = op.builtinOptions
    fields = [k for k, v in vars(opts).items() if isinstance(v, (int, float, bool))] if opts is not None else []
    if not fields:
        return "no option fields"
    k = rng.choice(fields)
    value = rng.choice([0, -1, 1, 2, 3, 7, 100, 2**31 - 1, -(2**31)])
    setattr(opts, k, type(getattr(opts, k))(value) if not isinstance(getattr(opts, k), bool) else bool(value))
    return f"option {k} -> {value}"


def m_opcode(mt, rng):
    sg, op = _pick_op(mt, rng)
    codes = mt.operatorCodes or []
    r = rng.random()
    if r < 0.4 and len(codes) > 1:
        op.opcodeIndex = rng.randrange(len(codes))
        return "op uses another opcode"
    if r < 0.5:
        op.opcodeIndex = rng.choice([len(codes), -1, 2**31 - 1])
        return f"opcode index -> {op.opcodeIndex}"
    code = codes[op.opcodeIndex] if 0 <= op.opcodeIndex < len(codes) else None
    if code is None:
        return "no opcode"
    if r < 0.85:
        used = sorted({int(c.builtinCode) for c in codes})
        code.builtinCode = rng.choice(used + BUILTINS)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)
        return f"opcode -> {code.builtinCode}"
    code.version = rng.choice([0, 1, 2, 3, 5, 13, 1000])
    return f"version -> {code.version}"


def _pick_tensor(mt, rng):
    sgs = [sg for sg in mt.subgraphs or [] if sg.tensors]
    if not sgs:
        return None, None
    sg = rng.choice(sgs)
    return sg, rng.choice(sg.tensors)


def m_shape(mt, rng):
    _, t = _pick_tensor(mt, rng)
    shape = _vec(t.shape)
    r = rng.random()
    if shape and r < 0.6:
        k = rng.randrange(len(shape))
        shape[k] = rng.choice([0, 1, -1, shape[k] * 2, shape[k] + 1, 1 << 16, 1 << 30, 2**31 - 1])
    elif r < 0.8 or not shape:
        shape.insert(rng.randrange(len(shape) + 1), rng.choice([1, 2, 1 << 20]))
    else:
        del shape[rng.randrange(len(shape))]
    t.shape = np.asarray(shape, dtype=np.int32)
    if rng.random() < 0.5:
        t.shapeSignature = None if rng.random() < 0.5 else np.asarray(shape, dtype=np.int32)
    return f"shape -> {shape}"


def m_type(mt, rng):
    _, t = _pick_tensor(mt, rng)
    t.type = rng.choice(TENSOR_TYPES + [99])
    return f"type -> {t.type}"


def m_tensor_buffer(mt, rng):
    _, t = _pick_tensor(mt, rng)
    t.buffer = rng.choice([0, rng.randrange(max(1, len(mt.buffers or []))), len(mt.buffers or []), -1])
    return f"tensor buffer -> {t.buffer}"


def m_buffer_offset(mt, rng):
    bufs = [b for b in mt.buffers or [] if b.data is not None and len(b.data)]
    if not bufs:
        return "no buffers"
    b = rng.choice(bufs)
    size = len(b.data)
    b.data = None
    b.offset = rng.choice([2, 8, 1 << 10, 1 << 20, 2**40, 2**63 - 1])
    b.size = rng.choice([size, size + 1, 0, 2**40])
    return f"buffer offset {b.offset} size {b.size}"


def m_buffer_data(mt, rng):
    bufs = [b for b in mt.buffers or [] if b.data is not None and len(b.data)]
    if not bufs:
        return "no buffers"
    b = rng.choice(bufs)
    data = np.asarray(b.data, dtype=np.uint8)
    b.data = data[: rng.randrange(len(data))] if rng.random() < 0.5 else np.concatenate([data, data[:8]])
    return "buffer data resized"


def m_subgraph_io(mt, rng):
    sg = rng.choice(mt.subgraphs)
    field = rng.choice(["inputs", "outputs"])
    vals = _vec(getattr(sg, field))
    consts = [i for i, t in enumerate(sg.tensors or []) if 0 < t.buffer < len(mt.buffers or [])
              and mt.buffers[t.buffer].data is not None and len(mt.buffers[t.buffer].data)]
    r = rng.random()
    if vals and r < 0.4 and consts:
        vals[rng.randrange(len(vals))] = rng.choice(consts)
        what = "a constant"
    elif vals and r < 0.7:
        vals[rng.randrange(len(vals))] = _index(rng, len(sg.tensors or []))
        what = "another tensor"
    elif vals and r < 0.85:
        del vals[rng.randrange(len(vals))]
        what = "one fewer"
    else:
        vals.append(_index(rng, len(sg.tensors or [])))
        what = "one more"
    setattr(sg, field, vals)
    return f"subgraph {field}: {what}"


def m_quantization(mt, rng):
    ts = [t for sg in mt.subgraphs or [] for t in sg.tensors or [] if t.quantization is not None
          and t.quantization.scale is not None and len(t.quantization.scale)]
    if not ts:
        return "no quantized tensors"
    q = rng.choice(ts).quantization
    r = rng.random()
    if r < 0.4:
        q.scale = np.asarray(q.scale, np.float32)[: rng.randrange(len(q.scale))]
    elif r < 0.6 and q.zeroPoint is not None:
        q.zeroPoint = np.asarray(q.zeroPoint, np.int64)[:-1]
    elif r < 0.8:
        q.quantizedDimension = rng.choice([-1, 1, 3, 7, 1000])
    else:
        q.scale = np.asarray([rng.choice([0.0, -1.0, np.inf, np.nan])] * len(q.scale), np.float32)
    return "quantization"


def m_control_flow(mt, rng):
    flows = [op for _, op in _ops(mt) if op.builtinOptions is not None and
             any(hasattr(op.builtinOptions, f) for f in ("condSubgraphIndex", "bodySubgraphIndex", "initSubgraphIndex"))]
    if not flows:
        return m_op_input(mt, rng)
    opts = rng.choice(flows).builtinOptions
    field = rng.choice([f for f in ("condSubgraphIndex", "bodySubgraphIndex", "initSubgraphIndex") if hasattr(opts, f)])
    setattr(opts, field, rng.choice([0, rng.randrange(len(mt.subgraphs)), len(mt.subgraphs), -1]))
    return f"{field} -> {getattr(opts, field)}"


def m_variable(mt, rng):
    _, t = _pick_tensor(mt, rng)
    t.isVariable = not t.isVariable
    return f"isVariable -> {t.isVariable}"


def m_sparsity(mt, rng):
    ts = [t for sg in mt.subgraphs or [] for t in sg.tensors or [] if t.sparsity is not None]
    if not ts:
        return m_shape(mt, rng)
    sp = rng.choice(ts).sparsity
    r = rng.random()
    if r < 0.3 and sp.traversalOrder is not None:
        order = _vec(sp.traversalOrder)
        rng.shuffle(order)
        sp.traversalOrder = order
        return "sparsity traversal order"
    m = rng.choice(sp.dimMetadata or [None])
    if m is None:
        return "no sparse metadata"
    if r < 0.6 or m.arrayIndices is None:
        m.denseSize = rng.choice([0, 1, m.denseSize + 1, 1 << 20])
        return "sparse dense size"
    values = np.asarray(m.arrayIndices.values).copy()
    if len(values):
        info = np.iinfo(values.dtype)
        values[rng.randrange(len(values))] = rng.choice([info.min, info.max, int(values.max()) + 1])
        m.arrayIndices.values = values
    return "sparse indices"


def m_operators(mt, rng):
    sg = rng.choice([sg for sg in mt.subgraphs if sg.operators] or mt.subgraphs)
    ops = list(sg.operators or [])
    if not ops:
        return "no operators"
    r = rng.random()
    if r < 0.4:
        del ops[rng.randrange(len(ops))]
        what = "removed"
    elif r < 0.7:
        i, j = rng.randrange(len(ops)), rng.randrange(len(ops))
        ops[i], ops[j] = ops[j], ops[i]
        what = "reordered"
    else:
        ops.insert(rng.randrange(len(ops) + 1), rng.choice(ops))
        what = "duplicated"
    sg.operators = ops
    return f"operator {what}"


MUTATIONS = {f.__name__[2:]: f for f in (
    m_op_input, m_op_output, m_alias_input, m_alias_writer, m_arity, m_options_remove, m_options_swap,
    m_options_type, m_options_field, m_opcode, m_shape, m_type, m_tensor_buffer, m_buffer_offset,
    m_buffer_data, m_subgraph_io, m_quantization, m_control_flow, m_variable, m_sparsity, m_operators)}


def pack(mt) -> bytes:
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(mt.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def mutate(seed: bytes, rng: random.Random, kinds: list[str] | None = None) -> tuple[bytes | None, list[str]]:
    """One mutant of `seed`: (bytes, what was done), or (None, why) when the object API cannot pack it."""
    mt = schema.ModelT.InitFromPackedBuf(bytearray(seed), 0)
    kinds = kinds or [rng.choice(list(MUTATIONS)) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    done = []
    for kind in kinds:
        try:
            done.append(f"{kind}: {MUTATIONS[kind](mt, rng)}")
        except (IndexError, ValueError, TypeError, AttributeError, OverflowError) as e:  # e.g. an empty model
            done.append(f"{kind}: skipped ({type(e).__name__})")
    try:
        data = pack(mt)
    except Exception as e:  # values the builder cannot encode (e.g. an index beyond int32)
        return None, done + [f"unpackable: {type(e).__name__}"]
    if rng.random() < 0.05:
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
        done.append("byte flips")
    return data, done
