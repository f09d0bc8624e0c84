"""Memory estimate: the arena planner on Before/Expected lifetimes, weights counted once (WHILE
bodies included), the partitioner's fast range estimate equal to the built stage's, and the
estimate against VmHWM of real LiteRT runs (with and without XNNPACK)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import memory
from compiler.ir import Model, Operator, Tensor, flatbuffer
from compiler.memory import estimate, estimate_run, plan_arena
from compiler.passes.partition import Schedule, build_stages

from ir_helpers import OP, act, const, model_of

REPO = Path(__file__).resolve().parent.parent


def test_arena_reuses_memory_of_dead_tensors():
    # Expected: a chain x -> t1 -> t2 -> y (each 1 KiB) needs 2 KiB: each tensor dies once read.
    assert plan_arena([(1024, 0, 1), (1024, 1, 2), (1024, 2, 3)]) == 2048
    # All alive at once: the sum; sizes aligned to 64 bytes.
    assert plan_arena([(100, 0, 3), (100, 0, 3)]) == 256
    # Best fit: the small late tensor goes into the hole left by the dead one, not on top.
    assert plan_arena([(4096, 0, 1), (1024, 0, 5), (2048, 2, 3), (512, 4, 5)]) == 5120
    assert plan_arena([]) == 0


def fc(x: Tensor, w: Tensor, y: Tensor) -> Operator:
    return Operator(OP.FULLY_CONNECTED, inputs=[x, w, None], outputs=[y],
                    options_type=schema.BuiltinOptions.FullyConnectedOptions, options=schema.FullyConnectedOptionsT())


def conv(x: Tensor, w: Tensor, b: Tensor, y: Tensor) -> Operator:
    o = schema.Conv2DOptionsT()
    o.padding, o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor = schema.Padding.SAME, 1, 1, 1, 1
    return Operator(OP.CONV_2D, inputs=[x, w, b], outputs=[y], options_type=schema.BuiltinOptions.Conv2DOptions,
                    options=o)


def fc_stack(n: int = 3, width: int = 1024) -> Model:
    rng = np.random.default_rng(0)
    x = act("x", (1, width))
    tensors, ops, h = [x], [], x
    w = const("w_shared", rng.standard_normal((width, width)).astype(np.float32) / width)
    for i in range(n):
        w_i = w if i == 0 else const(f"w{i}", rng.standard_normal((width, width)).astype(np.float32) / width)
        y = act(f"h{i}", (1, width))
        ops.append(fc(h, w_i, y))
        tensors += [w_i, y]
        h = y
    # the shared weight read a second time: counted once
    y = act("y", (1, width))
    ops.append(fc(h, w, y))
    tensors.append(y)
    return model_of([x], [y], ops, tensors)


def conv_stack() -> Model:
    rng = np.random.default_rng(0)
    x = act("x", (1, 96, 96, 32))
    tensors, ops, h = [x], [], x
    for i in range(3):
        cin = 32 if i == 0 else 64
        w = const(f"w{i}", rng.standard_normal((64, 3, 3, cin)).astype(np.float32) * 0.05)
        b = const(f"b{i}", np.zeros(64, np.float32))
        y = act(f"c{i}", (1, 96, 96, 64))
        ops.append(conv(h, w, b, y))
        tensors += [w, b, y]
        h = y
    return model_of([x], [h], ops, tensors)


def test_weights_are_counted_once_and_packed_copies_with_xnnpack():
    m = fc_stack()
    w = 4 * 1024 * 1024 * 4  # four distinct 1024x1024 float weights, the shared one counted once
    on, off = estimate(m, use_xnnpack=True), estimate(m, use_xnnpack=False)
    assert on["weights"] == off["weights"] == m.weight_bytes() == w - 4 * 1024 * 1024
    assert on["detail"]["packed_weights"] == 4 * 1024 * 1024 * 4  # XNNPACK packs per op
    assert off["delegate"] == 0
    assert on["peak"] == on["baseline"] + on["weights"] + on["arena"] + on["delegate"]


def test_conv_im2col_only_without_xnnpack():
    m = conv_stack()
    off, on = estimate(m, use_xnnpack=False), estimate(m, use_xnnpack=True)
    im2col = 96 * 96 * 9 * 64 * 4
    assert off["arena"] >= im2col > on["arena"]


@pytest.fixture(scope="module")
def lstm_model() -> Model:
    import keras

    from compiler.frontend import from_keras

    keras.utils.set_random_seed(0)
    x = keras.Input((12, 6), batch_size=1, name="x")
    h = keras.layers.Conv1D(8, 3, padding="same", name="c")(x)
    h = keras.layers.LSTM(16, return_sequences=True, name="l1")(h)
    y = keras.layers.Dense(4, name="d")(keras.layers.LSTM(16, name="l2")(h))
    return from_keras(keras.Model(x, y)).model


def test_while_bodies_count(lstm_model):
    e = estimate(lstm_model)
    main_only = {id(t.buffer): t.buffer.nbytes for op in lstm_model.main.operators for t in op.inputs
                 if t is not None and t.is_constant}
    assert len(lstm_model.subgraphs) > 1
    assert e["weights"] == lstm_model.weight_bytes() > sum(main_only.values())
    assert e["detail"]["subgraph_arenas"] > 0


def test_range_estimate_equals_built_stage(lstm_model):
    n = len(lstm_model.main.operators)
    allowed = Schedule(lstm_model).allowed()

    @settings(max_examples=15, deadline=None)
    @given(cuts=st.lists(st.sampled_from(allowed), max_size=4, unique=True).map(sorted), xnn=st.booleans())
    def check(cuts, xnn):
        sched = Schedule(lstm_model, use_xnnpack=xnn)
        est = sched.estimator
        stages = build_stages(lstm_model, cuts, sched)
        bounds = [0, *cuts, n]
        for (a, b), stage in zip(zip(bounds, bounds[1:]), stages):
            assert est.range(a, b) == estimate(stage, use_xnnpack=xnn)
        run = estimate_run(stages, use_xnnpack=xnn)
        assert run["peak"] >= max(estimate(s, xnn)["peak"] for s in stages)

    check()


def test_estimate_run_counts_handoff():
    m = fc_stack(n=3, width=256)
    stages = build_stages(m, [1, 2])
    run = estimate_run(stages)
    # during stage 1 the runtime holds h0 (its input) and h1 (its output): 2 KiB of handoff
    assert run["stages"][1]["handoff"] == 2 * 256 * 4
    assert run["stages"][1]["total"] == run["stages"][1]["peak"] + 2048


_MEASURE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    import compiler.runtime  # the runtime process's own imports are part of the baseline
    path, xnn = sys.argv[1], sys.argv[2] == "1"
    if path == "-":  # the idle runtime: imports only
        print(json.dumps({"hwm": [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                                  if l.startswith("VmHWM")][0]}))
        sys.exit(0)
    it = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=(
        OpResolverType.AUTO if xnn else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
    it.invoke()
    hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print(json.dumps({"hwm": hwm}))
""")


def measured_peak(path: Path, xnnpack: bool) -> int:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), "1" if xnnpack else "0"], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["hwm"]


@pytest.mark.parametrize("xnnpack", [True, False])
@pytest.mark.parametrize("build", [fc_stack, conv_stack])
def test_estimate_tracks_measured_vmhwm(tmp_path, build, xnnpack):
    m = build()
    p = tmp_path / "m.tflite"
    flatbuffer.save(m, p)
    est = estimate(m, use_xnnpack=xnnpack)["peak"] - memory.PROCESS_BASELINE
    # What the model adds to the idle runtime process, measured against that process in the same
    # conditions: the idle baseline itself moves with the environment (8 MB between a quiet shell and
    # the full suite's child processes here), which is why budgets are set above it.
    total, idle = measured_peak(p, xnnpack), measured_peak(Path("-"), xnnpack)
    got = total - idle
    # Within 10% of the run's peak + 4 MB (allocator slack, library pages that differ between machines).
    assert abs(est - got) <= 0.10 * total + 4e6, (est, got, total)
