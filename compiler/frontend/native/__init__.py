"""Native Keras lowering: Keras 3 layers straight to LiteRT builtins, without TF tracing or the converter.

One rule per Keras layer class, registered by class name with `@rule("Dense")` in the modules of this
package (the way passes register). A rule gets a `Node` (one call of the layer: input tensors, output
shapes from Keras' shape inference) and returns the layer's output tensors; weights come from the
layer's variables as numpy arrays.

The graph is walked through `Functional._nodes_by_depth` and each node's `arguments.fill_in`, the
same structures `Functional.call` runs through (Keras 3 has no public graph walk: `model.operations`
is public but gives no edges). Sequential models are walked through the Functional they wrap
(`Sequential._functional`); nested models recurse, their layers' tensors named `outer/inner`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.errors import ConversionError
from compiler.ir import Model, SignatureDef, Tensor
from compiler.frontend.native.graph import OP, Graph, Node


@dataclass(frozen=True)
class Rule:
    lower: Callable[[Node], list[Tensor]]
    check: Callable[[object], str | None] | None = None  # why this instance cannot be lowered, or None


RULES: dict[str, Rule] = {}


def rule(*class_names: str, check: Callable[[object], str | None] | None = None):
    """Register a lowering for the Keras layer classes `class_names`."""

    def wrap(fn):
        for name in class_names:
            if name in RULES:
                raise RuntimeError(f"native rule for {name!r} registered twice")
            RULES[name] = Rule(fn, check)
        return fn

    return wrap


def _load_rules() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("graph",):
            importlib.import_module(f"{__name__}.{info.name}")


_load_rules()


def _functional(model):
    """The Functional graph behind a model (Sequential wraps one), or None for subclassed models."""
    fn = getattr(model, "_functional", None) or model
    return fn if hasattr(fn, "_nodes_by_depth") else None


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _is_layer(op) -> bool:
    import keras

    return isinstance(op, keras.layers.Layer)


def unsupported(keras_model) -> list[str]:
    """Layer classes (with the reason, when a rule exists but refuses this instance) that have no
    native lowering; empty when the whole model lowers natively."""
    missing: list[str] = []

    def visit(model):
        fn = _functional(model)
        if fn is None:
            import keras

            why = "built without an Input" if isinstance(model, keras.Sequential) else "a subclassed model"
            missing.append(f"{type(model).__name__} ({why})")
            return
        for inp in fn.inputs:
            if any(d is None for d in inp.shape[1:]):
                missing.append(f"InputLayer (unknown dimension in {tuple(inp.shape)})")
        for layer in fn.operations:
            cls = type(layer).__name__
            if _is_model(layer):
                visit(layer)
            elif not _is_layer(layer):  # a keras.ops call in the graph, e.g. keras.ops.add
                missing.append(f"keras.ops.{type(layer).__name__}")
            elif cls not in RULES:
                missing.append(cls)
            elif RULES[cls].check is not None:
                why = RULES[cls].check(layer)
                if why:
                    missing.append(f"{cls} ({why})")

    visit(keras_model)
    return list(dict.fromkeys(missing))


def supports(keras_model) -> bool:
    return not unsupported(keras_model)


FRONTENDS = ("auto", "native", "converter")


def choose(keras_model, frontend: str = "auto") -> bool:
    """Whether to lower natively. `auto`: when every layer has a rule, else one note line on stderr naming
    the layer classes without one, and the converter; `native`: always (an error if a rule is missing)."""
    import sys

    from compiler.errors import UsageError

    if frontend not in FRONTENDS:
        raise UsageError(f"unknown front-end {frontend!r} (expected one of {', '.join(FRONTENDS)})")
    if frontend == "converter":
        return False
    missing = unsupported(keras_model)
    if not missing:
        return True
    if frontend == "native":
        raise ConversionError(f"--frontend native: no native lowering for {', '.join(missing)}; "
                              "use --frontend converter or auto")
    print(f"tflc: note: no native lowering for {', '.join(missing)}; using the TFLite converter", file=sys.stderr)
    return False


def _shape(kt, batch: int) -> tuple[int, ...]:
    shape = tuple(kt.shape)
    if shape and shape[0] is None:
        shape = (batch, *shape[1:])
    if any(d is None for d in shape):
        raise ConversionError(f"tensor {kt.name!r} has an unknown dimension {shape}; give the Input a full shape")
    return tuple(int(d) for d in shape)


def _walk(g: Graph, model, inputs: list[Tensor], prefix: str, batch: int) -> list[Tensor]:
    """Lower one Functional graph whose inputs are `inputs`; returns its output tensors."""
    import keras

    fn = _functional(model)
    values: dict[int, Tensor] = {id(kt): t for kt, t in zip(fn.inputs, inputs)}
    uses = Counter(id(kt) for nodes in fn._nodes_by_depth.values() for node in nodes
                   for kt in node.input_tensors)
    uses.update(id(kt) for kt in fn.outputs)
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            layer = node.operation
            if layer is None or node.is_input:
                continue
            args, _ = node.arguments.fill_in(values)
            ins = [t for t in keras.tree.flatten(args) if isinstance(t, Tensor)]
            name = prefix + layer.name
            if _is_model(layer):
                outs = _walk(g, layer, ins, name + "/", batch)
                for i, t in enumerate(outs):
                    if not any(t is x for x in ins):
                        g.rename(t, name if i == 0 else f"{name}:{i}")
            else:
                rule_ = RULES.get(type(layer).__name__) if _is_layer(layer) else None
                if rule_ is None:
                    raise ConversionError(f"no native lowering for Keras layer {layer.name!r} "
                                          f"({type(layer).__name__}); use --frontend converter")
                shapes = [_shape(kt, batch) for kt in node.outputs]
                outs = rule_.lower(Node(g, layer, name, ins, shapes))
            for kt, t in zip(node.outputs, outs):
                values[id(kt)] = t
                # A pass-through (Dropout, folded BN) hands its input on: its own read is not a use.
                g.uses[id(t)] += uses[id(kt)] - sum(t is x for x in ins)
    return [values[id(kt)] for kt in fn.outputs]


def _input_name(kt) -> str:
    return (getattr(kt, "name", None) or "input").split(":")[0]


LSTM_MODES = ("fused", "unrolled")


def lower(keras_model, batch: int | None = None, lstm: str = "fused") -> Model:
    """The IR of a Keras model whose layers all have rules (see `unsupported`). `lstm`: "fused" (one
    UNIDIRECTIONAL_SEQUENCE_LSTM each, state in variable tensors) or "unrolled" (builtin ops per time
    step, no variables: for runtimes that refuse variable tensors, e.g. LiteRT's CompiledModel)."""
    if lstm not in LSTM_MODES:
        from compiler.errors import UsageError
        raise UsageError(f"unknown LSTM lowering {lstm!r} (expected {' or '.join(LSTM_MODES)})")
    from compiler.frontend import io_names, keras_layer_names

    missing = unsupported(keras_model)
    if missing:
        raise ConversionError(f"no native lowering for {', '.join(missing)}; use --frontend converter")
    fn = _functional(keras_model)
    shapes = [tuple(kt.shape) for kt in fn.inputs]
    fixed = {s[0] for s in shapes if s and s[0] is not None}
    if batch is not None and fixed and fixed != {batch}:
        from compiler.errors import UsageError
        raise UsageError(f"the model has a fixed batch of {min(fixed)}; --batch {batch} cannot change it")
    batch = batch or (min(fixed) if fixed else 1)
    g = Graph("main", lstm=lstm)
    in_names, names = io_names(keras_model)  # dict keys for dict I/O, as on the converter path
    ins = [g.tensor(n, _shape(kt, batch), kt.dtype) for kt, n in zip(fn.inputs, in_names)]
    g.sg.inputs = ins
    outs = _walk(g, keras_model, ins, "", batch)
    final = []
    for t, name in zip(outs, names):
        if any(t is x for x in ins) or any(t is x for x in final):
            # A graph output must be written by an operator and be distinct: copy it.
            copy = g.tensor(name, t.shape, t.dtype)
            g.op(OP.RESHAPE, [t, g.const(f"{name}/shape", np.asarray(t.shape, np.int32))], [copy])
            t = copy
        elif t.name != name:
            g.rename(t, name)
        final.append(t)
    g.sg.outputs = final
    model = Model(subgraphs=[g.sg], description="tflc native Keras lowering")
    model.signature_defs = [SignatureDef("serving_default", g.sg, [(t.name, t) for t in ins],
                                         [(t.name, t) for t in final])]
    model.keras_layers = keras_layer_names(keras_model)
    _min_runtime(model)
    return model


def _min_runtime(model: Model) -> None:
    """The `min_runtime_version` metadata the converter writes (16 bytes, NUL-padded); the build writer
    refreshes it after passes change op versions."""
    from kernels.catalogue import required_runtime

    from compiler.ir import Buffer

    data = required_runtime([model])[0].encode().ljust(16, b"\0")
    model.metadata.append(("min_runtime_version", Buffer(np.frombuffer(data, dtype=np.uint8).copy())))
