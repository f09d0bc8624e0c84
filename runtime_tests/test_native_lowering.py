"""Native Keras lowering (compiler/frontend/native): every rule against Keras, the converter as a second
reference, contect-small and mobilenet_v2 end to end, and the auto/native/converter choice."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.frontend import native
from compiler.ir import flatbuffer
from ir_helpers import run

TOL = dict(rtol=1e-5, atol=1e-5)


def _inputs(model, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    out = {}
    for kt in model.inputs:
        shape = tuple(batch or 1 if d is None else d for d in kt.shape[:1]) + tuple(kt.shape[1:])
        out[kt.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _keras_outputs(model, x: dict) -> list[np.ndarray]:
    arrays = [x[kt.name] for kt in model.inputs]
    ys = model.predict(arrays[0] if len(arrays) == 1 else arrays, verbose=0)
    return list(ys) if isinstance(ys, (list, tuple)) else [ys]


def check(model, seed=0, batch=None, converter=False):
    """Lower natively; the outputs match model.predict (and, if asked, the converter's build) within 1e-5."""
    assert native.unsupported(model) == []
    ir = native.lower(model, batch)
    data = flatbuffer.dumps(ir)
    flatbuffer.loads(data)  # our validator and LiteRT's verifier accept it
    x = _inputs(model, seed, batch)
    got = run(data, x)
    want = _keras_outputs(model, x)
    assert [t.name for t in ir.outputs] == list(model.output_names)
    for name, w in zip(model.output_names, want):
        np.testing.assert_allclose(got[name], w, **TOL, err_msg=name)
    if converter:
        from compiler.frontend import from_keras

        conv = from_keras(model, batch, frontend="converter").model
        ref = run(conv, x)
        for name, w in zip(model.output_names, want):
            np.testing.assert_allclose(got[name], ref[name], **TOL, err_msg=f"{name} vs converter")
        # Ops both builds use alike carry the converter's op versions (what the runtime must register);
        # the converter sometimes keeps a rank-3 FULLY_CONNECTED's dims (v5) where we reshape around it.
        def versions(m):
            out: dict = {}
            for _, op in m.operators():
                out.setdefault((op.name, bool(getattr(op.options, "keepNumDims", False))), set()).add(op.version)
            return out

        ours, theirs = versions(ir), versions(conv)
        assert {k: ours[k] for k in ours.keys() & theirs.keys()} == {k: theirs[k] for k in ours.keys() & theirs.keys()}
    return ir


def _model(build, shape, batch=1, seed=3):
    """keras.Model(inp, build(inp)) with a seeded weight init and the input named `x`."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape, batch_size=batch, name="x")
    out = build(keras.layers, inp)
    model = keras.Model(inp, out)
    # Non-trivial BN statistics and biases, so that folding and MUL+ADD are really exercised.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws and type(layer).__name__ in ("BatchNormalization", "LayerNormalization"):
            ws = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i in (0, 3) else
                  rng.normal(0, 0.3, w.shape).astype(np.float32) for i, w in enumerate(ws)]
            layer.set_weights(ws)
        else:
            for v in layer.weights:  # Keras initializes biases to zeros: a layout bug would not show
                if v.name.endswith("bias"):
                    v.assign(rng.normal(0, 0.3, tuple(v.shape)).astype(np.float32))
    return model


# ---- one tiny model per rule ---------------------------------------------------------------------

RULE_CASES = {
    "dense_rank2_relu": (lambda L, x: L.Dense(7, activation="relu", name="d")(L.Flatten(name="f")(x)), (3, 4)),
    "dense_rank3_softmax": (lambda L, x: L.Dense(5, activation="softmax", name="d")(x), (6, 4)),
    "dense_rank4_no_bias": (lambda L, x: L.Dense(3, use_bias=False, activation="tanh", name="d")(x), (2, 3, 4)),
    "conv2d_same_stride2": (lambda L, x: L.Conv2D(6, 3, strides=2, padding="same", name="c")(x), (9, 8, 3)),
    "conv2d_valid_dilated": (lambda L, x: L.Conv2D(4, 3, dilation_rate=2, activation="relu6", name="c")(x),
                             (11, 10, 2)),
    "conv2d_rect_strides": (lambda L, x: L.Conv2D(5, (3, 1), strides=(1, 2), padding="same", activation="swish",
                                                  name="c")(x), (8, 9, 3)),
    "conv2d_groups": (lambda L, x: L.Conv2D(6, 3, groups=3, padding="same", activation="relu", name="c")(x),
                      (6, 6, 3)),
    "separable_conv2d": (lambda L, x: L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2,
                                                        activation="relu", name="s")(x), (8, 8, 3)),
    "separable_conv2d_dilated": (lambda L, x: L.SeparableConv2D(4, 3, dilation_rate=2, activation="tanh",
                                                                name="s")(x), (9, 9, 2)),
    "prelu": (lambda L, x: L.PReLU(alpha_initializer="random_normal", shared_axes=[1], name="p")(
        L.Dense(4, name="d")(x)), (3, 5)),
    "conv2d_transpose": (lambda L, x: L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu",
                                                        name="up")(x), (5, 6, 3)),
    "conv2d_transpose_valid": (lambda L, x: L.Conv2DTranspose(2, (3, 2), strides=(2, 1), name="up")(x), (4, 4, 3)),
    "conv1d": (lambda L, x: L.Conv1D(4, 3, strides=2, padding="same", activation="gelu", name="c")(x), (12, 5)),
    "conv1d_causal_dilated": (lambda L, x: L.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="relu",
                                                    name="c")(x), (10, 4)),
    "depthwise_multiplier": (lambda L, x: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                                            activation="relu", name="dw")(x), (7, 7, 3)),
    "depthwise_strided": (lambda L, x: L.DepthwiseConv2D(3, strides=2, name="dw")(x), (9, 9, 4)),
    "bn_folded_into_conv": (lambda L, x: L.BatchNormalization(name="bn")(
        L.Conv2D(4, 3, padding="same", use_bias=False, name="c")(x)), (6, 6, 3)),
    "bn_folded_into_depthwise": (lambda L, x: L.BatchNormalization(name="bn")(
        L.DepthwiseConv2D(3, padding="same", name="dw")(x)), (6, 6, 3)),
    "bn_folded_into_dense": (lambda L, x: L.BatchNormalization(name="bn")(L.Dense(5, name="d")(x)), (4,)),
    "bn_not_folded_two_readers": (lambda L, x: (lambda c: L.Add(name="add")(
        [L.BatchNormalization(name="bn")(c), c]))(L.Conv2D(4, 1, name="c")(x)), (5, 5, 2)),
    "bn_after_relu": (lambda L, x: L.BatchNormalization(name="bn")(L.ReLU(name="r")(x)), (5, 5, 3)),
    "layer_norm_middle_axis": (lambda L, x: L.LayerNormalization(axis=1, name="ln")(x), (6, 8)),
    "layer_norm": (lambda L, x: L.LayerNormalization(name="ln")(x), (6, 8)),
    "activations": (lambda L, x: L.Concatenate(name="cat")(
        [L.Activation(a, name=a)(x) for a in ("relu", "relu6", "sigmoid", "tanh", "softmax", "swish", "gelu",
                                              "hard_sigmoid", "hard_swish", "elu", "leaky_relu", "linear",
                                              "log_softmax")]), (3, 5)),
    "activation_layers": (lambda L, x: L.Concatenate(name="cat")(
        [L.LeakyReLU(0.3, name="lr")(x), L.ReLU(name="r")(x), L.ReLU(6.0, name="r6")(x),
         L.ReLU(negative_slope=0.1, name="rl")(x), L.ELU(name="elu")(x), L.Softmax(name="sm")(x)]), (4, 6)),
    "merges": (lambda L, x: (lambda a, b, c: L.Concatenate(axis=1, name="cat")(
        [L.Add(name="add")([a, b, c]), L.Subtract(name="sub")([a, b]), L.Multiply(name="mul")([a, b, c]),
         L.Average(name="avg")([a, b]), L.Maximum(name="max")([a, c]), L.Minimum(name="min")([b, c])]))(
        L.Dense(4, name="a")(x), L.Dense(4, name="b")(x), L.Dense(4, name="c")(x)), (3, 5)),
    "merges_broadcast": (lambda L, x: L.Multiply(name="mul")([
        L.Reshape((1, 4), name="a")(L.Dense(4, name="da")(L.Flatten(name="f")(x))),
        L.Reshape((1, 4), name="b")(L.Dense(4, name="db")(L.Flatten(name="g")(x))), L.Dense(4, name="c")(x)]),
        (3, 5)),
    "reshape_permute_flatten": (lambda L, x: L.Flatten(name="f")(
        L.Permute((3, 1, 2), name="p")(L.Reshape((2, 6, 2), name="r")(x))), (4, 6)),
    "pooling_2d": (lambda L, x: L.Concatenate(name="cat")(
        [L.Flatten(name="f1")(L.MaxPooling2D(2, name="mp")(x)),
         L.Flatten(name="f2")(L.AveragePooling2D(3, strides=2, padding="same", name="ap")(x)),
         L.Flatten(name="f3")(L.MaxPooling2D((2, 3), strides=(1, 2), padding="same", name="mp2")(x)),
         L.GlobalAveragePooling2D(name="gap")(x), L.GlobalMaxPooling2D(name="gmp")(x)]), (7, 8, 3)),
    "pooling_1d": (lambda L, x: L.Concatenate(name="cat")(
        [L.Flatten(name="f1")(L.MaxPooling1D(2, name="mp")(x)),
         L.Flatten(name="f2")(L.AveragePooling1D(3, strides=2, padding="same", name="ap")(x)),
         L.GlobalAveragePooling1D(name="gap")(x), L.GlobalMaxPooling1D(name="gmp")(x)]), (9, 4)),
    "padding_cropping_upsampling": (lambda L, x: L.UpSampling2D(2, name="up")(L.Cropping2D(((1, 0), (0, 2)),
                                    name="crop")(L.ZeroPadding2D(((1, 2), (0, 1)), name="pad")(x))), (5, 6, 2)),
    "upsampling_bilinear": (lambda L, x: L.UpSampling2D((2, 3), interpolation="bilinear", name="up")(x), (4, 5, 2)),
    "padding_1d": (lambda L, x: L.Cropping1D((1, 2), name="crop")(L.ZeroPadding1D(2, name="pad")(x)), (6, 3)),
    "training_only_are_identity": (lambda L, x: L.Dense(3, name="d")(L.GaussianNoise(0.5, name="gn")(
        L.Dropout(0.5, name="drop")(L.SpatialDropout1D(0.3, name="sd")(x)))), (5, 4)),
    "time_distributed": (lambda L, x: L.TimeDistributed(L.Dense(3, activation="relu"), name="td_dense")(
        L.TimeDistributed(L.Conv2D(2, 3, padding="same"), name="td_conv")(x)), (4, 5, 5, 2)),
    "rescaling": (lambda L, x: L.Rescaling(1 / 127.5, offset=-1, name="rs")(x), (4, 4, 3)),
    "lstm_sequences": (lambda L, x: L.LSTM(6, return_sequences=True, name="lstm")(x), (10, 4)),
    "lstm_last": (lambda L, x: L.LSTM(5, name="lstm")(x), (7, 3)),
    "lstm_backwards": (lambda L, x: L.Concatenate(name="cat")([
        L.Flatten(name="f")(L.LSTM(4, go_backwards=True, return_sequences=True, name="back_seq")(x)),
        L.LSTM(3, go_backwards=True, name="back_last")(x)]), (5, 3)),
    "bidirectional_concat_sequences": (lambda L, x: L.Bidirectional(L.LSTM(4, return_sequences=True),
                                                                    name="bi")(x), (6, 3)),
    "bidirectional_merges_last": (lambda L, x: L.Concatenate(name="cat")(
        [L.Bidirectional(L.LSTM(3), merge_mode=m, name=f"bi_{m}")(x) for m in ("concat", "sum", "mul", "ave")]),
        (5, 2)),
    "gru_sequences": (lambda L, x: L.GRU(5, return_sequences=True, name="gru")(x), (7, 3)),
    "gru_last_backwards_no_bias": (lambda L, x: L.GRU(4, go_backwards=True, use_bias=False, name="gru")(x), (6, 5)),
    "lstm_stack_no_bias": (lambda L, x: L.LSTM(4, use_bias=False, name="l2")(
        L.LSTM(8, return_sequences=True, name="l1")(x)), (6, 5)),
}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_rule_matches_keras(case):
    build, shape = RULE_CASES[case]
    check(_model(build, shape))


@pytest.mark.parametrize("case", ["conv2d_same_stride2", "bn_folded_into_conv", "lstm_stack_no_bias", "gru_sequences",
                                  "bidirectional_concat_sequences", "separable_conv2d", "lstm_backwards",
                                  "conv2d_groups", "conv2d_transpose", "conv2d_transpose_valid", "upsampling_bilinear",
                                  "activations", "merges", "pooling_2d",
                                  "padding_cropping_upsampling", "conv1d_causal_dilated", "layer_norm", "prelu",
                                  "dense_rank3_softmax", "depthwise_multiplier"])
def test_rule_matches_converter(case):
    build, shape = RULE_CASES[case]
    check(_model(build, shape), converter=True)


def test_embedding_gathers_rows():
    import keras

    keras.utils.set_random_seed(0)
    for dtype in ("int32", "float32"):
        inp = keras.Input((7,), batch_size=2, name="x", dtype=dtype)
        model = keras.Model(inp, keras.layers.Embedding(20, 4, name="emb")(inp))
        ids = np.random.default_rng(0).integers(0, 20, (2, 7)).astype(dtype)
        got = run(native.lower(model), {"x": ids})["emb"]
        np.testing.assert_array_equal(got, model.predict(ids, verbose=0))


def test_normalization_layer_after_adapt():
    import keras

    data = np.random.default_rng(3).normal(2.0, 3.0, (64, 5)).astype(np.float32)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(data)
    inp = keras.Input((5,), batch_size=1, name="x")
    check(keras.Model(inp, keras.layers.Dense(2, name="d")(norm(inp))))


def test_lstm_batch_of_three():
    build, shape = RULE_CASES["lstm_stack_no_bias"]
    check(_model(build, shape, batch=None), batch=3)


def test_bn_is_folded_only_when_it_can_be():
    ir = check(_model(*RULE_CASES["bn_folded_into_conv"]))
    assert [op.name for op in ir.main.operators] == ["CONV_2D"]
    assert ir.outputs[0].name == "bn"
    ir = check(_model(*RULE_CASES["bn_not_folded_two_readers"]))
    assert [op.name for op in ir.main.operators] == ["CONV_2D", "MUL", "ADD", "ADD"]


def test_relu_layers_fuse_into_their_producer():
    def build(L, x):
        a = L.Activation("relu", name="a_relu")(L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="c1")(x)))
        b = L.Conv2D(4, 3, name="c2")(x)
        summed = L.ReLU(name="out")(L.Add(name="add")([a, b]))
        return L.Concatenate(name="cat")([summed, L.ReLU(6.0, name="b_relu6")(b)])  # b has two readers

    ir = check(_model(build, (6, 6, 2)))
    ops = [(op.name, getattr(op.options, "fusedActivationFunction", None)) for op in ir.main.operators]
    assert ops == [("CONV_2D", 1), ("CONV_2D", 0), ("ADD", 1), ("RELU6", None), ("CONCATENATION", 0)]
    assert [t.name for op in ir.main.operators for t in op.outputs] == ["a_relu", "c2", "out", "b_relu6", "cat"]


@pytest.mark.parametrize("case", ["lstm_sequences", "lstm_last", "lstm_backwards", "lstm_stack_no_bias",
                                  "bidirectional_merges_last"])
def test_unrolled_lstm_matches_keras_without_variables(case):
    model = _model(*RULE_CASES[case])
    ir = native.lower(model, lstm="unrolled")
    assert not any(t.is_variable for t in ir.main.tensors)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ir.op_histogram()
    x = _inputs(model, 2)
    got = run(ir, x)
    for name, want in zip(model.output_names, _keras_outputs(model, x)):
        np.testing.assert_allclose(got[name], want, **TOL, err_msg=name)


def test_zero_padding_that_equals_same_folds_into_the_conv():
    def build(L, x):
        a = L.DepthwiseConv2D(3, strides=2, name="dw")(L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x))
        b = L.Conv2D(2, 3, strides=2, name="c")(L.ZeroPadding2D(1, name="pad_sym")(x))  # SAME pads (0, 1): kept
        return L.Concatenate(name="cat")([L.Flatten(name="fa")(a), L.Flatten(name="fb")(b)])

    ir = check(_model(build, (8, 8, 2)))
    assert [op.name for op in ir.main.operators].count("PAD") == 1
    dw = next(op for op in ir.main.operators if op.name == "DEPTHWISE_CONV_2D")
    assert dw.inputs[0].name == "x" and dw.options.padding == 0  # SAME


def test_gru_is_unrolled_into_builtins():
    ir = check(_model(*RULE_CASES["gru_sequences"]))
    hist = ir.op_histogram()
    assert "WHILE" not in hist and hist["FULLY_CONNECTED"] == 1 + 7 and hist["PACK"] == 1


def test_lstm_is_one_fused_op_with_variable_states():
    ir = check(_model(*RULE_CASES["lstm_last"]))
    ops = ir.main.operators
    assert [op.name for op in ops] == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE"]
    lstm = ops[0]
    assert len(lstm.inputs) == 24 and [t.is_variable for t in lstm.inputs[18:20]] == [True, True]
    assert not lstm.options.timeMajor


def test_nested_and_sequential_models_keep_scoped_names():
    import keras

    keras.utils.set_random_seed(2)
    L = keras.layers
    inner_in = keras.Input((6, 6, 3), name="inner_in")
    inner = keras.Model(inner_in, L.ReLU(name="act")(L.Conv2D(4, 3, name="conv")(inner_in)), name="block")
    seq = keras.Sequential([keras.Input((4,)), L.Dense(3, name="s1"), L.Dense(2, name="s2")], name="seq")
    x = keras.Input((6, 6, 3), batch_size=1, name="image")
    a, b = inner(x), inner(x)  # a shared sub-model: two calls, two sets of tensors
    y = seq(L.GlobalAveragePooling2D(name="gap")(L.Add(name="sum")([a, b])))
    model = keras.Model(x, y)
    ir = check(model)
    names = {t.name for t in ir.main.tensors}
    assert {"block", "block_1", "gap", "sum"} <= names
    assert ir.outputs[0].name == model.output_names[0]


def test_outputs_that_are_inputs_or_repeated_get_copies():
    import keras

    L = keras.layers
    inp = keras.Input((4,), batch_size=1, name="x")
    d = L.Dense(3, name="d")(inp)
    model = keras.Model(inp, [L.Dropout(0.5, name="drop")(inp), d, d])
    ir = native.lower(model)
    names = [t.name for t in ir.outputs]
    assert len(set(map(id, ir.outputs))) == 3 and len(set(names)) == 3 and names[1] == "d"
    x = {"x": np.arange(4, dtype=np.float32)[None]}
    got = run(ir, x)
    want = _keras_outputs(model, x)
    for name, w in zip(names, want):
        np.testing.assert_allclose(got[name], w, **TOL)


def test_unsupported_layers_are_named():
    import keras

    L = keras.layers
    inp = keras.Input((5, 4), batch_size=1, name="x")
    y = L.SimpleRNN(3, name="rnn")(L.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid", name="seq")(inp))
    model = keras.Model(inp, y)
    assert native.unsupported(model) == ["LSTM (recurrent_activation='hard_sigmoid')", "SimpleRNN"]
    from compiler.errors import ConversionError

    with pytest.raises(ConversionError, match="SimpleRNN"):
        native.lower(model)


# ---- contect-small and mobilenet_v2 end to end -----------------------------------------------------

# Layers inside each fixture whose outputs are compared too (the final outputs are small numbers:
# contect-small's sigmoid is near 0 on some samples, untrained mobilenet's softmax near 0.1).
PROBES = {
    "contect-small": ["branch_0_block_1_out", "branch_1_lstm_1", "branch_2_lstm_2", "head_dense"],
    "mobilenet_v2": ["Conv1_relu", "block_6_project_BN", "block_13_expand_relu", "out_relu"],
}


def staged_run(model, x: dict) -> dict:
    """Run each part in order, feeding stage inputs by name (the handoff contract)."""
    values = dict(x)
    for part in model.parts():
        values.update(run(part, {t.name: values[t.name] for t in part.inputs}))
    return {t.name: values[t.name] for t in model.outputs}


@pytest.fixture(scope="module", params=["contect-small", "mobilenet_v2"])
def fixture_model(request):
    import fixtures

    fx = fixtures.get(request.param)
    return request.param, fx, fx.build(batch_size=1)


def test_fixture_matches_keras_inside_and_out(fixture_model):
    import keras

    name, fx, model = fixture_model
    probes = [model.get_layer(n).output for n in PROBES[name]]
    probed = keras.Model(model.inputs, [*model.outputs, *probes])
    ir = native.lower(probed)
    assert [t.name for t in ir.outputs] == [*model.output_names, *PROBES[name]]
    hist = ir.op_histogram()
    assert not {"WHILE", "CUSTOM", "FLEX"} & {k.split(":")[0] for k in hist}, hist
    if name == "contect-small":
        assert hist["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 6 and "BATCH_MATMUL" not in hist
    for seed in range(2):
        x = fx.sample_inputs(n=1, seed=seed)
        got = run(ir, x)
        for out_name, want in zip(ir.outputs, _keras_outputs(probed, x)):
            np.testing.assert_allclose(got[out_name.name], want, **TOL, err_msg=out_name.name)


@pytest.mark.parametrize("quant", ["", "quantize{mode=int8-dynamic},", "quantize{mode=float16},"])
def test_fixture_staged_is_bit_identical_to_whole(fixture_model, quant):
    from compiler import pipeline
    from compiler.passes import PassContext

    name, fx, model = fixture_model
    base = f"strip-unused,dedupe-buffers,{quant}check-opset{{target=builtins}}"
    whole = pipeline.run(native.lower(model), pipeline.parse(base), PassContext())
    staged = pipeline.run(native.lower(model), pipeline.parse(base + ",partition{stages=3}"), PassContext())
    assert len(staged.parts()) == 3
    model_io = {t.name for t in (*staged.inputs, *staged.outputs)}
    handoff = {t.name for part in staged.parts() for t in part.inputs} - model_io
    layers = {layer.name for layer in model.layers}
    assert handoff and handoff <= layers, handoff - layers  # handoff tensors are Keras layer names
    for seed in range(2):
        x = fx.sample_inputs(n=1, seed=seed)
        a, b = staged_run(staged, x), staged_run(whole, x)
        for k in a:
            assert np.array_equal(a[k], b[k]), k
        if not quant:
            np.testing.assert_allclose(a[model.output_names[0]], _keras_outputs(model, x)[0], **TOL)


# ---- choosing a front-end --------------------------------------------------------------------------

def _rnn_model():
    import keras

    keras.utils.set_random_seed(4)
    inp = keras.Input((6, 3), batch_size=1, name="x")
    return keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.SimpleRNN(4, name="rnn")(inp)))


def test_models_without_a_graph_are_named():
    import keras

    class Doubler(keras.Model):
        def call(self, x):
            return x * 2

    assert native.unsupported(keras.Sequential([keras.layers.Dense(2)])) == ["Sequential (built without an Input)"]
    assert native.unsupported(Doubler()) == ["Doubler (a subclassed model)"]


def test_keras_ops_calls_in_the_graph_are_not_mistaken_for_layers():
    """keras.ops.add/reshape are graph operations named Add/Reshape, like the layers: no rule takes them."""
    import keras

    L = keras.layers
    inp = keras.Input((4, 6), batch_size=1, name="x")
    y = keras.ops.reshape(keras.ops.add(L.Dense(6, name="d")(inp), inp), (1, 24))
    model = keras.Model(inp, L.Dense(2, name="o")(y))
    assert native.unsupported(model) == ["keras.ops.Add", "keras.ops.Reshape"]


def test_choose(capsys):
    from compiler.errors import ConversionError, UsageError

    ok = _model(*RULE_CASES["lstm_last"])
    assert native.choose(ok, "auto") and native.choose(ok, "native") and not native.choose(ok, "converter")
    assert capsys.readouterr().err == ""
    rnn = _rnn_model()
    assert not native.choose(rnn, "auto")
    assert capsys.readouterr().err.strip() == "tflc: note: no native lowering for SimpleRNN; using the TFLite converter"
    with pytest.raises(ConversionError, match="--frontend native: no native lowering for SimpleRNN"):
        native.choose(rnn, "native")
    with pytest.raises(UsageError, match="unknown front-end"):
        native.choose(ok, "fast")


def test_cli_records_the_frontend_and_falls_back(tmp_path):
    import json

    from conftest import assert_user_error, tflc

    _rnn_model().save(tmp_path / "rnn.keras")
    _model(*RULE_CASES["lstm_stack_no_bias"]).save(tmp_path / "lstm.keras")
    pipe = "strip-unused,partition{stages=2}"
    proc = tflc("compile", str(tmp_path / "lstm.keras"), "--pipeline", pipe, "-o", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "a" / "report.json").read_text())["frontend"] == "native"
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["frontend"] == "native"
    proc = tflc("compile", str(tmp_path / "lstm.keras"), "--pipeline", pipe, "--lstm", "unrolled",
                "-o", str(tmp_path / "u"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "u" / "report.json").read_text())["lstm"] == "unrolled"
    from compiler.ir import flatbuffer
    from compiler.runtime import StagedModel

    stages = [flatbuffer.load(p) for p in sorted((tmp_path / "u").glob("stage_*.tflite"))]
    assert len(stages) == 2 and not any(t.is_variable for st in stages for t in st.main.tensors)
    x = {"x": np.random.default_rng(0).standard_normal((1, 6, 5)).astype(np.float32)}
    fused, unrolled = StagedModel(tmp_path / "a")(x), StagedModel(tmp_path / "u")(x)
    np.testing.assert_allclose(unrolled["l2"], fused["l2"], **TOL)
    proc = tflc("compile", str(tmp_path / "rnn.keras"), "--pipeline", pipe, "-o", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert "tflc: note: no native lowering for SimpleRNN; using the TFLite converter" in proc.stderr
    assert json.loads((tmp_path / "b" / "report.json").read_text())["frontend"] == "converter"
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["frontend"] == "converter"
    proc = tflc("compile", str(tmp_path / "rnn.keras"), "--frontend", "native", "-o", str(tmp_path / "c"))
    assert_user_error(proc, "no native lowering for SimpleRNN", code=2)
    assert not (tmp_path / "c").exists()


# ---- random stacks ---------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ACTIVATIONS = ["linear", "relu", "relu6", "sigmoid", "tanh", "swish", "gelu", "hard_sigmoid", "hard_swish", "elu"]


def _spatial_layer(data, L, h: int, w: int, k: int):
    """One random spatial layer that fits an (h, w) map, and the map size after it."""
    kind = data.draw(st.sampled_from(["conv", "depthwise", "pool", "pad", "bn", "act"]))
    size = data.draw(st.integers(1, 3))
    stride = data.draw(st.integers(1, 2))
    padding = data.draw(st.sampled_from(["same", "valid"]))
    dilation = data.draw(st.integers(1, 2)) if stride == 1 else 1
    reach = (size - 1) * dilation + 1
    if padding == "valid" and (reach > h or reach > w):
        padding = "same"

    def out(n):
        return -(-n // stride) if padding == "same" else (n - reach) // stride + 1

    act = data.draw(st.sampled_from(ACTIVATIONS))
    name = f"l{k}_{kind}"
    if kind == "conv":
        filters = data.draw(st.integers(1, 6))
        return L.Conv2D(filters, size, strides=stride, padding=padding, dilation_rate=dilation, activation=act,
                        use_bias=data.draw(st.booleans()), name=name), out(h), out(w)
    if kind == "depthwise":
        return L.DepthwiseConv2D(size, strides=stride, padding=padding, dilation_rate=dilation,
                                 depth_multiplier=data.draw(st.integers(1, 2)), activation=act, name=name), out(h), out(w)
    if kind == "pool":
        reach = size
        if padding == "valid" and (size > h or size > w):
            padding = "same"
        cls = data.draw(st.sampled_from([L.MaxPooling2D, L.AveragePooling2D]))
        return cls(size, strides=stride, padding=padding, name=name), out(h), out(w)
    if kind == "pad":
        t, b, l, r = (data.draw(st.integers(0, 2)) for _ in range(4))
        return L.ZeroPadding2D(((t, b), (l, r)), name=name), h + t + b, w + l + r
    if kind == "bn":
        return L.BatchNormalization(name=name), h, w
    return L.Activation(act, name=name), h, w


@given(st.data())
def test_random_stacks_match_keras(data):
    import keras

    L = keras.layers
    h, w = data.draw(st.integers(3, 9)), data.draw(st.integers(3, 9))
    c = data.draw(st.integers(1, 4))
    keras.utils.set_random_seed(data.draw(st.integers(0, 1000)))
    inp = keras.Input((h, w, c), batch_size=1, name="x")
    x = inp
    for k in range(data.draw(st.integers(1, 5))):
        layer, h, w = _spatial_layer(data, L, h, w, k)
        x = layer(x)
    head = data.draw(st.sampled_from(["gap", "gmp", "flatten"]))
    x = {"gap": L.GlobalAveragePooling2D, "gmp": L.GlobalMaxPooling2D, "flatten": L.Flatten}[head](name=head)(x)
    x = L.Dense(data.draw(st.integers(1, 5)), activation=data.draw(st.sampled_from(ACTIVATIONS + ["softmax"])),
                name="head")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BN statistics away from the identity
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, v.shape).astype(np.float32) if i in (0, 3) else
                               rng.normal(0, 0.3, v.shape).astype(np.float32)
                               for i, v in enumerate(layer.get_weights())])
    check(model, seed=data.draw(st.integers(0, 100)))


def test_weights_stay_in_the_keras_variables_until_read(fixture_model):
    """The IR holds no second copy of the weights: kernels are read from the Keras variables (in the
    kernel's layout, BN folded) only when a pass or the writer asks."""
    from compiler.frontend.native.graph import LazyBuffer

    name, fx, model = fixture_model
    ir = native.lower(model)
    consts = {id(t.buffer): t for t in ir.main.tensors if t.is_constant}.values()
    lazy = sum(t.buffer.nbytes for t in consts if isinstance(t.buffer, LazyBuffer))
    held = sum(t.buffer.nbytes for t in consts if not isinstance(t.buffer, LazyBuffer))
    assert held < 0.05 * lazy, (held, lazy)
    out = "branch_0_stem_relu" if name == "contect-small" else "Conv1_relu"  # conv, BN and ReLU in one op
    first = next(op for op in ir.main.operators if op.outputs[0].name == out)
    conv = model.get_layer("branch_0_stem_conv" if name == "contect-small" else "Conv1")
    bn = model.get_layer("branch_0_stem_bn" if name == "contect-small" else "bn_Conv1")
    gamma, var = bn.gamma.numpy(), bn.moving_variance.numpy()
    want = conv.kernel.numpy().transpose(3, 0, 1, 2) * (gamma / np.sqrt(var + bn.epsilon))[:, None, None, None]
    np.testing.assert_allclose(first.inputs[1].numpy(), want, rtol=1e-6, atol=1e-7)


def test_int8_dynamic_gives_the_fused_lstm_hybrid_int8_weights():
    """LiteRT's hybrid LSTM kernel: 8 int8 gate matrices (one scale each), float biases and states, v3
    (asymmetric inputs); the result stays close to the float build."""
    from compiler import pipeline
    from compiler.passes import PassContext

    model = _model(lambda L, x: L.LSTM(16, name="l2")(L.LSTM(24, return_sequences=True, name="l1")(x)), (6, 16))
    floats = native.lower(model)
    hybrid = pipeline.run(native.lower(model), pipeline.parse("quantize{mode=int8-dynamic}"), PassContext())
    lstms = [op for op in hybrid.main.operators if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert len(lstms) == 2
    for op in lstms:
        assert op.version == 3 and op.options.asymmetricQuantizeInputs
        ws = op.inputs[1:9]
        assert all(t.dtype == np.int8 and len(t.quantization.scale) == 1 for t in ws)
        assert all(t.dtype == np.float32 for t in op.inputs[12:16])
    x = _inputs(model, 1)
    want, got = run(floats, x)["l2"], run(hybrid, x)["l2"]
    assert not np.array_equal(want, got)  # really quantized
    np.testing.assert_allclose(got, want, atol=0.02)


def _bilstm_model():
    """A speech-like model of our own: Conv1D features, two Bidirectional LSTMs, a GRU, a dense head."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(21)
    inp = keras.Input((24, 12), name="frames")
    x = L.Conv1D(16, 3, padding="same", activation="relu", name="features")(inp)
    x = L.Bidirectional(L.LSTM(20, return_sequences=True), name="bi_1")(x)
    x = L.Dropout(0.2, name="drop")(x)
    seq = L.Bidirectional(L.LSTM(16, return_sequences=True), merge_mode="sum", name="bi_2")(x)
    last = L.GRU(12, name="gru")(seq)
    pooled = L.GlobalAveragePooling1D(name="pool")(seq)
    x = L.Concatenate(name="cat")([last, pooled])
    return keras.Model(inp, L.Dense(3, activation="softmax", name="probs")(x))


@pytest.mark.parametrize("quant", ["", "quantize{mode=int8-dynamic},", "quantize{mode=float16},"])
def test_keras_file_with_bidirectional_lstm(tmp_path, quant):
    from compiler import pipeline
    from compiler.frontend import load_source
    from compiler.passes import PassContext

    model = _bilstm_model()
    model.save(tmp_path / "bilstm.keras")
    src = load_source(str(tmp_path / "bilstm.keras"), frontend="auto")
    assert src.frontend == "native" and src.batch == 1
    hist = src.model.op_histogram()
    assert hist["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 4 and not {"WHILE", "CUSTOM"} & set(hist)
    base = f"strip-unused,dedupe-buffers,{quant}check-opset{{target=builtins}}"
    whole = pipeline.run(load_source(str(tmp_path / "bilstm.keras"), frontend="native").model,
                         pipeline.parse(base), PassContext())
    staged = pipeline.run(src.model, pipeline.parse(base + ",partition{stages=3}"), PassContext())
    assert len(staged.parts()) == 3
    if quant.startswith("quantize{mode=int8"):
        lstms = [op for _, op in whole.operators() if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
        assert all(op.inputs[2].dtype == np.int8 for op in lstms)
    for seed in range(2):
        x = {"frames": np.random.default_rng(seed).standard_normal((1, 24, 12)).astype(np.float32)}
        a, b = staged_run(staged, x), staged_run(whole, x)
        assert np.array_equal(a["probs"], b["probs"])
        want = model.predict(x["frames"], verbose=0)
        np.testing.assert_allclose(a["probs"], want, **(TOL if not quant else dict(atol=0.02)))
