"""Convert a fixture once to a float .tflite for the benchmarks (run as a subprocess: it imports TensorFlow).

    python -m bench.convert contect-small bench/cache/contect-small

writes float.tflite, inputs.npz (one sample, the batch the model was converted with), probe.npz
(up to 32 examples, from the evaluation split if the fixture has one, to check that int8 works) and
calibration.npz (if the fixture has a calibration split), each atomically, float.tflite last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.convert")
    p.add_argument("model", help="fixture name")
    p.add_argument("out", help="cache folder")
    args = p.parse_args(argv)

    import numpy as np

    from compiler.files import atomic_write
    from compiler.frontend import load_source
    from compiler.ir import flatbuffer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    src = load_source(f"fixtures:{args.model}")
    inputs = src.sample_inputs or src.fixture.sample_inputs(n=src.batch, seed=0)
    atomic_write(out / "inputs.npz", lambda f: np.savez(f, **inputs))
    fx = src.fixture
    if fx.evaluation is not None:
        probe = {k: np.asarray(v[:32], np.float32) for k, v in fx.evaluation()[0].items()}
    else:
        probe = fx.sample_inputs(n=16, seed=1)
    atomic_write(out / "probe.npz", lambda f: np.savez(f, **probe))
    if src.calibration:
        atomic_write(out / "calibration.npz", lambda f: np.savez(f, **src.calibration))
    info = {"fixture": args.model, "batch": src.batch, "convert_seconds": round(time.perf_counter() - start, 1),
            "keras_layers": list(src.model.keras_layers or [])}
    atomic_write(out / "convert.json", lambda f: f.write(json.dumps(info, indent=1).encode()))
    data = flatbuffer.dumps(src.model)
    atomic_write(out / "float.tflite", lambda f: f.write(data))  # last: its presence means the cache is complete
    print(f"wrote {out / 'float.tflite'}: {len(data):,} bytes in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
