"""Pass registry. A pass is a function `(model: Model, *, ctx: PassContext, **options) -> Model`,
registered under its pipeline name with `@register("name")`. Options are keyword-only
arguments with defaults; the pipeline text `name{key=value}` maps straight onto them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

PASSES: dict[str, Callable] = {}


class ContractError(RuntimeError):
    """A pass returned a model that breaks what it ensures: a bug in tflc, not a user error."""


@dataclass
class PassContext:
    """What a pass may need beyond the IR: the source (for calibration data, Keras layer names) and a report."""

    source: Any = None  # compiler.frontend.Source, or None in unit tests
    report: dict[str, Any] = field(default_factory=dict)  # pass name -> JSON-able findings for report.json
    check_ir: bool = False  # re-read the IR through the validating reader after every pass (tests)

    def note(self, pass_name: str, key: str, value: Any) -> None:
        self.report.setdefault(pass_name, {})[key] = value


def _unpartitioned(model) -> str | None:
    return None if model.stages is None else "the model is already partitioned"


def _partitioned(model) -> str | None:
    return None if model.stages else "the model has no stages"


def _handoff_activations_only(model) -> str | None:
    """No stage hands off a resource/variant tensor or a value computed from constants alone."""
    from compiler.handoff import constant_derived, numeric

    parts = model.parts()
    for k, st in enumerate(parts):
        for t in (*st.inputs, *st.outputs):
            if not numeric(t):
                return f"stage {k} hands off {t.name!r}, a non-numeric tensor"
        later = {t.name for s in parts[k + 1:] for t in s.inputs}
        derived = constant_derived(st.main, outputs_too=True)
        for op in st.main.operators:
            handed = [t for t in op.outputs if t is not None and t.name in later and any(t is o for o in st.outputs)]
            if id(op) in derived and handed:
                return f"stage {k} hands off {handed[0].name!r}, computed from constants alone by {op.name}"
    return None


# What a pass may require of the model it gets, and ensure of the one it returns. The pass manager
# checks both (compiler/pipeline.py), so a broken invariant fails at the pass that broke it.
CONDITIONS: dict[str, Callable[[Any], str | None]] = {
    "unpartitioned": _unpartitioned,
    "partitioned": _partitioned,
    "handoff-activations-only": _handoff_activations_only,
}


def register(name: str, *, requires: tuple[str, ...] = ("unpartitioned",), ensures: tuple[str, ...] = ()):
    """Register a pass. By default a pass changes the graph and so requires an unpartitioned model:
    partition is terminal among the passes that change the graph; analyses pass `requires=()`."""
    unknown = [c for c in (*requires, *ensures) if c not in CONDITIONS]
    if unknown:
        raise RuntimeError(f"pass {name!r}: unknown conditions {unknown}")

    def wrap(fn: Callable) -> Callable:
        if name in PASSES:
            raise RuntimeError(f"pass {name!r} registered twice")
        fn.pass_name = name
        fn.requires = tuple(requires)
        fn.ensures = tuple(ensures)
        PASSES[name] = fn
        return fn

    return wrap


def options_of(fn: Callable) -> dict[str, inspect.Parameter]:
    """The pass's options: its keyword-only parameters other than `ctx`."""
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "ctx"}


def load_all() -> dict[str, Callable]:
    """Import every module in this package so that its passes register themselves."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.endswith("_test"):
            importlib.import_module(f"{__name__}.{info.name}")
    return PASSES
