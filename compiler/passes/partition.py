"""Cut the main subgraph into sequential stages (contiguous operator ranges) with explicit handoff tensors.

Modes (exactly one): `stages=N` (N stages balanced by estimated peak memory), `budget=SIZE` (fewest
stages each within SIZE), `cuts=a,b` (after the named Keras layers or tensors), `auto` (one stage per
independent input branch, then the merge and head). Sets `model.stages` to standalone stage Models:
each holds only its operators, their tensors and buffers, and the control-flow subgraphs they call.
"""

from __future__ import annotations

import copy
import difflib
import re

from compiler.errors import PartitionError
from compiler.ir import Model, Operator, Subgraph, Tensor
from compiler.ir.layers import layer_of_name, layer_of_op
from compiler.memory import Estimator, estimate_run
from compiler.passes import PassContext, register

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}
MODES = "stages=N, budget=SIZE (e.g. 150MiB), cuts=LAYER[|LAYER...], or auto"


def parse_size(text: str) -> int:
    """'150MiB' / '1GiB' / '500MB' / '1.5G' / '123456' → bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise PartitionError(f"partition: budget={text!r} is not a size; write e.g. 150MiB, 1GiB or 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------------------- order

def _ensure_topological(main: Subgraph) -> None:
    """Keep the operator list if it is already a valid execution order; else sort it stably."""
    produced = {id(t) for t in main.inputs}
    writer = main.producers()
    ok = True
    for op in main.operators:
        if any(t is not None and id(t) in writer and id(t) not in produced for t in op.inputs):
            ok = False
            break
        produced.update(id(t) for t in op.outputs if t is not None)
    if ok:
        return
    remaining = list(main.operators)
    done: set[int] = {id(t) for t in main.inputs}
    order: list[Operator] = []
    while remaining:
        for i, op in enumerate(remaining):
            if all(t is None or id(t) not in writer or id(t) in done for t in op.inputs):
                order.append(op)
                done.update(id(t) for t in op.outputs if t is not None)
                del remaining[i]
                break
        else:
            raise PartitionError("partition: the main subgraph has a cycle; cannot order its operators")
    main.operators = order


def _unique_names(main: Subgraph) -> None:
    """Handoff tensors are matched by name: make activation names unique (model I/O names stay)."""
    fixed = {id(t) for t in (*main.inputs, *main.outputs)}
    seen = {t.name for t in (*main.inputs, *main.outputs)}
    tensors = main.referenced_tensors()
    for t in tensors:
        if id(t) in fixed or t.is_constant:
            continue
        if t.name in seen:
            base, i = t.name, 1
            while f"{base}_{i}" in seen:
                i += 1
            t.name = f"{base}_{i}"
        seen.add(t.name)


def branch_order(model: Model) -> tuple[list[Operator], list[int], list[str]]:
    """Operators reordered so each model input's independent branch is contiguous, then the rest.

    Returns (order, group sizes, group labels). An op belongs to input i's branch if the only model
    input it depends on is i; ops depending on several inputs (the merge and all after it) form the
    last group; ops depending on no input go to the first group that consumes them."""
    main = model.main
    ops = main.operators
    dep: dict[int, frozenset[int]] = {id(t): frozenset([i]) for i, t in enumerate(main.inputs)}
    op_dep = []
    for op in ops:
        d = frozenset().union(*(dep.get(id(t), frozenset()) for t in op.inputs if t is not None))
        op_dep.append(d)
        for t in op.outputs:
            if t is not None:
                dep[id(t)] = d
    n_in = len(main.inputs)
    rest = n_in
    group = [next(iter(d)) if len(d) == 1 else (rest if d else None) for d in op_dep]
    consumers = main.consumers()
    pos = {id(op): i for i, op in enumerate(ops)}
    for i in range(len(ops) - 1, -1, -1):  # input-free ops join their earliest-group consumer
        if group[i] is None:
            gs = [group[pos[id(c)]] for t in ops[i].outputs if t is not None for c in consumers.get(id(t), [])]
            gs = [g for g in gs if g is not None]
            group[i] = min(gs) if gs else rest
    order, sizes, labels = [], [], []
    for g in range(n_in + 1):
        members = [op for op, gi in zip(ops, group) if gi == g]
        if members:
            order.extend(members)
            sizes.append(len(members))
            labels.append(f"branch of {main.inputs[g].name}" if g < n_in else "merge and head")
    return order, sizes, labels


# ----------------------------------------------------------------------------------------- stages

def build_stages(model: Model, cuts: list[int]) -> list[Model]:
    """Standalone stage models for the main subgraph cut before each operator position in `cuts`."""
    main = model.main
    ops = main.operators
    est = Estimator(model, ops=ops)
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(ops))), len(ops)]
    stages = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        ins, outs = est.io(a, b)
        # Activations get per-stage copies (so stages are independent objects); constants and the
        # called subgraphs are shared read-only with the parent model.
        clones: dict[int, Tensor] = {}

        def mine(t: Tensor | None) -> Tensor | None:
            if t is None or t.is_constant:
                return t
            if id(t) not in clones:
                clones[id(t)] = copy.copy(t)
            return clones[id(t)]

        stage_ops = []
        for op in ops[a:b]:
            new = copy.copy(op)
            new.inputs = [mine(t) for t in op.inputs]
            new.outputs = [mine(t) for t in op.outputs]
            new.intermediates = [mine(t) for t in op.intermediates]
            new.subgraph_refs = dict(op.subgraph_refs)
            stage_ops.append(new)
        sg = Subgraph(name=main.name or "main", tensors=[], inputs=[mine(t) for t in ins],
                      outputs=[mine(t) for t in outs], operators=stage_ops)
        sg.tensors = sg.referenced_tensors()
        called = [s for op in stage_ops for s in op.called_subgraphs()]
        stage = Model(subgraphs=[sg], version=model.version, description=model.description,
                      metadata=list(model.metadata), keras_layers=model.keras_layers)
        stage.subgraphs = [sg] + [s for s in stage.reachable_subgraphs(called) if s is not sg] if called else [sg]
        stages.append(stage)
    return stages


# ----------------------------------------------------------------------------------------- modes

def crossing_bytes(model: Model) -> list[int]:
    """c[i] = bytes of activations alive across a cut before main operator i (c[0]: the model inputs,
    c[n]: the model outputs). During a stage [a, b) the runtime holds at most c[a] + c[b] of handoff
    arrays (its inputs and whatever passes through, then its copied-out outputs)."""
    ops = model.main.operators
    n = len(ops)
    first: dict[int, int] = {id(t): -1 for t in model.main.inputs}
    last: dict[int, int] = {id(t): n for t in model.main.outputs}
    size: dict[int, int] = {}
    for i, op in enumerate(ops):
        for t in op.outputs:
            if t is not None and not t.is_constant:
                first.setdefault(id(t), i)
                size[id(t)] = t.nbytes
        for t in (*op.inputs, *op.intermediates):
            if t is not None and not t.is_constant:
                last[id(t)] = max(last.get(id(t), i), i)
                size[id(t)] = t.nbytes
    diff = [0] * (n + 2)
    for key, p in first.items():
        end = last.get(key, p)
        if end > p:  # alive across cuts p+1 .. end
            diff[p + 1] += size.get(key, 0)
            diff[end + 1] -= size.get(key, 0)
    out, acc = [], 0
    for i in range(n + 1):
        acc += diff[i]
        out.append(acc)
    return out


def _stage_cost(est: Estimator, crossing: list[int]):
    """Estimated peak of the run while stage [a, b) is loaded: its own peak plus held handoff arrays."""
    return lambda a, b: est.range(a, b)["peak"] + crossing[a] + crossing[b]


def _greedy(cost, n_ops: int, budget: int) -> list[int] | None:
    """Fewest cuts so every range's cost fits `budget` (extend each stage while it fits); None if an op alone does not."""
    cuts, a = [], 0
    while a < n_ops:
        if cost(a, a + 1) > budget:
            return None
        b = a + 1
        while b < n_ops and cost(a, b + 1) <= budget:
            b += 1
        if b < n_ops:
            cuts.append(b)
        a = b
    return cuts


