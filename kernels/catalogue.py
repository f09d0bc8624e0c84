"""The kernel catalogue: every TFLite builtin operator of the installed LiteRT schema, with the versions
that exist, its kernel registration function, the op sets that provide it and the minimum runtime per version.

Sources (kernels/data/):
- litert_runtime.json: probed from the installed LiteRT (`python -m kernels.probe`): the (op, version) pairs
  its BuiltinOpResolver registers and the `tflite::ops::builtin::Register_*` functions compiled into it.
  "Versions that exist" are these: LiteRT registers every version the converter can emit.
- runtime_versions.json: the minimum TFLite runtime for each (op, version), transcribed from TFLite's
  tensorflow/lite/tools/versioning/runtime_version.cc; entries not known for certain are marked estimated.
- INT8 below: ops whose kernels take int8 tensors (TFLite's int8 quantization spec and the kernels' type
  switches), i.e. what the converter's TFLITE_BUILTINS_INT8 op set may use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


DATA = Path(__file__).parent / "data"
FLEX_PREFIX = "Flex"

OP_SETS = ("builtins", "builtins-int8", "select-tf")

# Ops with int8 kernels (activations int8), plus type-agnostic control flow and shape ops that
# full-integer models use. Written from TFLite's kernels (the kTfLiteInt8 cases of each Eval).
INT8 = frozenset("""
ABS ADD ARG_MAX ARG_MIN AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND BROADCAST_ARGS BROADCAST_TO CALL_ONCE
CAST CONCATENATION CONV_2D COS CUMSUM DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DYNAMIC_UPDATE_SLICE ELU
EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FULLY_CONNECTED GATHER GATHER_ND GELU GREATER GREATER_EQUAL
HARD_SWISH IF L2_NORMALIZATION LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC
LOG_SOFTMAX LSTM MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
RANGE RANK REDUCE_ANY REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_0_TO_1 RELU_N1_TO_1 RESHAPE
RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR REVERSE_V2 RSQRT SELECT SELECT_V2 SHAPE SIN SLICE SOFTMAX
SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH
TILE TOPK_V2 TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK WHILE ZEROS_LIKE
""".split())

# Reference (unoptimized) kernels whose names do not follow Register_<OP>_REF.
_REFERENCE_NAMES = {
    "CONV_2D": "Register_CONVOLUTION_REF",
    "DEPTHWISE_CONV_2D": "Register_DEPTHWISE_CONVOLUTION_REF",
    "AVERAGE_POOL_2D": "Register_AVERAGE_POOL_REF",
    "MAX_POOL_2D": "Register_MAX_POOL_REF",
    "L2_POOL_2D": "Register_L2_POOL_REF",
    "L2_NORMALIZATION": "Register_L2NORM_REF",
    "LOCAL_RESPONSE_NORMALIZATION": "Register_LOCAL_RESPONSE_NORM_REF",
    "TRANSPOSE_CONV": "Register_TRANSPOSECONV_REF",
}

_NO_KERNEL = {
    "CALL": "deprecated; never had a kernel (the converter emits CALL_ONCE, IF or WHILE)",
    "CONCAT_EMBEDDINGS": "declared in the schema but never implemented",
    "CUSTOM": "not a kernel: custom ops are resolved by custom code (Flex* codes come from the "
              "select-tf op set and need the Flex delegate)",
    "DELEGATE": "placeholder that stands for a delegated partition in serialized models; no kernel",
    "PLACEHOLDER_FOR_GREATER_OP_CODES": "placeholder (127) marking that the real code is in the "
                                        "extended builtin_code field; not an op",
}


@dataclass(frozen=True)
class Kernel:
    """One BuiltinOperator as the runtime sees it."""

    name: str
    code: int
    versions: tuple[int, ...]  # versions the installed LiteRT registers (empty: no builtin kernel)
    register: str | None  # tflite::ops::builtin::<register>() in builtin_op_kernels.h
    reference: str | None  # the reference-kernel variant, where LiteRT has one
    op_sets: tuple[str, ...]
    min_runtime: dict[int, str] = field(default_factory=dict)  # version -> minimum TFLite runtime
    estimated: frozenset[int] = frozenset()  # versions whose min_runtime is an estimate
    note: str | None = None

    @property
    def max_version(self) -> int:
        return max(self.versions, default=0)


def builtin_names() -> dict[str, int]:
    """Every BuiltinOperator of the installed schema: name -> enum value (the IR's one table)."""
    from compiler.ir.core import BUILTIN_CODES

    return dict(BUILTIN_CODES)


@lru_cache(maxsize=None)
def _data(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def runtime_data() -> dict:
    """The probe of the installed LiteRT (kernels/data/litert_runtime.json)."""
    return _data("litert_runtime.json")


@lru_cache(maxsize=None)
def catalogue() -> dict[str, Kernel]:
    """name -> Kernel for every BuiltinOperator of the installed schema (a schema upgrade adds entries with
    no versions until `python -m kernels.probe` is re-run)."""
    probed = runtime_data()
    symbols = set(probed["kernel_symbols"])
    table = _data("runtime_versions.json")["ops"]
    out: dict[str, Kernel] = {}
    for name, code in sorted(builtin_names().items(), key=lambda kv: kv[1]):
        versions = tuple(probed["ops"].get(name, []))
        register = f"Register_{name}" if versions and f"Register_{name}" in symbols else None
        ref = _REFERENCE_NAMES.get(name, f"Register_{name}_REF")
        min_rt: dict[int, str] = {}
        estimated = set()
        for v, e in table.get(name, {}).items():
            if isinstance(e, dict):
                min_rt[int(v)] = e["min_runtime"]
                if e.get("estimated"):
                    estimated.add(int(v))
            else:
                min_rt[int(v)] = e
        note = _NO_KERNEL.get(name)
        if not versions and note is None:
            note = ("StableHLO op without a TFLite kernel; the converter must legalize it to TFLite builtins"
                    if name.startswith("STABLEHLO_") else
                    "no kernel in the installed LiteRT (new in the schema? re-run `python -m kernels.probe`)")
        sets = ()
        if versions:
            sets = ("builtins", "builtins-int8") if name in INT8 else ("builtins",)
        elif name == "CUSTOM":
            sets = ("select-tf",)
        out[name] = Kernel(name, code, versions, register, ref if ref in symbols else None, sets,
                           min_rt, frozenset(estimated), note)
    return out


def kernel(name: str) -> Kernel | None:
    return catalogue().get(name)


def registration_function(name: str) -> str | None:
    """`Register_X` for builtin op X (as declared in tensorflow/lite/kernels/builtin_op_kernels.h), or None."""
    k = kernel(name)
    return k.register if k else None


def min_runtime(name: str, version: int) -> tuple[str, bool] | None:
    """(minimum TFLite runtime version, estimated?) for a builtin (op, version), or None if unknown."""
    k = kernel(name)
    if k is None or version not in k.min_runtime:
        return None
    return k.min_runtime[version], version in k.estimated


def parse_version(text: str) -> tuple[int, ...]:
    """'2.14' or '2.14.0' -> (2, 14, 0)."""
    parts = [int(p) for p in text.strip().split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def is_flex(custom_code: str | None) -> bool:
    return bool(custom_code) and custom_code.startswith(FLEX_PREFIX)


def required_runtime(models) -> tuple[str, bool]:
    """(minimum TFLite runtime that has every builtin (op, version) of `models`, estimated?) — what the
    converter writes as `min_runtime_version` metadata; passes that bump op versions make that entry stale."""
    best, estimated = "1.5.0", False
    for m in models:
        for _, op in m.operators():
            found = min_runtime(op.name, int(op.version or 1))
            if found is None:
                continue
            if _newer(found[0], best):
                best, estimated = found
            elif found[0] == best:
                estimated = estimated or found[1]
    return best, estimated


def _newer(a: str, b: str) -> bool:
    return parse_version(a) > parse_version(b)
