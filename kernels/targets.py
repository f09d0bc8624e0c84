"""Op-set targets: which (op, max version) pairs a deployment runtime provides, and the check against them.

Targets (`check-opset{target=...}`, `tflc ops --target ...`):
  builtins        the TFLite builtin op set as the installed LiteRT registers it (every version it has)
  builtins-int8   builtins with int8 kernels, and every op must compute on integer tensors (full-int8 model)
  litert-2.x      what the installed LiteRT runtime supports (same data as builtins; also `litert-<version>`)
  tflite-X.Y      ops and versions that TFLite runtime X.Y provides (from runtime_version.cc), e.g. tflite-2.14
  FILE.json       an explicit list (format below)
Append `+select-tf` to any of them to also allow Select-TF (Flex) ops, e.g. `builtins+select-tf`.

Target file format (JSON; `save_target` writes it, `load_target` reads it):
  {"format": "tflc-opset", "version": 1,
   "name": "my-app-runtime",                 # shown in messages
   "builtins": {"CONV_2D": 3, "ADD": 2},     # op name -> highest version provided (all lower ones too)
   "custom": ["MyCustomOp"],                 # custom op codes provided (optional)
   "select_tf": false,                       # Flex ops (custom codes Flex*) provided (optional)
   "int8_only": false}                       # ops must compute on integer tensors (optional)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from compiler.errors import OpsetError, PipelineError
from compiler.ir.core import Model, Operator, Subgraph
from kernels import catalogue as cat

FILE_FORMAT = "tflc-opset"
_FLOAT_TYPES = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64}


@dataclass
class Target:
    name: str
    builtins: dict[str, int]  # op name -> highest version provided
    custom: set[str] = field(default_factory=set)
    select_tf: bool = False
    int8_only: bool = False

    def to_json(self) -> dict:
        return {"format": FILE_FORMAT, "version": 1, "name": self.name, "builtins": dict(sorted(self.builtins.items())),
                "custom": sorted(self.custom), "select_tf": self.select_tf, "int8_only": self.int8_only}

    def status(self, name: str, version: int, custom_code: str | None = None) -> str:
        """'OK', 'missing' or 'too-new' for one (op, version)."""
        if name.startswith("CUSTOM:"):
            return "OK" if (custom_code in self.custom or (self.select_tf and cat.is_flex(custom_code))) else "missing"
        if name not in self.builtins:
            return "missing"
        return "OK" if version <= self.builtins[name] else "too-new"


def _installed() -> dict[str, int]:
    return {n: k.max_version for n, k in cat.catalogue().items() if k.versions}


def tflite_release(release: str) -> dict[str, int]:
    """op -> highest version whose minimum runtime is <= release (estimates count as given: conservative)."""
    want = cat.parse_version(release)
    out: dict[str, int] = {}
    for name, k in cat.catalogue().items():
        ok = [v for v, rt in k.min_runtime.items() if cat.parse_version(rt) <= want]
        # versions are cumulative: a runtime with version v has all lower versions
        top = 0
        for v in sorted(k.min_runtime):
            if v in ok:
                top = v
            else:
                break
        if top:
            out[name] = top
    return out


def load_target(spec: str) -> Target:
    """A Target from its name (see the module docstring) or a JSON file path."""
    base, _, extra = spec.partition("+")
    if extra and extra != "select-tf":
        raise PipelineError(f"check-opset: unknown target suffix '+{extra}'; the only one is '+select-tf'")
    t = _base_target(base.strip())
    if extra:
        t.select_tf = True
        t.name = f"{t.name}+select-tf"
    return t


def _base_target(spec: str) -> Target:
    if spec == "builtins":
        return Target("builtins", _installed())
    if spec == "builtins-int8":
        return Target("builtins-int8", {n: v for n, v in _installed().items() if n in cat.INT8}, int8_only=True)
    if spec == "litert-2.x" or spec == f"litert-{cat.runtime_data()['litert_version']}" or spec == "litert":
        return Target(f"litert-{cat.runtime_data()['litert_version']}", _installed())
    if spec.startswith("tflite-"):
        release = spec[len("tflite-"):]
        try:
            cat.parse_version(release)
        except ValueError:
            raise PipelineError(f"check-opset: bad TFLite release in target {spec!r}; write e.g. tflite-2.14") from None
        return Target(spec, tflite_release(release))
    if spec.endswith(".json") or Path(spec).is_file():
        return read_target_file(spec)
    raise PipelineError(f"check-opset: unknown target {spec!r}; use builtins, builtins-int8, litert-2.x, "
                        "tflite-X.Y or a target .json file")


def read_target_file(path: str | Path) -> Target:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise PipelineError(f"check-opset: target file {p} not found") from None
    except (OSError, ValueError) as e:
        raise PipelineError(f"check-opset: target file {p} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("builtins"), dict):
        raise PipelineError(f"check-opset: target file {p} needs a \"builtins\" object mapping op names to "
                            "max versions (see kernels/targets.py)")
    builtins = {}
    for name, v in data["builtins"].items():
        if name not in cat.builtin_names():
            raise PipelineError(f"check-opset: target file {p} names unknown builtin op {name!r}")
        if not isinstance(v, int) or v < 1:
            raise PipelineError(f"check-opset: target file {p}: max version of {name} must be an integer >= 1")
        builtins[name] = v
    return Target(str(data.get("name") or p.stem), builtins, set(data.get("custom") or []),
                  bool(data.get("select_tf", False)), bool(data.get("int8_only", False)))


def save_target(target: Target, path: str | Path) -> None:
    Path(path).write_text(json.dumps(target.to_json(), indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ check

@dataclass
class Violation:
    stage: int | None
    subgraph: Subgraph
    op: Operator
    reason: str  # missing | too-new | float
    layer: str
    allowed: int | None = None  # the target's max version, for too-new


def describe(group: list[Violation], target: Target) -> str:
    """One line for violations of the same (op, version, reason): which layers, why, and what to do."""
    v0 = group[0]
    name, ver = v0.op.name, v0.op.version
    layers = list(dict.fromkeys(v.layer for v in group))
    shown = ", ".join(f"'{x}'" for x in layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
    stages = sorted({v.stage for v in group if v.stage is not None})
    where = (f"{name} v{ver} in Keras layer{'s' if len(layers) > 1 else ''} {shown}"
             + (f" (stage {', '.join(map(str, stages))})" if stages else "")
             + (f", {len(group)} ops" if len(group) > 1 else ""))
    keep = "|".join(layers)  # quantize{keep-float=...} takes a regex; alternatives separated by |
    if v0.reason == "too-new":
        rt = cat.min_runtime(name, ver)
        need = f"; v{ver} needs TFLite >= {rt[0]}{' (estimated)' if rt[1] else ''}" if rt else ""
        return (f"{where}: {target.name} has only up to v{v0.allowed}{need}. Try another quantization mode "
                f"(e.g. quantize{{mode=float16}}) or keep the layer(s) in float with quantize{{keep-float={keep}}}")
    if v0.reason == "float":
        return (f"{where}: computes on float tensors, but {target.name} runs integer kernels only. "
                "Quantize fully with quantize{mode=int8} (needs calibration data)")
    if cat.is_flex(v0.op.custom_code):
        return (f"{where}: a Select-TF (Flex) op that {target.name} lacks. For LSTM/GRU layers compile with "
                "--batch 1 so they lower to builtin ops; otherwise change the layer, or allow Flex with "
                "target=builtins+select-tf and link the Flex delegate")
    if name.startswith("CUSTOM:"):
        return (f"{where}: custom op not provided by {target.name}; add its code to the target's \"custom\" "
                "list or change the layer")
    k = cat.kernel(name)
    no_kernel = f" ({k.note})" if k is not None and not k.versions and k.note else ""
    return (f"{where}: {target.name} has no {name} kernel{no_kernel}. Try another quantization mode, keep the "
            f"layer(s) in float with quantize{{keep-float={keep}}}, or change the layer")


def _computes_in_float(op: Operator) -> bool:
    if op.name in ("QUANTIZE", "DEQUANTIZE"):
        return False
    tensors = [t for t in (*op.inputs, *op.outputs) if t is not None and not t.is_constant]
    return any(t.type in _FLOAT_TYPES for t in tensors)


def check(models: list[Model], target: Target, staged: bool = False) -> list[Violation]:
    """Every operator (all subgraphs) of every model that `target` does not provide."""
    from compiler.ir.layers import layer_of_op

    out = []
    for k, m in enumerate(models):
        for sg, op in m.operators():
            status = target.status(op.name, int(op.version or 1), op.custom_code)
            reason = None if status == "OK" else status
            if reason is None and target.int8_only and _computes_in_float(op):
                reason = "float"
            if reason is None:
                continue
            allowed = target.builtins.get(op.name) if reason == "too-new" else None
            out.append(Violation(k if staged else None, sg, op, reason, layer_of_op(m, op, sg), allowed))
    return out


def violations_message(violations: list[Violation], target: Target) -> str:
    """A summary line, then one line per (op, version, reason) naming the Keras layers."""
    groups: dict[tuple, list[Violation]] = {}
    for v in violations:
        groups.setdefault((v.op.name, v.op.version, v.reason), []).append(v)
    kinds = [f"{name} v{ver}" for name, ver, _ in groups]
    head = (f"target {target.name} cannot run {len(violations)} operator(s) of this model: "
            f"{', '.join(dict.fromkeys(kinds))}")
    return "\n".join([head] + [f"- {describe(g, target)}" for g in groups.values()])


def raise_on_violations(violations: list[Violation], target: Target) -> None:
    if violations:
        raise OpsetError(violations_message(violations, target))
