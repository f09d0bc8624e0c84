"""Cut the main subgraph into sequential stages (contiguous operator ranges) with explicit handoff tensors.

Modes (exactly one): `stages=N` (N stages balanced by estimated peak memory), `budget=SIZE` (fewest
stages each within SIZE), `cuts=a,b` (after the named Keras layers or tensors), `auto` (one stage per
independent input branch, then the merge and head). Sets `model.stages` to standalone stage Models:
each holds only its operators, their tensors and buffers, and the control-flow subgraphs they call.
"""

from __future__ import annotations

import bisect
import copy
import difflib
import re

import numpy as np

from ai_edge_litert import schema_py_generated as schema

from compiler.errors import PartitionError
from compiler.ir import Model, Operator, Subgraph, Tensor
from compiler.ir.layers import layer_of_name, layer_of_op
from compiler.handoff import constant_derived, holds_state, is_stateful
from compiler.memory import INTERPRETER_OVERHEAD, PROCESS_BASELINE, Estimator, _scratch
from compiler.passes import PassContext, register

OP = schema.BuiltinOperator

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
    """A size at a resolution that tells two nearby sizes apart (bytes under 1 KiB, KiB under 1 MiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.{1 if n % scale else 0}f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


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

    Returns (order, group of each op in `order`, group labels). An op belongs to input i's branch if the
    only model input it depends on is i; ops depending on several inputs (the merge and all after it)
    form the last group; ops depending on no input go to the first group that consumes them (a CALL_ONCE
    initializer, which nothing consumes, goes with the first stateful op)."""
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
            group[i] = min(gs) if gs else None
    stateful = [g for op, g in zip(ops, group) if g is not None and is_stateful(op)]
    group = [g if g is not None else (min(stateful) if stateful else rest) for g in group]
    order, groups, labels = [], [], []
    for g in range(n_in + 1):
        members = [op for op, gi in zip(ops, group) if gi == g]
        order.extend(members)
        groups.extend([g] * len(members))
        labels.append(f"branch of {main.inputs[g].name}" if g < n_in else "merge and head")
    return order, groups, labels


# ----------------------------------------------------------------------------------------- schedule

class Schedule:
    """What the cuts index into: the main subgraph's operators without the constant-derived ones, which
    each stage recomputes in front of their consumers (a float16 weight's DEQUANTIZE sits in the stage of
    the conv that reads it, so no weight is ever handed off), the cut positions that are forbidden (they
    would hand off a resource handle or split the operators sharing resource variables), and one memory
    estimator over all of it."""

    def __init__(self, model: Model, use_xnnpack: bool = True):
        main = model.main
        derived = constant_derived(main)
        self.model = model
        self.ops = _initializers_first_use([op for op in main.operators if id(op) not in derived])
        writer = {id(t): op for op in main.operators if id(op) in derived for t in op.outputs if t is not None}
        pos = {id(op): i for i, op in enumerate(main.operators)}
        prelude: dict[int, list[Operator]] = {}
        for op in self.ops:
            chain: dict[int, Operator] = {}
            stack = [t for t in (*op.inputs, *op.intermediates) if t is not None]
            while stack:
                src = writer.get(id(stack.pop()))
                if src is not None and id(src) not in chain:
                    chain[id(src)] = src
                    stack.extend(t for t in src.inputs if t is not None)
            if chain:
                prelude[id(op)] = sorted(chain.values(), key=lambda o: pos[id(o)])
        self.estimator = Estimator(model, use_xnnpack=use_xnnpack, ops=self.ops, prelude=prelude)
        self.live = self.estimator.live
        self.forbidden = self.live.forbidden_cuts()
        self.crossing = self.live.crossing()

    def allowed(self) -> list[int]:
        return [c for c in range(1, len(self.ops)) if c not in self.forbidden]

    def fast_cost(self, a: int, b: int) -> int:
        """An O(1) approximation of `cost` from prefix sums of per-op costs (weights, packed copies,
        loop arenas) plus the range's largest live activation bytes (a sparse-table maximum), for
        searches that try thousands of ranges (stages=N on full Contect: 1,284 operators)."""
        if not hasattr(self, "_prefix"):
            self._build_prefix()
        k = (b - a).bit_length() - 1
        live = max(self._rmq[k][a], self._rmq[k][b - (1 << k)])
        return (int(self._prefix[b] - self._prefix[a]) + live * self._live_factor + self._overhead
                + self.crossing[a] + self.crossing[b])

    def _build_prefix(self) -> None:
        est, n = self.estimator, len(self.ops)
        per_op = []
        for i in range(n):
            facts = [est.facts(op) for op in est.expand(i, i + 1)]
            per_op.append(sum(sum(f.buffers.values()) + f.packed + f.persistent + f.called_arena for f in facts))
        self._prefix = np.concatenate(([0], np.cumsum(per_op, dtype=np.int64)))
        diff = np.zeros(n + 1, np.int64)
        live = self.live
        for key, first in live.producer.items():
            last = min(live.last_use.get(key, first), n - 1)
            diff[max(first, 0)] += live.tensor[key].nbytes
            diff[last + 1] -= live.tensor[key].nbytes
        # Alive only during their op: kernel scratch (im2col, hybrid quantized copies) and the op's
        # recomputed constant-derived inputs (e.g. a DEQUANTIZEd float16 weight).
        level = np.cumsum(diff)[:n] + np.array(
            [_scratch(op, est.use_xnnpack) + sum(t.nbytes for p in est.prelude.get(id(op), ()) for t in p.outputs
                                                 if t is not None) for op in self.ops], np.int64)
        self._rmq = [level]
        while (1 << len(self._rmq)) <= n:
            prev, half = self._rmq[-1], 1 << (len(self._rmq) - 1)
            self._rmq.append(np.maximum(prev[:-half], prev[half:]))
        # XNNPACK's workspace holds about the delegated ops' arena again (see compiler/memory.py).
        self._live_factor = 2 if est.use_xnnpack else 1
        self._overhead = INTERPRETER_OVERHEAD[bool(est.use_xnnpack)]

    def cost(self, a: int, b: int) -> int:
        """What the run adds to the runtime's idle process while stage [a, b) is loaded: the stage's
        estimated peak above the idle process (the runtime imported, no model: what `make bench` measures
        as its baseline; the first interpreter's own pages count as added) plus the handoff arrays held
        meanwhile. Budgets count this,
        because the process baseline is the host's, not the model's (it moved 42.5 -> 51.7 MB between
        two bench runs on one machine), and an app's runtime has its own."""
        e = self.estimator.range(a, b)
        return e["peak"] - PROCESS_BASELINE + self.crossing[a] + self.crossing[b]


