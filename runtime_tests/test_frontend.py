"""Front-end: sources of every kind, the batch fix for LSTMs, and conversion errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import ConversionError, SourceError, UsageError
from compiler.frontend import load_source
from ir_helpers import run


def _lstm_model(batch=None):
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((10, 4), batch_size=batch, name="x")
    h = keras.layers.LSTM(6, name="lstm_a")(inp)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(h))


def test_none_batch_lstm_compiles_with_batch_fixed(tmp_path):
    model = _lstm_model()
    model.save(tmp_path / "m.keras")
    for batch in (None, 3):
        src = load_source(str(tmp_path / "m.keras"), batch=batch)
        want = batch or 1
        assert src.model.inputs[0].shape == (want, 10, 4) and src.batch == want
        x = np.random.default_rng(0).standard_normal((want, 10, 4)).astype(np.float32)
        got = run(src.model, {"x": x})["head"]
        np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    assert "lstm_a" in src.model.keras_layers


def test_fixed_batch_cannot_be_overridden(tmp_path):
    _lstm_model(batch=1).save(tmp_path / "m.keras")
    with pytest.raises(UsageError, match="fixed batch of 1"):
        load_source(str(tmp_path / "m.keras"), batch=2)


def test_saved_model_source(tmp_path):
    import keras

    inp = keras.Input((16, 8), name="x")
    h = keras.layers.Conv1D(4, 3, name="c")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D()(h)))
    model.export(str(tmp_path / "sm"), verbose=False)
    src = load_source(str(tmp_path / "sm"))
    assert src.kind == "savedmodel" and src.model.inputs[0].name == "x"
    x = np.random.default_rng(1).standard_normal((1, 16, 8)).astype(np.float32)
    got = next(iter(run(src.model, {"x": x}).values()))
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_saved_model_with_unknown_batch_lstm_is_a_clear_error(tmp_path):
    _lstm_model().export(str(tmp_path / "sm"), verbose=False)
    with pytest.raises(ConversionError, match="unknown batch size.*batch_size=1"):
        load_source(str(tmp_path / "sm"))


def test_unconvertible_op_names_the_layer(tmp_path):
    import keras
    import tensorflow as tf

    class Determinant(keras.layers.Layer):
        def call(self, x):
            return tf.reshape(tf.linalg.det(x), (-1, 1))

    inp = keras.Input((3, 3), batch_size=1, name="m")
    model = keras.Model(inp, Determinant(name="weird_det")(inp))
    from compiler.frontend import from_keras

    with pytest.raises(ConversionError, match="weird_det"):
        from_keras(model)


def test_unknown_layer_class_in_keras_file(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="tflc_test")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((4,), name="x")
    keras.Model(inp, Twice(name="twice")(inp)).save(tmp_path / "m.keras")
    keras.saving.get_custom_objects().clear()
    with pytest.raises(SourceError, match="Twice"):
        load_source(str(tmp_path / "m.keras"))


def test_sequential_io_keeps_layer_names():
    import keras

    from compiler.frontend import from_keras

    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((3,), name="q"), keras.layers.Dense(2, name="d")])
    src = from_keras(model, frontend="converter")
    assert [t.name for t in src.model.inputs] == ["q"] and [t.name for t in src.model.outputs] == ["d"]
    x = np.random.default_rng(6).standard_normal((1, 3)).astype(np.float32)
    np.testing.assert_allclose(run(src.model, {"q": x})["d"], np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_reason_is_the_raised_message_not_tfs_wrapper(tmp_path):
    """TF wraps some errors as "in user code: ... ValueError: the reason": reason() keeps the reason, whole."""
    import tensorflow as tf

    from compiler.frontend import reason

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def nested(x):
        return {"a": {"b": x}}

    module = tf.Module()
    module.f = nested
    with pytest.raises(ValueError) as e:
        tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": nested})
    assert str(e.value).startswith("in user code:")
    got = reason(e.value)
    assert got.startswith("Got a non-Tensor value {'b': ") and "for key 'a'" in got
    assert got.endswith("must be a single Tensor, a sequence of Tensors, or a dictionary from string to Tensor.")
    assert "\n" not in got
