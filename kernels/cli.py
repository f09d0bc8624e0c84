"""`tflc ops FILE|DIR [--target T] [--format table|json|cc]`: the kernels a model or build folder needs,
optionally checked against a target op set (exit 1, violations on stderr, if the target lacks any)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compiler.errors import OpsetError, SourceError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE|DIR", help="a .tflite file or a tflc build folder")
    parser.add_argument("--target", "-t", default=None,
                        help="check against builtins, builtins-int8, litert-2.x, tflite-X.Y or a target .json "
                             "(append +select-tf to allow Flex ops)")
    parser.add_argument("--format", "-f", choices=("table", "json", "cc"), default="table",
                        help="table (default), json (the ops.json content) or cc (register_ops.cc)")


def load_models(path: str | Path) -> tuple[list[str], list]:
    """(labels, models) for a .tflite file (one model) or a build folder (its stages, in order), read
    through the same checked path as `tflc inspect` and the runtime."""
    from compiler.commands.inspect import read_models

    p = Path(path)
    if not p.is_dir() and not p.exists():
        raise SourceError(f"{p}: no such file or folder; pass a .tflite file or a build folder")
    _, models = read_models(p)
    return [Path(label).stem for label, _, _ in models], [m for _, _, m in models]


def format_table(table: dict, labels: list[str], statuses: dict[tuple, str] | None = None) -> str:
    per_stage = [{(e["op"], e["version"]): e["count"] for e in st["ops"]} for st in table["stages"]]
    rows = [["op", "version"] + (labels if len(labels) > 1 else []) + ["count"] + (["target"] if statuses else [])]
    for e in table["union"]:
        key = (e["op"], e["version"])
        row = [e["op"], str(e["version"])]
        if len(labels) > 1:
            row += [str(s.get(key, "")) for s in per_stage]
        row.append(str(e["count"]))
        if statuses:
            row.append(statuses[key])
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    def cell(i: int, c: str, w: int) -> str:  # numbers right-aligned, names left-aligned
        return c.rjust(w) if i > 0 and (c.isdigit() or c == "") else c.ljust(w)

    lines = ["  ".join(cell(i, c, w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total = sum(e["count"] for e in table["union"])
    lines.append(f"{len(table['union'])} (op, version) pairs, {total} operators")
    return "\n".join(lines)


def run(args) -> int:
    from kernels.registration import ops_table, recorded_layers, register_ops_cc, runtime_line
    from kernels.targets import check, load_target, violations_message

    labels, models = load_models(args.path)
    if Path(args.path).is_dir():  # name violations by Keras layer, as the compile-time check does
        layers = recorded_layers(args.path)
        for m in models:
            m.keras_layers = m.keras_layers or layers
    table = ops_table(models)
    target = load_target(args.target) if args.target else None
    violations = check(models, target, staged=len(models) > 1) if target else []
    statuses = None
    if target:
        statuses = {(e["op"], e["version"]): target.status(e["op"], e["version"], e.get("custom_code"))
                    for e in table["union"]}
        if target.int8_only:
            for v in violations:
                if v.reason == "float":
                    statuses[(v.op.name, v.op.version)] = "float"
    if args.format == "json":
        out = dict(table)
        if target:
            out["target"] = target.name
            out["status"] = [{"op": op, "version": ver, "status": s} for (op, ver), s in statuses.items()]
        print(json.dumps(out, indent=1))
    elif args.format == "cc":
        print(register_ops_cc(table), end="")
    else:
        print(format_table(table, labels, statuses))
        print(runtime_line(table, labels))
    if violations:
        raise OpsetError(violations_message(violations, target))
    return 0
