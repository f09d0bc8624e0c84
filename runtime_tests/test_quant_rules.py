"""Before/Expected tests of the quantize pass's rules on hand-built IR (no TensorFlow, no calibration run).

Each test builds a small float graph (Before), applies one rule kind of `quant.kernels.RULES` through
`quant.static.rewrite` with given calibrated ranges, and compares the result with a graph written out
by hand (Expected), whose quantization parameters come from the affine formulas computed here with
numpy: int8 activations scale = (hi - lo) / 255, zero point = round(-128 - lo / scale); int16 scale =
max|range| / 32767; weights scale = max|w| / 127; biases scale = s_in * s_w. Where the graph can run,
LiteRT runs Before and After and the outputs agree within the quantization step.
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from compiler import pipeline
from compiler.ir import Buffer, Operator, Quantization, Tensor, flatbuffer, op_name
from compiler.passes import PassContext
from compiler.quant import kernels, names, precision
from compiler.quant.static import Rewriter, decide, rewrite
from runtime_tests.ir_helpers import act, binary, const, model_of, run, structure

OP = schema.BuiltinOperator
TT = schema.TensorType
BO = schema.BuiltinOptions


def never(sg, op) -> bool:
    return False


def q(scale, zp) -> Quantization:
    return Quantization(np.asarray([scale], np.float32), np.asarray([zp], np.int64))


def act8(lo: float, hi: float) -> Quantization:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    z = -128 - lo / scale
    return q(np.float32(scale), int(np.sign(z) * np.floor(abs(z) + 0.5)))  # half away from zero, like std::round


def qtensor(name, shape, tt, quant) -> Tensor:
    return Tensor(name, tuple(shape), tt, quantization=quant)


def qconst(name, values: np.ndarray, quant: Quantization) -> Tensor:
    from compiler.ir import tensor_type_of

    values = np.ascontiguousarray(values)
    return Tensor(name, values.shape, tensor_type_of(values.dtype), buffer=Buffer(values.reshape(-1).view(np.uint8)),
                  quantization=quant)


def conv(code, src, dst, version) -> Operator:
    return Operator(code, version, inputs=[src], outputs=[dst])


def assert_same(got, expected, tensor_names: list[str]):
    """Same structure (names, shapes, types, bytes, quantization, ops, versions, options) and exactly
    these tensors listed in the subgraph (the writer writes every listed tensor)."""
    a, b = structure(got)[0], structure(expected)[0]
    for key in a:
        if key in ("tensors", "ops"):
            for i, (x, y) in enumerate(zip(a[key], b[key])):
                assert x == y, (key, i)
        assert a[key] == b[key], key
    assert [t.name for t in got.main.tensors] == tensor_names


# ------------------------------------------------------------------------------------ WEIGHT

def test_weight_rule_fully_connected():
    """FC: input QUANTIZEd, weights symmetric int8 per tensor (full-integer FC), int32 bias at s_x*s_w,
    calibrated output, v4; the float output comes back through one DEQUANTIZE and keeps its name."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x, y = act("x", (1, 8)), act("y", (1, 4))
    wt, bt = const("w", w), const("b", b)
    fc = Operator(OP.FULLY_CONNECTED, inputs=[x, wt, bt], outputs=[y], options_type=BO.FullyConnectedOptions,
                  options=schema.FullyConnectedOptionsT())
    before = model_of([x], [y], [fc], [x, wt, bt, y])
    float_bytes = flatbuffer.dumps(before)
    found = rewrite(before, never, {id(x): (-1.0, 2.0), id(y): (-10.0, 10.0)})

    qx, qy = act8(-1.0, 2.0), act8(-10.0, 10.0)
    sw = np.float32(np.abs(w).max() / 127)
    sb = np.float32(np.float64(qx.scale[0]) * np.float64(sw))
    ex, ey = act("x", (1, 8)), act("y", (1, 4))
    ex8, ey8 = qtensor("x_int8", (1, 8), TT.INT8, qx), qtensor("y_int8", (1, 4), TT.INT8, qy)
    ew = qconst("w_int8", np.clip(np.round(w / np.float64(sw)), -127, 127).astype(np.int8), q(sw, 0))
    eb = qconst("b_bias", np.round(b / np.float64(sb)).astype(np.int32), q(sb, 0))
    efc = Operator(OP.FULLY_CONNECTED, 4, inputs=[ex8, ew, eb], outputs=[ey8],
                   options_type=BO.FullyConnectedOptions, options=schema.FullyConnectedOptionsT())
    expected = model_of([ex], [ey], [conv(OP.QUANTIZE, ex, ex8, 2), efc, conv(OP.DEQUANTIZE, ey8, ey, 2)],
                        [ex, ey8, ex8, ew, eb, ey])
    assert_same(before, expected, ["x", "y_int8", "x_int8", "w_int8", "b_bias", "y"])
    assert found == {"ops": {"FULLY_CONNECTED:int8": 1}, "float_ops": []}

    xin = {"x": rng.uniform(-1, 2, (1, 8)).astype(np.float32)}
    ref, got = run(float_bytes, xin)["y"], run(before, xin)["y"]
    assert np.all(np.abs(ref) < 10)  # inside the calibrated range
    # Input rounding (s_x/2 per element through |w|) plus the output's own rounding (s_y/2).
    tol = 0.5 * float(qx.scale[0]) * np.abs(w).sum(axis=1).max() + 8 * 0.5 * sw + float(qy.scale[0])
    assert np.max(np.abs(ref - got)) <= tol


