"""Fail, naming the Keras layer, if the target op set lacks an operator or operator version the model uses."""

from __future__ import annotations

from compiler.ir.core import Model
from compiler.passes import PassContext, register


@register("check-opset", requires=())
def check_opset(model: Model, *, ctx: PassContext, target: str = "builtins") -> Model:
    """Check every operator of every subgraph (of every stage, if partitioned) against `target`.

    Targets: builtins | builtins-int8 | litert-2.x | tflite-X.Y | FILE.json, optionally `+select-tf`
    (see kernels/targets.py). All violations are raised together in one OpsetError.
    """
    from kernels.registration import ops_table
    from kernels.targets import check, load_target, raise_on_violations

    t = load_target(target)
    models = model.parts()
    raise_on_violations(check(models, t, staged=model.stages is not None), t)
    table = ops_table(models)
    ctx.note("check-opset", "target", t.name)
    ctx.note("check-opset", "ops", [f"{e['op']} v{e['version']}" for e in table["union"]])
    return model
