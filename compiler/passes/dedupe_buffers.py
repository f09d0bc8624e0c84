"""Merge constant buffers whose bytes are identical (same dtype, shape and quantization)."""

from __future__ import annotations

from compiler.ir import Buffer, Model
from compiler.passes import PassContext, register


@register("dedupe-buffers")
def dedupe_buffers(model: Model, *, ctx: PassContext) -> Model:
    before = model.buffer_count()
    bytes_before = model.weight_bytes()
    seen: dict[tuple, Buffer] = {}
    for tensor in model.constant_tensors():
        if tensor.is_variable:  # a variable's buffer is its initial value, written at run time
            continue
        tensor.buffer = seen.setdefault(tensor.content_key(), tensor.buffer)
    ctx.note("dedupe-buffers", "merged_buffers", before - model.buffer_count())
    ctx.note("dedupe-buffers", "bytes_saved", bytes_before - model.weight_bytes())
    return model