# ------------------------------------------------------------------------------------ SAME

def test_same_scale_rule_concatenation():
    """CONCATENATION: both inputs and the output share one range covering both inputs' ranges."""
    a, b, y = act("a", (1, 2)), act("b", (1, 3)), act("y", (1, 5))
    op = Operator(OP.CONCATENATION, inputs=[a, b], outputs=[y], options_type=BO.ConcatenationOptions,
                  options=schema.ConcatenationOptionsT())
    op.options.axis = 1
    before = model_of([a, b], [y], [op], [a, b, y])
    rewrite(before, never, {id(a): (-1.0, 1.0), id(b): (0.0, 4.0), id(y): (-1.0, 4.0)})

    shared = act8(-1.0, 4.0)
    ea, eb, ey = act("a", (1, 2)), act("b", (1, 3)), act("y", (1, 5))
    ea8, eb8 = qtensor("a_int8", (1, 2), TT.INT8, shared), qtensor("b_int8", (1, 3), TT.INT8, shared)
    ey8 = qtensor("y_int8", (1, 5), TT.INT8, shared)
    eop = Operator(OP.CONCATENATION, 2, inputs=[ea8, eb8], outputs=[ey8], options_type=BO.ConcatenationOptions,
                   options=schema.ConcatenationOptionsT())
    eop.options.axis = 1
    expected = model_of([ea, eb], [ey], [conv(OP.QUANTIZE, ea, ea8, 2), conv(OP.QUANTIZE, eb, eb8, 2), eop,
                                         conv(OP.DEQUANTIZE, ey8, ey, 2)], [ea, eb, ey8, ea8, eb8, ey])
    assert_same(before, expected, ["a", "b", "y_int8", "a_int8", "b_int8", "y"])


def test_same_scale_rule_requantizes_an_integer_input():
    """RESHAPE after ADD reads the ADD's int8 output as it is (same scale, no conversion); a second
    reader that needs another scale (CONCATENATION with a wider partner) gets a `_requant` QUANTIZE."""
    x, c, t, r, p, y = (act("x", (1, 4)), const("c", np.ones((1, 4))), act("t", (1, 4)), act("r", (4,)),
                        act("p", (4,)), act("y", (8,)))
    shape = Tensor("shape", (1,), TT.INT32, buffer=Buffer(np.array([4], np.int32).view(np.uint8)))
    reshape = Operator(OP.RESHAPE, inputs=[t, shape], outputs=[r])
    cat = Operator(OP.CONCATENATION, inputs=[r, p], outputs=[y], options_type=BO.ConcatenationOptions,
                   options=schema.ConcatenationOptionsT())
    model = model_of([x, p], [y], [binary(OP.ADD, x, c, t), reshape, cat], [x, c, t, shape, r, p, y])
    rewrite(model, never, {id(x): (-1.0, 1.0), id(t): (0.0, 2.0), id(r): (0.0, 2.0), id(p): (-8.0, 8.0),
                           id(y): (-8.0, 8.0)})
    ops = model.main.operators
    assert [op.name for op in ops] == ["QUANTIZE", "ADD", "RESHAPE", "QUANTIZE", "QUANTIZE", "CONCATENATION",
                                       "DEQUANTIZE"]
    add, rs = ops[1], ops[2]
    assert rs.inputs[0] is add.outputs[0] and rs.outputs[0].quantization.key() == add.outputs[0].quantization.key()
    requant = ops[3]
    assert requant.inputs[0] is rs.outputs[0] and requant.outputs[0].name == "r" + names.REQUANT
    assert requant.outputs[0].quantization.key() == act8(-8.0, 8.0).key() == ops[5].outputs[0].quantization.key()


