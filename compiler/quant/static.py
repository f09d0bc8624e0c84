"""Full integer quantization (int8, or 16x8: int16 activations with int8 weights) from calibration data.

Two steps: `decide` says, per op, whether it runs integer (its rule in `kernels.RULES`) or float and
why; `Rewriter` applies the rules in program order. Only the main subgraph's activations are quantized
(calibration sees only its tensors). Each float activation gets an integer form when an integer op
produces or reads it; a tensor needed in the other form gets one QUANTIZE or DEQUANTIZE, shared by
every reader. Ops without an integer kernel (control flow such as the WHILE loops of lowered LSTMs,
keep-float ops) stay float; their conv, fully-connected and batch-matmul weights, in the main subgraph
and in loop bodies, still get int8 weights for LiteRT's hybrid kernels, unless kept float.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Operator, Quantization, Subgraph, Tensor
from compiler.ir.layers import layer_of_op
from compiler.quant import graph, kernels, names
from compiler.quant.kernels import FIXED, FLOAT, SAME, WEIGHT, Rule
from compiler.quant.numerics import activation_params, bias_values, quantize_values, symmetric_weights
from compiler.quant.weights_only import expand_half_weights, hybrid_int8

OP = schema.BuiltinOperator
TT = schema.TensorType
F32 = TT.FLOAT32

Ranges = dict[int, tuple[float, float]]  # id(float activation) -> calibrated (lo, hi)


def _float_act(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and not t.is_constant


def _float_const(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and t.is_constant


def _same(a: Quantization, b: Quantization) -> bool:
    return np.allclose(a.scale, b.scale, rtol=1e-6, atol=0) and np.array_equal(a.zero_point, b.zero_point)


def _copy(p: Quantization) -> Quantization:
    return Quantization(p.scale.copy(), p.zero_point.copy(), quantized_dimension=p.quantized_dimension)


class Rewriter:
    """The integer and float forms of the main subgraph's float activations while its ops are rewritten
    in program order; `ops` collects the new operator list (conversions inserted where needed)."""

    def __init__(self, sg: Subgraph, ranges: Ranges, bits: int):
        self.sg, self.ranges, self.bits = sg, ranges, bits
        self.qtype = TT.INT16 if bits == 16 else TT.INT8
        self.qdtype = np.int16 if bits == 16 else np.int8
        self.suffix = names.INT16 if bits == 16 else names.INT8
        # Float activations as they were before any rewrite (integer ones are changed in place).
        self.acts = {id(t) for t in (*sg.tensors, *sg.inputs) if _float_act(t)}
        self.acts |= {id(t) for op in sg.operators for t in op.tensors() if _float_act(t)}
        self.qform: dict[int, Tensor] = {}
        self.fform: dict[int, Tensor] = {}
        self.ops: list[Operator] = []
        self.replaced: list[Tensor] = []

    def is_act(self, t: Tensor | None) -> bool:
        return t is not None and id(t) in self.acts

    def calibrated(self, t: Tensor) -> Quantization:
        return activation_params(*self.ranges[id(t)], self.bits)

    def integer(self, t: Tensor, params: Quantization | None = None) -> Tensor:
        """`t`'s integer form (made by one QUANTIZE), requantized to `params` if they differ."""
        if id(t) not in self.qform:
            src = self.fform.get(id(t), t)
            q = graph.activation(self.sg, t, graph.short_name(t.name) + self.suffix, self.qtype,
                                 params or self.calibrated(t))
            self.ops.append(graph.conversion_op(OP.QUANTIZE, src, q, graph.quantize_version(q, src)))
            self.qform[id(t)] = q
        q = self.qform[id(t)]
        if params is not None and not _same(q.quantization, params):
            r = graph.activation(self.sg, t, graph.short_name(t.name) + names.REQUANT, self.qtype, params)
            self.ops.append(graph.conversion_op(OP.QUANTIZE, q, r, graph.quantize_version(r, q)))
            return r
        return q

    def float(self, t: Tensor) -> Tensor:
        """`t`'s float form (made by one DEQUANTIZE when it only exists as an integer)."""
        if id(t) not in self.fform:
            q = self.qform[id(t)]
            f = graph.activation(self.sg, t, graph.short_name(t.name) + names.FLOAT, F32)
            self.ops.append(graph.conversion_op(OP.DEQUANTIZE, q, f, graph.dequantize_version(q)))
            self.fform[id(t)] = f
        return self.fform[id(t)]

    def constant(self, t: Tensor, params: Quantization | None = None) -> Tensor:
        """A float constant operand (not a weight) as an integer constant, with its own range or `params`."""
        values = t.numpy()
        p = params or activation_params(float(values.min(initial=0)), float(values.max(initial=0)), self.bits)
        self.replaced.append(t)
        return graph.constant(self.sg, graph.short_name(t.name) + self.suffix,
                              quantize_values(values, p, self.qdtype), p)

    def operand(self, t: Tensor, params: Quantization | None = None) -> Tensor:
        return self.constant(t, params) if _float_const(t) else self.integer(t, params)

    def keep_float(self, op: Operator) -> None:
        op.inputs = [self.float(t) if self.is_act(t) and (id(t) in self.fform or id(t) in self.qform) else t
                     for t in op.inputs]
        for t in op.outputs:
            if self.is_act(t):
                self.fform[id(t)] = t
        self.ops.append(op)

    def set_outputs(self, op: Operator, params: Quantization | None) -> None:
        for t in op.outputs:
            if self.is_act(t):
                t.type, t.quantization = self.qtype, _copy(params or self.calibrated(t))
                self.qform[id(t)] = t


