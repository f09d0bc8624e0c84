"""The handoff between stages, computed in one place.

- `Liveness`: over an ordered list of main-subgraph operators, where each activation is written and last
  read. It answers which activations a contiguous range [a, b) takes in and gives out (`io`), how many bytes
  are alive across each cut (`crossing`), and which cuts would hand off a tensor that must never cross one
  (`forbidden_cuts`). The partitioner and the memory estimate use it while searching for cuts.
- `plan`: for stages already cut, where each stage input comes from (a model input or an earlier stage's
  output, matched by name), where each model output is produced, after which stage each handoff tensor can be
  dropped, and the bytes the runtime holds while each stage runs. The memory estimate and the build writer use
  it; the runtime reads what the writer wrote (manifest `source` and `drop_after`).

Only activations of numeric dtypes may cross a cut: a resource or variant handle means nothing outside the
interpreter that made it, and a tensor computed from constants alone (a float16 weight's DEQUANTIZE, a sparse
weight's DENSIFY) belongs in the stage of its consumer, not in the handoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ai_edge_litert import schema_py_generated as schema

from compiler.ir import Operator, Subgraph, Tensor
from compiler.ir.core import numpy_dtype, reachable_subgraphs

OP = schema.BuiltinOperator
# Operators whose effect is on resource variables rather than (only) on their outputs.
STATEFUL_OPS = frozenset({OP.VAR_HANDLE, OP.READ_VARIABLE, OP.ASSIGN_VARIABLE, OP.CALL_ONCE})


def numeric(t: Tensor) -> bool:
    """A tensor whose values a runtime can copy between interpreters (not resource, variant or string)."""
    return numpy_dtype(t.type) is not None


def activation(t: Tensor | None) -> bool:
    # Variable tensors (fused LSTM states) belong to the op that reads and writes them, like its weights.
    return t is not None and not t.is_constant and not t.is_variable


def is_stateful(op: Operator) -> bool:
    """The op reads or writes resource variables, itself or in a subgraph it calls."""
    ops = [op] + [o for sg in reachable_subgraphs(op.called_subgraphs()) for o in sg.operators]
    return any(o.builtin_code in STATEFUL_OPS or any(not numeric(t) for t in o.tensors()) for o in ops)


def holds_state(model) -> bool:
    """The model (or stage) holds resource variables: a runtime must keep it loaded across calls, or the
    variables' state is lost between them (the manifest's `resident`)."""
    return any(is_stateful(op) for op in model.main.operators)


def constant_derived(sg: Subgraph, outputs_too: bool = False) -> set[int]:
    """ids of the operators of `sg` whose inputs are all constants or outputs of such operators (e.g.
    DEQUANTIZE of a float16 weight, DENSIFY of a sparse one), computed in the subgraph's order. Ops with
    no inputs, stateful ops and control flow are never counted, nor (unless `outputs_too`) ops that
    write a subgraph output: a model output must be produced by some stage."""
    outputs = set() if outputs_too else {id(t) for t in sg.outputs}
    derived_tensors: set[int] = set()
    derived: set[int] = set()
    for op in sg.operators:
        ins = [t for t in op.inputs if t is not None]
        if (not ins or op.called_subgraphs() or op.builtin_code in STATEFUL_OPS
                or any(t is not None and id(t) in outputs for t in op.outputs)):
            continue
        if all(t.is_constant or id(t) in derived_tensors for t in ins):
            derived.add(id(op))
            derived_tensors.update(id(t) for t in op.outputs if t is not None)
    return derived


class Liveness:
    """Where each activation of `ops` (a valid execution order of a subgraph's operators) is written and
    last read. `internal` holds ids of tensors that never cross a cut because every stage that reads them
    computes them itself (the outputs of constant-derived operators)."""

    def __init__(self, ops: Sequence[Operator], inputs: Sequence[Tensor], outputs: Sequence[Tensor],
                 internal: set[int] = frozenset()):
        self.ops = list(ops)
        self.internal = set(internal)
        n = len(self.ops)
        self.producer: dict[int, int] = {id(t): -1 for t in inputs}
        self.last_use: dict[int, int] = {}
        self.tensor: dict[int, Tensor] = {id(t): t for t in inputs}
        for i, op in enumerate(self.ops):
            for t in op.outputs:
                if self._tracked(t):
                    self.producer.setdefault(id(t), i)
                    self.tensor[id(t)] = t
            for t in (*op.inputs, *op.intermediates):
                if self._tracked(t):
                    self.last_use[id(t)] = i
                    self.tensor[id(t)] = t
        self.model_outputs = {id(t) for t in outputs}
        for t in outputs:
            self.last_use[id(t)] = n
            self.tensor[id(t)] = t

    def _tracked(self, t: Tensor | None) -> bool:
        # Variable tensors (a fused LSTM's state) belong to the op that reads and writes them: each stage
        # holding that op allocates its own, so they are never handed off.
        return activation(t) and not t.is_variable and id(t) not in self.internal

    def io(self, a: int, b: int) -> tuple[list[Tensor], list[Tensor]]:
        """Inputs of the range [a, b) (activations read there, written before a) and its outputs
        (written there, read at or after b, or model outputs), each in first-use order."""
        ins, outs, seen = [], [], set()
        for op in self.ops[a:b]:
            for t in (*op.inputs, *op.intermediates):
                if self._tracked(t) and id(t) not in seen and self.producer.get(id(t), -1) < a:
                    seen.add(id(t))
                    ins.append(t)
        for op in self.ops[a:b]:
            for t in op.outputs:
                if self._tracked(t) and id(t) not in seen and self.last_use.get(id(t), -1) >= b:
                    seen.add(id(t))
                    outs.append(t)
        return ins, outs

    def _spans(self):
        """(tensor, first cut it crosses, last cut it crosses) for every activation alive across a cut."""
        for key, p in self.producer.items():
            end = self.last_use.get(key, p)
            if end > p:
                yield self.tensor[key], p + 1, end

    def crossing(self) -> list[int]:
        """c[i] = bytes of activations alive across the cut before operator i (c[0]: the model inputs,
        c[n]: the model outputs). During a stage [a, b) the runtime holds at most c[a] + c[b] of handoff
        arrays (its inputs and whatever passes through, then its copied-out outputs)."""
        n = len(self.ops)
        diff = [0] * (n + 2)
        for t, first, last in self._spans():
            diff[first] += t.nbytes
            diff[min(last, n) + 1] -= t.nbytes
        out, acc = [], 0
        for i in range(n + 1):
            acc += diff[i]
            out.append(acc)
        return out

    def forbidden_cuts(self) -> set[int]:
        """Cut positions that would hand off a non-numeric tensor or a control-flow op's result, or separate
        the operators that share resource variables (the CALL_ONCE initializer, VAR_HANDLEs, readers and
        writers: variables live in one interpreter, so they must all run in the same stage)."""
        bad: set[int] = set()
        control = {id(t) for op in self.ops if op.called_subgraphs() for t in op.outputs if t is not None}
        for t, first, last in self._spans():
            # LiteRT 2.3's CompiledModel (the C, Kotlin and Swift API) never copies a WHILE/IF result into
            # a subgraph output buffer, so such a result must not leave its stage either.
            if not numeric(t) or id(t) in control:
                bad.update(range(first, last + 1))
        stateful = [i for i, op in enumerate(self.ops) if is_stateful(op)]
        if stateful:
            bad.update(range(stateful[0] + 1, stateful[-1] + 1))
        return {c for c in bad if 0 < c < len(self.ops)}


# ----------------------------------------------------------------------------------------- plan

@dataclass
class Handoff:
    name: str
    bytes: int
    produced_by: int | None  # None: a model input
    consumed_by: list[int] = field(default_factory=list)
    drop_after: int | None = None  # None: kept to the end (a model output)


@dataclass
class Plan:
    stage_sources: list[list[dict]]  # per stage input: {"model_input": name} or {"stage": k, "output": name}
    output_sources: list[dict]  # per model output: {"stage": k, "output": name}
    handoff: list[Handoff]
    held: list[int]  # bytes of handoff arrays the runtime holds while stage k runs

    def handoff_json(self) -> list[dict]:
        return [{"name": h.name, "produced_by": h.produced_by, "consumed_by": h.consumed_by,
                 "drop_after": h.drop_after} for h in self.handoff]


class PlanError(ValueError):
    """Stages whose inputs are not produced by the model or an earlier stage (a tflc bug, not user input)."""


def plan(stages: Sequence, model_inputs: Sequence[Tensor] | None = None,
         model_outputs: Sequence[Tensor] | None = None) -> Plan:
    """The handoff contract of `stages` (Models with named inputs/outputs, in execution order): a stage input
    takes its value from the latest earlier stage output of the same name, else from the model input.
    Without model inputs/outputs (a bare list of stages), every stage input no earlier stage produces is
    a model input and the last stage's outputs are the model outputs."""
    if model_inputs is None:
        seen: set[str] = set()
        model_inputs = []
        for st in stages:
            model_inputs += [t for t in st.inputs if t.name not in seen]
            seen.update(t.name for t in (*st.inputs, *st.outputs))
    if model_outputs is None:
        model_outputs = stages[-1].outputs if stages else []
    input_names = {t.name for t in model_inputs}
    out_names = {t.name for t in model_outputs}
    produced: dict[str, int] = {}
    entries: dict[str, Handoff] = {}
    stage_sources: list[list[dict]] = []
    for k, st in enumerate(stages):
        sources = []
        for t in st.inputs:
            if t.name in produced:
                src = {"stage": produced[t.name], "output": t.name}
            elif t.name in input_names:
                src = {"model_input": t.name}
            else:
                raise PlanError(f"stage {k} input {t.name!r} is neither a model input nor an output of an earlier stage")
            entry = entries.setdefault(t.name, Handoff(t.name, t.nbytes, produced.get(t.name)))
            entry.consumed_by.append(k)
            sources.append(src)
        stage_sources.append(sources)
        for t in st.outputs:
            produced[t.name] = k
            entries.setdefault(t.name, Handoff(t.name, t.nbytes, k)).produced_by = k
    output_sources = []
    for t in model_outputs:
        if t.name not in produced:
            raise PlanError(f"model output {t.name!r} is produced by no stage")
        output_sources.append({"stage": produced[t.name], "output": t.name})
    for h in entries.values():
        h.drop_after = None if h.name in out_names else max(h.consumed_by, default=h.produced_by)
    first = {h.name: (-1 if h.produced_by is None else h.produced_by) for h in entries.values()}
    held = [sum(h.bytes for h in entries.values() if first[h.name] <= k and (h.drop_after is None or k <= h.drop_after))
            for k in range(len(stages))]
    handoff = [h for h in entries.values() if h.consumed_by]
    return Plan(stage_sources, output_sources, handoff, held)
