"""Kernel catalogue, ops.json and register_ops.cc, checked against the installed LiteRT runtime, the TF
converter's own min_runtime_version metadata and an independent flatbuffer read."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from ai_edge_litert import schema_py_generated as schema

from compiler import pipeline
from compiler.ir import flatbuffer
from compiler.passes import PassContext
from compiler.ir.core import Model, Operator, Subgraph, Tensor
from kernels import catalogue as cat
from kernels import probe
from kernels.registration import ops_table, register_ops_cc, union_ranges

CONVERTED = [("contect-small", "float"), ("contect-small", "int8-dynamic"),
             ("mobilenet_v2", "float"), ("mobilenet_v2", "int8-dynamic")]
# int8-dynamic twice: by the TF converter, and by tflc's own quantize pass on the float IR.
MODELS = CONVERTED + [("contect-small", "tflc-int8-dynamic"), ("mobilenet_v2", "tflc-int8-dynamic")]


# ------------------------------------------------------------------------------------------ catalogue

def test_catalogue_covers_every_builtin_operator_of_the_installed_schema():
    names = {k: v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    catalogue = cat.catalogue()
    assert set(catalogue) == set(names)
    for name, code in names.items():
        assert catalogue[name].code == code


def test_data_matches_the_installed_runtime():
    """The stored probe is what the installed LiteRT registers now (fails after a LiteRT upgrade: re-run
    `python -m kernels.probe`)."""
    live = probe.probe()
    stored = cat.runtime_data()
    assert live["litert_version"] == stored["litert_version"]
    assert live["ops"] == stored["ops"]
    assert live["kernel_symbols"] == stored["kernel_symbols"]


def test_every_kernel_has_a_registration_function_and_a_runtime_version_per_version():
    symbols = set(cat.runtime_data()["kernel_symbols"])
    with_kernels = 0
    for name, k in cat.catalogue().items():
        if not k.versions:
            assert k.register is None and k.note, name  # the catalogue says why there is no kernel
            continue
        with_kernels += 1
        assert k.register == f"Register_{name}" and k.register in symbols
        assert list(k.versions) == list(range(k.versions[0], k.versions[-1] + 1)), name
        assert set(k.min_runtime) == set(k.versions), name
        mins = [cat.parse_version(k.min_runtime[v]) for v in k.versions]
        assert mins == sorted(mins), f"{name}: minimum runtimes must not decrease with the version"
        assert "builtins" in k.op_sets
    assert with_kernels > 150
    # Names that a reader might expect to follow the op name but do not (reference kernels).
    assert cat.kernel("CONV_2D").reference == "Register_CONVOLUTION_REF"
    assert cat.kernel("BROADCAST_TO").versions[0] == 2  # v1 was the Flex op; LiteRT registers from v2
    for name in ("CALL", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES", "STABLEHLO_ABS"):
        assert not cat.kernel(name).versions
    assert cat.kernel("CUSTOM").op_sets == ("select-tf",)


# ------------------------------------------------------------------------------------------ real models

@pytest.fixture(scope="module")
def converted():
    """{(fixture, mode): flatbuffer bytes} through the TF converter (the reference path)."""
    import tensorflow as tf

    import fixtures
    from compiler.frontend import convert_keras

    out = {}
    for name in ("contect-small", "mobilenet_v2"):
        keras_model = fixtures.get(name).build(batch_size=1)
        out[(name, "float")] = convert_keras(keras_model, batch=1)
        out[(name, "int8-dynamic")] = convert_keras(keras_model, batch=1, optimizations=[tf.lite.Optimize.DEFAULT])
        model = flatbuffer.loads(out[(name, "float")])
        pipeline.run(model, pipeline.parse("quantize{mode=int8-dynamic}"), PassContext())
        out[(name, "tflc-int8-dynamic")] = flatbuffer.dumps(model)
    return out


def _raw_op_counts(data: bytes, subgraphs: slice = slice(None)) -> Counter:
    """(op name, version) counts read straight from the flatbuffer with the schema (not through the IR)."""
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts = Counter()
    for sg in m.subgraphs[subgraphs]:
        for op in sg.operators:
            oc = m.operatorCodes[op.opcodeIndex]
            code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
            name = names[code] if code != schema.BuiltinOperator.CUSTOM else f"CUSTOM:{oc.customCode.decode()}"
            counts[(name, oc.version)] += 1
    return counts


def _counts(entries) -> Counter:
    return Counter({(e["op"], e["version"]): e["count"] for e in entries})


@pytest.mark.parametrize("name,mode", MODELS)
def test_ops_table_equals_what_litert_reports(converted, name, mode):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = converted[(name, mode)]
    table = ops_table([flatbuffer.loads(data)])
    assert table["stages"][0]["ops"] == table["union"]
    assert _counts(table["union"]) == _raw_op_counts(data)  # every subgraph, WHILE bodies included

    # LiteRT resolves every op of every subgraph at load time, but _get_ops_details lists the nodes of the
    # main subgraph only (WHILE bodies are separate subgraphs it does not enumerate).
    interp = Interpreter(model_content=data,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    raw_main = _raw_op_counts(data, slice(0, 1))
    litert_main = Counter(d["op_name"] for d in interp._get_ops_details())
    main_names = Counter()
    for (op, _), n in raw_main.items():
        main_names[op] += n
    assert litert_main == main_names
    assert interp.num_subgraphs() == len(flatbuffer.loads(data).subgraphs)
    union_names = {op for op, _ in _counts(table["union"])}
    assert set(litert_main) <= union_names
    if name == "contect-small":
        assert "WHILE" in litert_main and "TANH" not in litert_main  # the LSTM cell lives in the bodies
        assert ("TANH", 1) in _counts(table["union"])


@pytest.mark.parametrize("name,mode", CONVERTED)
def test_runtime_table_agrees_with_the_converters_min_runtime_version(converted, name, mode):
    """The converter writes max(min runtime over (op, version)) as metadata, from the same runtime_version.cc."""
    model = flatbuffer.loads(converted[(name, mode)])
    meta = {k: bytes(b.data).rstrip(b"\0").decode() for k, b in model.metadata if k == "min_runtime_version"}
    ours, _ = cat.required_runtime([model])
    assert cat.parse_version(ours) == cat.parse_version(meta["min_runtime_version"])


def test_litert_resolves_ops_inside_while_bodies(converted):
    """A version LiteRT lacks, only in a WHILE body, fails at load: bodies count for registration."""
    from ai_edge_litert.interpreter import Interpreter

    model = flatbuffer.loads(converted[("contect-small", "float")])
    body_ops = [op for sg in model.subgraphs[1:] for op in sg.operators if op.name == "TANH"]
    assert body_ops and not [op for op in model.main.operators if op.name == "TANH"]
    for op in body_ops:
        op.version = 99
    with pytest.raises(Exception, match="TANH' version '99'"):
        Interpreter(model_content=flatbuffer.dumps(model))


# ------------------------------------------------------------------------------------------ registration

_ADD_BUILTIN = re.compile(r"resolver->AddBuiltin\(::tflite::BuiltinOperator_(\w+), ::tflite::ops::builtin::"
                          r"(Register_\w+)\(\), /\*min_version=\*/(\d+), /\*max_version=\*/(\d+)\);")


def _parse_cc(source: str) -> dict[str, tuple[int, int]]:
    found = {}
    for op, fn, lo, hi in _ADD_BUILTIN.findall(source):
        assert fn == cat.registration_function(op)
        assert op not in found, f"{op} registered twice"
        found[op] = (int(lo), int(hi))
    return found


@pytest.mark.parametrize("name,mode", MODELS)
def test_register_ops_cc_registers_exactly_the_union(converted, name, mode):
    table = ops_table([flatbuffer.loads(converted[(name, mode)])])
    source = register_ops_cc(table)
    expected = {}
    for (op, version) in _counts(table["union"]):
        lo, hi = expected.get(op, (version, version))
        expected[op] = (min(lo, version), max(hi, version))
    assert _parse_cc(source) == expected == union_ranges(table)
    assert "void RegisterSelectedOps(::tflite::MutableOpResolver* resolver) {" in source
    assert '#include "tensorflow/lite/kernels/builtin_op_kernels.h"' in source


def _tiny(op_specs) -> Model:
    x = Tensor("x", [1], schema.TensorType.FLOAT32)
    ops, prev, tensors = [], x, [x]
    for i, (code, version, custom) in enumerate(op_specs):
        y = Tensor(f"t{i}", [1], schema.TensorType.FLOAT32)
        ops.append(Operator(code, version, custom_code=custom, inputs=[prev], outputs=[y]))
        tensors.append(y)
        prev = y
    return Model([Subgraph("main", tensors, [x], [prev], ops)])


def test_table_per_stage_and_union_with_custom_and_flex_ops():
    B = schema.BuiltinOperator
    s0 = _tiny([(B.ADD, 1, None), (B.ADD, 2, None), (B.CUSTOM, 1, "FlexMatrixDeterminant")])
    s1 = _tiny([(B.ADD, 2, None), (B.ADD, 4, None), (B.CUSTOM, 1, "MyOp"), (B.CALL, 1, None)])
    table = ops_table([s0, s1])
    assert _counts(table["stages"][0]["ops"]) == Counter({("ADD", 1): 1, ("ADD", 2): 1, ("CUSTOM:FlexMatrixDeterminant", 1): 1})
    assert _counts(table["union"]) == Counter({("ADD", 1): 1, ("ADD", 2): 2, ("ADD", 4): 1, ("CALL", 1): 1,
                                               ("CUSTOM:FlexMatrixDeterminant", 1): 1, ("CUSTOM:MyOp", 1): 1})
    kinds = {e["op"]: e["kind"] for e in table["union"]}
    assert kinds["CUSTOM:FlexMatrixDeterminant"] == "flex" and kinds["CUSTOM:MyOp"] == "custom"
    source = register_ops_cc(table)
    assert _parse_cc(source) == {"ADD": (1, 4)}  # CALL has no kernel: a comment, not a registration
    assert "//   FlexMatrixDeterminant" in source and "Flex delegate" in source
    assert "//   MyOp" in source and "AddCustom" in source
    assert "CALL v1..v1: no builtin kernel" in source