def _too_big_op(model: Model, cost, n_ops: int, budget: int) -> None:
    for i in range(n_ops):
        need = cost(i, i + 1)
        if need > budget:
            op = model.main.operators[i]
            raise PartitionError(f"partition: operator #{i} {op.name} of Keras layer {layer_of_op(model, op, model.main)!r} "
                                 f"alone needs an estimated {_mib(need)}, over the budget of {_mib(budget)}; "
                                 "raise the budget or quantize the model")


def _balanced(model: Model, cost, n: int) -> list[int]:
    """N stages minimizing the largest stage cost: binary search on the budget with a greedy fill."""
    total = len(model.main.operators)
    if n > total:
        raise PartitionError(f"partition: stages={n} but the main subgraph has only {total} operators")
    lo = max(cost(i, i + 1) for i in range(total))
    hi = cost(0, total)
    best = _greedy(cost, total, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        cuts = _greedy(cost, total, mid)
        if cuts is not None and len(cuts) + 1 <= n:
            hi, best = mid, cuts
        else:
            lo = mid + 1
    cuts = _greedy(cost, total, hi) or best or []
    # Fewer stages than asked: split the costliest stage at its most balanced point until there are N.
    while len(cuts) + 1 < n:
        bounds = [0, *cuts, total]
        spans = [(cost(a, b), a, b) for a, b in zip(bounds, bounds[1:]) if b - a > 1]
        _, a, b = max(spans)
        c = min(range(a + 1, b), key=lambda c: max(cost(a, c), cost(c, b)))
        cuts = sorted([*cuts, c])
    return cuts


def _named_cuts(model: Model, text: str) -> list[int]:
    main = model.main
    ops = main.operators
    names = [s.strip() for s in re.split(r"[,|]", text) if s.strip()]
    if not names:
        raise PartitionError("partition: cuts= is empty; name Keras layers or tensors, e.g. cuts=conv_3,dense_1")
    layers = set(model.keras_layers)
    last_of_layer: dict[str, int] = {}
    last_of_tensor: dict[str, int] = {}
    for i, op in enumerate(ops):
        last_of_layer[layer_of_op(model, op, main)] = i
        # Fused ops carry several layers in their output names (conv;batchnorm;relu): each counts.
        for t in op.outputs:
            for part in (t.name.split(";") if t is not None and model.keras_layers else []):
                hit = layer_of_name(part, layers)
                if hit:
                    last_of_layer[hit] = i
        for t in op.outputs:
            if t is not None:
                last_of_tensor[t.name] = i
    cuts = []
    for name in names:
        if name in last_of_layer:
            cuts.append(last_of_layer[name] + 1)
        elif name in last_of_tensor:
            cuts.append(last_of_tensor[name] + 1)
        else:
            pool = list(dict.fromkeys([*last_of_layer, *model.keras_layers, *last_of_tensor]))
            close = difflib.get_close_matches(name, pool, n=4, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else f"; layers include: {', '.join(list(last_of_layer)[:6])}"
            raise PartitionError(f"partition: cut {name!r} is neither a Keras layer nor a tensor of the main subgraph{hint}")
    return sorted(set(c for c in cuts if 0 < c < len(ops)))


@register("partition")
def partition(model: Model, *, ctx: PassContext, stages: int = 0, budget: str | None = None, cuts: str | None = None,
              auto: bool = False, xnnpack: bool = True) -> Model:
    """Cut the main subgraph into sequential stages (stages=N | budget=SIZE | cuts=names | auto)."""
    chosen = [m for m, on in (("stages", stages), ("budget", budget is not None), ("cuts", cuts is not None),
                              ("auto", auto)) if on]
    if stages < 0:
        raise PartitionError(f"partition: stages={stages} must be a positive number of stages")
    # auto may carry a budget: branches over it are reported, not split.
    if not chosen or (len(chosen) > 1 and sorted(chosen) != ["auto", "budget"]):
        raise PartitionError(f"partition: choose exactly one mode: {MODES}" +
                             (f" (got {', '.join(chosen)})" if chosen else ""))
    limit = parse_size(budget) if budget is not None else None
    main = model.main
    _ensure_topological(main)
    _unique_names(main)
    notes: dict = {}
    if auto:
        order, sizes, labels = branch_order(model)
        main.operators = order
        cut_at, acc = [], 0
        for s in sizes[:-1]:
            acc += s
            cut_at.append(acc)
        notes["groups"] = labels
        mode = "auto"
    else:
        est = Estimator(model, use_xnnpack=xnnpack)
        cost = _stage_cost(est, crossing_bytes(model))
        n_ops = len(main.operators)
        if stages:
            cut_at, mode = _balanced(model, cost, stages), f"stages={stages}"
        elif limit is not None:
            cut_at = _greedy(cost, n_ops, limit)
            if cut_at is None:
                _too_big_op(model, cost, n_ops, limit)
            mode = f"budget={budget}"
        else:
            cut_at, mode = _named_cuts(model, cuts), f"cuts={cuts}"
    est = Estimator(model, use_xnnpack=xnnpack)
    crossing = crossing_bytes(model)
    bounds = [0, *cut_at, len(main.operators)]
    rows = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        e = est.range(a, b)
        held = crossing[a] + crossing[b]
        row = {"stage": k, "ops": b - a, "first_op": a, "weights": e["weights"], "arena": e["arena"],
               "delegate": e["delegate"], "peak": e["peak"], "handoff_bound": held}
        if limit is not None and e["peak"] + held > limit:
            row["over_budget"] = True  # only in auto mode: branches are not split
        rows.append(row)
    model.stages = build_stages(model, cut_at)
    run = estimate_run(model.stages, use_xnnpack=xnnpack)
    ctx.note("partition", "mode", mode)
    ctx.note("partition", "stages", len(model.stages))
    ctx.note("partition", "xnnpack", xnnpack)
    if limit is not None:
        ctx.note("partition", "budget", limit)
        over = [r["stage"] for r in rows if r.get("over_budget")]
        if over:
            ctx.note("partition", "over_budget", f"stages {over} exceed the budget; auto mode does not split branches")
    for key, value in notes.items():
        ctx.note("partition", key, value)
    ctx.note("partition", "per_stage", rows)
    ctx.note("partition", "estimated_run_peak", run["peak"])
    return model
