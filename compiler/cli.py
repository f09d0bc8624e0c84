"""tflc command line: compile | run | verify | ops | inspect.

User errors (TflcError) print one line on stderr and exit non-zero; a traceback means a bug in tflc.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import compiler  # noqa: E402
from compiler.errors import TflcError, UsageError  # noqa: E402

DEFAULT_PIPELINE = ("strip-unused,dedupe-buffers,quantize{mode=int8-dynamic},"
                    "check-opset{target=builtins},partition{auto}")

_EPILOG = """\
examples:
  tflc compile fixtures:contect-small -o build/contect-small
  tflc compile model.keras --pipeline "strip-unused,dedupe-buffers,quantize{mode=float16}" -o build/m
  tflc run build/contect-small --input in.npz -o out.npz
  tflc verify build/contect-small --data fixtures:contect-small --max-drop 1.0
  tflc ops build/contect-small --target builtins
  tflc inspect build/contect-small
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors are usage errors: exit 2, one line
        self.print_usage(sys.stderr)
        print(f"tflc: error: {message}", file=sys.stderr)
        sys.exit(2)


def _peak_rss_bytes() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


# ----------------------------------------------------------------------------------------- compile

def cmd_compile(args) -> int:
    from compiler import pipeline
    from compiler.artifacts import write_build
    from compiler.frontend import load_source
    from compiler.passes import PassContext

    start = time.perf_counter()
    steps = pipeline.parse(args.pipeline)  # check the pipeline before the slow conversion
    src = load_source(args.source, batch=args.batch, calibration=args.calibration)
    out = args.output or _default_output(args.source)
    ctx = PassContext(source=src)
    timings: list = []
    model = pipeline.run(src.model, steps, ctx, print_ir=args.print_ir_after_all, timings=timings)
    report = {"source": src.spec, "pipeline": args.pipeline, "batch": src.batch,
              "convert_seconds": round(src.convert_seconds, 3), "timings": timings, "passes": ctx.report}
    report["compile_seconds"] = round(time.perf_counter() - start, 3)
    report["peak_rss_bytes"] = _peak_rss_bytes()
    path = write_build(model, out, source=src, pipeline=args.pipeline, report=report,
                       sample_inputs=src.sample_inputs)
    manifest = json.loads((path / "manifest.json").read_text())
    total = sum(s["bytes"] for s in manifest["stages"])
    print(f"wrote {path}: {len(manifest['stages'])} stage(s), {total:,} bytes, quantization {manifest['quantization']}")
    print(f"compile wall time {time.perf_counter() - start:.1f} s, peak RSS {_peak_rss_bytes() / 2**20:.0f} MiB")
    return 0


def _default_output(source: str) -> str:
    if source.startswith("fixtures:"):
        return str(Path("build") / source.split(":", 1)[1])
    return str(Path("build") / Path(source.rstrip("/")).stem)


# ----------------------------------------------------------------------------------------- run

def cmd_run(args) -> int:
    import numpy as np

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


# ----------------------------------------------------------------------------------------- inspect

def cmd_inspect(args) -> int:
    from compiler.manifest import read_manifest
    from compiler.ir import flatbuffer, type_name

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


# ----------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tflc", description="Compile large Keras models into partitioned, quantized LiteRT "
                "flatbuffers that run on phones, stage by stage.", epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tflc {compiler.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("compile", help="compile a model into a build folder",
                       description="Lower SOURCE to TFLite, run the pass pipeline and write a build folder "
                       "(stage_NN.tflite, manifest.json, ops.json, register_ops.cc, report.json/md).")
    c.add_argument("source", metavar="SOURCE", help="fixtures:NAME, a .keras file, a SavedModel folder or a .tflite file")
    c.add_argument("--pipeline", "-p", default=DEFAULT_PIPELINE,
                   help=f"comma-separated passes with options in braces (default: {DEFAULT_PIPELINE})")
    c.add_argument("-o", "--output", help="build folder to write (default: build/<name>); replaced atomically")
    c.add_argument("--batch", type=int, default=None,
                   help="batch size for inputs whose batch dimension is None (default 1; LSTMs need a fixed batch)")
    c.add_argument("--calibration", metavar="NPZ", help="calibration data for int8: arrays keyed by input name")
    c.add_argument("--print-ir-after-all", action="store_true", help="dump the IR to stderr after each pass")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", help="run a build folder stage by stage with LiteRT",
                       description="Check stage hashes and inputs against the manifest, then run the stages one "
                       "at a time with ai_edge_litert, freeing each before loading the next.")
    r.add_argument("build", metavar="DIR", help="build folder written by tflc compile")
    r.add_argument("--input", "-i", metavar="NPZ", help="inputs keyed by input name (default: the build's sample input)")
    r.add_argument("-o", "--output", metavar="NPZ", help="write the outputs here (atomically)")
    r.add_argument("--checkpoint", metavar="DIR", help="write each finished stage's outputs here")
    r.add_argument("--resume", action="store_true", help="continue after the last checkpointed stage")
    r.add_argument("--no-xnnpack", action="store_true", help="run without the default XNNPACK delegate")
    r.add_argument("--threads", type=int, default=None, help="interpreter threads")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="show subgraphs, op histogram, tensor and buffer sizes",
                       description="Inspect a .tflite file or every stage of a build folder.")
    i.add_argument("path", metavar="FILE|DIR")
    i.add_argument("--tensors", type=int, default=10, metavar="N", help="list the N largest tensors (default 10)")
    i.set_defaults(func=cmd_inspect)

    from compiler import verify
    from kernels import cli as ops_cli

    external = [
        ("verify", verify, "measure accuracy loss of a build against the float Keras model",
         "Run the build with the staged runtime on evaluation data and compare it with the Keras float model. "
         "Exit 0 within budget, 1 when a budget is breached, 2 on usage errors."),
        ("ops", ops_cli, "list the kernels (op, version) a model needs; check them against a target",
         "List every (op, version) a .tflite or build folder needs, check it against a target op set, and "
         "print a table, JSON or C++ registration source."),
    ]
    for name, module, help_text, description in external:
        sp = sub.add_parser(name, help=help_text, description=description)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TflcError as e:
        lines = str(e).splitlines() or [type(e).__name__]
        print(f"tflc: error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tflc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
