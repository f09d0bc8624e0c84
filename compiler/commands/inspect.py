"""`tflc inspect FILE|DIR`: subgraphs, op histogram, tensor and buffer sizes."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "inspect"
HELP = "show subgraphs, op histogram, tensor and buffer sizes"
DESCRIPTION = "Inspect a .tflite file or every stage of a build folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE|DIR")
    parser.add_argument("--tensors", type=int, default=10, metavar="N", help="list the N largest tensors (default 10)")


def run(args) -> int:
    from compiler.ir import flatbuffer, type_name
    from compiler.manifest import read_manifest

    path = Path(args.path)
    if path.is_dir():
        manifest = read_manifest(path)
        files = [(s["file"], path / s["file"]) for s in manifest["stages"]]
        print(f"build {path}: source {manifest.get('source')}, pipeline {manifest.get('pipeline')!r}, "
              f"{len(files)} stage(s), quantization {manifest.get('quantization')}")
    else:
        files = [(path.name, path)]
    for label, f in files:
        model = flatbuffer.load(f)
        size = f.stat().st_size
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
    return 0
