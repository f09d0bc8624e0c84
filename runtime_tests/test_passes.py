"""Before/Expected tests for strip-unused and dedupe-buffers, plus pipeline parsing."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import pipeline
from compiler.errors import PipelineError
from compiler.passes import PassContext
from compiler.passes.dedupe_buffers import dedupe_buffers
from compiler.passes.strip_unused import strip_unused
from ir_helpers import OP, act, binary, const, model_of, run, structure

X = np.arange(8, dtype=np.float32).reshape(1, 8) / 7.0


def _dead_branch_graph(with_dead: bool):
    x = act("x", (1, 8))
    c1 = const("c1", np.full((1, 8), 0.5))
    y = act("y", (1, 8))
    ops = [binary(OP.ADD, x, c1, y)]
    tensors = [x, c1, y]
    if with_dead:
        c2 = const("c2", np.linspace(-1, 1, 8).reshape(1, 8))
        d1, d2 = act("dead1", (1, 8)), act("dead2", (1, 8))
        ops += [binary(OP.MUL, x, c2, d1), binary(OP.SUB, d1, x, d2)]
        tensors += [c2, d1, d2]
        ops = [ops[1], ops[0], ops[2]]  # the dead branch interleaved with the live one
    return model_of([x], [y], ops, tensors)


def test_strip_unused_removes_exactly_the_dead_branch():
    before = _dead_branch_graph(with_dead=True)
    expected = _dead_branch_graph(with_dead=False)
    ref = run(before, {"x": X})
    ctx = PassContext()
    after = strip_unused(before, ctx=ctx)
    assert structure(after) == structure(expected)
    assert ctx.report["strip-unused"]["removed_operators"] == 2
    assert ctx.report["strip-unused"]["removed_tensors"] == 3
    out = run(after, {"x": X})
    assert np.array_equal(out["y"], ref["y"])
    np.testing.assert_array_equal(out["y"], X + 0.5)  # and against numpy


def test_strip_unused_drops_unreachable_subgraphs():
    from compiler.ir import Subgraph

    model = _dead_branch_graph(with_dead=False)
    model.subgraphs.append(Subgraph("orphan"))
    strip_unused(model, ctx=PassContext())
    assert [sg.name for sg in model.subgraphs] == ["main"]


def _two_weights_graph(shared: bool, second_shape=(1, 8)):
    x = act("x", (1, 8))
    w1 = const("w1", np.full((1, 8), 1.25))
    w2 = w1 if shared else const("w2", np.full(second_shape, 1.25))
    t, y = act("t", (1, 8)), act("y", (1, 8))
    return model_of([x], [y], [binary(OP.ADD, x, w1, t), binary(OP.MUL, t, w2, y)], [x, w1, w2, t, y])


def test_equal_weights_share_one_buffer():
    before = _two_weights_graph(shared=False)
    ref = run(before, {"x": X})
    assert before.buffer_count() == 2
    ctx = PassContext()
    after = dedupe_buffers(before, ctx=ctx)
    assert after.buffer_count() == 1
    assert ctx.report["dedupe-buffers"]["bytes_saved"] == 32
    w1, w2 = after.main.operators[0].inputs[1], after.main.operators[1].inputs[1]
    assert w1.buffer is w2.buffer and w1.name == "w1" and w2.name == "w2"  # tensors stay, buffers merge
    out = run(after, {"x": X})
    assert np.array_equal(out["y"], ref["y"])
    np.testing.assert_array_equal(out["y"], (X + 1.25) * 1.25)


def test_same_bytes_different_shape_are_not_merged():
    before = _two_weights_graph(shared=False, second_shape=(8,))
    dedupe_buffers(before, ctx=PassContext())
    assert before.buffer_count() == 2


def test_pipeline_parses_options_and_rejects_unknowns():
    steps = pipeline.parse("strip-unused, dedupe-buffers")
    assert [s.name for s in steps] == ["strip-unused", "dedupe-buffers"]
    with pytest.raises(PipelineError, match="unknown pass 'nope'.*strip-unused"):
        pipeline.parse("strip-unused,nope")
    with pytest.raises(PipelineError, match="unknown option 'level' for pass 'strip-unused'"):
        pipeline.parse("strip-unused{level=3}")
    with pytest.raises(PipelineError, match="unbalanced"):
        pipeline.parse("strip-unused{")


def test_print_ir_after_all_dumps_each_pass(capsys):
    model = _dead_branch_graph(with_dead=True)
    timings: list = []
    pipeline.run(model, pipeline.parse("strip-unused,dedupe-buffers"), PassContext(), print_ir=True, timings=timings)
    err = capsys.readouterr().err
    assert err.count("// ----- IR after") == 2
    after_strip = err.split("// ----- IR after dedupe-buffers")[0]
    assert "MUL" not in after_strip and "ADD v1(x, c1) -> y" in after_strip
    assert [t["pass"] for t in timings] == ["strip-unused", "dedupe-buffers"]
