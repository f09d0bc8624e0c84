"""Run LiteRT on untrusted models in a child process, so that a crash becomes an error, not tflc's death.

LiteRT trusts the models it loads: a malformed one can kill the process with SIGSEGV or SIGABRT.
tflc's reader rejects everything it knows to be dangerous (`compiler/ir/validate.py`); this module
is the last line behind it. `smoke` loads (LiteRT's flatbuffer verifier runs then), allocates and
invokes a model once with zeros in a child (`python -m compiler.isolate`), with the builtin kernels and
then with XNNPACK; `run_build` runs `tflc run` in a child. The child is a fresh interpreter (subprocess, never fork of a process that
has TensorFlow loaded), and a signal, or a hang past the timeout, becomes one line.

Imports stay light (no numpy, no LiteRT, no IR in the parent): the CLI calls this before anything heavy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from compiler.errors import FlatbufferError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_ENV = "TFLC_ISOLATE_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
# What the child prints on stdout, one line each: "phase <what> | <kernels>", then "ok" or "refused <reason>".
_PHASE, _OK, _REFUSED = "phase ", "ok", "refused "
_NOT_FLATBUFFER = "The model is not a valid Flatbuffer buffer"


class LiteRTCrash(FlatbufferError):
    """LiteRT killed (or hung) the child process that ran a model."""


def _timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="",
                PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


# ----------------------------------------------------------------------------------------- smoke test

def smoke(path: str | os.PathLike, timeout: float | None = None) -> str | None:
    """Load, allocate and invoke the model at `path` once with zeros, builtin kernels then XNNPACK, in a
    child process. Returns None when LiteRT runs it, or LiteRT's own (clean) refusal as a string;
    raises LiteRTCrash when the child dies from a signal or does not finish within `timeout` seconds."""
    timeout = _timeout() if timeout is None else timeout
    cmd = [sys.executable, "-m", "compiler.isolate", "smoke", os.fspath(path)]
    try:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        phase = _last_phase(e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))
        raise LiteRTCrash(f"{path}: LiteRT does not finish {phase} this model within {timeout:g} s "
                          f"(set {TIMEOUT_ENV} to wait longer)") from None
    lines = proc.stdout.splitlines()
    if proc.returncode < 0:
        raise LiteRTCrash(f"{path}: LiteRT crashes on this model: {signal_name(proc.returncode)} while "
                          f"{_last_phase(proc.stdout)}")
    if lines and lines[-1] == _OK:
        return None
    refused = [line[len(_REFUSED):] for line in lines if line.startswith(_REFUSED)]
    if proc.returncode == 0 and refused:
        if _NOT_FLATBUFFER in refused[-1]:  # LiteRT's flatbuffer verifier, which tflc's reader does not run
            raise FlatbufferError(f"{path}: LiteRT's flatbuffer verifier rejects this file (corrupt?)")
        return refused[-1]
    raise RuntimeError(f"the LiteRT smoke test of {path} failed unexpectedly (exit {proc.returncode}): "
                       f"{proc.stderr.strip()[-2000:]}")


def _last_phase(stdout: str) -> str:
    phases = [line[len(_PHASE):] for line in stdout.splitlines() if line.startswith(_PHASE)]
    what, _, kernels = (phases[-1] if phases else "starting").partition(" | ")
    return f"{what} ({kernels})" if kernels else what


def _smoke_child(path: str) -> None:
    """The child's side of `smoke`: report each phase before entering it, so the parent can say where
    a crash happened (stdout is flushed line by line)."""
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

    def phase(what: str, kernels: str) -> None:
        print(f"{_PHASE}{what} | {kernels}", flush=True)

    _limit_memory(path)

    for kernels, resolver in (("builtin kernels", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
                              ("XNNPACK", OpResolverType.AUTO)):
        try:
            phase("loading", kernels)
            interp = Interpreter(model_path=path, experimental_op_resolver_type=resolver, num_threads=1)
            phase("allocating tensors", kernels)
            interp.allocate_tensors()
            for d in interp.get_input_details():
                dtype = np.dtype(d["dtype"])
                if dtype.kind not in "OSUV":
                    interp.set_tensor(d["index"], np.zeros(d["shape"], dtype))
            phase("invoking", kernels)
            interp.invoke()
            del interp
        except Exception as e:  # LiteRT's own clean refusal: not a crash, the parent decides what it means
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"{_REFUSED}{kernels}: {reason[:500]}", flush=True)
            return
    print(_OK, flush=True)


def _limit_memory(path: str) -> None:
    """Cap the child's address space, so a model whose kernels size their outputs from hostile constants
    (TILE, RESIZE_*, BROADCAST_TO...) fails to allocate instead of taking the machine's memory: 2 GiB for
    Python and LiteRT, twice the file (the model and XNNPACK's packed weights), and the activation limit
    the validator applies to the file."""
    import resource

    from compiler.ir.validate import activation_limit

    size = os.path.getsize(path)
    limit = (2 << 30) + 2 * size + activation_limit(size)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# ----------------------------------------------------------------------------------------- tflc run

def run_argv(args: argparse.Namespace) -> list[str]:
    """The `tflc run` command line that `args` (parsed by commands/run.py) came from, without --isolate.
    Rebuilt from run's own parser, so an option added there is carried without changes here."""
    from compiler.commands import run as run_command

    parser = argparse.ArgumentParser(add_help=False)
    run_command.add_arguments(parser)
    argv = ["run"]
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest == "isolate" or value is None or value is False:
            continue
        if not action.option_strings:
            argv.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            argv.append(action.option_strings[0])
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [action.option_strings[0], str(item)]
        else:
            argv += [action.option_strings[0], str(value)]
    return argv


def run_build(args: argparse.Namespace) -> int:
    """Run `tflc run` with these arguments in a child process and return its exit status. Its output
    goes straight to ours; a child killed by a signal becomes LiteRTCrash."""
    proc = subprocess.run([sys.executable, "-m", "compiler", *run_argv(args)], env=_env(), stdin=subprocess.DEVNULL)
    if proc.returncode < 0:
        raise LiteRTCrash(f"{args.build}: LiteRT crashes on this build: {signal_name(proc.returncode)} while "
                          "running its stages (in an isolated child process)")
    return proc.returncode


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "smoke":
        _smoke_child(argv[1])
        return 0
    print("usage: python -m compiler.isolate smoke MODEL.tflite", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
