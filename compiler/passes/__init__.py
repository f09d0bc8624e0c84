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


@dataclass
class PassContext:
    """What a pass may need beyond the IR: the source (for calibration data, Keras layer names) and a report."""

    source: Any = None  # compiler.frontend.Source, or None in unit tests
    report: dict[str, Any] = field(default_factory=dict)  # pass name -> JSON-able findings for report.json

    def note(self, pass_name: str, key: str, value: Any) -> None:
        self.report.setdefault(pass_name, {})[key] = value


def register(name: str):
    def wrap(fn: Callable) -> Callable:
        if name in PASSES:
            raise RuntimeError(f"pass {name!r} registered twice")
        fn.pass_name = name
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
