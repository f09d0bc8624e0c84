"""`tflc run DIR`: run a build folder stage by stage with LiteRT."""

from __future__ import annotations

import argparse
from pathlib import Path

from compiler.errors import UsageError

NAME = "run"
HELP = "run a build folder stage by stage with LiteRT"
DESCRIPTION = ("Check stage hashes and inputs against the manifest, then run the stages one "
               "at a time with ai_edge_litert, freeing each before loading the next.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", metavar="DIR", help="build folder written by tflc compile")
    parser.add_argument("--input", "-i", metavar="NPZ", help="inputs keyed by input name (default: the build's sample input)")
    parser.add_argument("-o", "--output", metavar="NPZ", help="write the outputs here (atomically)")
    parser.add_argument("--checkpoint", metavar="DIR", help="write each finished stage's outputs here")
    parser.add_argument("--resume", action="store_true", help="continue after the last checkpointed stage")
    parser.add_argument("--no-xnnpack", action="store_true", help="run without the default XNNPACK delegate")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")


def check_output_path(path: str) -> None:
    """Refuse an -o the run could not write, before the (possibly long) run starts."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file name such as {p / 'out.npz'}")
    if not p.parent.is_dir():
        raise UsageError(f"-o {path}: folder {p.parent} does not exist")


def run(args) -> int:
    import numpy as np

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    if args.output:
        check_output_path(args.output)

    from compiler.manifest import read_manifest
    from compiler.runtime import StagedModel, load_inputs, save_outputs

    manifest = read_manifest(args.build)
    if args.input:
        inputs = load_inputs(args.input)
    else:
        sample = manifest.get("sample_input")
        if not sample:
            raise UsageError(f"{args.build}: the build names no sample input; pass --input in.npz")
        inputs = load_inputs(Path(args.build) / sample["file"])
    model = StagedModel(args.build, use_xnnpack=not args.no_xnnpack, num_threads=args.threads)
    outputs = model(inputs, checkpoint=args.checkpoint, resume=args.resume, progress=True)
    if args.output:
        save_outputs(args.output, outputs)
    for name, value in outputs.items():
        flat = np.asarray(value).reshape(-1)
        preview = ", ".join(f"{v:.6g}" for v in flat[:6]) + (" ..." if flat.size > 6 else "")
        print(f"{name} {list(np.shape(value))} {np.asarray(value).dtype}: {preview}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