# ------------------------------------------------------------------------------------ FIXED

@pytest.mark.parametrize("bits", [8, 16])
def test_fixed_output_rule_logistic(bits):
    """LOGISTIC's output params are the kernel's (int8: 1/256, -128; int16: 1/32768, 0), whatever the
    calibration says (the output needs no range at all)."""
    x, y = act("x", (1, 4)), act("y", (1, 4))
    before = model_of([x], [y], [Operator(OP.LOGISTIC, inputs=[x], outputs=[y])], [x, y])
    float_bytes = flatbuffer.dumps(before)
    rewrite(before, never, {id(x): (-4.0, 4.0)}, bits=bits)

    tt, sfx = (TT.INT8, "_int8") if bits == 8 else (TT.INT16, "_int16")
    qx = act8(-4.0, 4.0) if bits == 8 else q(np.float32(4.0 / 32767), 0)
    qy = q(1 / 256, -128) if bits == 8 else q(1 / 32768, 0)
    ex, ey = act("x", (1, 4)), act("y", (1, 4))
    exq, eyq = qtensor("x" + sfx, (1, 4), tt, qx), qtensor("y" + sfx, (1, 4), tt, qy)
    qv, dv, lv = (2, 2, 2) if bits == 8 else (4, 5, 3)
    expected = model_of([ex], [ey], [conv(OP.QUANTIZE, ex, exq, qv), Operator(OP.LOGISTIC, lv, inputs=[exq],
                                                                               outputs=[eyq]),
                                     conv(OP.DEQUANTIZE, eyq, ey, dv)], [ex, eyq, exq, ey])
    assert_same(before, expected, ["x", "y" + sfx, "x" + sfx, "y"])
    xin = {"x": np.array([[-4.0, -0.5, 0.25, 3.0]], np.float32)}
    step = 1 / 256 if bits == 8 else 1 / 32768
    # Input rounding (s_x/2) through the sigmoid's slope (<= 1/4), plus half an output step.
    tol = float(qx.scale[0]) / 8 + step / 2 + 1e-6
    assert np.max(np.abs(run(float_bytes, xin)["y"] - run(before, xin)["y"])) <= tol


# ------------------------------------------------------------------------------------ INTEGER

def test_integer_rule_add_with_constant():
    """ADD: each operand its own params; a float constant operand is quantized over its own range
    (including 0) and the float constant leaves the subgraph."""
    cv = np.array([[0.5, -0.25, 1.0, 2.0]], np.float32)
    x, c, y = act("x", (1, 4)), const("c", cv), act("y", (1, 4))
    before = model_of([x], [y], [binary(OP.ADD, x, c, y)], [x, c, y])
    float_bytes = flatbuffer.dumps(before)
    rewrite(before, never, {id(x): (-1.0, 1.0), id(y): (-2.0, 3.0)})

    qx, qc, qy = act8(-1.0, 1.0), act8(-0.25, 2.0), act8(-2.0, 3.0)
    ex, ey = act("x", (1, 4)), act("y", (1, 4))
    ex8, ey8 = qtensor("x_int8", (1, 4), TT.INT8, qx), qtensor("y_int8", (1, 4), TT.INT8, qy)
    cq = np.clip(np.round(cv / np.float64(qc.scale[0])) + qc.zero_point[0], -128, 127).astype(np.int8)
    ec = qconst("c_int8", cq, qc)
    add = binary(OP.ADD, ex8, ec, ey8)
    add.version = 2
    expected = model_of([ex], [ey], [conv(OP.QUANTIZE, ex, ex8, 2), add, conv(OP.DEQUANTIZE, ey8, ey, 2)],
                        [ex, ey8, ex8, ec, ey])
    assert_same(before, expected, ["x", "y_int8", "x_int8", "c_int8", "y"])
    xin = {"x": np.array([[-1.0, -0.3, 0.2, 0.9]], np.float32)}
    tol = (qx.scale[0] + qc.scale[0] + qy.scale[0]) / 2 + 1e-6
    assert np.max(np.abs(run(float_bytes, xin)["y"] - run(before, xin)["y"])) <= tol


