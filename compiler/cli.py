"""tflc command line: compile | run | verify | ops | inspect.

User errors (TflcError) print one line on stderr and exit non-zero; a traceback means a bug in tflc.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import compiler  # noqa: E402
from compiler.errors import EXIT_INTERNAL, EXIT_USAGE, TflcError  # noqa: E402
from compiler import quiet  # noqa: E402

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
        sp.add_argument("--verbose", action="store_true",
                        help="also show the libraries' own log lines (TensorFlow, absl, oneDNN, LiteRT) on stderr")
        sp.set_defaults(func=module.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    verbose = bool(getattr(args, "verbose", False))
    quiet.setup(verbose)
    _terminate_cleanly()
    try:
        with quiet.filtered_stderr(enabled=not verbose):
            return int(args.func(args) or 0)
    except TflcError as e:
        return _user_error(str(e) or type(e).__name__, e.exit_code)
    except KeyboardInterrupt:
        print("tflc: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("tflc: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.errno in _ENVIRONMENT_ERRNOS:  # the machine's state (disk, permissions), not a bug in tflc
            return _user_error(os_error_line(e), EXIT_USAGE)
        return _internal_error()
    except RecursionError:
        return _user_error("input nested too deeply to read", EXIT_USAGE)
    except Exception:
        return _internal_error()


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so temp files and folders are removed on the way out."""


def _terminate_cleanly() -> None:
    def handler(signum, frame):
        raise _Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread (main() called from a library): keep the default


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                       errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EMFILE,
                       errno.ENFILE, errno.ENAMETOOLONG, errno.EXDEV, errno.EFBIG, errno.ELOOP, errno.EBUSY}


def os_error_line(e: OSError) -> str:
    """`path: reason` for an OSError, e.g. `build/x/.stage_00.tflite: No space left on device`."""
    reason = e.strerror or str(e)
    where = e.filename if e.filename is not None else None
    return f"{where}: {reason}" if where is not None else reason


def _user_error(message: str, code: int) -> int:
    lines = message.splitlines() or ["error"]
    print(f"tflc: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)
    return code


def _internal_error() -> int:
    traceback.print_exc()
    print(f"tflc: internal error (a bug in tflc {compiler.__version__}): please report it with the traceback "
          "above and the command you ran", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