# ---- one function per rule kind: rewrite the op's operands, return the output params (None: calibrated)

def _weight(rw: Rewriter, op: Operator, rule: Rule, per_channel: bool) -> Quantization | None:
    """Input 0 integer; weight symmetric int8 (per channel along the rule's axis); bias at s_in * s_w."""
    spec = rule.weight
    x = rw.integer(op.inputs[0])
    w = op.inputs[spec.index]
    wq, wp = symmetric_weights(w.numpy(), spec.axis if per_channel else None)
    op.inputs[0] = x
    op.inputs[spec.index] = graph.constant(rw.sg, graph.short_name(w.name) + names.INT8, wq, wp)
    rw.replaced.append(w)
    b = op.inputs[spec.bias] if spec.bias is not None and len(op.inputs) > spec.bias else None
    if _float_const(b):
        dtype = np.int64 if rw.bits == 16 and rule.int64_bias else np.int32
        bq, bp = bias_values(b.numpy(), float(x.quantization.scale[0]), wp.scale, dtype)
        op.inputs[spec.bias] = graph.constant(rw.sg, graph.short_name(b.name) + names.BIAS, bq, bp)
        rw.replaced.append(b)
    return None


def _same_scale(rw: Rewriter, op: Operator, rule: Rule, per_channel: bool) -> Quantization | None:
    """One data input: the output takes its params. Several: one range over all of them (and any
    constant data input), every input requantized to it. Other float constants (e.g. PADV2's pad
    value) are quantized with the output's params."""
    idx = [i for i, t in enumerate(op.inputs) if (rule.data is None or i in rule.data)
           and (rw.is_act(t) or _float_const(t))]
    acts = [op.inputs[i] for i in idx if rw.is_act(op.inputs[i])]
    if len(idx) == 1 and acts:
        op.inputs[idx[0]] = rw.integer(acts[0])
        out = op.inputs[idx[0]].quantization
    else:
        consts = [op.inputs[i].numpy() for i in idx if _float_const(op.inputs[i])]
        lo = min([rw.ranges[id(t)][0] for t in acts] + [float(c.min()) for c in consts] + [0.0])
        hi = max([rw.ranges[id(t)][1] for t in acts] + [float(c.max()) for c in consts] + [0.0])
        out = activation_params(lo, hi, rw.bits)
        for i in idx:
            op.inputs[i] = rw.operand(op.inputs[i], out)
    op.inputs = [rw.constant(t, out) if _float_const(t) else t for t in op.inputs]
    return out


def _integer(rw: Rewriter, op: Operator, rule: Rule, per_channel: bool) -> Quantization | None:
    """Every float operand with its own params; FIXED ops then get the kernel's output params."""
    op.inputs = [rw.operand(t) if rw.is_act(t) or _float_const(t) else t for t in op.inputs]
    if rule.kind == FIXED:
        scale, zp = rule.fixed[0 if rw.bits == 8 else 1]
        return Quantization(np.array([scale], np.float32), np.array([zp], np.int64))
    return None


APPLY = {WEIGHT: _weight, SAME: _same_scale, FIXED: _integer, kernels.INTEGER: _integer}


