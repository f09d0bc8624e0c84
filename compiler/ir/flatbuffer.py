"""Read and write TFLite flatbuffers through the LiteRT schema object API.

This is the only place where tensor, buffer, opcode and subgraph *indices* exist. Reading
checks every index and size before the model can reach LiteRT, which may crash the process
on a malformed model instead of raising.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.errors import FlatbufferError, SourceError
from compiler.ir.core import (BUILTIN_NAMES, TENSOR_TYPE_NAMES, Buffer, Model, Operator, Quantization,
                              SignatureDef, Subgraph, Tensor, numpy_dtype)
from compiler.ir.validate import validate

FILE_IDENTIFIER = b"TFL3"
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# Option fields that hold subgraph indices (control flow and StableHLO regions).
_SUBGRAPH_FIELDS = {
    "condSubgraphIndex", "bodySubgraphIndex", "thenSubgraphIndex", "elseSubgraphIndex", "initSubgraphIndex",
    "subgraph", "decompositionSubgraphIndex", "branchSubgraphIndices", "calledComputations",
    "updateComputationSubgraphIndex", "comparatorSubgraphIndex",
}
_MAX_FLATBUFFER = 2**31 - 1


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _array(value, dtype) -> np.ndarray | None:
    if value is None:
        return None
    return np.asarray(value, dtype=dtype)


# ----------------------------------------------------------------------------------------- reading

def load(path: str | os.PathLike) -> Model:
    """Read a .tflite file into the IR. Weights stay views of a read-only memory map."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, expected a .tflite file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise FlatbufferError(f"{path}: empty file, not a TFLite flatbuffer")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except PermissionError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror})") from None
    except OSError as e:
        raise SourceError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads(data, origin=str(path))


def loads(data, origin: str = "<bytes>") -> Model:
    """Parse flatbuffer bytes (bytes, bytearray or mmap) into the IR, validating as it goes.

    After parsing, `validate` checks what the model means operator by operator. LiteRT's own flatbuffer
    verifier is not called here: the only Python entry to it (the model analyzer) dereferences fields
    after verifying and crashes on some one-byte corruptions. LiteRT runs it itself when it loads a
    model, and `compiler.isolate.smoke` does so in a child process."""
    size = len(data)
    if size < 8:
        raise FlatbufferError(f"{origin}: {size} bytes is too short to be a TFLite flatbuffer (truncated?)")
    ident = bytes(data[4:8])
    if ident != FILE_IDENTIFIER:
        raise FlatbufferError(f"{origin}: not a TFLite flatbuffer (file identifier {ident!r}, expected {FILE_IDENTIFIER!r})")
    root = int.from_bytes(bytes(data[0:4]), "little")
    if root < 8 or root + 4 > size:
        raise FlatbufferError(f"{origin}: corrupt or truncated TFLite flatbuffer (root offset {root} outside {size} bytes)")
    try:
        mt = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # the generated reader signals out-of-range reads with assorted exceptions
        raise FlatbufferError(f"{origin}: corrupt or truncated TFLite flatbuffer ({type(e).__name__}: {e})") from None
    model = _from_object(mt, data, origin)
    validate(model, origin=origin, file_size=size)
    return model


def _fail(origin: str, what: str):
    raise FlatbufferError(f"{origin}: inconsistent TFLite model: {what}")