def _initializers_first_use(ops: list[Operator]) -> list[Operator]:
    """Move each CALL_ONCE (no data dependencies) to just before the first other stateful op, so the
    stateful span that must stay in one stage is as short as the model allows."""
    inits = [op for op in ops if op.builtin_code == OP.CALL_ONCE]
    rest = [op for op in ops if op.builtin_code != OP.CALL_ONCE]
    if not inits:
        return ops
    first = next((i for i, op in enumerate(rest) if is_stateful(op)), 0)
    return rest[:first] + inits + rest[first:]


# ----------------------------------------------------------------------------------------- stages

def build_stages(model: Model, cuts: list[int], sched: Schedule | None = None) -> list[Model]:
    """Standalone stage models for the main subgraph cut before each position in `cuts` (positions in
    `Schedule(model).ops`, the operators minus the constant-derived ones each stage recomputes)."""
    sched = sched or Schedule(model)
    main = model.main
    bad = sorted(set(cuts) & sched.forbidden)
    if bad:
        raise PartitionError(f"partition: cannot cut before operator #{bad[0]} {sched.ops[bad[0]].name}: a control-flow "
                             "result or resource handle would cross the cut, or a resource variable's initializer, "
                             "readers and writers would be split across stages")
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(sched.ops))), len(sched.ops)]
    stages = []
    for a, b in zip(bounds, bounds[1:]):
        ins, outs = sched.estimator.io(a, b)
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
        for op in sched.estimator.expand(a, b):
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

# A stage's cost is not monotone in its length: a longer stage may hold a smaller handoff at its end (a
# single conv hands off its big output, the conv and the pooling after it do not). So greedy filling
# does not stop at the first cut that fails: it takes the farthest cut that fits, trying only cuts whose
# fast estimate is within FAST_SLACK of the budget (the fast cost stays within [0.4x, 2.5x] of the
# exact one: test_fast_cost_tracks_the_exact_estimate).
FAST_SLACK = 2.5
MAX_TRIES = 200


def _greedy(sched: Schedule, budget: int, cost=None) -> list[int] | None:
    """Few cuts so every stage's cost fits `budget`, each stage ending at the farthest allowed cut that
    fits; None if no stage starting somewhere fits at all. `cost` defaults to the exact estimate."""
    exact = cost is None
    cost = cost or sched.cost
    n = len(sched.ops)
    stops = [*sched.allowed(), n]
    cuts, a = [], 0
    while a < n:
        cands = stops[bisect.bisect_right(stops, a):]
        if exact:
            cands = [b for b in cands if sched.fast_cost(a, b) <= FAST_SLACK * budget]
        b = next((b for b in reversed(cands) if cost(a, b) <= budget), None)
        if b is None:
            return None
        if b < n:
            cuts.append(b)
        a = b
    return cuts


