"""Map TFLite tensor names back to the Keras layers they came from.

The converter keeps TF name scopes in tensor names, e.g. `functional_1/branch_2_lstm_1_1/while/...`
or fused names joined with ';'. Keras 3 suffixes scopes with `_1`, `_2`, ... so a scope matches a
layer exactly or after stripping one such suffix. The deepest (last) match wins, so a layer of a
nested sub-model is preferred over the sub-model itself.
"""

from __future__ import annotations

import re

from compiler.ir.core import Model, Operator, Subgraph

_SUFFIX = re.compile(r"_\d+$")


def layer_of_name(name: str, layers: set[str] | list[str]) -> str | None:
    layers = set(layers)
    best = None
    for part in re.split(r"[;]", name):
        for scope in part.split("/"):
            scope = scope.split(":")[0]
            if scope in layers:
                best = scope
            else:
                stripped = _SUFFIX.sub("", scope)
                if stripped in layers:
                    best = stripped
    return best


def layer_of_op(model: Model, op: Operator, subgraph: Subgraph | None = None) -> str:
    """The Keras layer an operator came from, or the best name available (its first output's scope)."""
    layers = set(model.keras_layers)
    # Outputs first; then weights (a final layer's output may carry a signature name, but its
    # weights keep the layer's scope); activations last, since they come from the previous layer.
    ins = [t for t in op.inputs if t is not None]
    candidates = ([t.name for t in op.outputs if t is not None] + [t.name for t in ins if t.is_constant]
                  + [t.name for t in ins if not t.is_constant])
    if layers:
        for name in candidates:
            hit = layer_of_name(name, layers)
            if hit:
                return hit
        # Ops inside a WHILE body carry the loop's scope only through the caller.
        if subgraph is not None and subgraph is not model.main:
            for caller_sg, caller in model.operators():
                if subgraph in caller.called_subgraphs():
                    return layer_of_op(model, caller, caller_sg)
    if candidates:
        parts = [p for p in candidates[0].split(";")[0].split("/") if p]
        return parts[1] if len(parts) > 2 else parts[0]
    return op.name