def decide(rw: Rewriter, op: Operator, keep) -> str | None:
    """None: the op runs integer. Otherwise why it stays float ("" when it has no float tensors)."""
    if not any(rw.is_act(t) or _float_const(t) for t in (*op.inputs, *op.outputs)):
        return ""
    if keep(rw.sg, op):
        return "keep-float"
    rule = kernels.RULES.get(op.builtin_code)
    if rule is not None and rule.kind == FLOAT:
        return rule.reason
    if op.builtin_code not in (kernels.INT16_OPS if rw.bits == 16 else kernels.INT8_OPS):
        return f"no {'16x8' if rw.bits == 16 else 'int8'} kernel"
    if rule.kind == WEIGHT and not _float_const(op.inputs[rule.weight.index]):
        return "weights are not constant"
    for t in (*op.inputs, *op.outputs):
        if rw.is_act(t) and id(t) not in rw.ranges and not (t in op.outputs and rule.kind == FIXED):
            return "tensor not seen in calibration"
    return None


def rewrite(model: Model, keep, ranges: Ranges, *, bits: int = 8, io: str = "float",
            per_channel: bool = True) -> dict:
    """Apply the rules to the main subgraph with the given calibrated ranges. Returns the decisions
    ({"ops": {"NAME:int8": n, "NAME:float": n}, "float_ops": [{"op", "layer", "reason"}]})."""
    sg = model.main
    rw = Rewriter(sg, ranges, bits)
    mode = "int16x8" if bits == 16 else "int8"
    decisions: Counter = Counter()
    float_ops: list[dict] = []
    for t in sg.inputs:
        if _float_act(t):
            if io != "float" and id(t) in ranges:
                t.type, t.quantization = rw.qtype, rw.calibrated(t)
                rw.qform[id(t)] = t
            else:
                rw.fform[id(t)] = t
    for op in sg.operators:
        why = decide(rw, op, keep)
        if why is not None:
            if why:
                float_ops.append({"op": op.name, "layer": layer_of_op(model, op, sg), "reason": why})
                decisions[f"{op.name}:float"] += 1
            rw.keep_float(op)
            continue
        rule = kernels.RULES[op.builtin_code]
        rw.set_outputs(op, APPLY[rule.kind](rw, op, rule, per_channel))
        op.version = kernels.integer_version(op.builtin_code, bits, op.version)
        decisions[f"{op.name}:{mode}"] += 1
        rw.ops.append(op)
    _model_outputs(model, rw, io)
    sg.operators = rw.ops
    graph.drop_unreferenced(sg, rw.replaced)
    return {"ops": dict(sorted(decisions.items())), "float_ops": float_ops}


def _model_outputs(model: Model, rw: Rewriter, io: str) -> None:
    """Model outputs float (io=float) or integer; each output keeps its name and signature entry."""
    sg = model.main
    swaps: dict[int, Tensor] = {}
    for i, t in enumerate(sg.outputs):
        if t.type == rw.qtype and id(t) in rw.qform and io == "float":
            new = rw.float(t)
        elif rw.is_act(t) and t.type == F32 and io != "float" and id(t) in rw.ranges:
            new = rw.integer(t)
        else:
            continue
        new.name, t.name = t.name, graph.short_name(t.name) + (rw.suffix if new.type == F32 else names.FLOAT)
        sg.outputs[i] = new
        swaps[id(t)] = new
    for sd in model.signature_defs:
        sd.outputs = [(n, swaps.get(id(t), t)) for n, t in sd.outputs]


def quantize_static(model: Model, keep, calibration: dict, *, bits: int = 8, io: str = "float",
                    percentile: float = 0.0, per_channel: bool = True, min_elements: int = 1024) -> dict:
    """Calibrate, rewrite the main subgraph, then give the float ops' weights int8 for hybrid kernels.
    Float16 weights of weight ops (converters' float16 models) are first expanded to float32 constants,
    so they are quantized from their float16 values like any float weight."""
    from compiler.quant.calibrate import collect_ranges

    weight_ops = {code: r.weight for code, r in kernels.RULES.items() if r.kind == WEIGHT}
    expanded = expand_half_weights(model.main, weight_ops)
    ranges = collect_ranges(model, calibration, percentile)
    found = rewrite(model, keep, ranges, bits=bits, io=io, per_channel=per_channel)
    decisions = Counter(found["ops"])
    # Float ops keep float activations but their weights can still be int8 (hybrid kernels),
    # in the main subgraph and in loop bodies alike.
    hybrid = hybrid_int8(model, keep, per_channel=per_channel, min_elements=min_elements)
    decisions.update(hybrid["ops"])
    return {"ops": dict(sorted(decisions.items())), "float_ops": found["float_ops"],
            "calibrated_tensors": len(ranges), "percentile": percentile, "float16_left": hybrid["float16_left"],
            "float16_expanded": expanded}
