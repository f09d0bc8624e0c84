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


# ------------------------------------------------------------------------------------ test tiers
# `make test-fast` (pytest -m fast) runs these IR-only tests: no TensorFlow import, no Keras conversion,
# seconds in all. The list is explicit (module::test, parameters included); a test joins it only once it
# passes with TensorFlow and Keras unimportable, which the guard below enforces on every fast run.
FAST = (
    "test_check_opset.py::test_release_targets_grow_with_the_release",
    "test_check_opset.py::test_target_file_round_trips",
    "test_kernels.py::test_catalogue_covers_every_builtin_operator_of_the_installed_schema",
    "test_kernels.py::test_every_kernel_has_a_registration_function_and_a_runtime_version_per_version",
    "test_kernels.py::test_table_per_stage_and_union_with_custom_and_flex_ops",
    "test_memory.py::test_arena_reuses_memory_of_dead_tensors",
    "test_memory.py::test_conv_im2col_only_without_xnnpack",
    "test_memory.py::test_estimate_run_counts_handoff",
    "test_memory.py::test_estimate_tracks_measured_vmhwm",
    "test_memory.py::test_weights_are_counted_once_and_packed_copies_with_xnnpack",
    "test_partition.py::test_a_pass_that_breaks_its_contract_fails_at_that_pass",
    "test_partition.py::test_auto_reorders_interleaved_branches",
    "test_partition.py::test_parse_size",
    "test_partition.py::test_quantize_after_partition_is_refused_before_any_work",
    "test_passes.py::test_equal_weights_share_one_buffer",
    "test_passes.py::test_pipeline_parses_options_and_rejects_unknowns",
    "test_passes.py::test_print_ir_after_all_dumps_each_pass",
    "test_passes.py::test_same_bytes_different_shape_are_not_merged",
    "test_passes.py::test_strip_unused_drops_unreachable_subgraphs",
    "test_passes.py::test_strip_unused_removes_exactly_the_dead_branch",
    "test_quantize.py::test_bad_options_and_missing_calibration",
    "test_quantize.py::test_float16_fc_before_expected",
    "test_quantize.py::test_float16_on_float16_model_changes_nothing",
    "test_quantize.py::test_int8_dynamic_fc_before_expected",
    "test_runtime.py::test_quantize_dequantize_round_trip",
    "test_runtime.py::test_save_outputs_and_load_inputs",
    # Whole modules that never import TensorFlow or Keras.
    "test_quant_rules.py",
    "test_terminal.py",
    "test_validate.py",
    "test_finish.py",
)
_HEAVY = ("tensorflow", "keras", "tf_keras")


class _NoTensorFlow:
    """A meta-path finder that refuses TensorFlow and Keras, so a `fast` test that starts needing them
    fails loudly instead of quietly making the fast tier slow."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HEAVY:
            raise ImportError(f"{name} imported by a test marked fast (conftest.FAST): fast tests must not "
                              "import TensorFlow or Keras; remove the test from FAST")
        return None


def pytest_collection_modifyitems(config, items):
    import pytest

    for it in items:
        key = f"{Path(it.path).name}::{it.originalname}"
        if key in FAST or Path(it.path).name in FAST:  # a bare module name: all of its tests
            it.add_marker(pytest.mark.fast)


def _fast_only(config) -> bool:
    return (config.getoption("markexpr", "") or "").strip() == "fast"


def pytest_configure(config):
    if _fast_only(config) and not any(m in sys.modules for m in _HEAVY):
        sys.meta_path.insert(0, _NoTensorFlow())


def pytest_ignore_collect(collection_path, config):
    """With -m fast, test modules without a fast test are not even imported (collection is most of the time)."""
    name = collection_path.name
    if _fast_only(config) and name.startswith("test_") and name.endswith(".py"):
        return name not in {key.split("::")[0] for key in FAST} or None
    return None
