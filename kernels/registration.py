"""Selective registration: the (op, version) table of a build (ops.json) and the C++ that registers
exactly those kernels (register_ops.cc), so an app can link a size-reduced TFLite/LiteRT runtime.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from ai_edge_litert import schema_py_generated as schema

from compiler.ir.core import Model, Operator
from kernels.catalogue import is_flex, registration_function

FORMAT = 1
MAX_LAYERS = 10_000  # Keras layer names kept from a build's ops.json (10 ResNet-50 branches: ~1,800)


def op_key(op: Operator) -> tuple[str, int]:
    """(name, version) of an operator; custom ops are named `CUSTOM:<custom code>`."""
    return op.name, int(op.version or 1)


def _entry(name: str, version: int, count: int) -> dict:
    e: dict = {"op": name, "version": version, "count": count}
    if name.startswith("CUSTOM:"):
        code = name.split(":", 1)[1]
        e["custom_code"] = code
        e["kind"] = "flex" if is_flex(code) else "custom"  # the converter names Select-TF ops Flex<TfOp>
    else:
        e["kind"] = "builtin"
        e["builtin_code"] = int(getattr(schema.BuiltinOperator, name))
    return e


def _entries(counts: Counter) -> list[dict]:
    return [_entry(name, version, n) for (name, version), n in sorted(counts.items())]


def count_ops(model: Model) -> Counter:
    """(op name, version) -> number of operators, over every subgraph of the model (WHILE bodies included)."""
    return Counter(op_key(op) for _, op in model.operators())


def ops_table(stages: Iterable[Model]) -> dict:
    """The content of ops.json: for each stage and for their union, every (op, version) with its count,
    and the minimum TFLite runtime that has all of them (`min_runtime`, with `min_runtime_estimated`
    when a version's runtime is estimated), per stage and for the build (the newest of the stages').

    Entries are `{"op", "version", "count", "kind": builtin|custom|flex, "builtin_code" | "custom_code"}`,
    sorted by op name then version. `keras_layers` lists the source's Keras layer names (when known), so
    `tflc ops DIR` names the layers of violations as the compile-time check does, not by converter scope.
    """
    from kernels.catalogue import parse_version, required_runtime

    per_stage = []
    union: Counter = Counter()
    layers: dict[str, None] = {}
    for k, st in enumerate(stages):
        counts = count_ops(st)
        union.update(counts)
        version, estimated = required_runtime([st])
        per_stage.append({"stage": k, "min_runtime": version, "min_runtime_estimated": estimated,
                          "ops": _entries(counts)})
        layers.update(dict.fromkeys(st.keras_layers or ()))
    newest = max(per_stage, key=lambda e: parse_version(e["min_runtime"]), default=None)
    table = {"format": FORMAT, "min_runtime": newest["min_runtime"] if newest else None,
             "min_runtime_estimated": any(e["min_runtime_estimated"] for e in per_stage
                                          if newest and e["min_runtime"] == newest["min_runtime"]),
             "stages": per_stage, "union": _entries(union)}
    if layers:
        table["keras_layers"] = list(layers)
    return table


def recorded_layers(build_dir) -> list[str]:
    """The Keras layer names a build folder's ops.json records; [] when absent or malformed (the folder
    is untrusted: only a bounded list of short strings is accepted)."""
    import json

    from compiler.errors import TflcError
    from compiler.files import read_member

    try:
        table = json.loads(read_member(build_dir, "ops.json", 64 << 20))
    except (TflcError, ValueError, OSError, RecursionError):  # RecursionError: JSON nested too deep
        return []
    layers = table.get("keras_layers") if isinstance(table, dict) else None
    # Layer lookup copies the list per operator: a huge list in a hostile file would make `tflc ops` crawl.
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        return []
    return [x for x in layers if isinstance(x, str) and 0 < len(x) <= 1024]


def runtime_line(table: dict, labels: list[str] | None = None) -> str:
    """One line: the minimum TFLite runtime of the build, and of each stage when there are several."""
    def show(version, estimated) -> str:
        return f"{version}{' (estimated)' if estimated else ''}"

    line = f"minimum TFLite runtime: {show(table['min_runtime'], table['min_runtime_estimated'])}"
    if len(table["stages"]) > 1:
        names = labels or [f"stage {e['stage']}" for e in table["stages"]]
        line += " (" + ", ".join(f"{n}: {show(e['min_runtime'], e['min_runtime_estimated'])}"
                                 for n, e in zip(names, table["stages"])) + ")"
    return line


def union_ranges(table: dict) -> dict[str, tuple[int, int]]:
    """Builtin op name -> (min version, max version) over the table's union."""
    out: dict[str, tuple[int, int]] = {}
    for e in table["union"]:
        if e["kind"] != "builtin":
            continue
        lo, hi = out.get(e["op"], (e["version"], e["version"]))
        out[e["op"]] = (min(lo, e["version"]), max(hi, e["version"]))
    return out


def register_ops_cc(table: dict) -> str:
    """C++ source defining `RegisterSelectedOps(::tflite::MutableOpResolver*)` for exactly the table's union."""
    ranges = union_ranges(table)
    custom = sorted({e["custom_code"] for e in table["union"] if e["kind"] == "custom"})
    flex = sorted({e["custom_code"] for e in table["union"] if e["kind"] == "flex"})
    lines = [
        "// Generated by tflc: registers exactly the builtin kernels (op, version range) this build uses,",
        "// so the app can link a size-reduced TFLite/LiteRT runtime instead of BuiltinOpResolver.",
        "//",
        "// Usage:",
        "//   ::tflite::MutableOpResolver resolver;",
        "//   RegisterSelectedOps(&resolver);",
        "//   ::tflite::InterpreterBuilder(*model, resolver)(&interpreter);",
        "//",
        f"// Builtin ops: {len(ranges)}; custom ops: {len(custom)}; Select-TF (Flex) ops: {len(flex)}.",
    ]
    if custom:
        lines.append("//")
        lines.append("// Custom ops used by this build (not registered here; register your own kernels with")
        lines.append("// resolver->AddCustom(name, registration)):")
        lines += [f"//   {c}" for c in custom]
    if flex:
        lines.append("//")
        lines.append("// Select-TF (Flex) ops used by this build. They run only with the Flex delegate: link")
        lines.append("// tensorflow/lite/delegates/flex:delegate (or the tensorflow-lite-select-tf-ops AAR/pod),")
        lines.append("// which registers them itself:")
        lines += [f"//   {c}" for c in flex]
    lines += [
        "",
        '#include "tensorflow/lite/kernels/builtin_op_kernels.h"',
        '#include "tensorflow/lite/mutable_op_resolver.h"',
        '#include "tensorflow/lite/schema/schema_generated.h"',
        "",
        "void RegisterSelectedOps(::tflite::MutableOpResolver* resolver) {",
    ]
    for name, (lo, hi) in sorted(ranges.items()):
        fn = registration_function(name)
        if fn is None:
            lines.append(f"  // {name} v{lo}..v{hi}: no builtin kernel in TFLite; the runtime cannot run it.")
            continue
        lines.append(f"  resolver->AddBuiltin(::tflite::BuiltinOperator_{name}, "
                     f"::tflite::ops::builtin::{fn}(), /*min_version=*/{lo}, /*max_version=*/{hi});")
    lines.append("}")
    return "\n".join(lines) + "\n"
