"""Remove operators whose outputs reach no model output, then unreferenced tensors and subgraphs."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Model, Subgraph
from compiler.passes import PassContext, register

_OP = schema.BuiltinOperator
# Operators that matter for what they do, not for what they output.
_SIDE_EFFECTS = {_OP.ASSIGN_VARIABLE, _OP.CALL_ONCE}


def _strip_dead_ops(sg: Subgraph) -> int:
    live = {id(t) for t in sg.outputs}
    kept = []
    for op in reversed(sg.operators):
        if op.builtin_code in _SIDE_EFFECTS or any(t is not None and id(t) in live for t in op.outputs):
            kept.append(op)
            live.update(id(t) for t in op.inputs if t is not None)
    removed = len(sg.operators) - len(kept)
    sg.operators = kept[::-1]
    return removed


@register("strip-unused")
def strip_unused(model: Model, *, ctx: PassContext) -> Model:
    # Only the main subgraph is pruned by liveness: in a WHILE body every output is loop-carried.
    removed_ops = _strip_dead_ops(model.main)
    reachable = model.reachable_subgraphs()
    keep = {id(sg) for sg in reachable}
    removed_subgraphs = [sg.name for sg in model.subgraphs if id(sg) not in keep]
    model.subgraphs = [sg for sg in model.subgraphs if id(sg) in keep]
    model.signature_defs = [s for s in model.signature_defs if id(s.subgraph) in keep]
    removed_tensors = 0
    for sg in model.subgraphs:
        used = sg.referenced_tensors()
        removed_tensors += len(sg.tensors) - len(used)
        sg.tensors = used
    ctx.note("strip-unused", "removed_operators", removed_ops)
    ctx.note("strip-unused", "removed_tensors", removed_tensors)
    ctx.note("strip-unused", "removed_subgraphs", removed_subgraphs)
    return model
