"""IR round trip: the converter's output (with LSTM WHILE subgraphs) reads and writes back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import FlatbufferError
from compiler.frontend import convert_keras
from compiler.ir import flatbuffer
from ir_helpers import run, structure


@pytest.fixture(scope="module")
def lstm_tflite() -> bytes:
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 5), name="x")  # None batch on purpose: the front-end fixes it
    h = keras.layers.Conv1D(6, 3, padding="same", name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.LSTM(7, return_sequences=True, name="lstm_a")(h)
    h = keras.layers.LSTM(4, name="lstm_b")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(h)
    return convert_keras(keras.Model(inp, out))


def test_round_trip_is_structurally_equal_and_bit_identical(lstm_tflite):
    model = flatbuffer.loads(lstm_tflite)
    assert len(model.subgraphs) == 5  # main + cond/body for each of the two LSTM WHILE loops
    assert model.op_histogram()["WHILE"] == 2
    rewritten = flatbuffer.dumps(model)
    again = flatbuffer.loads(rewritten)
    assert structure(again) == structure(model)
    x = np.random.default_rng(0).standard_normal((1, 12, 5)).astype(np.float32)
    name = model.inputs[0].name
    ref = run(lstm_tflite, {name: x})
    out = run(rewritten, {name: x})
    assert ref.keys() == out.keys()
    for k in ref:
        assert np.array_equal(ref[k], out[k])


def test_weights_are_views_not_copies(lstm_tflite, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(lstm_tflite)
    model = flatbuffer.load(path)
    big = max(model.buffers(), key=lambda b: b.nbytes)
    assert big.data.base is not None  # a view into the file's memory map
    assert not big.data.flags.writeable


def test_truncated_flatbuffer_is_rejected(lstm_tflite):
    for cut in (4, 16, len(lstm_tflite) // 3, len(lstm_tflite) - 100):
        with pytest.raises(FlatbufferError):
            flatbuffer.loads(lstm_tflite[:cut])


def test_index_out_of_range_is_rejected(lstm_tflite):
    """Corrupt a tensor index inside the first operator's input vector: caught before LiteRT sees it."""
    model = flatbuffer.loads(lstm_tflite)
    from ai_edge_litert import schema_py_generated as schema

    mt = schema.ModelT.InitFromPackedBuf(lstm_tflite, 0)
    inputs = mt.subgraphs[0].operators[0].inputs.copy()
    inputs[0] = 10_000
    mt.subgraphs[0].operators[0].inputs = inputs
    import flatbuffers

    b = flatbuffers.Builder(0)
    b.Finish(mt.Pack(b), file_identifier=b"TFL3")
    with pytest.raises(FlatbufferError, match="tensor 10000"):
        flatbuffer.loads(bytes(b.Output()))
    assert model.main.operators  # the original still parses


def test_flipped_bytes_never_escape_as_crashes(lstm_tflite):
    """Random byte flips give either a clean FlatbufferError or a model that still validates."""
    rng = np.random.default_rng(1)
    errors = 0
    for _ in range(200):
        data = bytearray(lstm_tflite)
        for pos in rng.integers(0, len(data) // 4, size=4):  # the tables and vtables come first
            data[pos] ^= int(rng.integers(1, 256))
        try:
            flatbuffer.loads(bytes(data))
        except FlatbufferError:
            errors += 1
    assert errors > 50
