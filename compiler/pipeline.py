"""Parse and run a pass pipeline: `strip-unused,dedupe-buffers,quantize{mode=int8-dynamic},partition{auto}`.

Option keys map to the pass's keyword-only parameters (dashes become underscores). A bare key
(`partition{auto}`) means `auto=True`. Values are converted to the type of the parameter's default.
Inside braces, `|` and `,` may both appear in values: `keep-float=lstm_.*|dense_1,mode=int8`
splits at commas only when the text after the comma looks like `key=` or a bare known key.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from compiler.errors import PipelineError, TflcError
from compiler.ir import Model
from compiler.passes import CONDITIONS, ContractError, PassContext, load_all, options_of


@dataclass
class Step:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '}}' in pipeline {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise PipelineError(f"unbalanced '{{' in pipeline {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _convert(value: str, param: inspect.Parameter, pass_name: str):
    default = param.default
    key = param.name.replace("_", "-")
    if isinstance(default, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise PipelineError(f"{pass_name}: option {key} expects true/false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise PipelineError(f"{pass_name}: option {key} expects an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise PipelineError(f"{pass_name}: option {key} expects a number, got {value!r}") from None
    return value


def parse(text: str) -> list[Step]:
    """Parse pipeline text into steps, checking pass names and options against the registry."""
    passes = load_all()
    steps = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"([A-Za-z0-9_-]+)\s*(?:\{(.*)\})?", part, flags=re.S)
        if not m:
            raise PipelineError(f"cannot parse pipeline element {part!r}; expected name or name{{key=value,...}}")
        name, body = m.group(1), m.group(2)
        if name not in passes:
            raise PipelineError(f"unknown pass {name!r}; valid passes: {', '.join(sorted(passes))}")
        params = options_of(passes[name])
        valid = ", ".join(k.replace("_", "-") for k in params) or "(none)"
        options: dict[str, Any] = {}
        for item in _split_options(body or "", params):
            key, eq, value = item.partition("=")
            pkey = key.strip().replace("-", "_")
            if pkey not in params:
                raise PipelineError(f"unknown option {key.strip()!r} for pass {name!r}; valid options: {valid}")
            if not eq:
                if isinstance(params[pkey].default, bool) or params[pkey].default is None:
                    options[pkey] = True
                    continue
                raise PipelineError(f"{name}: option {key.strip()} needs a value ({key.strip()}=...)")
            options[pkey] = _convert(value.strip(), params[pkey], name)
        steps.append(Step(name, options, part))
    check_order(steps)
    return steps


def check_order(steps: list[Step]) -> None:
    """Reject, before any work, a pipeline whose passes' contracts cannot hold in this order
    (today: a pass that changes the graph after partition)."""
    passes = load_all()
    cut = None
    for step in steps:
        fn = passes[step.name]
        if "unpartitioned" in fn.requires and cut is not None:
            raise PipelineError(f"{step.text} cannot run after {cut.text}: partition must be the last pass that "
                                f"changes the graph; put {step.name} before it "
                                f"(e.g. ...,{step.text},{cut.text})")
        if "partitioned" in fn.ensures:
            cut = step


def _split_options(body: str, params: dict) -> list[str]:
    """Split `a=1,b=x|y,flag` at commas that start a new option (so regexes may contain commas)."""
    items: list[str] = []
    for piece in body.split(","):
        head = piece.split("=", 1)[0].strip().replace("-", "_")
        if items and head not in params:
            items[-1] += "," + piece
        else:
            items.append(piece)
    return [i for i in (s.strip() for s in items) if i]


def _check(step: Step, model: Model, conditions: tuple[str, ...], when: str) -> None:
    for name in conditions:
        why = CONDITIONS[name](model)
        if why is not None:
            if when == "before":
                raise PipelineError(f"{step.text} requires {name} but {why}")
            raise ContractError(f"internal error: pass {step.text} broke its contract {name}: {why}")


def well_formed(model: Model) -> None:
    """Write and re-read every part through the validating flatbuffer reader (tests run this after
    every pass: ctx.check_ir)."""
    from compiler.ir import flatbuffer

    for part in model.parts():
        flatbuffer.loads(flatbuffer.dumps(part), origin="IR after pass")


def run(model: Model, steps: list[Step], ctx: PassContext | None = None, print_ir: bool = False,
        timings: list | None = None) -> Model:
    """Run the steps in order, timing each and checking each pass's contract. With print_ir, dump the IR
    to stderr after each pass."""
    passes = load_all()
    ctx = ctx or PassContext()
    for step in steps:
        fn = passes[step.name]
        _check(step, model, fn.requires, "before")
        start = time.perf_counter()
        model = fn(model, ctx=ctx, **step.options)
        elapsed = time.perf_counter() - start
        _check(step, model, fn.ensures, "after")
        if ctx.check_ir:
            try:
                well_formed(model)
            except TflcError as e:
                raise ContractError(f"internal error: the IR after {step.text} is malformed: {e}") from None
        if timings is not None:
            timings.append({"pass": step.text, "seconds": round(elapsed, 4)})
        if print_ir:
            print(f"// ----- IR after {step.text} ({elapsed:.3f} s)", file=sys.stderr)
            print(model.summary(), file=sys.stderr)
    return model