def _units(sched: Schedule) -> list[tuple[int, int]]:
    """The smallest stages there can be: ranges between consecutive allowed cuts."""
    bounds = [0, *sched.allowed(), len(sched.ops)]
    return list(zip(bounds, bounds[1:]))


def _too_big(model: Model, sched: Schedule, budget: int) -> None:
    """Name the first place where no stage fits: the cheapest stage that could start there."""
    stops = [*sched.allowed(), len(sched.ops)]
    a = 0
    while a < len(sched.ops):
        later = stops[bisect.bisect_right(stops, a):]
        need, b = min((sched.cost(a, b), b) for b in sorted(later, key=lambda b: sched.fast_cost(a, b))[:MAX_TRIES])
        if need > budget:
            op = sched.ops[a]
            what = (f"operator #{a} {op.name} of Keras layer {layer_of_op(model, op, model.main)!r}" if b - a == 1 else
                    f"operators #{a}-#{b - 1} (the cheapest stage that can start at #{a})")
            raise PartitionError(f"partition: {what} alone needs an estimated {_mib(need)}, over the budget of "
                                 f"{_mib(budget)}; raise the budget or quantize the model")
        a = max(b2 for b2 in later if sched.cost(a, b2) <= budget)
    raise PartitionError(f"partition: no stage fits the budget of {_mib(budget)}")


# auto keeps a cut between branches only if merging its two neighbours would cost more than both
# AUTO_KEEP x the largest branch stage and the largest stage + AUTO_MIN_SAVING: a cut that does not
# lower the peak meaningfully only costs load time (on a 2 GB phone, saving less than 1 MiB is noise).
AUTO_KEEP = 1.10
AUTO_MIN_SAVING = 1 << 20


def _merge_cheap(sched: Schedule, cuts: list[int]) -> list[int]:
    """Drop each cut whose removal keeps every stage within the auto limit (see AUTO_KEEP)."""
    bounds = [0, *cuts, len(sched.ops)]
    largest = max(sched.cost(a, b) for a, b in zip(bounds, bounds[1:]))
    limit = max(AUTO_KEEP * largest, largest + AUTO_MIN_SAVING)
    kept, start = [], 0
    for c, end in zip(cuts, bounds[2:]):
        if sched.cost(start, end) > limit:
            kept.append(c)
            start = c
    return kept


def _balanced(sched: Schedule, n: int) -> list[int]:
    """N stages minimizing the largest stage cost: binary search on the budget with a greedy fill, on the
    fast prefix-sum cost (exact costs are computed for the chosen stages only)."""
    units = _units(sched)
    if n > len(units):
        raise PartitionError(f"partition: stages={n} but the main subgraph can be cut into at most {len(units)} "
                             "stages")
    cost = sched.fast_cost
    total = len(sched.ops)
    lo = 0  # costs are not monotone in a stage's length: a single unit may cost more than the optimum
    hi = cost(0, total)
    best = _greedy(sched, hi, cost) or []
    while lo < hi:
        mid = (lo + hi) // 2
        cuts = _greedy(sched, mid, cost)
        if cuts is not None and len(cuts) + 1 <= n:
            hi, best = mid, cuts
        else:
            lo = mid + 1
    cuts = _greedy(sched, hi, cost) or best
    # Fewer stages than asked: split the costliest stage at its most balanced allowed point until there are N.
    allowed = set(sched.allowed())
    while len(cuts) + 1 < n:
        bounds = [0, *cuts, total]
        spans = [(cost(a, b), a, b) for a, b in zip(bounds, bounds[1:])
                 if any(c in allowed for c in range(a + 1, b))]
        _, a, b = max(spans)
        c = min((c for c in range(a + 1, b) if c in allowed), key=lambda c: max(cost(a, c), cost(c, b)))
        cuts = sorted([*cuts, c])
    return _refine(sched, cuts)


def _refine(sched: Schedule, cuts: list[int], window: int = 8, rounds: int = 3) -> list[int]:
    """Correct the approximate search with exact costs: move each cut among the nearest allowed positions
    when that lowers the larger of its two neighbouring stages' exact cost."""
    allowed = sched.allowed()
    cuts = list(cuts)
    for _ in range(rounds):
        moved = False
        for k, c in enumerate(cuts):
            a = cuts[k - 1] if k else 0
            b = cuts[k + 1] if k + 1 < len(cuts) else len(sched.ops)
            i = bisect.bisect_left(allowed, c)
            near = [p for p in allowed[max(0, i - window):i + window + 1] if a < p < b]
            best = min(near, key=lambda p: (max(sched.cost(a, p), sched.cost(p, b)), p != c))
            if best != c:
                cuts[k], moved = best, True
        if not moved:
            break
    return cuts


