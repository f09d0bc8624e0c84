"""Ask the installed LiteRT runtime which (builtin op, version) pairs its BuiltinOpResolver registers.

For each op and version we build a one-operator flatbuffer and construct an Interpreter without default
delegates: op resolution happens at construction, so "Didn't find op for builtin opcode" means the runtime
has no kernel for that version. This is the ground truth behind the `litert-2.x` target; the result is
stored in kernels/data/litert_runtime.json (regenerate: `python -m kernels.probe`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

MAX_PROBED_VERSION = 20  # no builtin has reached 14 versions yet; probe well past that
DATA = Path(__file__).parent / "data" / "litert_runtime.json"


def _one_op_model(code: int, version: int) -> bytes:
    from ai_edge_litert import schema_py_generated as schema

    from compiler.ir import flatbuffer
    from compiler.ir.core import Model, Operator, Subgraph, Tensor

    x = Tensor("x", [1], schema.TensorType.FLOAT32)
    y = Tensor("y", [1], schema.TensorType.FLOAT32)
    op = Operator(code, version, custom_code=None, inputs=[x], outputs=[y])
    return flatbuffer.dumps(Model([Subgraph("main", [x, y], [x], [y], [op])]))


def resolves(code: int, version: int) -> bool:
    """True if the installed LiteRT runtime has a builtin kernel for (code, version)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        Interpreter(model_content=_one_op_model(code, version),
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (RuntimeError, ValueError) as e:
        if "Didn't find op for builtin opcode" in str(e):
            return False
        # Resolution succeeded; the op failed later (e.g. option parsing) on our dummy operands.
        return True
    return True


def probe() -> dict:
    """{"litert_version", "ops": {name: [versions]}} for every builtin of the installed schema."""
    import ai_edge_litert
    from ai_edge_litert import schema_py_generated as schema

    ops: dict[str, list[int]] = {}
    for name, code in sorted(vars(schema.BuiltinOperator).items(), key=lambda kv: str(kv[1])):
        if name.startswith("_") or name == "CUSTOM":
            continue
        ops[name] = [v for v in range(1, MAX_PROBED_VERSION + 1) if resolves(code, v)]
    version = getattr(ai_edge_litert, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("ai-edge-litert")
    return {"litert_version": version,
            "source": "probed from the installed ai_edge_litert BuiltinOpResolver by kernels/probe.py",
            "ops": dict(sorted(ops.items())),
            "kernel_symbols": kernel_symbols()}


def kernel_symbols() -> list[str]:
    """Names of the `tflite::ops::builtin::Register_*()` functions compiled into the installed LiteRT library."""
    import ai_edge_litert

    names: set[str] = set()
    pattern = re.compile(rb"_ZN6tflite3ops7builtin\d+(Register_[A-Za-z0-9_]+?)Ev")
    for lib in sorted(Path(ai_edge_litert.__file__).parent.glob("*.so")):
        names.update(m.decode() for m in pattern.findall(lib.read_bytes()))
    return sorted(names)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    data = probe()
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    n = sum(1 for v in data["ops"].values() if v)
    print(f"wrote {DATA}: LiteRT {data['litert_version']}, {n} builtin ops with kernels", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
