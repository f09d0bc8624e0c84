"""Shared test set-up: hypothesis profiles and helpers to run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TFLC_QUIET", "")

# CI: derandomized (same examples every run) and no per-example deadline (TF is slow to warm up).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=10,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", deadline=None, max_examples=10,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent


def tflc(*args: str, cwd: str | Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m compiler ARGS` in a subprocess, as a user would run `tflc`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> str:
    """A user error: non-zero exit, no traceback, a `tflc: error:` line naming the problem."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tflc: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), (fragment, errors[0])
    return errors[0]
