"""`tflc compile SOURCE`: lower a model, run the pass pipeline and write a build folder."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from compiler.commands import add_user_code_arguments

NAME = "compile"
HELP = "compile a model into a build folder"
DESCRIPTION = ("Lower SOURCE to TFLite, run the pass pipeline and write a build folder "
               "(stage_NN.tflite, manifest.json, ops.json, register_ops.cc, report.json/md).")
DEFAULT_PIPELINE = ("strip-unused,dedupe-buffers,quantize{mode=int8-dynamic},"
                    "check-opset{target=builtins},partition{auto}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="fixtures:NAME, a .keras file, a SavedModel folder or a .tflite file")
    parser.add_argument("--pipeline", "-p", default=DEFAULT_PIPELINE,
                        help=f"comma-separated passes with options in braces (default: {DEFAULT_PIPELINE})")
    parser.add_argument("-o", "--output", help="build folder to write (default: build/<name>); replaced atomically")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size for inputs whose batch dimension is None (default 1; LSTMs need a fixed batch)")
    parser.add_argument("--calibration", metavar="NPZ", help="calibration data for int8: arrays keyed by input name")
    add_user_code_arguments(parser, "loading SOURCE")
    parser.add_argument("--frontend", choices=("auto", "native", "converter"), default="auto",
                        help="how a Keras model is lowered: native (tflc's own rules per Keras layer, fused LSTMs), "
                             "converter (tf.lite.TFLiteConverter), or auto (native when every layer has a rule, "
                             "else the converter, naming the layers without one; default)")
    parser.add_argument("--lstm", choices=("fused", "unrolled"), default="fused",
                        help="native front-end: an LSTM as one fused UNIDIRECTIONAL_SEQUENCE_LSTM (default; its state "
                             "lives in variable tensors) or unrolled into builtin ops per time step (no variables: "
                             "for runtimes that refuse them, such as LiteRT's CompiledModel and tflc-run)")
    parser.add_argument("--print-ir-after-all", action="store_true", help="dump the IR to stderr after each pass")
    parser.add_argument("--force", action="store_true",
                        help="replace the -o folder even if it is not a tflc build (its content is deleted)")


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM: Linux carries ru_maxrss across exec, so a big parent would show
    through it), or its children's if higher (a conversion run in a child process)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as f:
            own = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def default_output(source: str) -> str:
    if source.startswith("fixtures:"):
        return str(Path("build") / source.split(":", 1)[1])
    return str(Path("build") / Path(source.rstrip("/")).stem)


def run(args) -> int:
    from compiler import pipeline
    from compiler.artifacts import write_build
    from compiler.files import check_output_folder, recover_folder, write_error
    from compiler.frontend import check_calibration, load_source
    from compiler.passes import PassContext

    start = time.perf_counter()
    steps = pipeline.parse(args.pipeline)  # check the pipeline before the slow conversion
    out = Path(args.output or default_output(args.source))
    recover_folder(out)
    check_output_folder(out, args.source, args.force)  # before the slow conversion, so nothing is lost or wasted
    calibration = check_calibration(args.source, steps, args.calibration)  # before the slow conversion
    src = load_source(args.source, batch=args.batch, calibration=calibration, imports=args.imports,
                      unsafe=args.unsafe_deserialization, frontend=args.frontend, lstm=args.lstm)
    if src.kind == "tflite":  # an untrusted file: LiteRT must survive it before tflc writes a build of it
        from compiler import isolate
        refused = isolate.smoke(args.source)
        if refused:  # not fatal: the target runtime may have kernels (custom ops) this LiteRT lacks
            print(f"tflc: warning: LiteRT refuses {args.source} ({refused}); the build may not run here",
                  file=sys.stderr)
    ctx = PassContext(source=src)
    timings: list = []
    model = pipeline.run(src.model, steps, ctx, print_ir=args.print_ir_after_all, timings=timings)
    report = {"source": src.spec, "pipeline": args.pipeline, "batch": src.batch,
              "frontend": src.frontend if src.kind in ("keras", "fixture") else None,
              "lstm": args.lstm if src.frontend == "native" else None,
              "convert_seconds": round(src.convert_seconds, 3), "timings": timings, "passes": ctx.report}
    report["compile_seconds"] = round(time.perf_counter() - start, 3)
    report["peak_rss_bytes"] = peak_rss_bytes()
    try:
        path = write_build(model, out, source=src, pipeline=args.pipeline, report=report,
                           sample_inputs=src.sample_inputs)
    except OSError as e:  # full disk, permissions: the previous build is untouched, the temp folder removed
        raise write_error(out, e) from None
    manifest = json.loads((path / "manifest.json").read_text())
    total = sum(s["bytes"] for s in manifest["stages"])
    note = json.loads((path / "report.json").read_text()).get("quantization_note")
    if note:
        print(f"tflc: note: {note}", file=sys.stderr)
    print(f"wrote {path}: {len(manifest['stages'])} stage(s), {total:,} bytes, quantization {manifest['quantization']}")
    print(f"compile wall time {time.perf_counter() - start:.1f} s, peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")
    return 0
