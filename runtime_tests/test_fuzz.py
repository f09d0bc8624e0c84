"""Fuzz: structure-aware mutants of small models through `tflc inspect`, `compile` and `run`.

Hypothesis picks batches of mutant numbers; each batch goes through long-lived CLI worker processes
(runtime_tests/fuzz_campaign.py: `compiler.cli.main` for inspect, compile with its isolated LiteRT
smoke test, then run on zeros). A worker killed by a signal, a compile whose smoke test finds
LiteRT crashing (a file the validator should have rejected), a hang or a traceback fails the test.
Seeds: the contect-small stage (convolutions, LSTM WHILE loops) and hand-built models (CONV_2D,
SPLIT, WHILE, CALL_ONCE). `make fuzz` runs the long campaign over more seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.ir import flatbuffer
from conftest import tflc
from fuzz_campaign import Campaign
from test_validate import conv_model, split_model, two_ops, while_model

BATCH = 25  # mutants per hypothesis example; the ci profile's 10 examples make 250 mutants


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    proc = tflc("compile", "fixtures:contect-small", "--pipeline", "strip-unused", "-o", str(folder / "cs"))
    assert proc.returncode == 0, proc.stderr
    out = [folder / "cs" / "stage_00.tflite"]
    for name, build in (("two_ops", two_ops), ("conv", conv_model), ("split", lambda: split_model(2)),
                        ("while", while_model)):
        path = folder / f"{name}.tflite"
        flatbuffer.save(build(), path)
        out.append(path)
    return out


def test_mutants_never_crash_or_trace_back(seeds, tmp_path_factory):
    with Campaign(seeds, tmp_path_factory.mktemp("fuzz"), workers=2, step_timeout=120) as campaign:

        @given(first=st.integers(min_value=0, max_value=10**9))  # examples: the hypothesis profile's (ci: 10)
        def batch(first):
            before, inspected = len(campaign.failures), sum(campaign.counts["inspect"].values())
            packed = campaign.run(list(range(first, first + BATCH)), progress=False)
            assert sum(campaign.counts["inspect"].values()) - inspected == packed  # every mutant was inspected
            failures = campaign.failures[before:]
            assert not failures, "\n".join(
                f"mutant {r['mutant']} ({r['seed']}, {r['mutations']}): {r['step']} {r['outcome']}: "
                f"{r['detail'][-600:]}" for r in failures)

        batch()
        seen = campaign.counts
        print("\n" + campaign.table())
    # Both sides were exercised: files rejected cleanly, and accepted files that compiled and ran.
    assert seen["inspect"]["rejected"] > 0 and seen["inspect"]["accepted"] > 0, seen
    assert seen["compile"]["accepted"] > 0 and seen["run"]["accepted"] > 0, seen
