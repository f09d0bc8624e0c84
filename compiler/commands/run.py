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
    parser.add_argument("--raw", action="store_true",
                        help="keep quantized outputs (e.g. an io=int8 build's) as the integers the model returns; "
                             "by default they are dequantized to float32 with the output's scale and zero point")
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

    from compiler.affine import dequantize
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
        inputs = model.sample_inputs() if src is None else load_inputs(src, model.inputs, batches=True)
        outputs = run_batches(model, inputs, args)
        if not args.raw:
            outputs = {o.name: dequantize(outputs[o.name], o.quantization.to_json()) if o.quantization else
                       outputs[o.name] for o in model.outputs}
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


def run_batches(model, inputs: dict, args) -> dict:
    """Run `inputs` through the build; a leading axis holding several batches of the build's batch is
    run one batch at a time (through the same model, so resident stages see them in order) and the
    outputs are concatenated."""
    import numpy as np

    batch = {t.name: (t.shape[0] if t.shape else None) for t in model.inputs}
    counts = {name: (len(a) // batch[name] if batch.get(name) and np.ndim(a) and len(a) % batch[name] == 0
                     else None) for name, a in inputs.items()}
    n = set(counts.values())
    if len(n) != 1 or None in n:
        bad = next((k for k, c in counts.items() if c is None), next(iter(counts), "?"))
        raise UsageError(f"input {bad!r}: the leading axis must hold a whole number of batches of "
                         f"{batch.get(bad)} (and the same number for every input)")
    n = n.pop()
    if n == 1:
        return model(inputs, checkpoint=args.checkpoint, resume=args.resume, progress=True)
    if args.checkpoint or args.resume:
        raise UsageError(f"--checkpoint and --resume take one batch; the input holds {n} batches")
    parts = [model({k: a[j * batch[k]:(j + 1) * batch[k]] for k, a in inputs.items()}, progress=j == 0)
             for j in range(n)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
