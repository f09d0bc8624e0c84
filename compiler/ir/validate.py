"""Operator-aware validation of an IR `Model`, run on every model that enters tflc.

LiteRT trusts the file it loads: an operator whose output aliases its own input makes XNNPACK write
out of bounds, a WHILE whose options are missing calls the main subgraph forever, a sparse tensor
read by an ordinary kernel is read past its buffer. The reader (`flatbuffer.py`) already checks
every index and buffer size; this module checks what a model *means*:

- per operator, from the table `SPECS` below: input and output arity (optional inputs may be -1),
  which builtin options type it must carry (or may omit), which inputs must be constant, and the
  option values that size loops or divide (strides, filter sizes, split counts);
- per subgraph: no operator writes a constant, a subgraph input, or a tensor another operator (or
  the same one) already writes; no operator output aliases one of its inputs; no constant is a
  subgraph input; every tensor an operator reads is a subgraph input, a constant, a variable, or
  written by an earlier operator; sparse tensors are only read by kernels that understand them;
- control flow: called subgraphs exist, have the arity the caller expects, and never call back
  into their callers (a cycle is unbounded recursion in LiteRT);
- size: no tensor has more than 2**31 - 1 elements, and the activations of the whole model
  (every non-constant tensor of every subgraph, a bound on the arena LiteRT would allocate) stay
  under a limit (`activation_limit`).

Operators the table does not describe (custom ops, rare builtins) get the generic checks only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.errors import FlatbufferError
from compiler.ir.core import Model, Operator, Subgraph, Tensor

# ----------------------------------------------------------------------------------------- size bound

GiB = 1 << 30
MIN_ACTIVATION_LIMIT = 1 * GiB
ACTIVATION_PER_FILE_BYTE = 64
MAX_ACTIVATION_LIMIT = 4 * GiB
MAX_ELEMENTS = 2**31 - 1
LIMIT_ENV = "TFLC_MAX_ACTIVATION_BYTES"


def activation_limit(file_size: int) -> int:
    """Bound on the bytes of all activations (non-constant tensors, all subgraphs) of a model file.

    `min(4 GiB, max(1 GiB, 64 x file size))`, or `$TFLC_MAX_ACTIVATION_BYTES` when set. Why:
    - the sum of all activation tensors bounds LiteRT's arena from above (the arena reuses memory,
      so real peaks are lower); a tensor is counted once whatever its lifetime;
    - real models: 1.4-4.7 bytes of activations per file byte on the fixtures, 3.6-227 on the
      MediaPipe face models (small weights, 128-256 pixel images: 10-71 MB of activations), and
      full Contect (1 GB of weights, ~0.1 GB of activations) ~0.1. The 1 GiB floor covers every
      small model with large images; 64x lets a big model grow beyond the floor;
    - 4 GiB is twice the RAM of the phones tflc targets (2 GB), so no model above it can run there,
      and it keeps a hostile 1 MB file from making LiteRT reserve tens of GB on a build machine.
    """
    env = os.environ.get(LIMIT_ENV)
    if env:
        try:
            return int(env)
        except ValueError:
            raise FlatbufferError(f"{LIMIT_ENV}={env!r} is not a number of bytes") from None
    return min(MAX_ACTIVATION_LIMIT, max(MIN_ACTIVATION_LIMIT, ACTIVATION_PER_FILE_BYTE * file_size))


# ----------------------------------------------------------------------------------------- operator table

@dataclass(frozen=True)
class OpSpec:
    """What one builtin operator needs.

    inputs/outputs: names; "name?" is optional (-1, or absent at the end), "name+" repeats one or
    more times, "name*" zero or more. counts: allowed input counts when not every prefix is (LSTMs).
    options: the BuiltinOptions member it must carry; NONE is accepted too unless `required`
    (LiteRT then uses zeroed defaults, which are harmless for ops like ADD and fatal for CONV_2D's
    stride or WHILE's subgraph indices). const: input positions that must be constant.
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: str | None = None  # None: the schema's options named after the op, else NONE
    required: bool = False
    const: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    same_shape: bool = False  # the output's declared shape is the input's (XNNPACK trusts it for weights)


def _spec(ins: str, outs: str = "output", options: str | None = None, required: bool = False,
          const: tuple[int, ...] = (), counts: tuple[int, ...] = (), same_shape: bool = False) -> OpSpec:
    return OpSpec(tuple(ins.split()), tuple(outs.split()), options, required, const, counts, same_shape)


_UNARY = _spec("input")
_BINARY = _spec("x y")
# UNIDIRECTIONAL_SEQUENCE_LSTM / LSTM inputs (lite/kernels/lstm_shared.h); 18 and 19 are the states.
_LSTM_INPUTS = ("input input_to_input? input_to_forget input_to_cell input_to_output recurrent_to_input? "
                "recurrent_to_forget recurrent_to_cell recurrent_to_output cell_to_input? cell_to_forget? "
                "cell_to_output? input_gate_bias? forget_gate_bias cell_gate_bias output_gate_bias "
                "projection_weights? projection_bias? output_state cell_state input_layer_norm? "
                "forget_layer_norm? cell_layer_norm? output_layer_norm?")

SPECS: dict[str, OpSpec] = {
    # elementwise
    **{name: _UNARY for name in (
        "ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "HARD_SWISH", "LOG", "LOGICAL_NOT", "LOGISTIC", "NEG",
        "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ROUND", "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE",
        "TANH", "ZEROS_LIKE", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "LOG_SOFTMAX",
        "RANK", "WHERE", "CAST", "FLOOR", "SHAPE")},
    # weight paths (float16 or sparse weights expanded at load time): XNNPACK packs their outputs as
    # static weights with the declared shapes, and aborts if those are not the input's
    "QUANTIZE": _spec("input", same_shape=True),
    "DEQUANTIZE": _spec("input", same_shape=True),
    **{name: _BINARY for name in (
        "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "FLOOR_DIV",
        "FLOOR_MOD", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL", "LOGICAL_AND",
        "LOGICAL_OR", "PRELU", "BATCH_MATMUL", "ATAN2")},
    "MAXIMUM": _spec("x y", options="MaximumMinimumOptions"),
    "MINIMUM": _spec("x y", options="MaximumMinimumOptions"),
    "L2_NORMALIZATION": _spec("input", options="L2NormOptions"),
    "GELU": _spec("input"),
    "LEAKY_RELU": _spec("input"),
    "SOFTMAX": _spec("input"),
    "ADD_N": _spec("inputs+"),
    "SELECT": _spec("condition x y"),
    "SELECT_V2": _spec("condition x y"),
    # convolutions and pooling: strides, filter sizes and dilations come from the options
    # LiteRT's CONV_2D and DEPTHWISE_CONV_2D need the bias (without it the depthwise kernel reads null)
    "CONV_2D": _spec("input filter bias", options="Conv2DOptions", required=True),
    "DEPTHWISE_CONV_2D": _spec("input filter bias", options="DepthwiseConv2DOptions", required=True),
    "CONV_3D": _spec("input filter bias?", options="Conv3DOptions", required=True),
    "TRANSPOSE_CONV": _spec("output_shape weights input bias?", options="TransposeConvOptions", required=True),
    "FULLY_CONNECTED": _spec("input weights bias?", "output workspace?", options="FullyConnectedOptions"),
    "AVERAGE_POOL_2D": _spec("input", options="Pool2DOptions", required=True),
    "MAX_POOL_2D": _spec("input", options="Pool2DOptions", required=True),
    "L2_POOL_2D": _spec("input", options="Pool2DOptions", required=True),
    # shape manipulation
    "CONCATENATION": _spec("values+", options="ConcatenationOptions", required=True),
    # the shape input may be left out, but not given as -1: the kernel then reads a null tensor
    "RESHAPE": _spec("input shape", options="ReshapeOptions", counts=(1, 2)),
    "SQUEEZE": _spec("input", options="SqueezeOptions"),
    "EXPAND_DIMS": _spec("input axis"),
    "TRANSPOSE": _spec("input perm"),
    "PAD": _spec("input paddings"),
    "PADV2": _spec("input paddings constant"),
    "MIRROR_PAD": _spec("input paddings", options="MirrorPadOptions"),
    "SLICE": _spec("input begin size"),
    "STRIDED_SLICE": _spec("input begin end strides", options="StridedSliceOptions"),
    "GATHER": _spec("params indices", options="GatherOptions"),
    "GATHER_ND": _spec("params indices"),
    "SCATTER_ND": _spec("indices updates shape"),
    "TILE": _spec("input multiples"),
    "BROADCAST_TO": _spec("input shape"),
    "FILL": _spec("dims value"),
    "RANGE": _spec("start limit delta"),
    "REVERSE_V2": _spec("input axis"),
    "SPLIT": _spec("axis input", "outputs+", options="SplitOptions", required=True),
    "SPLIT_V": _spec("input size_splits axis", "outputs+", options="SplitVOptions", required=True),
    "PACK": _spec("values+", options="PackOptions", required=True),
    "UNPACK": _spec("input", "outputs+", options="UnpackOptions", required=True),
    "DEPTH_TO_SPACE": _spec("input", options="DepthToSpaceOptions", required=True),
    "SPACE_TO_DEPTH": _spec("input", options="SpaceToDepthOptions", required=True),
    "BATCH_TO_SPACE_ND": _spec("input block_shape crops"),
    "SPACE_TO_BATCH_ND": _spec("input block_shape paddings"),
    "RESIZE_BILINEAR": _spec("input size", options="ResizeBilinearOptions"),
    "RESIZE_NEAREST_NEIGHBOR": _spec("input size", options="ResizeNearestNeighborOptions"),
    "ONE_HOT": _spec("indices depth on_value off_value", options="OneHotOptions"),
    "EMBEDDING_LOOKUP": _spec("ids values"),
    # reductions
    **{name: _spec("input axis", options="ReducerOptions") for name in (
        "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL")},
    "ARG_MAX": _spec("input axis", options="ArgMaxOptions"),
    "ARG_MIN": _spec("input axis", options="ArgMinOptions"),
    "CUMSUM": _spec("input axis", options="CumsumOptions"),
    "TOPK_V2": _spec("input k", "values indices"),
    # sequence models
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _spec(_LSTM_INPUTS, options="UnidirectionalSequenceLSTMOptions",
                                          required=True, counts=(20, 24)),
    "LSTM": _spec(_LSTM_INPUTS, options="LSTMOptions", required=True, counts=(20, 24)),
    "UNIDIRECTIONAL_SEQUENCE_RNN": _spec("input weights recurrent_weights bias hidden_state",
                                         options="SequenceRNNOptions", required=True),
    "RNN": _spec("input weights recurrent_weights bias hidden_state", options="RNNOptions", required=True),
    "SVDF": _spec("input weights_feature weights_time bias? state", options="SVDFOptions", required=True),
    # control flow and resource variables
    "WHILE": _spec("values*", "values*", options="WhileOptions", required=True),
    "IF": _spec("condition values*", "values*", options="IfOptions", required=True),
    "CALL_ONCE": _spec("", "", options="CallOnceOptions", required=True),
    "VAR_HANDLE": _spec("", "resource", options="VarHandleOptions"),
    "READ_VARIABLE": _spec("resource"),
    "ASSIGN_VARIABLE": _spec("resource value", ""),
    # sparsity and quantization helpers
    "DENSIFY": _spec("input", const=(0,), same_shape=True),
}

# Builtins outside SPECS whose kernels accept -1 (an absent optional input); -1 anywhere else is read as a
# tensor by kernels that do not expect it.
_OPTIONAL_INPUTS = {"BIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_RNN", "LSH_PROJECTION", "CONV_3D_TRANSPOSE",
                    "EMBEDDING_LOOKUP_SPARSE"}
# Kernels that read a sparse (compressed) constant, at these input positions; any other reader
# would read the compressed buffer as if it were dense, past its end.
_SPARSE_READERS = {"DENSIFY": {0}, "FULLY_CONNECTED": {1}}
# Integer option fields that LiteRT divides by or loops over: they must be positive.
_POSITIVE_FIELDS = ("strideW", "strideH", "strideD", "dilationWFactor", "dilationHFactor", "dilationDFactor",
                    "filterWidth", "filterHeight", "blockSize")
_ENUM_FIELDS = {"fusedActivationFunction": schema.ActivationFunctionType, "padding": schema.Padding}
_OPTION_NAMES = {v: k for k, v in vars(schema.BuiltinOptions).items() if not k.startswith("_")}
_OPTION2_NAMES = {v: k for k, v in vars(schema.BuiltinOptions2).items() if not k.startswith("_")}
_OPTION_CODES = {k: v for v, k in _OPTION_NAMES.items()}
_STRING = schema.TensorType.STRING


def _enum_values(enum) -> set[int]:
    return {v for k, v in vars(enum).items() if not k.startswith("_")}


_OPTIONS_BY_KEY = {name.lower(): name for name in _OPTION_CODES}


def expected_options(name: str) -> str:
    """The BuiltinOptions member operator `name` carries: the table's own, or by the schema's naming
    (ADD -> AddOptions, TOPK_V2 -> TopKV2Options), or NONE."""
    spec = SPECS.get(name)
    if spec is not None and spec.options is not None:
        return spec.options
    return _OPTIONS_BY_KEY.get(name.replace("_", "").lower() + "options", "NONE")


# ----------------------------------------------------------------------------------------- entry point

def validate(model: Model, origin: str = "<model>", file_size: int | None = None,
             max_activation_bytes: int | None = None) -> None:
    """Raise FlatbufferError (one line) on the first fault; return None for a model LiteRT can take.

    `max_activation_bytes` defaults to `activation_limit(file_size)` (file_size defaults to the
    model's weight bytes)."""
    if max_activation_bytes is None:
        max_activation_bytes = activation_limit(model.weight_bytes() if file_size is None else file_size)
    check = _Checker(model, origin)
    check.calls()
    for si, sg in enumerate(model.subgraphs):
        check.subgraph(si, sg)
    check.signatures()
    check.size(max_activation_bytes)


class _Checker:
    def __init__(self, model: Model, origin: str):
        self.model = model
        self.origin = origin
        self.index = {id(sg): i for i, sg in enumerate(model.subgraphs)}

    def fail(self, what: str):
        raise FlatbufferError(f"{self.origin}: invalid TFLite model: {what}")

    # ------------------------------------------------------------------ control flow

    def calls(self) -> None:
        """Every called subgraph is in the model and no call chain comes back to its start."""
        edges: dict[int, list[int]] = {}
        for si, sg in enumerate(self.model.subgraphs):
            targets = []
            for oi, op in enumerate(sg.operators):
                for callee in op.called_subgraphs():
                    if id(callee) not in self.index:
                        self.fail(f"subgraph {si} operator {oi} ({op.name}) calls a subgraph that is not in the model")
                    targets.append(self.index[id(callee)])
            edges[si] = targets
        state: dict[int, int] = {}  # 1 = on the current path, 2 = done
        for root in edges:
            if state.get(root):
                continue
            stack = [(root, iter(edges[root]))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    self.fail(f"subgraph {node} calls subgraph {nxt}, which is already being called "
                              "(recursion LiteRT would follow until the stack overflows)")
                elif not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, iter(edges[nxt])))

    # ------------------------------------------------------------------ one subgraph

    def subgraph(self, si: int, sg: Subgraph) -> None:
        inputs = {id(t) for t in sg.inputs}
        for t in sg.inputs:
            if t is None:
                self.fail(f"subgraph {si} has input -1")
            if t.is_constant:
                self.fail(f"subgraph {si} input {t.name!r} is a constant tensor")
            if t.is_variable:
                self.fail(f"subgraph {si} input {t.name!r} is a variable tensor")
        for t in _all_tensors(sg):
            self.tensor(si, t)
        written: set[int] = set()
        for oi, op in enumerate(sg.operators):
            where = f"subgraph {si} operator {oi} ({op.name})"
            self.operator(where, op)
            for pos, t in enumerate(op.inputs):
                if t is None or id(t) in written or id(t) in inputs or t.is_constant or t.is_variable:
                    continue
                if _elements(t.shape) == 0:
                    continue  # nothing to read
                self.fail(f"{where} reads tensor {t.name!r} (input {pos}), which is no subgraph input, no "
                          "constant and not written by an earlier operator")
            for pos, t in enumerate(op.outputs):
                if t is None:
                    continue
                if id(t) in inputs:
                    self.fail(f"{where} writes subgraph input {t.name!r} (output {pos})")
                if t.is_constant:
                    self.fail(f"{where} writes constant tensor {t.name!r} (output {pos})")
                if t.is_variable:  # stateful kernels update variables in place, through an input
                    self.fail(f"{where} writes variable tensor {t.name!r} (output {pos})")
                if id(t) in written:
                    self.fail(f"{where} writes tensor {t.name!r} (output {pos}), which is already written")
                written.add(id(t))
        for t in sg.outputs:
            if t is None:
                self.fail(f"subgraph {si} has output -1")
            if not (id(t) in written or id(t) in inputs or t.is_constant or t.is_variable
                    or _elements(t.shape) == 0):
                self.fail(f"subgraph {si} output {t.name!r} is never written")

    def tensor(self, si: int, t: Tensor) -> None:
        where = f"subgraph {si} tensor {t.name!r}"
        if any(d < 0 for d in t.shape):
            self.fail(f"{where} has unknown dimensions in its shape {list(t.shape)} (only shape_signature may)")
        if _elements(t.shape) > MAX_ELEMENTS:
            self.fail(f"{where} has {_elements(t.shape):,} elements (shape {list(t.shape)}), more than LiteRT's "
                      f"{MAX_ELEMENTS:,}")
        if t.is_variable and t.is_constant:
            self.fail(f"{where} is a variable with constant data")
        if t.is_constant:
            self.constant(where, t)
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            dim = q.quantized_dimension
            if not 0 <= dim < len(t.shape) or t.shape[dim] != len(q.scale):
                self.fail(f"{where} has {len(q.scale)} per-channel scales on dimension {dim} of shape "
                          f"{list(t.shape)}")

    def constant(self, where: str, t: Tensor) -> None:
        n = _elements(t.shape)
        if t.sparsity is not None:
            self.sparsity(where, t)
        elif t.dtype is not None:
            pass  # the reader checked bytes == elements * itemsize
        elif t.type == _STRING:
            self.strings(where, t)
        elif t.type in (schema.TensorType.INT4, schema.TensorType.UINT4):
            if t.buffer.nbytes not in ((n + 1) // 2, n):
                self.fail(f"{where}: {n} 4-bit values need {(n + 1) // 2} bytes, its buffer has {t.buffer.nbytes}")
        elif t.type == schema.TensorType.BFLOAT16:
            if t.buffer.nbytes != 2 * n:
                self.fail(f"{where}: {n} bfloat16 values need {2 * n} bytes, its buffer has {t.buffer.nbytes}")
        else:
            self.fail(f"{where} is a constant of a type that cannot hold constant data")

    def strings(self, where: str, t: Tensor) -> None:
        """TFLite string buffer: int32 count, count+1 int32 offsets, then the bytes."""
        data = t.buffer.data
        if data.nbytes < 4:
            self.fail(f"{where}: string buffer of {data.nbytes} bytes has no header")
        count = int(np.frombuffer(data[:4].tobytes(), "<i4")[0])
        if count < 0 or 4 * (count + 2) > data.nbytes or count != _elements(t.shape):
            self.fail(f"{where}: string buffer header is inconsistent ({count} strings, shape {list(t.shape)})")
        offsets = np.frombuffer(data[4:4 * (count + 2)].tobytes(), "<i4").astype(np.int64)
        if offsets[0] != 4 * (count + 2) or np.any(np.diff(offsets) < 0) or offsets[-1] > data.nbytes:
            self.fail(f"{where}: string offsets point outside the buffer")

    def sparsity(self, where: str, t: Tensor) -> None:
        """The sparse layout (lite/schema: SparsityParameters) describes exactly the buffer's values."""
        sp = t.sparsity
        rank = len(t.shape)
        order = [int(i) for i in (sp.traversalOrder if sp.traversalOrder is not None else [])]
        blocks = [int(i) for i in (sp.blockMap if sp.blockMap is not None else [])]
        meta = list(sp.dimMetadata or [])
        total = rank + len(blocks)
        if (len(order) != total or len(meta) != total or sorted(order[:rank]) != list(range(rank))
                or sorted(order[rank:]) != list(range(rank, total)) or len(set(blocks)) != len(blocks)
                or any(not 0 <= b < rank for b in blocks)):
            self.fail(f"{where} has inconsistent sparsity parameters (traversal order {order}, block map {blocks}, "
                      f"{len(meta)} dimension metadata for rank {rank})")
        position = {d: k for k, d in enumerate(order)}
        size = list(t.shape) + [0] * len(blocks)
        for j, d in enumerate(blocks):
            m = meta[position[rank + j]]
            if m.format != schema.DimensionType.DENSE or m.denseSize <= 0 or t.shape[d] % m.denseSize:
                self.fail(f"{where}: sparse block {j} does not divide dimension {d} of shape {list(t.shape)}")
            size[rank + j] = m.denseSize
            size[d] = t.shape[d] // m.denseSize
        count = 1
        for k, d in enumerate(order):
            m = meta[k]
            if m.format == schema.DimensionType.DENSE:
                if m.denseSize != size[d]:
                    self.fail(f"{where}: sparse dimension {d} has dense size {m.denseSize}, expected {size[d]}")
                count *= size[d]
                continue
            segments = _index_vector(m.arraySegments)
            indices = _index_vector(m.arrayIndices)
            if (segments is None or indices is None or len(segments) != count + 1 or segments[0] != 0
                    or np.any(np.diff(segments) < 0) or segments[-1] != len(indices)
                    or np.any(indices < 0) or np.any(indices >= size[d])):
                self.fail(f"{where}: sparse dimension {d} has segments or indices outside its bounds")
            count = int(segments[-1])
        itemsize = np.dtype(t.dtype).itemsize if t.dtype is not None else None
        if itemsize is None or count * itemsize != t.buffer.nbytes:
            self.fail(f"{where}: sparse layout holds {count} values, its buffer has {t.buffer.nbytes} bytes")

    # ------------------------------------------------------------------ one operator

    def operator(self, where: str, op: Operator) -> None:
        for pos, t in enumerate(op.inputs):
            if t is not None and id(t) in {id(o) for o in op.outputs if o is not None}:
                self.fail(f"{where} writes its own input {t.name!r} (input {pos}): an output may not alias an input")
        self.options(where, op)
        spec = SPECS.get(op.name)
        if spec is not None:
            self.arity(where, "input", op.inputs, spec.inputs, spec.counts)
            self.arity(where, "output", op.outputs, spec.outputs, ())
            for pos in spec.const:
                if not op.inputs[pos].is_constant:
                    self.fail(f"{where} input {pos} ({spec.inputs[pos]}) must be a constant")
            if spec.same_shape and tuple(op.outputs[0].shape) != tuple(op.inputs[0].shape):
                self.fail(f"{where} output shape {list(op.outputs[0].shape)} is not its input's "
                          f"{list(op.inputs[0].shape)}")
            self.option_values(where, op, spec)
            self.control_flow(where, op)
        else:
            for pos, t in enumerate(op.outputs):
                if t is None:
                    self.fail(f"{where} has output {pos} = -1")
            known_optional = op.name in _OPTIONAL_INPUTS or op.name.startswith(("CUSTOM", "STABLEHLO"))
            if None in op.inputs and not known_optional:
                self.fail(f"{where} input {op.inputs.index(None)} is -1, and the operator takes no optional inputs")
        readers = _SPARSE_READERS.get(op.name, set())
        for pos, t in enumerate(op.inputs):
            if t is not None and t.sparsity is not None and pos not in readers:
                self.fail(f"{where} reads sparse tensor {t.name!r} (input {pos}); only DENSIFY can")

    def arity(self, where: str, kind: str, tensors: list, names: tuple[str, ...], counts: tuple[int, ...]) -> None:
        n = len(tensors)
        repeat = next((k for k, s in enumerate(names) if s[-1] in "+*"), None)
        if repeat is not None:
            lo = len(names) - 1 + (names[repeat][-1] == "+")
            ok, want = n >= lo, f"at least {lo}"
        else:
            required = [k for k, s in enumerate(names) if not s.endswith("?")]
            lo = required[-1] + 1 if required else 0
            allowed = counts or tuple(range(lo, len(names) + 1))
            ok, want = n in allowed, " or ".join(str(c) for c in allowed) if counts else (
                f"{lo}" if lo == len(names) else f"{lo} to {len(names)}")
        if not ok:
            self.fail(f"{where} has {n} {kind}s, needs {want}")
        for pos, t in enumerate(tensors):
            name = names[min(pos, len(names) - 1)] if repeat is None or pos < repeat else names[repeat]
            if t is None and not name.endswith("?"):
                self.fail(f"{where} {kind} {pos} ({name.rstrip('?+*')}) is -1, but the kernel needs it")

    def options(self, where: str, op: Operator) -> None:
        """The options type is one the schema knows, matches the options object, and suits the operator."""
        for kind, names, value, obj in (("builtin options", _OPTION_NAMES, op.options_type, op.options),
                                        ("builtin options 2", _OPTION2_NAMES, op.options2_type, op.options2)):
            name = names.get(value)
            if name is None:
                self.fail(f"{where} has unknown {kind} type {value}")
            if name != "NONE" and (obj is None or type(obj).__name__ != name + "T"):
                self.fail(f"{where} {kind} type {name} does not match its options ({type(obj).__name__})")
        spec = SPECS.get(op.name)
        if spec is None:
            return
        want = expected_options(op.name)
        allowed = {want} if spec.required else {want, "NONE"}
        have = _OPTION_NAMES[op.options_type]
        if have not in allowed:
            self.fail(f"{where} carries {have} options, needs {' or '.join(sorted(allowed))}")
        if op.options2_type != 0:
            self.fail(f"{where} carries builtin options 2 ({_OPTION2_NAMES[op.options2_type]}), which it has none of")

    def option_values(self, where: str, op: Operator, spec: OpSpec) -> None:
        opts = op.options
        if opts is None:
            return
        for field in _POSITIVE_FIELDS:
            value = getattr(opts, field, None)
            if value is not None and value < 1:
                self.fail(f"{where} option {field} is {value}, must be at least 1")
        for field, enum in _ENUM_FIELDS.items():
            value = getattr(opts, field, None)
            if value is not None and value not in _enum_values(enum):
                self.fail(f"{where} option {field} is {value}, which the schema does not define")
        counted = {"SPLIT": ("numSplits", op.outputs), "SPLIT_V": ("numSplits", op.outputs),
                   "PACK": ("valuesCount", op.inputs), "UNPACK": ("num", op.outputs)}.get(op.name)
        if counted is not None:
            field, tensors = counted
            if getattr(opts, field) != len(tensors):
                self.fail(f"{where} option {field} is {getattr(opts, field)} but it has {len(tensors)} "
                          f"{'inputs' if tensors is op.inputs else 'outputs'}")

    def control_flow(self, where: str, op: Operator) -> None:
        refs = op.subgraph_refs
        if op.name == "WHILE":
            cond, body = refs.get("condSubgraphIndex"), refs.get("bodySubgraphIndex")
            if cond is None or body is None:
                self.fail(f"{where} names no condition or body subgraph")
            n = len(op.inputs)
            if len(op.outputs) != n or len(cond.inputs) != n or len(body.inputs) != n or len(body.outputs) != n:
                self.fail(f"{where} has {n} inputs and {len(op.outputs)} outputs, its condition takes "
                          f"{len(cond.inputs)} and its body takes {len(body.inputs)} and returns {len(body.outputs)}")
            if len(cond.outputs) != 1:
                self.fail(f"{where} condition subgraph returns {len(cond.outputs)} values, needs 1")
            self.same_types(where, op.inputs, body.inputs, "body input")
            self.same_types(where, op.inputs, cond.inputs, "condition input")
            self.same_types(where, op.outputs, body.outputs, "body output")
        elif op.name == "IF":
            for key in ("thenSubgraphIndex", "elseSubgraphIndex"):
                branch = refs.get(key)
                if branch is None:
                    self.fail(f"{where} names no {key[:4]} subgraph")
                if len(branch.inputs) != len(op.inputs) - 1 or len(branch.outputs) != len(op.outputs):
                    self.fail(f"{where} {key[:4]} subgraph takes {len(branch.inputs)} inputs and returns "
                              f"{len(branch.outputs)}, the operator passes {len(op.inputs) - 1} and expects "
                              f"{len(op.outputs)}")
                self.same_types(where, op.inputs[1:], branch.inputs, f"{key[:4]} input")
        elif op.name == "CALL_ONCE":
            init = refs.get("initSubgraphIndex")
            if init is None:
                self.fail(f"{where} names no initialization subgraph")
            if init.inputs or init.outputs:
                self.fail(f"{where} initialization subgraph has inputs or outputs")

    def same_types(self, where: str, outer: list, inner: list, what: str) -> None:
        for k, (a, b) in enumerate(zip(outer, inner)):
            if a is None or b is None:
                self.fail(f"{where} passes -1 as {what} {k}")
            if a.type != b.type:
                self.fail(f"{where} {what} {k} has type {b.type}, the operator's tensor has {a.type}")

    # ------------------------------------------------------------------ signatures

    def signatures(self) -> None:
        """A signature names its subgraph's inputs and outputs, nothing else (LiteRT's signature runner
        reads and writes exactly those tensors)."""
        for sd in self.model.signature_defs:
            si = self.index.get(id(sd.subgraph))
            if si is None:
                self.fail(f"signature {sd.key!r} refers to a subgraph that is not in the model")
            if not sd.key or any(not name for name, _ in (*sd.inputs, *sd.outputs)):
                self.fail(f"signature {sd.key!r} of subgraph {si} has no key or an unnamed input or output")
            for kind, pairs, allowed in (("input", sd.inputs, sd.subgraph.inputs),
                                         ("output", sd.outputs, sd.subgraph.outputs)):
                ids = {id(t) for t in allowed}
                for name, t in pairs:
                    if id(t) not in ids:
                        self.fail(f"signature {sd.key!r} {kind} {name!r} is not an {kind} of subgraph {si}")

    # ------------------------------------------------------------------ size

    def size(self, limit: int) -> None:
        total = 0
        for sg in self.model.subgraphs:
            for t in _all_tensors(sg):
                if not t.is_constant:
                    total += t.nbytes
        if total > limit:
            self.fail(f"activations take {total:,} bytes, more than the limit of {limit:,} "
                      f"(set {LIMIT_ENV} to allow more)")


def _elements(shape) -> int:
    """Element count of a static shape (unknown dimensions count as 1), as an exact Python int."""
    n = 1
    for d in shape:
        n *= int(d) if d >= 0 else 1
    return n


def _all_tensors(sg: Subgraph) -> list[Tensor]:
    """Every tensor the writer puts in the file: the referenced ones and the declared unused ones."""
    tensors = sg.referenced_tensors()
    known = {id(t) for t in tensors}
    return tensors + [t for t in sg.tensors if id(t) not in known]


def _index_vector(vec) -> np.ndarray | None:
    """The values of a sparse Int32Vector/Uint16Vector/Uint8Vector object, or None."""
    values = getattr(vec, "values", None)
    return None if values is None else np.asarray(values, dtype=np.int64)
