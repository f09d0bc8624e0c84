"""The operator-aware validator: one Before/Expected test per rejection rule, on hand-built IR.

Each test builds a small model LiteRT runs (checked against numpy), breaks it in one place, and
expects `flatbuffer.loads` to reject the written bytes with one line naming the fault; the unbroken
model still loads and runs. The rules' reasons are in compiler/ir/validate.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from compiler.errors import FlatbufferError
from compiler.ir import Buffer, Model, Operator, Subgraph, Tensor, flatbuffer
from compiler.ir.validate import activation_limit, validate
from ir_helpers import OP, act, binary, const, model_of, run

X = np.arange(8, dtype=np.float32).reshape(1, 8) - 3.0
C1 = np.full((1, 8), 2.0, np.float32)
C2 = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)


def two_ops():
    """y = (x + c1) * c2: two operators, one constant each."""
    x, c1, c2, t, y = act("x", (1, 8)), const("c1", C1), const("c2", C2), act("t", (1, 8)), act("y", (1, 8))
    add, mul = binary(OP.ADD, x, c1, t), binary(OP.MUL, t, c2, y)
    return model_of([x], [y], [add, mul], [x, c1, c2, t, y])


def rejects(model: Model, *fragments: str) -> str:
    """The model written to bytes is rejected by the reader with one line holding every fragment."""
    data = flatbuffer.dumps(model)
    with pytest.raises(FlatbufferError) as info:
        flatbuffer.loads(data, origin="m.tflite")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith("m.tflite: "), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    return msg


def loads_and_runs(model: Model) -> dict[str, np.ndarray]:
    data = flatbuffer.dumps(model)
    flatbuffer.loads(data)
    return run(data, {"x": X})


def test_unbroken_model_loads_and_matches_numpy():
    out = loads_and_runs(two_ops())
    np.testing.assert_allclose(out["y"], (X + C1) * C2, rtol=1e-6)


def test_output_aliasing_its_input():
    model = two_ops()
    add = model.main.operators[0]
    add.outputs = [add.inputs[0]]  # ADD writes x in place: XNNPACK writes out of bounds on such models
    model.main.operators[1].inputs[0] = add.inputs[0]
    rejects(model, "subgraph 0 operator 0 (ADD)", "writes its own input 'x'")


def test_two_writers():
    model = two_ops()
    x, c1, c2, t = model.main.tensors[:4]
    model.main.operators.append(binary(OP.SUB, x, c2, t))  # SUB overwrites ADD's output t
    rejects(model, "subgraph 0 operator 2 (SUB)", "writes tensor 't' (output 0), which is already written")


def test_constant_subgraph_input():
    model = two_ops()
    c1 = model.main.operators[0].inputs[1]
    model.main.inputs = [model.main.inputs[0], c1]
    rejects(model, "subgraph 0 input 'c1' is a constant tensor")


def test_read_before_write():
    model = two_ops()
    model.main.operators.reverse()  # MUL reads t before ADD writes it
    rejects(model, "subgraph 0 operator 0 (MUL)", "reads tensor 't'", "not written by an earlier operator")


def test_write_to_constant_and_subgraph_input():
    model = two_ops()
    model.main.operators[1].outputs = [model.main.operators[1].inputs[1]]
    model.main.outputs = [model.main.operators[1].outputs[0]]
    rejects(model, "operator 1 (MUL)", "writes its own input 'c2'")
    model = two_ops()
    c1 = model.main.operators[0].inputs[1]
    model.main.operators[1].outputs = [c1]
    model.main.outputs = [c1]
    rejects(model, "operator 1 (MUL)", "writes constant tensor 'c1'")
    model = two_ops()
    x = model.main.inputs[0]
    model.main.operators[1].outputs = [x]
    model.main.outputs = [x]
    rejects(model, "operator 1 (MUL)", "writes subgraph input 'x'")


def test_variable_written_by_an_operator():
    model = two_ops()
    model.main.operators[0].outputs[0].is_variable = True
    rejects(model, "operator 0 (ADD)", "writes variable tensor 't'")


def test_output_never_written():
    model = two_ops()
    model.main.outputs = [act("ghost", (1, 8))]
    model.main.tensors.append(model.main.outputs[0])
    rejects(model, "subgraph 0 output 'ghost' is never written")


def test_arity_and_missing_required_input():
    model = two_ops()
    add = model.main.operators[0]
    add.inputs = add.inputs[:1]
    rejects(model, "operator 0 (ADD) has 1 inputs, needs 2")
    model = two_ops()
    model.main.operators[0].inputs[1] = None
    rejects(model, "operator 0 (ADD) input 1 (y) is -1, but the kernel needs it")
    model = two_ops()
    model.main.operators[1].outputs.append(act("extra", (1, 8)))
    rejects(model, "operator 1 (MUL) has 2 outputs, needs 1")


def test_minus_one_input_of_an_operator_outside_the_table():
    x, seq_lengths, y = act("x", (2, 3)), act("lengths", (2,)), act("r", (2, 3))
    op = Operator(OP.REVERSE_SEQUENCE, inputs=[x, seq_lengths], outputs=[y],
                  options_type=schema.BuiltinOptions.ReverseSequenceOptions, options=schema.ReverseSequenceOptionsT())
    model = model_of([x, seq_lengths], [y], [op], [x, seq_lengths, y])
    validate(model)  # generic checks only: REVERSE_SEQUENCE is not in SPECS
    op.inputs[1] = None
    rejects(model, "operator 0 (REVERSE_SEQUENCE) input 1 is -1, and the operator takes no optional inputs")


def test_options_unknown_wrong_or_missing():
    model = two_ops()
    model.main.operators[0].options_type = 250
    rejects(model, "operator 0 (ADD) has unknown builtin options type 250")
    model = two_ops()
    mul = model.main.operators[1]
    mul.options_type, mul.options = schema.BuiltinOptions.Conv2DOptions, schema.Conv2DOptionsT()
    rejects(model, "operator 1 (MUL) carries Conv2DOptions options, needs MulOptions or NONE")
    model = two_ops()
    model.main.operators[1].options_type = schema.BuiltinOptions.AddOptions  # type says Add, object is Mul
    rejects(model, "operator 1 (MUL) carries AddOptions options, needs MulOptions or NONE")
    with pytest.raises(FlatbufferError, match=r"operator 1 \(MUL\) builtin options type AddOptions does not "
                       r"match its options \(MulOptionsT\)"):
        validate(model)  # in the IR (the reader parses the table by its type, so only passes can do this)


def conv_model(stride: int = 1, options: bool = True):
    """A 1x1 CONV_2D on a 1x4x4x2 input (builtin kernel and XNNPACK both run it)."""
    x, y = act("x", (1, 4, 4, 2)), act("y", (1, 4, 4, 3))
    w = const("w", np.arange(6, dtype=np.float32).reshape(3, 1, 1, 2) / 10)
    b = const("b", np.array([0.5, -0.5, 0.0], np.float32))
    opts = schema.Conv2DOptionsT()
    opts.strideW = opts.strideH = stride
    opts.padding = schema.Padding.VALID
    op = Operator(OP.CONV_2D, inputs=[x, w, b], outputs=[y],
                  options_type=schema.BuiltinOptions.Conv2DOptions if options else 0, options=opts if options else None)
    return model_of([x], [y], [op], [x, w, b, y])


def test_required_options_and_option_values():
    good = conv_model()
    data = flatbuffer.dumps(good)
    flatbuffer.loads(data)
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 2)).astype(np.float32)
    w = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    np.testing.assert_allclose(run(data, {"x": x})["y"], x @ w.T + [0.5, -0.5, 0.0], rtol=1e-5, atol=1e-6)
    rejects(conv_model(options=False), "operator 0 (CONV_2D) carries NONE options, needs Conv2DOptions")
    rejects(conv_model(stride=0), "operator 0 (CONV_2D) option strideW is 0, must be at least 1")
    bad = conv_model()
    bad.main.operators[0].options.padding = 7
    rejects(bad, "option padding is 7, which the schema does not define")


def test_bias_optional_only_where_the_kernel_takes_none():
    """DEPTHWISE_CONV_2D without its bias made LiteRT's kernel crash (SIGSEGV while invoking, a fuzzed
    mobilenet_v2 stage); FULLY_CONNECTED takes -1 for no bias."""
    model = conv_model()
    op = model.main.operators[0]
    op.inputs = op.inputs[:2]
    rejects(model, "operator 0 (CONV_2D) has 2 inputs, needs 3")
    op.inputs = [op.inputs[0], op.inputs[1], None]
    rejects(model, "operator 0 (CONV_2D) input 2 (bias) is -1, but the kernel needs it")
    x, y = act("x", (1, 8)), act("y", (1, 3))
    w = const("w", np.arange(24, dtype=np.float32).reshape(3, 8) / 10)
    fc = Operator(OP.FULLY_CONNECTED, inputs=[x, w, None], outputs=[y],
                  options_type=schema.BuiltinOptions.FullyConnectedOptions, options=schema.FullyConnectedOptionsT())
    out = loads_and_runs(model_of([x], [y], [fc], [x, w, y]))
    np.testing.assert_allclose(out["y"], X @ w.numpy().T, rtol=1e-5)


def split_model(num_splits: int):
    x, axis = act("x", (1, 8)), Tensor("axis", (), schema.TensorType.INT32, Buffer(np.array([1], np.int32).view(np.uint8)))
    a, b = act("a", (1, 4)), act("b", (1, 4))
    opts = schema.SplitOptionsT()
    opts.numSplits = num_splits
    op = Operator(OP.SPLIT, inputs=[axis, x], outputs=[a, b], options_type=schema.BuiltinOptions.SplitOptions, options=opts)
    return model_of([x], [a, b], [op], [x, axis, a, b])


def test_split_count_must_match_outputs():
    data = flatbuffer.dumps(split_model(2))
    flatbuffer.loads(data)
    out = run(data, {"x": X})
    np.testing.assert_array_equal(out["a"], X[:, :4])
    np.testing.assert_array_equal(out["b"], X[:, 4:])
    rejects(split_model(3), "operator 0 (SPLIT) option numSplits is 3 but it has 2 outputs")


def test_constant_input_required():
    dense = Tensor("d", (1, 8), buffer=Buffer(C1.view(np.uint8).reshape(-1)))
    x, y = act("x", (1, 8)), act("y", (1, 8))
    op = Operator(OP.DENSIFY, inputs=[x], outputs=[y])
    rejects(model_of([x], [y], [op], [x, y]), "operator 0 (DENSIFY) input 0 (input) must be a constant")
    # with a constant it passes the validator (a dense constant: LiteRT itself wants a sparse one)
    validate(model_of([x], [y], [Operator(OP.DENSIFY, inputs=[dense], outputs=[y])], [x, dense, y]))


def test_sparse_tensor_read_by_an_ordinary_kernel():
    model = two_ops()
    c1 = model.main.operators[0].inputs[1]
    sp = schema.SparsityParametersT()
    sp.traversalOrder, sp.blockMap = [0, 1], []
    dims = []
    for size in (1, 8):
        m = schema.DimensionMetadataT()
        m.format, m.denseSize = schema.DimensionType.DENSE, size
        dims.append(m)
    sp.dimMetadata = dims
    c1.sparsity = sp  # a (trivially dense) sparse layout: the layout itself is consistent
    rejects(model, "operator 0 (ADD) reads sparse tensor 'c1' (input 1); only DENSIFY can")
    dims[1].denseSize = 9
    rejects(model, "tensor 'c1': sparse dimension 1 has dense size 9, expected 8")


def test_per_channel_scales_must_match_their_dimension():
    from compiler.ir import Quantization

    model = conv_model()
    w = model.main.operators[0].inputs[1]
    w.quantization = Quantization(scale=np.ones(2, np.float32), zero_point=np.zeros(2, np.int64), quantized_dimension=0)
    rejects(model, "tensor 'w' has 2 per-channel scales on dimension 0 of shape [3, 1, 1, 2]")


def test_unknown_dimension_in_shape():
    model = two_ops()
    model.main.operators[0].outputs[0].shape = (1, -1)
    rejects(model, "tensor 't' has unknown dimensions in its shape [1, -1]")


def test_element_count_and_activation_bounds(monkeypatch):
    model = two_ops()
    model.main.operators[0].outputs[0].shape = (1 << 16, 1 << 16)  # 2**32 elements: 16 GiB of float32
    rejects(model, "tensor 't' has 4,294,967,296 elements")
    model = two_ops()
    model.main.operators[0].outputs[0].shape = (1 << 14, 1 << 14)  # 1 GiB: over the limit of a small file
    rejects(model, "activations take 1,073,741,888 bytes, more than the limit of 1,073,741,824")
    assert activation_limit(10 << 20) == 1 << 30 and activation_limit(32 << 20) == 2 << 30
    assert activation_limit(1 << 30) == 4 << 30
    monkeypatch.setenv("TFLC_MAX_ACTIVATION_BYTES", "64")
    rejects(two_ops(), "activations take 96 bytes, more than the limit of 64 (set TFLC_MAX_ACTIVATION_BYTES")


def while_model():
    """y = x + 1 repeated while x < 3 (elementwise on a scalar), with cond and body subgraphs."""
    def scalar(name, v=None, kind=schema.TensorType.FLOAT32):
        if v is None:
            return Tensor(name, (), kind)
        return Tensor(name, (), kind, Buffer(np.array([v], np.float32).view(np.uint8)))

    ci, three, ok = scalar("ci"), scalar("three", 3.0), scalar("ok", kind=schema.TensorType.BOOL)
    cond = Subgraph("cond", [ci, three, ok], [ci], [ok], [Operator(OP.LESS, inputs=[ci, three], outputs=[ok])])
    bi, one, bo = scalar("bi"), scalar("one", 1.0), scalar("bo")
    body = Subgraph("body", [bi, one, bo], [bi], [bo], [binary(OP.ADD, bi, one, bo)])
    x, y = scalar("x"), scalar("y")
    loop = Operator(OP.WHILE, inputs=[x], outputs=[y], options_type=schema.BuiltinOptions.WhileOptions,
                    options=schema.WhileOptionsT(), subgraph_refs={"condSubgraphIndex": cond, "bodySubgraphIndex": body})
    main = Subgraph("main", [x, y], [x], [y], [loop])
    return Model(subgraphs=[main, cond, body])


def test_while_arity_and_recursion():
    data = flatbuffer.dumps(while_model())
    flatbuffer.loads(data)
    assert run(data, {"x": np.float32(0.5)})["y"] == np.float32(3.5)
    model = while_model()
    cond = model.subgraphs[1]
    cond.inputs.append(cond.operators[0].inputs[1].__class__("extra", ()))
    cond.tensors.append(cond.inputs[-1])
    rejects(model, "operator 0 (WHILE) has 1 inputs and 1 outputs, its condition takes 2")
    model = while_model()
    body = model.subgraphs[2]
    inner = Operator(OP.WHILE, inputs=[body.inputs[0]], outputs=[Tensor("again", ())],
                     options_type=schema.BuiltinOptions.WhileOptions, options=schema.WhileOptionsT(),
                     subgraph_refs={"condSubgraphIndex": model.subgraphs[1], "bodySubgraphIndex": body})
    body.operators.insert(0, inner)  # the body calls itself: unbounded recursion in LiteRT
    rejects(model, "subgraph 2 calls subgraph 2, which is already being called")


def test_call_once_initializer_has_no_io():
    init = Subgraph("init")
    call = Operator(OP.CALL_ONCE, options_type=schema.BuiltinOptions.CallOnceOptions,
                    options=schema.CallOnceOptionsT(), subgraph_refs={"initSubgraphIndex": init})
    model = two_ops()
    model.main.operators.insert(0, call)
    model.subgraphs.append(init)
    out = loads_and_runs(model)
    np.testing.assert_allclose(out["y"], (X + C1) * C2, rtol=1e-6)
    t = act("i", (1,))
    init.inputs, init.tensors = [t], [t]
    rejects(model, "operator 0 (CALL_ONCE) initialization subgraph has inputs or outputs")


def test_signature_names_only_subgraph_inputs_and_outputs():
    from compiler.ir import SignatureDef

    model = two_ops()
    x, t, y = model.main.inputs[0], model.main.operators[0].outputs[0], model.main.outputs[0]
    model.signature_defs = [SignatureDef("serving_default", model.main, [("x", x)], [("y", y)])]
    data = flatbuffer.dumps(model)
    flatbuffer.loads(data)
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(x=X)["y"], (X + C1) * C2, rtol=1e-6)
    model.signature_defs[0].outputs = [("t", t)]  # an intermediate tensor, not a model output
    rejects(model, "signature 'serving_default' output 't' is not an output of subgraph 0")
    model.signature_defs[0].outputs = [("y", y)]
    model.signature_defs[0].key = ""  # LiteRT's model analyzer dereferences the missing key and crashes
    rejects(model, "signature '' of subgraph 0 has no key or an unnamed input or output")


def test_shape_bomb_is_one_line_through_the_cli(tmp_path):
    """A 400-byte file declaring 4 GiB of activations: every command refuses it before allocating."""
    from conftest import assert_user_error, tflc

    model = two_ops()
    model.main.operators[0].outputs[0].shape = (1 << 15, 1 << 15)
    path = tmp_path / "bomb.tflite"
    path.write_bytes(flatbuffer.dumps(model))
    assert path.stat().st_size < 1000
    for argv in (["inspect", str(path)], ["ops", str(path)],
                 ["compile", str(path), "--pipeline", "strip-unused", "-o", str(tmp_path / "b")]):
        assert_user_error(tflc(*argv), "activations take 4,294,967,360 bytes, more than the limit of "
                          "1,073,741,824", code=2)
    assert not (tmp_path / "b").exists()


def test_weight_path_output_keeps_its_input_shape():
    """float16 weights expanded by DEQUANTIZE: XNNPACK packs the output as a static weight with its declared
    shape, and aborts (SIGABRT, seen on a fuzzed MediaPipe model) when that is not the input's."""
    x, y = act("x", (1, 8)), act("y", (1, 8))
    w16 = Tensor("w16", (1, 8), schema.TensorType.FLOAT16, Buffer(C2.astype(np.float16).view(np.uint8).reshape(-1)))
    w = act("w", (1, 8))
    model = model_of([x], [y], [Operator(OP.DEQUANTIZE, inputs=[w16], outputs=[w]), binary(OP.ADD, x, w, y)],
                     [x, w16, w, y])
    out = loads_and_runs(model)
    np.testing.assert_allclose(out["y"], X + C2.astype(np.float16).astype(np.float32), rtol=1e-6)
    w.shape = (1, 2, 4)
    rejects(model, "operator 0 (DEQUANTIZE) output shape [1, 2, 4] is not its input's [1, 8]")
