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
    parser.add_argument("--input", "-i", metavar="NPZ", action="append",
                        help="inputs keyed by input name (.npy for a single-input build); repeat to stream several "
                             "through the same model in order, as an app calling it repeatedly would "
                             "(default: the build's sample input)")
    parser.add_argument("-o", "--output", metavar="NPZ",
                        help="write the outputs here (atomically); with several inputs, NAME_0.npz, NAME_1.npz, ...")
    parser.add_argument("--checkpoint", metavar="DIR", help="write each finished stage's outputs here")
    parser.add_argument("--resume", action="store_true", help="continue after the last checkpointed stage")
    parser.add_argument("--no-xnnpack", action="store_true", help="run without the default XNNPACK delegate")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (a positive integer)")
    parser.add_argument("--isolate", action="store_true",
                        help="run the stages in a child process (for builds from an untrusted origin): "
                        "a LiteRT crash becomes an error")


def check_output_path(path: str, build: str) -> None:
    """Refuse an -o the run could not write, or that would overwrite the build's own manifest, stage or
    sample files, before the (possibly long) run starts."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file name such as {p / 'out.npz'}")
    if not p.parent.is_dir():
        raise UsageError(f"-o {path}: folder {p.parent} does not exist")
    if p.parent.resolve() == Path(build).resolve() and (p.name == "manifest.json" or p.suffix == ".tflite"
                                                         or p.name.startswith("sample_input")):
        raise UsageError(f"-o {path}: would overwrite a file of the build itself; choose another name")


def output_paths(path: str, n: int) -> list[Path]:
    p = Path(path)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}_{i}{p.suffix or '.npz'}") for i in range(n)]


def run(args) -> int:
    if getattr(args, "isolate", False):
        from compiler import isolate
        return isolate.run_build(args)

    import numpy as np

    from compiler.files import recover_folder
    from compiler.runtime import StagedModel, load_inputs, save_outputs

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {args.threads}")
    if args.output:
        for out in output_paths(args.output, len(args.input or [None])):
            check_output_path(str(out), args.build)
    if args.input and len(args.input) > 1 and (args.checkpoint or args.resume):
        raise UsageError("--checkpoint and --resume take a single --input")
    recover_folder(Path(args.build))
    for out in output_paths(args.output, len(args.input or [None])) if args.output else []:
        recover_folder(out)  # a `.out.npz.tmp-PID` of a run that was killed while writing
    model = StagedModel(args.build, use_xnnpack=not args.no_xnnpack, num_threads=args.threads)
    sources = args.input or [None]
    outs = output_paths(args.output, len(sources)) if args.output else [None] * len(sources)
    for i, (src, out) in enumerate(zip(sources, outs)):
        inputs = model.sample_inputs() if src is None else load_inputs(src, model.inputs)
        outputs = model(inputs, checkpoint=args.checkpoint, resume=args.resume, progress=True)
        if out is not None:
            save_outputs(out, outputs)
        tag = f"[{i}] " if len(sources) > 1 else ""
        for name, value in outputs.items():
            flat = np.asarray(value).reshape(-1)
            preview = ", ".join(f"{v:.6g}" for v in flat[:6]) + (" ..." if flat.size > 6 else "")
            print(f"{tag}{name} {list(np.shape(value))} {np.asarray(value).dtype}: {preview}")
        if out is not None:
            print(f"wrote {out}")
    return 0