# ------------------------------------------------------------------------------------ FLOAT

def test_float_ops_get_conversions_around_them():
    """EXP has no int8 kernel: its input is DEQUANTIZEd (`_float`), its output QUANTIZEd for the next
    integer op, and the report names it with the reason."""
    x, t, u, y = act("x", (1, 4)), act("t", (1, 4)), act("u", (1, 4)), act("y", (1, 4))
    ops = [Operator(OP.RELU, inputs=[x], outputs=[t]), Operator(OP.EXP, inputs=[t], outputs=[u]),
           Operator(OP.RELU, inputs=[u], outputs=[y])]
    before = model_of([x], [y], ops, [x, t, u, y])
    found = rewrite(before, never, {id(x): (-1.0, 1.0), id(t): (0.0, 1.0), id(u): (1.0, 2.72),
                                    id(y): (1.0, 2.72)})

    qx, qt, qu = act8(-1.0, 1.0), act8(0.0, 1.0), act8(1.0, 2.72)
    ex, ey, eu = act("x", (1, 4)), act("y", (1, 4)), act("u", (1, 4))
    ex8, et8 = qtensor("x_int8", (1, 4), TT.INT8, qx), qtensor("t", (1, 4), TT.INT8, qt)
    etf, eu8 = act("t_float", (1, 4)), qtensor("u_int8", (1, 4), TT.INT8, qu)
    ey8 = qtensor("y_int8", (1, 4), TT.INT8, qu)
    expected = model_of([ex], [ey], [
        conv(OP.QUANTIZE, ex, ex8, 2), Operator(OP.RELU, 2, inputs=[ex8], outputs=[et8]),
        conv(OP.DEQUANTIZE, et8, etf, 2), Operator(OP.EXP, inputs=[etf], outputs=[eu]),
        conv(OP.QUANTIZE, eu, eu8, 2), Operator(OP.RELU, 2, inputs=[eu8], outputs=[ey8]),
        conv(OP.DEQUANTIZE, ey8, ey, 2)], [ex, et8, eu, ey8, ex8, etf, eu8, ey])
    assert_same(before, expected, ["x", "t", "u", "y_int8", "x_int8", "t_float", "u_int8", "y"])
    assert found["float_ops"] == [{"op": "EXP", "layer": "u", "reason": "no int8 kernel"}]


def test_decide_control_flow_and_keep_float():
    x, y = act("x", (1, 4)), act("y", (1, 4))
    model = model_of([x], [y], [], [x, y])
    rw = Rewriter(model.main, {id(x): (0.0, 1.0), id(y): (0.0, 1.0)}, 8)
    assert decide(rw, Operator(OP.WHILE, inputs=[x], outputs=[y]), never) == kernels.RULES[OP.WHILE].reason
    assert decide(rw, Operator(OP.RELU, inputs=[x], outputs=[y]), lambda sg, op: True) == "keep-float"
    assert decide(rw, Operator(OP.RELU, inputs=[x], outputs=[y]), never) is None
    assert decide(rw, Operator(OP.HARD_SWISH, inputs=[x], outputs=[y]), never) is None
    rw16 = Rewriter(model.main, {id(x): (0.0, 1.0), id(y): (0.0, 1.0)}, 16)
    assert decide(rw16, Operator(OP.HARD_SWISH, inputs=[x], outputs=[y]), never) == "no 16x8 kernel"


# ------------------------------------------------------------------------------------ the op lists

def test_rules_agree_with_the_kernel_catalogue():
    """Every op the quantizer makes integer is in the builtins-int8 op set (kernels/catalogue.INT8), and
    every version a rule sets is registered by the installed LiteRT."""
    from kernels import catalogue

    assert {op_name(c) for c in kernels.INT8_OPS} <= catalogue.INT8
    assert kernels.INT16_OPS <= kernels.INT8_OPS
    for code, rule in kernels.RULES.items():
        k = catalogue.kernel(op_name(code))
        if rule.kind == kernels.FLOAT:
            continue
        assert rule.int8 in k.versions, (k.name, rule.int8)
        if rule.int16 is not None:
            assert rule.int16 in k.versions, (k.name, rule.int16)