def _named_cuts(model: Model, sched: Schedule, text: str) -> list[int]:
    ops = sched.ops
    names = [s.strip() for s in re.split(r"[,|]", text) if s.strip()]
    if not names:
        raise PartitionError("partition: cuts= is empty; name Keras layers or tensors, e.g. cuts=conv_3,dense_1")
    layers = set(model.keras_layers)
    last_of_layer: dict[str, int] = {}
    last_of_tensor: dict[str, int] = {}
    for i, op in enumerate(ops):
        last_of_layer[layer_of_op(model, op, model.main)] = i
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
        if cuts[-1] in sched.forbidden:
            raise PartitionError(f"partition: cannot cut after {name!r}: it lies inside the operators that share "
                                 "resource variables, which must stay in one stage")
    return sorted(set(c for c in cuts if 0 < c < len(ops)))


def _auto_groups(model: Model) -> tuple[dict[int, int], list[str]]:
    """Reorder the main subgraph branch by branch: (id(op) -> its branch group, group labels)."""
    order, groups, labels = branch_order(model)
    model.main.operators = order
    group_of = {id(op): g for op, g in zip(order, groups)}
    return group_of, labels


@register("partition", requires=("unpartitioned",), ensures=("partitioned", "handoff-activations-only"))
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
    written = {id(t) for op in main.operators for t in op.outputs if t is not None}
    for t in main.outputs:
        if id(t) not in written:
            what = "a constant" if t.is_constant else "not computed by any operator (a model input passed through?)"
            raise PartitionError(f"partition: model output {t.name!r} is {what}; a staged build cannot hand it "
                                 "over: compile without partition")
    _ensure_topological(main)
    _unique_names(main)
    group_of = None
    if auto:
        group_of, labels = _auto_groups(model)
        ctx.note("partition", "groups", labels)
    sched = Schedule(model, use_xnnpack=xnnpack)
    if auto:
        groups = [group_of[id(op)] for op in sched.ops]
        wanted = [i for i in range(1, len(groups)) if groups[i] != groups[i - 1]]
        cut_at = [c for c in wanted if c not in sched.forbidden]
        if len(cut_at) < len(wanted):
            ctx.note("partition", "merged_groups", "branches sharing resource variables stay in one stage")
        cut_at = _merge_cheap(sched, cut_at)
        ctx.note("partition", "auto_rule", f"cut between input branches; a cut is kept only if dropping it would "
                                           f"raise the estimated peak above the baseline by more than "
                                           f"{AUTO_KEEP - 1:.0%} and by more than {_mib(AUTO_MIN_SAVING)}")
        mode = "auto"
    elif stages:
        cut_at, mode = _balanced(sched, stages), f"stages={stages}"
    elif limit is not None:
        cut_at = _greedy(sched, limit)
        if cut_at is None:
            _too_big(model, sched, limit)
        mode = f"budget={budget}"
    else:
        cut_at, mode = _named_cuts(model, sched, cuts), f"cuts={cuts}"
    bounds = [0, *cut_at, len(sched.ops)]
    rows = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        e = sched.estimator.range(a, b)
        held = sched.crossing[a] + sched.crossing[b]
        row = {"stage": k, "ops": b - a, "first_op": a, "weights": e["weights"], "arena": e["arena"],
               "delegate": e["delegate"], "peak": e["peak"], "handoff_bound": held, "cost": sched.cost(a, b)}
        if limit is not None and row["cost"] > limit:
            row["over_budget"] = True  # only in auto mode: branches are not split
        rows.append(row)
    model.stages = build_stages(model, cut_at, sched)
    ctx.note("partition", "mode", mode)
    ctx.note("partition", "stages", len(model.stages))
    ctx.note("partition", "xnnpack", xnnpack)
    ctx.note("partition", "recomputed_constant_ops", sum(len(s.main.operators) for s in model.stages) - len(sched.ops))
    resident = [k for k, s in enumerate(model.stages) if holds_state(s)]
    if resident:
        ctx.note("partition", "resident_stages", resident)
    if limit is not None:
        ctx.note("partition", "budget", limit)
        over = [r["stage"] for r in rows if r.get("over_budget")]
        if over:
            ctx.note("partition", "over_budget", f"stages {over} exceed the budget; auto mode does not split branches")
    ctx.note("partition", "per_stage", rows)
    return model