def _from_object(mt: schema.ModelT, data, origin: str) -> Model:
    size = len(data)
    buffers_t = mt.buffers or []
    subgraphs_t = mt.subgraphs or []
    opcodes_t = mt.operatorCodes or []
    if not subgraphs_t:
        _fail(origin, "no subgraphs")

    # Buffers: inline data, or (models > 2 GB) an offset/size into the bytes after the flatbuffer.
    buffers: list[Buffer | None] = []
    for i, bt in enumerate(buffers_t):
        if bt.offset > 1:
            if bt.offset + bt.size > size:
                _fail(origin, f"buffer {i} points past the end of the file (truncated?)")
            buffers.append(Buffer(np.frombuffer(data, dtype=np.uint8, count=bt.size, offset=bt.offset)))
        elif bt.data is not None and len(bt.data) > 0:
            arr = bt.data if isinstance(bt.data, np.ndarray) else np.asarray(bt.data, dtype=np.uint8)
            buffers.append(Buffer(arr.view(np.uint8)))
        else:
            buffers.append(None)

    codes = []
    max_builtin = max(BUILTIN_NAMES)
    for i, ct in enumerate(opcodes_t):
        code = max(int(ct.builtinCode), int(ct.deprecatedBuiltinCode))
        if code < 0 or code > max_builtin:
            _fail(origin, f"operator code {i} has unknown builtin operator {code}")
        if ct.version < 1 or ct.version > 1000:
            _fail(origin, f"operator code {i} has invalid version {ct.version}")
        custom = _text(ct.customCode) if ct.customCode is not None else None
        codes.append((code, int(ct.version), custom))

    subgraphs = [Subgraph(name=_text(st.name)) for st in subgraphs_t]
    n_sg = len(subgraphs)

    for si, (st, sg) in enumerate(zip(subgraphs_t, subgraphs)):
        tensors: list[Tensor] = []
        for ti, tt in enumerate(st.tensors or []):
            if tt.type not in TENSOR_TYPE_NAMES:
                _fail(origin, f"subgraph {si} tensor {ti} has unknown type {tt.type}")
            if not 0 <= tt.buffer < max(1, len(buffers_t)):
                _fail(origin, f"subgraph {si} tensor {ti} refers to buffer {tt.buffer} of {len(buffers_t)}")
            shape = tuple(int(d) for d in (tt.shape if tt.shape is not None else ()))
            if any(d < -1 for d in shape):
                _fail(origin, f"subgraph {si} tensor {ti} has invalid shape {list(shape)}")
            buf = buffers[tt.buffer] if tt.buffer < len(buffers) else None
            dtype = numpy_dtype(tt.type)
            if buf is not None and dtype is not None and tt.sparsity is None:
                expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                if expected != buf.nbytes:
                    _fail(origin, f"subgraph {si} tensor {ti} ({_text(tt.name)!r}) has shape {list(shape)} "
                                  f"but its buffer holds {buf.nbytes} bytes, not {expected}")
            q = None
            qt = tt.quantization
            if qt is not None:
                q = Quantization(scale=_array(qt.scale, np.float32), zero_point=_array(qt.zeroPoint, np.int64),
                                 min=_array(qt.min, np.float32), max=_array(qt.max, np.float32),
                                 quantized_dimension=int(qt.quantizedDimension), details_type=int(qt.detailsType),
                                 details=qt.details)
                if q.scale is not None and q.zero_point is not None and len(q.zero_point) not in (0, len(q.scale)):
                    _fail(origin, f"subgraph {si} tensor {ti} has {len(q.scale)} scales but {len(q.zero_point)} zero points")
            tensors.append(Tensor(
                name=_text(tt.name), shape=shape, type=int(tt.type), buffer=buf, quantization=q,
                shape_signature=tuple(int(d) for d in tt.shapeSignature) if tt.shapeSignature is not None else None,
                is_variable=bool(tt.isVariable), has_rank=bool(tt.hasRank), sparsity=tt.sparsity,
                variant_tensors=tt.variantTensors))
        sg.tensors = tensors
        n_t = len(tensors)

        def tensor_at(idx: int, where: str, optional: bool = False) -> Tensor | None:
            if idx == -1 and optional:
                return None
            if not 0 <= idx < n_t:
                _fail(origin, f"subgraph {si} {where} refers to tensor {idx} of {n_t}")
            return tensors[idx]

        sg.inputs = [tensor_at(int(i), "input") for i in (st.inputs if st.inputs is not None else [])]
        sg.outputs = [tensor_at(int(i), "output") for i in (st.outputs if st.outputs is not None else [])]
        for oi, ot in enumerate(st.operators or []):
            if not 0 <= ot.opcodeIndex < len(codes):
                _fail(origin, f"subgraph {si} operator {oi} has opcode index {ot.opcodeIndex} of {len(codes)}")
            code, version, custom = codes[ot.opcodeIndex]
            where = f"operator {oi} ({BUILTIN_NAMES.get(code, code)})"
            op = Operator(
                builtin_code=code, version=version, custom_code=custom,
                inputs=[tensor_at(int(i), where, optional=True) for i in (ot.inputs if ot.inputs is not None else [])],
                outputs=[tensor_at(int(i), where, optional=True) for i in (ot.outputs if ot.outputs is not None else [])],
                intermediates=[tensor_at(int(i), where) for i in (ot.intermediates if ot.intermediates is not None else [])],
                options_type=int(ot.builtinOptionsType), options=ot.builtinOptions,
                options2_type=int(ot.builtinOptions2Type), options2=ot.builtinOptions2,
                custom_options=bytes(bytearray(ot.customOptions)) if ot.customOptions is not None else None,
                custom_options_format=int(ot.customOptionsFormat),
                mutating_variable_inputs=list(ot.mutatingVariableInputs) if ot.mutatingVariableInputs is not None else None,
            )
            if ot.largeCustomOptionsSize:
                end = ot.largeCustomOptionsOffset + ot.largeCustomOptionsSize
                if end > size:
                    _fail(origin, f"subgraph {si} {where} custom options point past the end of the file")
                op.custom_options = bytes(data[ot.largeCustomOptionsOffset:end])
            for opts in (op.options, op.options2):
                for fname in _SUBGRAPH_FIELDS & set(vars(opts) if opts is not None else ()):
                    value = getattr(opts, fname)
                    idxs = list(value) if isinstance(value, (list, np.ndarray)) else [value]
                    for idx in idxs:
                        if not 0 <= int(idx) < n_sg:
                            _fail(origin, f"subgraph {si} {where} calls subgraph {idx} of {n_sg}")
                    refs = [subgraphs[int(i)] for i in idxs]
                    op.subgraph_refs[fname] = refs if isinstance(value, (list, np.ndarray)) else refs[0]
            sg.operators.append(op)

    signature_defs = []
    for sd in mt.signatureDefs or []:
        if not 0 <= sd.subgraphIndex < n_sg:
            _fail(origin, f"signature {_text(sd.signatureKey)!r} refers to subgraph {sd.subgraphIndex} of {n_sg}")
        sg = subgraphs[sd.subgraphIndex]

        def tmap(maps, sg=sg, key=_text(sd.signatureKey)):
            out = []
            for m in maps or []:
                if not 0 <= m.tensorIndex < len(sg.tensors):
                    _fail(origin, f"signature {key!r} refers to tensor {m.tensorIndex} of {len(sg.tensors)}")
                out.append((_text(m.name), sg.tensors[m.tensorIndex]))
            return out

        signature_defs.append(SignatureDef(key=_text(sd.signatureKey), subgraph=sg,
                                           inputs=tmap(sd.inputs), outputs=tmap(sd.outputs)))

    metadata = []
    for md in mt.metadata or []:
        if not 0 <= md.buffer < len(buffers_t):
            _fail(origin, f"metadata {_text(md.name)!r} refers to buffer {md.buffer} of {len(buffers_t)}")
        buf = buffers[md.buffer] or Buffer(np.zeros(0, np.uint8))
        metadata.append((_text(md.name), buf))

    return Model(subgraphs=subgraphs, version=int(mt.version), description=_text(mt.description),
                 signature_defs=signature_defs, metadata=metadata)