def test_suffixes_map_back():
    for s in names.SUFFIXES:
        assert names.original("conv/relu" + s) == "conv/relu"
    assert names.original("conv_int8_float") == "conv_int8"  # one suffix per copy
    assert names.original("plain") == "plain"


# ------------------------------------------------------------------------------------ float16 placement

def test_float16_dequantize_sits_before_its_first_consumer():
    """x -ADD(c1)-> t -MUL(c2)-> u -ADD(c1)-> y: DEQUANTIZE(c1) right before the first ADD (shared by the
    second), DEQUANTIZE(c2) right before the MUL; nothing at the top of the subgraph."""
    c1v, c2v = np.full((1, 4), 0.5, np.float32), np.full((1, 4), 3.0, np.float32)
    x, t, u, y = act("x", (1, 4)), act("t", (1, 4)), act("u", (1, 4)), act("y", (1, 4))
    c1, c2 = const("c1", c1v), const("c2", c2v)
    before = model_of([x], [y], [binary(OP.ADD, x, c1, t), binary(OP.MUL, t, c2, u), binary(OP.ADD, u, c1, y)],
                      [x, c1, t, c2, u, y])
    float_bytes = flatbuffer.dumps(before)
    pipeline.run(before, pipeline.parse("quantize{mode=float16}"), PassContext())

    ex, et, eu, ey = act("x", (1, 4)), act("t", (1, 4)), act("u", (1, 4)), act("y", (1, 4))
    h1, h2 = qconst("c1_fp16", c1v.astype(np.float16), None), qconst("c2_fp16", c2v.astype(np.float16), None)
    d1, d2 = act("c1", (1, 4)), act("c2", (1, 4))
    expected = model_of([ex], [ey], [conv(OP.DEQUANTIZE, h1, d1, 3), binary(OP.ADD, ex, d1, et),
                                     conv(OP.DEQUANTIZE, h2, d2, 3), binary(OP.MUL, et, d2, eu),
                                     binary(OP.ADD, eu, d1, ey)], [ex, et, eu, ey, h1, d1, h2, d2])
    assert_same(before, expected, ["x", "t", "u", "y", "c1_fp16", "c1", "c2_fp16", "c2"])
    xin = {"x": np.array([[0.0, 1.0, -2.0, 0.25]], np.float32)}
    np.testing.assert_array_equal(run(before, xin)["y"], run(float_bytes, xin)["y"])  # exact in float16


# ------------------------------------------------------------------------------------ float16 sources

def _fp16_fc_model():
    """x -> FC(DEQUANTIZE(w16), DEQUANTIZE(b16)) -> y -> ADD(DEQUANTIZE(c16)) -> z, as converters write
    float16 models."""
    rng = np.random.default_rng(1)
    w16 = rng.standard_normal((32, 64)).astype(np.float16)
    b16 = rng.standard_normal(32).astype(np.float16)
    c16 = rng.standard_normal((1, 32)).astype(np.float16)
    x, y, z = act("x", (1, 64)), act("y", (1, 32)), act("z", (1, 32))
    hw, hb, hc = (qconst("w16", w16, None), qconst("b16", b16, None), qconst("c16", c16, None))
    dw, db, dc = act("w", (32, 64)), act("b", (32,)), act("c", (1, 32))
    fc = Operator(OP.FULLY_CONNECTED, inputs=[x, dw, db], outputs=[y], options_type=BO.FullyConnectedOptions,
                  options=schema.FullyConnectedOptionsT())
    ops = [conv(OP.DEQUANTIZE, hw, dw, 3), conv(OP.DEQUANTIZE, hb, db, 3), conv(OP.DEQUANTIZE, hc, dc, 3), fc,
           binary(OP.ADD, y, dc, z)]
    return model_of([x], [z], ops, [x, hw, dw, hb, db, hc, dc, y, z]), w16, b16


