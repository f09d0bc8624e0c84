"""Full integer quantization (int8, or 16x8: int16 activations with int8 weights) from calibration data.

Only the main subgraph's activations are quantized (calibration sees only its tensors). Each float
activation gets an integer form when an integer op produces or reads it; a tensor needed in the other
form gets one QUANTIZE or DEQUANTIZE, shared by every reader. Ops without an integer kernel (and
control flow such as the WHILE loops of lowered LSTMs, and keep-float ops) stay float; their conv,
fully-connected and batch-matmul weights, in the main subgraph and in loop bodies, still get int8
weights for LiteRT's hybrid kernels, unless kept float.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Operator, Quantization, Tensor
from compiler.ir.layers import layer_of_op
from compiler.quant import graph, kernels
from compiler.quant.calibrate import collect_ranges
from compiler.quant.numerics import activation_params, bias_values, quantize_values, symmetric_weights
from compiler.quant.weights_only import hybrid_int8

OP = schema.BuiltinOperator
TT = schema.TensorType
F32 = TT.FLOAT32


def _float_act(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and not t.is_constant


def _float_const(t: Tensor | None) -> bool:
    return t is not None and t.type == F32 and t.is_constant


def _same(a: Quantization, b: Quantization) -> bool:
    return (np.allclose(a.scale, b.scale, rtol=1e-6, atol=0) and np.array_equal(a.zero_point, b.zero_point))


def quantize_static(model: Model, keep, calibration: dict, *, bits: int = 8, io: str = "float",
                    percentile: float = 0.0, per_channel: bool = True, min_elements: int = 1024) -> dict:
    sg = model.main
    qtype = TT.INT16 if bits == 16 else TT.INT8
    qdtype = np.int16 if bits == 16 else np.int8
    suffix = "_int16" if bits == 16 else "_int8"
    supported = kernels.INT16_OPS if bits == 16 else kernels.INT8_OPS
    ranges = collect_ranges(model, calibration, percentile)
    # Float activations as they were before any rewrite (integer ones are changed in place).
    acts = {id(t) for t in sg.tensors if _float_act(t)} | {id(t) for t in sg.inputs if _float_act(t)}
    acts |= {id(t) for op in sg.operators for t in op.tensors() if _float_act(t)}

    def is_act(t: Tensor | None) -> bool:
        return t is not None and id(t) in acts

    def reason_float(op: Operator) -> str | None:
        if not any(is_act(t) or _float_const(t) for t in (*op.inputs, *op.outputs)):
            return ""  # no float tensors: nothing to decide
        if keep(sg, op):
            return "keep-float"
        if op.builtin_code in (OP.WHILE, OP.IF, OP.CALL_ONCE):
            return "control flow (e.g. an LSTM loop): runs float, loop weights int8 for hybrid kernels"
        if op.builtin_code not in supported:
            return f"no {'16x8' if bits == 16 else 'int8'} kernel"
        spec = kernels.WEIGHTS.get(op.builtin_code)
        if spec is not None and not _float_const(op.inputs[spec.index]):
            return "weights are not constant"
        for t in (*op.inputs, *op.outputs):
            if is_act(t) and id(t) not in ranges and not (
                    t in op.outputs and op.builtin_code in kernels.FIXED_OUTPUT):
                return "tensor not seen in calibration"
        return None

    qform: dict[int, Tensor] = {}
    fform: dict[int, Tensor] = {}
    new_ops: list[Operator] = []
    float_ops: list[dict] = []
    decisions: dict[str, int] = {}

    for t in sg.inputs:
        if _float_act(t):
            if io != "float" and id(t) in ranges:
                t.type, t.quantization = qtype, activation_params(*ranges[id(t)], bits)
                qform[id(t)] = t
            else:
                fform[id(t)] = t

    def get_q(t: Tensor, params: Quantization | None = None) -> Tensor:
        if id(t) not in qform:
            src = fform.get(id(t), t)
            p = params or activation_params(*ranges[id(t)], bits)
            q = graph.activation(sg, t, graph.short_name(t.name) + suffix, qtype, p)
            new_ops.append(graph.conversion_op(OP.QUANTIZE, src, q, graph.quantize_version(q, src)))
            qform[id(t)] = q
        q = qform[id(t)]
        if params is not None and not _same(q.quantization, params):
            r = graph.activation(sg, t, graph.short_name(t.name) + "_requant", qtype, params)
            new_ops.append(graph.conversion_op(OP.QUANTIZE, q, r, graph.quantize_version(r, q)))
            return r
        return q

    def get_f(t: Tensor) -> Tensor:
        if id(t) not in fform:
            q = qform[id(t)]
            f = graph.activation(sg, t, graph.short_name(t.name) + "_float", F32)
            new_ops.append(graph.conversion_op(OP.DEQUANTIZE, q, f, graph.dequantize_version(q)))
            fform[id(t)] = f
        return fform[id(t)]

    def const_q(t: Tensor, params: Quantization | None = None) -> Tensor:
        values = t.numpy()
        p = params or activation_params(float(values.min(initial=0)), float(values.max(initial=0)), bits)
        return graph.constant(sg, graph.short_name(t.name) + suffix, quantize_values(values, p, qdtype), p)

    replaced: list[Tensor] = []
    for op in sg.operators:
        why = reason_float(op)
        if why is not None:
            for i, t in enumerate(op.inputs):
                if is_act(t) and (id(t) in fform or id(t) in qform):
                    op.inputs[i] = get_f(t)
            for t in op.outputs:
                if is_act(t):
                    fform[id(t)] = t
            if why:
                float_ops.append({"op": op.name, "layer": layer_of_op(model, op, sg), "reason": why})
                decisions[f"{op.name}:float"] = decisions.get(f"{op.name}:float", 0) + 1
            new_ops.append(op)
            continue

        code = op.builtin_code
        spec = kernels.WEIGHTS.get(code)
        out_params: Quantization | None = None
        if spec is not None:
            x = get_q(op.inputs[0])  # weight ops' input 0 is always an activation here
            w = op.inputs[spec.index]
            axis = spec.axis if per_channel and code != OP.FULLY_CONNECTED else None
            wq, wp = symmetric_weights(w.numpy(), axis)
            op.inputs[0] = x
            op.inputs[spec.index] = graph.constant(sg, graph.short_name(w.name) + "_int8", wq, wp)
            replaced.append(w)
            b = op.inputs[spec.bias] if spec.bias is not None and len(op.inputs) > spec.bias else None
            if _float_const(b):
                dtype = np.int64 if bits == 16 and code in kernels.INT64_BIAS_16X8 else np.int32
                bq, bp = bias_values(b.numpy(), float(x.quantization.scale[0]), wp.scale, dtype)
                op.inputs[spec.bias] = graph.constant(sg, graph.short_name(b.name) + "_bias", bq, bp)
                replaced.append(b)
        elif code in kernels.SAME_SCALE:
            data = kernels.SAME_SCALE[code]
            idx = [i for i, t in enumerate(op.inputs) if (data is None or i in data)
                   and (is_act(t) or _float_const(t))]
            ins = [op.inputs[i] for i in idx if is_act(op.inputs[i])]
            if len(idx) == 1 and ins:
                op.inputs[idx[0]] = get_q(ins[0])
                out_params = op.inputs[idx[0]].quantization
            else:
                lo = min([ranges[id(t)][0] for t in ins] + [float(op.inputs[i].numpy().min()) for i in idx
                                                            if _float_const(op.inputs[i])] + [0.0])
                hi = max([ranges[id(t)][1] for t in ins] + [float(op.inputs[i].numpy().max()) for i in idx
                                                            if _float_const(op.inputs[i])] + [0.0])
                out_params = activation_params(lo, hi, bits)
                for i in idx:
                    t = op.inputs[i]
                    op.inputs[i] = const_q(t, out_params) if _float_const(t) else get_q(t, out_params)
            for i, t in enumerate(op.inputs):  # e.g. PADV2's constant pad value
                if _float_const(t):
                    op.inputs[i] = const_q(t, out_params)
        else:
            for i, t in enumerate(op.inputs):
                if is_act(t):
                    op.inputs[i] = get_q(t)
                elif _float_const(t):
                    op.inputs[i] = const_q(t)
        if code in kernels.FIXED_OUTPUT:
            scale, zp = kernels.FIXED_OUTPUT[code][0 if bits == 8 else 1]
            out_params = Quantization(np.array([scale], np.float32), np.array([zp], np.int64))
        for t in op.outputs:
            if is_act(t):
                p = out_params or activation_params(*ranges[id(t)], bits)
                t.type, t.quantization = qtype, Quantization(p.scale.copy(), p.zero_point.copy())
                qform[id(t)] = t
        op.version = kernels.integer_version(code, bits, op.version)
        decisions[f"{op.name}:{'int16x8' if bits == 16 else 'int8'}"] = \
            decisions.get(f"{op.name}:{'int16x8' if bits == 16 else 'int8'}", 0) + 1
        new_ops.append(op)

    # Model outputs: float (io=float) or integer; the output keeps its name and signature entry.
    swaps: dict[int, Tensor] = {}
    for i, t in enumerate(sg.outputs):
        if t.type == qtype and id(t) in qform and io == "float":
            new = get_f(t)
        elif is_act(t) and t.type == F32 and io != "float" and id(t) in ranges:
            new = get_q(t)
        else:
            continue
        new.name, t.name = t.name, graph.short_name(t.name) + ("_float" if new.type == F32 else suffix)
        sg.outputs[i] = new
        swaps[id(t)] = new
    for sd in model.signature_defs:
        sd.outputs = [(n, swaps.get(id(t), t)) for n, t in sd.outputs]
    sg.operators = new_ops
    graph.drop_unreferenced(sg, replaced)

    # Float ops keep float activations but their weights can still be int8 (hybrid kernels),
    # in the main subgraph and in loop bodies alike.
    hybrid = hybrid_int8(model, keep, per_channel=per_channel, min_elements=min_elements)
    for key, n in hybrid["ops"].items():
        decisions[key] = decisions.get(key, 0) + n
    return {"ops": dict(sorted(decisions.items())), "float_ops": float_ops,
            "calibrated_tensors": len(ranges), "percentile": percentile}