# ----------------------------------------------------------------------------------------- writing

def dumps(model: Model) -> bytes:
    """Serialize the IR to TFLite flatbuffer bytes (buffer 0 is the empty sentinel, as the schema requires)."""
    mt = schema.ModelT()
    mt.version = model.version
    mt.description = model.description or None

    buffers: list[schema.BufferT] = [schema.BufferT()]
    buffer_index: dict[int, int] = {}

    def buffer_of(buf: Buffer | None) -> int:
        if buf is None or buf.nbytes == 0:
            return 0
        idx = buffer_index.get(id(buf))
        if idx is None:
            bt = schema.BufferT()
            bt.data = np.ascontiguousarray(buf.data).view(np.uint8)
            buffers.append(bt)
            idx = buffer_index[id(buf)] = len(buffers) - 1
        return idx

    opcodes: list[schema.OperatorCodeT] = []
    opcode_index: dict[tuple, int] = {}
    subgraph_index = {id(sg): i for i, sg in enumerate(model.subgraphs)}
    if len(subgraph_index) != len(model.subgraphs):
        raise ValueError("a subgraph appears twice in model.subgraphs")

    mt.subgraphs = []
    for sg in model.subgraphs:
        st = schema.SubGraphT()
        st.name = sg.name or None
        # Declared-but-unused tensors are kept: removing them is strip-unused's job, not the writer's.
        tensors = written_order(sg)
        index = {id(t): i for i, t in enumerate(tensors)}
        st.tensors = []
        for t in tensors:
            tt = schema.TensorT()
            tt.name = t.name
            tt.shape = np.asarray(t.shape, dtype=np.int32)
            tt.type = t.type
            tt.buffer = buffer_of(t.buffer)
            if t.quantization is not None:
                q = t.quantization
                qt = schema.QuantizationParametersT()
                qt.scale = None if q.scale is None else np.asarray(q.scale, np.float32)
                qt.zeroPoint = None if q.zero_point is None else np.asarray(q.zero_point, np.int64)
                qt.min = None if q.min is None else np.asarray(q.min, np.float32)
                qt.max = None if q.max is None else np.asarray(q.max, np.float32)
                qt.quantizedDimension = q.quantized_dimension
                qt.detailsType = q.details_type
                qt.details = q.details
                tt.quantization = qt
            if t.shape_signature is not None:
                tt.shapeSignature = np.asarray(t.shape_signature, dtype=np.int32)
            tt.isVariable = t.is_variable
            tt.hasRank = t.has_rank
            tt.sparsity = t.sparsity
            tt.variantTensors = t.variant_tensors
            st.tensors.append(tt)

        def idx(t: Tensor | None) -> int:
            return -1 if t is None else index[id(t)]

        st.inputs = np.asarray([idx(t) for t in sg.inputs], dtype=np.int32)
        st.outputs = np.asarray([idx(t) for t in sg.outputs], dtype=np.int32)
        st.operators = []
        for op in sg.operators:
            key = (op.builtin_code, op.custom_code, op.version)
            if key not in opcode_index:
                ct = schema.OperatorCodeT()
                ct.builtinCode = op.builtin_code
                ct.deprecatedBuiltinCode = min(op.builtin_code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
                ct.customCode = op.custom_code
                ct.version = op.version
                opcodes.append(ct)
                opcode_index[key] = len(opcodes) - 1
            ot = schema.OperatorT()
            ot.opcodeIndex = opcode_index[key]
            ot.inputs = np.asarray([idx(t) for t in op.inputs], dtype=np.int32)
            ot.outputs = np.asarray([idx(t) for t in op.outputs], dtype=np.int32)
            if op.intermediates:
                ot.intermediates = np.asarray([idx(t) for t in op.intermediates], dtype=np.int32)
            for fname, ref in op.subgraph_refs.items():
                target = op.options if op.options is not None and hasattr(op.options, fname) else op.options2
                value = [subgraph_index[id(s)] for s in ref] if isinstance(ref, list) else subgraph_index[id(ref)]
                setattr(target, fname, value)
            ot.builtinOptionsType = op.options_type
            ot.builtinOptions = op.options
            ot.builtinOptions2Type = op.options2_type
            ot.builtinOptions2 = op.options2
            if op.custom_options is not None:
                ot.customOptions = np.frombuffer(op.custom_options, dtype=np.uint8)
            ot.customOptionsFormat = op.custom_options_format
            if op.mutating_variable_inputs is not None:
                ot.mutatingVariableInputs = list(op.mutating_variable_inputs)
            st.operators.append(ot)
        mt.subgraphs.append(st)

    mt.signatureDefs = []
    for sd in model.signature_defs:
        sdt = schema.SignatureDefT()
        sdt.signatureKey = sd.key
        sdt.subgraphIndex = subgraph_index[id(sd.subgraph)]
        tindex = {id(t): i for i, t in enumerate(written_order(sd.subgraph))}

        def maps(pairs):
            out = []
            for name, t in pairs:
                m = schema.TensorMapT()
                m.name = name
                m.tensorIndex = tindex[id(t)]
                out.append(m)
            return out

        sdt.inputs, sdt.outputs = maps(sd.inputs), maps(sd.outputs)
        mt.signatureDefs.append(sdt)

    mt.metadata = []
    for name, buf in model.metadata:
        md = schema.MetadataT()
        md.name = name
        if buf.nbytes == 0:
            bt = schema.BufferT()
            buffers.append(bt)
            md.buffer = len(buffers) - 1
        else:
            md.buffer = buffer_of(buf)
        mt.metadata.append(md)

    mt.operatorCodes = opcodes
    mt.buffers = buffers
    total = sum(b.data.nbytes for b in buffers if b.data is not None)
    if total > _MAX_FLATBUFFER - (64 << 20):
        raise FlatbufferError(f"model weights take {total} bytes; flatbuffers over 2 GiB are not supported yet "
                              "(quantize or partition the model first)")
    builder = flatbuffers.Builder(max(1024, total + (16 << 20)))
    builder.Finish(mt.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def written_order(sg: Subgraph) -> list[Tensor]:
    """The subgraph's tensors in the order `dumps` writes them (so position = tensor index in the file)."""
    tensors = sg.referenced_tensors()
    known = {id(t) for t in tensors}
    return tensors + [t for t in sg.tensors if id(t) not in known]


def save(model: Model, path: str | os.PathLike) -> int:
    data = dumps(model)
    Path(path).write_bytes(data)
    return len(data)
