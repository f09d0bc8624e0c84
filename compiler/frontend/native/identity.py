"""Layers that only act in training: at inference their output is their input (no operator)."""

from __future__ import annotations

from compiler.frontend.native import rule
from compiler.frontend.native.graph import Node
from compiler.ir import Tensor

TRAINING_ONLY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "ActivityRegularization")


@rule(*TRAINING_ONLY)
def identity(node: Node) -> list[Tensor]:
    return [node.x]


@rule("InputLayer")
def input_layer(node: Node) -> list[Tensor]:
    # Input nodes are the graph's inputs and never reach a rule; a nested model's InputLayer neither.
    return [node.x]
