"""Estimate the peak memory (RSS) of running a model, or a stage of it, with LiteRT.

peak = baseline + weights + arena + delegate, where
- weights: constant buffers the operators touch (the file is memory-mapped; touched pages stay resident),
  including those of control-flow subgraphs (LSTM WHILE bodies);
- arena: LiteRT's arena planner simulated per subgraph: every non-constant tensor lives from the op
  that writes it to the last op that reads it (subgraph inputs and outputs for the whole run), placed
  best-fit into one arena, biggest first, at 64-byte alignment; plus per-op scratch the builtin
  kernels allocate (im2col for CONV_2D, quantized copies for hybrid ops), and the persistent float
  copies DEQUANTIZE makes of float16 weights. WHILE bodies and conds have their own arenas (added);
- delegate: with XNNPACK, the repacked copies of the weights of CONV_2D / DEPTHWISE_CONV_2D /
  FULLY_CONNECTED / TRANSPOSE_CONV / BATCH_MATMUL (about one more copy of those weights; the original
  pages were read once to pack and stay resident) and XNNPACK's own workspace for the values inside
  delegated partitions (about the main arena).
Without XNNPACK there are no packed copies but CONV_2D needs im2col buffers, which for big
activations cost more than the packed weights (hence Contect's 2.58 GB without vs 1.98 GB with).

Calibrated against VmHWM of LiteRT runs in this repo's venv (see runtime_tests/test_memory.py):
a 64 MiB FULLY_CONNECTED stack, a 128x128x64 CONV_2D stack, a 2-layer 512-unit LSTM, contect-small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Operator, Subgraph, Tensor
from compiler.ir.core import reachable_subgraphs

OP = schema.BuiltinOperator

# VmHWM (/proc/self/status) of CPython 3.11 right after `import numpy`,
# `from ai_edge_litert.interpreter import Interpreter` and `import compiler.runtime` (the staged
# runtime, whose hashlib pulls in OpenSSL for the stage hashes; ai-edge-litert 2.3, x86-64): 40.1 MB
# (40.14-40.18 MB over repeated runs of runtime_tests/test_memory.py::_MEASURE's imports). It was
# 35.5 MB before the runtime's own imports were counted, which made every estimate ~5 MB low.
PROCESS_BASELINE = 40_100_000
# The first interpreter on top of that (kernel code paged in, thread pool, allocator pools):
# VmHWM of a one-ADD model minus the process baseline, 2.4 MB without XNNPACK, 3.05 MB with. A real
# CNN pages in more of XNNPACK's microkernels: full Contect, float, 11 stages, measured 3.2 MB above
# an estimate made with the one-ADD figure (bench/results/contect.md), hence +3 MB with XNNPACK.
INTERPRETER_OVERHEAD = {False: 2_400_000, True: 6_050_000}
BASELINE = {k: PROCESS_BASELINE + v for k, v in INTERPRETER_OVERHEAD.items()}

ALIGNMENT = 64  # LiteRT's kDefaultTensorAlignment
# XNNPACK's packed int8 weights take more than the int8 bytes (output-channel tiles padded, per-channel
# sums and int32 biases stored with them): full Contect, int8, unpartitioned, measured 35 MB above the
# estimate for 260 MB of int8 weights (bench/results/contect.md), i.e. 1.13x.
INT8_PACKING = 1.13
# Ops whose constant weights XNNPACK packs into its own buffers.
PACKED_OPS = {OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.FULLY_CONNECTED, OP.TRANSPOSE_CONV, OP.BATCH_MATMUL,
              OP.CONV_3D}
# Ops XNNPACK can take over (used for its workspace estimate); everything else stays with LiteRT.
_XNN_OPS = PACKED_OPS | {OP.ADD, OP.SUB, OP.MUL, OP.DIV, OP.AVERAGE_POOL_2D, OP.MAX_POOL_2D, OP.LOGISTIC,
                         OP.TANH, OP.RELU, OP.RELU6, OP.CONCATENATION, OP.RESHAPE, OP.MEAN, OP.SOFTMAX,
                         OP.PAD, OP.STRIDED_SLICE, OP.TRANSPOSE, OP.HARD_SWISH, OP.LEAKY_RELU, OP.SQUARED_DIFFERENCE}


def _align(n: int) -> int:
    return (int(n) + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _is_activation(t: Tensor | None) -> bool:
    return t is not None and not t.is_constant


# ----------------------------------------------------------------------------------------- arena

def plan_arena(blocks: Iterable[tuple[int, int, int]]) -> int:
    """Arena size for (size, first, last) blocks: biggest first, each put in the smallest gap that fits
    (lowest offset on ties) among the already placed blocks whose lifetimes overlap, else on top of them
    (LiteRT's ArenaPlanner + SimpleMemoryArena). Vectorized over the placed blocks: a Contect-sized range
    has thousands of tensors, and the partitioner plans many ranges."""
    items = sorted(((_align(s), a, b) for s, a, b in blocks if s > 0), key=lambda x: (-x[0], x[1]))
    n = len(items)
    off = np.zeros(n, np.int64)
    size = np.array([i[0] for i in items], np.int64)
    first = np.array([i[1] for i in items], np.int64)
    last = np.array([i[2] for i in items], np.int64)
    top = 0
    for k in range(n):
        live = (first[:k] <= last[k]) & (first[k] <= last[:k])
        offset = 0
        if live.any():
            o, s = off[:k][live], size[:k][live]
            order = np.argsort(o, kind="stable")
            o, ends = o[order], o[order] + s[order]
            below = np.concatenate(([0], np.maximum.accumulate(ends)[:-1]))  # end of everything placed lower
            gaps = o - below
            fits = gaps >= size[k]
            if fits.any():
                offset = int(below[fits][np.argmin(gaps[fits])])
            else:
                offset = int(ends.max())
        off[k] = offset
        top = max(top, offset + int(size[k]))
    return top


def _conv_scratch(op: Operator) -> int:
    """im2col (and hybrid) scratch of the builtin CONV_2D kernel, 0 when it needs none."""
    if op.builtin_code != OP.CONV_2D or len(op.inputs) < 2 or op.inputs[1] is None or op.outputs[0] is None:
        return 0
    x, w, y = op.inputs[0], op.inputs[1], op.outputs[0]
    if len(w.shape) != 4 or len(y.shape) != 4 or x is None:
        return 0
    o = op.options
    one = all(getattr(o, k, 1) == 1 for k in ("strideW", "strideH", "dilationWFactor", "dilationHFactor"))
    hybrid = w.dtype is not None and np.dtype(w.dtype).kind in "iu" and x.dtype == np.float32
    n, oh, ow, oc = y.shape
    _, kh, kw, ic = w.shape
    item = 1 if hybrid or (x.dtype is not None and np.dtype(x.dtype).itemsize == 1) else 4
    scratch = 0
    if not (kh == 1 and kw == 1 and one):
        scratch += n * oh * ow * kh * kw * ic * item
    if hybrid:
        scratch += x.nbytes // 4 + n * oh * ow * oc * 4  # quantized input + int32 accumulators
    return max(0, int(scratch))


def _fc_scratch(op: Operator) -> int:
    if op.builtin_code not in (OP.FULLY_CONNECTED, OP.BATCH_MATMUL) or len(op.inputs) < 2:
        return 0
    x, w = op.inputs[0], op.inputs[1]
    if x is None or w is None or not w.is_constant or w.dtype is None or x.dtype != np.float32:
        return 0
    if np.dtype(w.dtype).kind in "iu":  # hybrid: quantized input copy + int32 accumulators
        y = op.outputs[0]
        return x.nbytes // 4 + (y.nbytes if y is not None else 0)
    return 0


def _scratch(op: Operator, use_xnnpack: bool) -> int:
    if use_xnnpack and op.builtin_code in PACKED_OPS and _packed(op) > 0:
        return 0  # XNNPACK runs it in its own workspace (counted in `delegate`)
    return _conv_scratch(op) + _fc_scratch(op)


def _packed(op: Operator) -> int:
    """Bytes XNNPACK's packed copy of this op's constant weights takes (0 if it packs nothing)."""
    if op.builtin_code not in PACKED_OPS:
        return 0
    total = 0
    for t in op.inputs[1:3]:
        if t is None:
            continue
        if t.is_constant:
            n = t.nbytes or t.buffer.nbytes
            if t.type == schema.TensorType.FLOAT16:
                n *= 2  # unpacked to float32
            elif t.type in (schema.TensorType.INT8, schema.TensorType.UINT8):
                n = int(n * INT8_PACKING)
            total += n
    return total


def _dequant_const(op: Operator) -> int:
    """DEQUANTIZE of a constant (float16/int8 weights): LiteRT keeps a persistent float copy."""
    if op.builtin_code == OP.DEQUANTIZE and op.inputs and op.inputs[0] is not None and op.inputs[0].is_constant:
        return op.outputs[0].nbytes if op.outputs and op.outputs[0] is not None else 0
    return 0


def subgraph_arena(sg: Subgraph, ops: Sequence[Operator] | None = None, use_xnnpack: bool = True,
                   extra_inputs: Iterable[Tensor] = (), extra_outputs: Iterable[Tensor] = ()) -> int:
    """Simulated arena bytes of `ops` (default: the subgraph's operators) in order."""
    whole = ops is None
    ops = list(sg.operators if whole else ops)
    n = len(ops)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    size: dict[int, int] = {}
    # Subgraph (or range) inputs are allocated before the first op and preserved to the end.
    for t in (*(sg.inputs if whole else ()), *extra_inputs):
        if _is_activation(t):
            first[id(t)], last[id(t)], size[id(t)] = 0, n, t.nbytes
    for i, op in enumerate(ops):
        for t in op.outputs:
            if _is_activation(t) and id(t) not in first:
                first[id(t)], last[id(t)], size[id(t)] = i, i, t.nbytes
        for t in (*op.inputs, *op.intermediates):
            if _is_activation(t):
                if id(t) not in first:  # read but never written here: an input of the range
                    first[id(t)], last[id(t)], size[id(t)] = 0, n, t.nbytes
                last[id(t)] = max(last[id(t)], i)
    for t in (*(sg.outputs if whole else ()), *extra_outputs):
        if id(t) in first:
            last[id(t)] = n
    blocks = [(size[k], first[k], last[k]) for k in first]
    for i, op in enumerate(ops):
        s = _scratch(op, use_xnnpack)
        if s:
            blocks.append((s, i, i))
    return plan_arena(blocks)


# ----------------------------------------------------------------------------------------- per op facts

@dataclass
class _OpFacts:
    buffers: dict[int, int] = field(default_factory=dict)  # id(buffer) -> bytes, incl. called subgraphs
    packed: int = 0  # XNNPACK packed weights, incl. called subgraphs
    persistent: int = 0  # DEQUANTIZE const copies (without XNNPACK), incl. called subgraphs
    called_arena: int = 0  # arenas of called subgraphs (WHILE body + cond), transitively
    xnn: bool = False  # main-subgraph op XNNPACK would take


class Estimator:
    """Per-operator facts for a model's main subgraph, so contiguous ranges estimate fast.

    `range(a, b)` estimates a stage made of main-subgraph operators ops[a:b] without building it;
    `ops` may be a reordering of the main subgraph's operators (a valid topological order). `prelude`
    maps id(op) to the constant-derived operators a stage holding `op` runs just before it (see
    compiler/handoff.py): they are counted in every range that needs them and never as handoff."""

    def __init__(self, model: Model, use_xnnpack: bool = True, ops: Sequence[Operator] | None = None,
                 prelude: dict[int, list[Operator]] | None = None):
        from compiler.handoff import Liveness

        self.model = model
        self.use_xnnpack = use_xnnpack
        self.ops = list(model.main.operators if ops is None else ops)
        self.prelude = prelude or {}
        internal = {id(t) for chain in self.prelude.values() for o in chain for t in o.outputs if t is not None}
        self.live = Liveness(self.ops, model.main.inputs, model.main.outputs, internal)
        self._sg_arena: dict[int, int] = {}
        self._facts_cache: dict[int, _OpFacts] = {}
        self._cache: dict[tuple[int, int], dict] = {}

    def facts(self, op: Operator) -> _OpFacts:
        if id(op) not in self._facts_cache:
            self._facts_cache[id(op)] = self._facts(op)
        return self._facts_cache[id(op)]

    def _facts(self, op: Operator) -> _OpFacts:
        f = _OpFacts(xnn=op.builtin_code in _XNN_OPS)
        sgs = reachable_subgraphs(op.called_subgraphs())
        all_ops = [op] + [o for sg in sgs for o in sg.operators]
        for o in all_ops:
            for t in o.tensors():
                if t.is_constant:
                    f.buffers[id(t.buffer)] = t.buffer.nbytes
            if self.use_xnnpack:
                f.packed += _packed(o)
            else:
                f.persistent += _dequant_const(o)
        if self.use_xnnpack:  # XNNPACK only keeps the float copy of weights no packed op consumes
            f.persistent += sum(_dequant_const(o) for o in all_ops if not self._feeds_packed(o, all_ops))
        for sg in sgs:
            if id(sg) not in self._sg_arena:
                self._sg_arena[id(sg)] = subgraph_arena(sg, use_xnnpack=self.use_xnnpack)
            f.called_arena += self._sg_arena[id(sg)]
        return f

    def _feeds_packed(self, op: Operator, ops: list[Operator]) -> bool:
        if not _dequant_const(op):
            return False
        out = op.outputs[0]
        readers = ops + [o for chain in self.prelude.values() for o in chain] + self.ops
        return any(o.builtin_code in PACKED_OPS and any(t is out for t in o.inputs[1:3]) for o in readers)

    def expand(self, a: int, b: int) -> list[Operator]:
        """The operators a stage of ops[a:b] runs: each op preceded by the constant-derived ops it needs
        that the stage has not run yet."""
        out, done = [], set()
        for op in self.ops[a:b]:
            for p in self.prelude.get(id(op), ()):
                if id(p) not in done:
                    done.add(id(p))
                    out.append(p)
            out.append(op)
        return out

    def io(self, a: int, b: int) -> tuple[list[Tensor], list[Tensor]]:
        return self.live.io(a, b)

    def range(self, a: int, b: int) -> dict:
        key = (a, b)
        if key not in self._cache:
            self._cache[key] = self._range(a, b)
        return self._cache[key]

    def _range(self, a: int, b: int) -> dict:
        bufs: dict[int, int] = {}
        packed = persistent = called = 0
        xnn_ops = []
        ops = self.expand(a, b)
        for op in ops:
            f = self.facts(op)
            bufs.update(f.buffers)
            packed += f.packed
            persistent += f.persistent
            called += f.called_arena
            if f.xnn:
                xnn_ops.append(op)
        ins, outs = self.io(a, b)
        main = self.model.main
        arena = subgraph_arena(main, ops, self.use_xnnpack, extra_inputs=ins, extra_outputs=outs)
        workspace = 0
        if self.use_xnnpack and xnn_ops:
            # XNNPACK keeps the values inside its partitions in its own workspace: about the arena of
            # the delegated ops alone (an upper bound: it may reuse across partitions).
            workspace = subgraph_arena(main, xnn_ops, True, extra_inputs=(), extra_outputs=())
        return _total(weights=sum(bufs.values()), arena=arena + called + persistent,
                      delegate=packed + workspace, use_xnnpack=self.use_xnnpack,
                      detail={"main_arena": arena, "subgraph_arenas": called, "persistent": persistent,
                              "packed_weights": packed, "xnnpack_workspace": workspace,
                              "inputs": sum(t.nbytes for t in ins), "outputs": sum(t.nbytes for t in outs)})


def _total(weights: int, arena: int, delegate: int, use_xnnpack: bool, detail: dict) -> dict:
    base = BASELINE[bool(use_xnnpack)]
    return {"weights": int(weights), "arena": int(arena), "delegate": int(delegate), "baseline": int(base),
            "peak": int(base + weights + arena + delegate), "xnnpack": bool(use_xnnpack), "detail": detail}


def estimate(model: Model, use_xnnpack: bool = True) -> dict:
    """Estimated memory of running `model` (a whole model or one stage) in one LiteRT interpreter."""
    if not model.subgraphs:
        return _total(0, 0, 0, use_xnnpack, {})
    return Estimator(model, use_xnnpack).range(0, len(model.main.operators))


def estimate_run(stages: list[Model], use_xnnpack: bool = True, handoff=None) -> dict:
    """Peak of a staged run: max over stages of (stage peak + handoff arrays the runtime holds meanwhile).

    During stage k the runtime holds every handoff value produced before k that a stage >= k still needs
    (or that is a model output), the model inputs still needed, and stage k's copied-out outputs; that
    is `compiler.handoff.plan(...).held[k]` (pass the plan if you have it)."""
    from compiler import handoff as _handoff

    if not stages:
        return {"peak": 0, "peak_stage": None, "baseline": BASELINE[bool(use_xnnpack)],
                "xnnpack": bool(use_xnnpack), "stages": []}
    plan = handoff or _handoff.plan(stages)
    rows = []
    for k, st in enumerate(stages):
        e = estimate(st, use_xnnpack)
        rows.append({"stage": k, **{key: e[key] for key in ("weights", "arena", "delegate", "peak")},
                     "handoff": plan.held[k], "total": e["peak"] + plan.held[k]})
    worst = max(rows, key=lambda r: r["total"])
    return {"peak": worst["total"], "peak_stage": worst["stage"], "baseline": BASELINE[bool(use_xnnpack)],
            "xnnpack": bool(use_xnnpack), "stages": rows}
