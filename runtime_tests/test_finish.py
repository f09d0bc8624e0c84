"""compiler/finish.py: the manifest tells the precision the build has, not the one asked for."""

from __future__ import annotations

import json

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from compiler import pipeline
from compiler.artifacts import write_build
from compiler.ir import Operator
from compiler.passes import PassContext
from compiler.runtime import StagedModel

from ir_helpers import act, const, model_of

OP = schema.BuiltinOperator


def fc_model(width: int):
    x, y = act("x", (1, width)), act("y", (1, width))
    w = const("w", np.random.default_rng(0).normal(size=(width, width)))
    b = const("b", np.zeros(width))
    opts = schema.FullyConnectedOptionsT()
    fc = Operator(OP.FULLY_CONNECTED, 1, inputs=[x, w, b], outputs=[y],
                  options_type=schema.BuiltinOptions.FullyConnectedOptions, options=opts)
    return model_of([x], [y], [fc], [x, w, b, y])


def build(tmp_path, width: int, text: str):
    ctx = PassContext()
    model = pipeline.run(fc_model(width), pipeline.parse(text), ctx)
    out = write_build(model, tmp_path / f"b{width}", report={"passes": ctx.report})
    return out, json.loads((out / "manifest.json").read_text()), json.loads((out / "report.json").read_text())


def test_int8_dynamic_that_quantized_nothing_says_so(tmp_path):
    """A 4x4 weight is under quantize's min-elements (1024), so int8-dynamic leaves it float: the manifest
    says float, counts 64 float32 bytes of weights, and the report names what was asked."""
    _, manifest, report = build(tmp_path, 4, "quantize{mode=int8-dynamic}")
    assert manifest["quantization"] == "float"
    assert manifest["precision"]["weights"]["float32"]["bytes"] == 4 * 4 * 4 + 4 * 4
    assert "int8" not in manifest["precision"]["weights"]
    assert report["quantization_note"] == "quantize{mode=int8-dynamic} was asked; the build's precision is float"


def test_int8_dynamic_records_int8_weights_and_runs(tmp_path):
    out, manifest, report = build(tmp_path, 64, "quantize{mode=int8-dynamic},partition{stages=1}")
    assert manifest["quantization"] == "int8-dynamic" and "quantization_note" not in report
    assert manifest["precision"]["weights"]["int8"] == {"count": 1, "bytes": 64 * 64}
    assert manifest["precision"]["ops"] == {"hybrid": 1}
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    w = fc_model(64).main.operators[0].inputs[1].numpy()
    y = StagedModel(out)({"x": x})["y"]
    np.testing.assert_allclose(y, x @ w.T, rtol=0.05, atol=0.05 * np.abs(x @ w.T).max())
