"""The compiler work a build needs after the passes, done once, so the writer only serializes.

- the handoff contract of the stages (compiler/handoff.py);
- each stage's minimum TFLite runtime, from the (op, version) pairs it uses, also rewritten into the
  converter's `min_runtime_version` metadata (quantization raises op versions, so that value goes stale);
- whether each stage must stay loaded across calls (it holds resource variables);
- the precision the weights and ops actually ended in (not what the pipeline asked for: int8-dynamic on a
  model whose weights are all float16 and stayed so is reported as float16);
- the estimated peak memory of a staged run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import handoff, memory
from compiler.ir import Buffer, Model


@dataclass
class Finished:
    model: Model
    parts: list[Model]
    plan: handoff.Plan
    min_runtime: list[str]
    resident: list[bool]
    precision: dict
    memory: dict

    @property
    def quantization(self) -> str:
        return self.precision["mode"]


def finish(model: Model) -> Finished:
    from compiler.quant.census import precision

    parts = model.parts()
    plan = handoff.plan(parts, model.inputs, model.outputs)
    versions = [_min_runtime(p) for p in parts]
    resident = [handoff.holds_state(p) for p in parts]
    census = precision(model) if model.stages is None else _union([precision(p) for p in parts])
    return Finished(model, parts, plan, versions, resident, census,
                    memory.estimate_run(parts, handoff=plan))


def _min_runtime(model: Model) -> str:
    from kernels.catalogue import required_runtime

    version, _estimated = required_runtime([model])
    for i, (name, _) in enumerate(model.metadata):
        if name == "min_runtime_version":
            data = version.encode().ljust(16, b"\0")  # the converter's fixed 16-byte field
            model.metadata[i] = (name, Buffer(np.frombuffer(data, dtype=np.uint8)))
    return version


def _union(censuses: list[dict]) -> dict:
    """One census for several stages. Weights a stage recomputes or shares may be counted per stage."""
    weights: dict[str, dict[str, int]] = {}
    ops: dict[str, int] = {}
    for c in censuses:
        for dtype, e in c["weights"].items():
            w = weights.setdefault(dtype, {"count": 0, "bytes": 0})
            w["count"] += e["count"]
            w["bytes"] += e["bytes"]
        for kind, n in c["ops"].items():
            ops[kind] = ops.get(kind, 0) + n
    order = ["int16x8", "int8", "int8-dynamic", "float16", "float"]
    mode = min((c["mode"] for c in censuses), key=order.index, default="float")
    return {"weights": dict(sorted(weights.items())), "ops": dict(sorted(ops.items())), "mode": mode}
