"""tflc command line: compile | run | verify | ops | inspect.

User errors (TflcError) print one line on stderr and exit non-zero; a traceback means a bug in tflc.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import compiler  # noqa: E402
from compiler.errors import TflcError  # noqa: E402

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


COMMANDS = ["compile", "run", "inspect", "verify", "ops"]  # modules of compiler.commands, in --help order


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tflc", description="Compile large Keras models into partitioned, quantized LiteRT "
                "flatbuffers that run on phones, stage by stage.", epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tflc {compiler.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"compiler.commands.{name}")
        sp = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION)
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