def test_int8_dynamic_requantizes_float16_weights(capsys):
    """The FC's weights become int8 from their float16 values (per channel), its bias a float32
    constant, and both DEQUANTIZEs go; the ADD's float16 constant stays, and the pass says so."""
    model, w16, b16 = _fp16_fc_model()
    float_bytes = flatbuffer.dumps(model)
    ctx = PassContext()
    pipeline.run(model, pipeline.parse("quantize{mode=int8-dynamic}"), ctx)
    ops = model.main.operators
    assert [op.name for op in ops] == ["DEQUANTIZE", "FULLY_CONNECTED", "ADD"]
    fc = ops[1]
    w, b = fc.inputs[1], fc.inputs[2]
    scale = np.abs(w16.astype(np.float32)).max(axis=1) / 127
    assert w.type == TT.INT8 and w.name == "w_int8" and fc.version == 12
    np.testing.assert_allclose(w.quantization.scale, scale, rtol=1e-6)
    np.testing.assert_array_equal(w.numpy(), np.round(w16.astype(np.float64) / scale[:, None].astype(np.float32)))
    assert b.type == TT.FLOAT32 and b.is_constant and np.array_equal(b.numpy(), b16.astype(np.float32))
    assert {t.name for t in model.main.tensors} == {"x", "c16", "c", "y", "z", "w_int8", "b"}
    note = ctx.report["quantize"]
    assert note["float16_left"] == 1 and "1 float16 weight(s) left as float16" in note["left_as_is"]
    assert "tflc: quantize: int8-dynamic: 1 float16 weight(s)" in capsys.readouterr().err
    assert note["precision"]["mode"] == "int8-dynamic" and note["precision"]["ops"]["hybrid"] == 1
    x = {"x": np.random.default_rng(2).uniform(-1, 1, (1, 64)).astype(np.float32)}
    ref, got = run(float_bytes, x)["z"], run(model, x)["z"]
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    assert snr > 30


def test_float16_on_float16_weights_says_nothing_to_do(capsys):
    model, _, _ = _fp16_fc_model()
    before = structure(model)
    ctx = PassContext()
    pipeline.run(model, pipeline.parse("quantize{mode=float16}"), ctx)
    assert structure(model) == before
    assert ctx.report["quantize"]["left_as_is"] == ("float16: the model's 3 weights are float16 already; nothing "
                                                    "to do (weights unchanged)")
    assert "nothing to do" in capsys.readouterr().err


def test_precision_census():
    """Counts and bytes per stored dtype (each buffer once), ops by how they compute, and the label."""
    model, w16, _ = _fp16_fc_model()
    p = precision(model)
    assert p == {"weights": {"float16": {"count": 3, "bytes": w16.nbytes + 32 * 2 + 32 * 2}},
                 "ops": {"conversion": 3, "float": 2}, "mode": "float16"}
    pipeline.run(model, pipeline.parse("quantize{mode=int8-dynamic}"), PassContext())
    p = precision(model)
    assert p["weights"] == {"float16": {"count": 1, "bytes": 64}, "float32": {"count": 1, "bytes": 128},
                            "int8": {"count": 1, "bytes": 2048}}
    assert p["ops"] == {"conversion": 1, "float": 1, "hybrid": 1} and p["mode"] == "int8-dynamic"


def test_float16_keeps_a_scalar_weight_scalar():
    """A 0-d float constant (e.g. a scalar multiplier) becomes a 0-d float16 constant: its DEQUANTIZE
    output and input agree in shape (found by the corpus: MobileNetV3Small's hard-swish scalars)."""
    from compiler import pipeline
    from compiler.passes import PassContext
    from compiler.ir import Buffer, Tensor
    from ir_helpers import OP, act, binary, model_of, run

    x, y = act("x", (1, 4)), act("y", (1, 4))
    c = Tensor("c", (), buffer=Buffer(np.float32([3.0]).view(np.uint8)))
    model = model_of([x], [y], [binary(OP.MUL, x, c, y)], [x, c, y])
    model = pipeline.run(model, pipeline.parse("quantize{mode=float16,min-elements=0}"), PassContext(check_ir=True))
    deq = model.main.operators[0]
    assert deq.builtin_code == OP.DEQUANTIZE and deq.inputs[0].shape == deq.outputs[0].shape == ()
    xv = np.float32([[1, 2, 3, 4]])
    np.testing.assert_array_equal(run(model, {"x": xv})["y"], xv * 3)
