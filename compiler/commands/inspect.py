"""`tflc inspect FILE|DIR`: subgraphs, op histogram, tensor and buffer sizes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NAME = "inspect"
HELP = "show subgraphs, op histogram, tensor and buffer sizes"
DESCRIPTION = "Inspect a .tflite file or every stage of a build folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE|DIR")
    parser.add_argument("--tensors", type=int, default=10, metavar="N", help="list the N largest tensors (default 10)")
    parser.add_argument("--deep", action="store_true",
                        help="also load and invoke each model once with zeros in LiteRT, in a child process")


def read_models(path: str | Path) -> tuple[str | None, list[tuple[str, int, object]]]:
    """(build summary line or None, [(label, bytes, IR model)]) for a .tflite file or a build folder.

    Stage files are read only through the checked path (inside the folder, regular, no symlink, sha256
    as in the manifest), the same one the runtime uses; a file given directly must be a regular file."""
    from compiler import files
    from compiler.errors import BuildFolderError, FlatbufferError, SourceError
    from compiler.ir import flatbuffer
    from compiler.manifest import load

    p = Path(path)
    if p.is_dir():
        manifest = load(p)
        out = []
        for st in manifest.stages:
            with files.open_member(p, st.file) as fd:
                if files.sha256_fd(fd) != st.sha256:
                    raise BuildFolderError(f"{p}: stage file {st.file} does not match its sha256 in manifest.json "
                                           "(corrupt or modified); rebuild with tflc compile")
                out.append((st.file, os.fstat(fd).st_size,
                            flatbuffer.loads(files.map_fd(fd, f"{p}/{st.file}", FlatbufferError), origin=f"{p}/{st.file}")))
        head = (f"build {p}: source {manifest.source}, pipeline {manifest.pipeline!r}, "
                f"{len(out)} stage(s), quantization {manifest.quantization}")
        return head, out
    with files.open_regular(p, SourceError) as fd:
        return None, [(p.name, os.fstat(fd).st_size,
                       flatbuffer.loads(files.map_fd(fd, str(p), FlatbufferError), origin=str(p)))]


def run(args) -> int:
    from compiler.ir import type_name

    if args.tensors < 0:
        from compiler.errors import UsageError
        raise UsageError(f"--tensors must be 0 or more, got {args.tensors}")
    head, models = read_models(args.path)
    if head:
        print(head)
    for label, size, model in models:
        print(f"\n== {label}: {size:,} bytes, {len(model.subgraphs)} subgraph(s), "
              f"{model.buffer_count()} buffers, weights {model.weight_bytes():,} bytes")
        for i, sg in enumerate(model.subgraphs):
            act = sum(t.nbytes for t in sg.tensors if not t.is_constant)
            print(f"  subgraph {i} {sg.name!r}: {len(sg.operators)} ops, {len(sg.tensors)} tensors, "
                  f"activations {act:,} bytes")
        print("  inputs:  " + ", ".join(f"{t.name}{list(t.shape)}:{type_name(t.type)}" for t in model.inputs))
        print("  outputs: " + ", ".join(f"{t.name}{list(t.shape)}:{type_name(t.type)}" for t in model.outputs))
        print("  ops:")
        for name, n in model.op_histogram().most_common():
            print(f"    {name:32s} {n:6d}")
        if args.tensors:
            print("  largest tensors:")
            tensors = sorted((t for sg in model.subgraphs for t in sg.tensors), key=lambda t: -t.nbytes)
            for t in tensors[: args.tensors]:
                kind = "const" if t.is_constant else "activation"
                print(f"    {t.nbytes:>12,}  {kind:10s} {type_name(t.type):8s} {list(t.shape)} {t.name}")
        if args.deep:  # LiteRT may crash on a file our checks pass: only a child process finds out safely
            from compiler import isolate
            path = Path(args.path)
            refused = isolate.smoke(path / label if path.is_dir() else path)
            print("  LiteRT: " + (f"refuses it: {refused}" if refused else
                                  "loads, allocates and invokes it with zeros (builtin kernels and XNNPACK)"))
    return 0
