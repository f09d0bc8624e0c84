"""`tflc verify`: accuracy and fidelity of a build folder against the float Keras model.

The build runs in the real staged runtime (`compiler.runtime.StagedModel`), one example at a time
(builds have a fixed batch). The reference is the fixture's Keras model (the fixture named by
`--data fixtures:NAME` or by the manifest), or `reference_<output>` arrays in a data .npz.

Per-layer localization (single-stage builds) compares the build with a float reference build, tensor
by tensor: `--reference DIR` (a single-stage build, e.g. the same pipeline without quantize), or else
the float build of the build's source made with its recorded pipeline steps minus quantize.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import TflcError, UsageError

EPS = 1e-30


# ---------------------------------------------------------------------------------------- metrics

def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """10·log10(Σref² / Σ(ref−out)²); +inf when identical."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, EPS) / noise))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    a, b = np.asarray(ref, np.float64).reshape(-1), np.asarray(out, np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def decisions(y: np.ndarray) -> np.ndarray:
    """Binary (one output unit: >= 0.5) or multi-class (argmax over the last axis)."""
    y = np.asarray(y).reshape(len(y), -1)
    return (y[:, 0] >= 0.5).astype(np.int64) if y.shape[1] == 1 else np.argmax(y, axis=1)


def _finite(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


# ---------------------------------------------------------------------------------------- data

def _load_data(data: str, manifest: dict, limit: int | None):
    """(inputs by name (N, ...), labels or None, references by output name or None, fixture or None)."""
    fixture = None
    refs = None
    if data.startswith("fixtures:") or data.startswith("fixture:"):
        import fixtures

        fixture = fixtures.get(data.split(":", 1)[1])
        if fixture.evaluation is not None:
            inputs, labels = fixture.evaluation()
        else:
            inputs, labels = fixture.sample_inputs(n=limit or 200, seed=0), None
    else:
        from compiler.frontend import load_npz

        if not data.endswith(".npz"):
            raise UsageError(f"--data {data!r}: expected fixtures:NAME or a .npz file")
        arrays = load_npz(data)
        labels = arrays.pop("labels", None)
        refs = {k[len("reference_"):]: v for k, v in arrays.items() if k.startswith("reference_")} or None
        inputs = {k: v for k, v in arrays.items() if not k.startswith("reference_")}
        if refs is None and manifest.get("fixture"):
            import fixtures

            fixture = fixtures.get(manifest["fixture"])
    names = [i["name"] for i in manifest.get("inputs", [])]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise UsageError(f"--data {data}: no array for the build's input(s) {', '.join(missing)}; "
                         f"it has {', '.join(sorted(inputs)) or 'none'}")
    n = min(len(inputs[k]) for k in names)
    if limit:
        n = min(n, limit)
    inputs = {k: np.asarray(inputs[k][:n], np.float32) for k in names}
    if labels is not None:
        labels = np.asarray(labels)[:n]
    if refs is not None:
        refs = {k: np.asarray(v)[:n] for k, v in refs.items()}
    elif fixture is None:
        raise UsageError(f"no float reference for {data}: the manifest names no fixture and the .npz has no "
                         "reference_<output> arrays; add them or use --data fixtures:NAME")
    return inputs, labels, refs, fixture


def _keras_reference(fixture, inputs: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
    """The fixture's float Keras model on all examples (batched, so this takes seconds)."""
    try:
        model = fixture.build(batch_size=None)
    except TypeError:
        model = fixture.build()
    x = [inputs[i.name.split(":")[0]] if i.name.split(":")[0] in inputs else inputs[n]
         for i, n in zip(model.inputs, inputs)]
    batch = 1 if model.inputs[0].shape[0] is not None else 100
    out = model.predict(x if len(x) > 1 else x[0], batch_size=batch, verbose=0)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return {name: np.asarray(o, np.float32) for name, o in zip(output_names, outs)}


# ---------------------------------------------------------------------------------------- running

def _run_build(build_dir: Path, manifest: dict, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from compiler.progress import bar
    from compiler.runtime import StagedModel, dequantize

    model = StagedModel(build_dir)
    batch = int(manifest["inputs"][0]["shape"][0]) if manifest["inputs"][0]["shape"] else 1
    n = len(next(iter(inputs.values())))
    outs: dict[str, list[np.ndarray]] = {o["name"]: [] for o in manifest["outputs"]}
    for k in bar(range(n // batch), label="verifying"):
        y = model({name: v[k * batch:(k + 1) * batch] for name, v in inputs.items()})
        for o in manifest["outputs"]:
            v = y[o["name"]]
            if o.get("quantization") and np.issubdtype(v.dtype, np.integer):
                v = dequantize(v, o["quantization"])
            outs[o["name"]].append(np.asarray(v, np.float32))
    return {k: np.concatenate(v) for k, v in outs.items()}


def float_steps(pipeline_text: str) -> list:
    """The build's recorded steps minus quantize (and partition: localization needs one stage), through
    the public pipeline API."""
    from compiler import pipeline

    return [s for s in pipeline.parse(pipeline_text or "") if s.name not in ("quantize", "partition")]


def _recorded(build: Path) -> dict:
    """How the build was made, from its report.json (front-end, batch); {} when absent or unreadable."""
    from compiler.files import read_member

    try:
        report = json.loads(read_member(build, "report.json", 64 << 20))
    except (TflcError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _float_build(build: Path, manifest: dict) -> tuple[bytes, set[str]]:
    """The float build of the manifest's source, lowered as the build was (same front-end and batch,
    so tensor names match) with its steps minus quantize; and the Keras layer names."""
    from compiler import pipeline
    from compiler.frontend import load_source
    from compiler.ir import flatbuffer
    from compiler.passes import PassContext

    made = _recorded(build)
    batch = made.get("batch") if isinstance(made.get("batch"), int) else None
    frontend = made.get("frontend") if made.get("frontend") in ("native", "converter") else "converter"
    src = load_source(manifest["source"], batch=batch, frontend=frontend)
    ref = pipeline.run(src.model, float_steps(manifest.get("pipeline") or ""), PassContext(source=src))
    return flatbuffer.dumps(ref), set(src.model.keras_layers or ref.keras_layers or ())


def _check_reference(reference: Path) -> None:
    from compiler.manifest import read_manifest

    if len(read_manifest(reference)["stages"]) != 1:
        raise UsageError(f"--reference {reference}: a reference build must have one stage (compile it without "
                         "partition)")


def _single_stage(build: Path, manifest: dict) -> bytes | None:
    from compiler.files import read_member

    if len(manifest["stages"]) != 1:
        return None
    return read_member(build, manifest["stages"][0]["file"], 1 << 36)


def _layer(name: str, layers: set[str]) -> str | None:
    """The Keras layer a tensor belongs to; without layer names, its first name scope."""
    from compiler.ir.layers import layer_of_name

    if layers:
        return layer_of_name(name, layers)
    parts = [p for p in name.split(";")[0].split("/") if p]
    return (parts[1] if len(parts) > 2 else parts[0]) if parts else None


def localize(build_dir: Path, manifest: dict, inputs: dict[str, np.ndarray], examples: int = 8,
             reference: str | os.PathLike | None = None) -> list[dict]:
    """SNR of every compiled main-subgraph tensor that maps to a layer, against the same tensor of a
    float reference, worst first. The reference is a single-stage build folder (`reference`) or else
    the float build of the build's source and recorded steps minus quantize. Empty for multi-stage builds.

    We compare against a float *build* rather than Keras layer outputs because TFLite fuses layers
    (conv+batchnorm+relu are one tensor), so only a float build has a tensor for every compiled
    tensor, with the same name (quantize-made copies carry a suffix from `quant.names`)."""
    from compiler.ir import flatbuffer
    from compiler.manifest import read_manifest
    from compiler.quant import names

    compiled = _single_stage(build_dir, manifest)
    if compiled is None:
        return []
    if reference is not None:
        _check_reference(Path(reference))
        ref_bytes = _single_stage(Path(reference), read_manifest(Path(reference)))
        layers: set[str] = set()
    elif manifest.get("source"):
        ref_bytes, layers = _float_build(build_dir, manifest)
    else:
        return []
    cmodel = flatbuffer.loads(compiled)
    # Tensors nothing reads (e.g. pass-through outputs of WHILE loops) hold stale arena data: skip them.
    consumed = cmodel.main.consumers()
    live = {names.original(t.name) for t in cmodel.main.referenced_tensors()
            if id(t) in consumed or any(t is o for o in cmodel.main.outputs)}
    quant = {t.name: t.quantization for t in cmodel.main.tensors}
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for k in range(min(examples, len(next(iter(inputs.values()))))):
        x = {n: v[k:k + 1] for n, v in inputs.items()}
        a = _float_tensors(ref_bytes, x, {})
        b = _float_tensors(compiled, x, quant)
        for name, v in b.items():
            r = a.get(name)
            if name not in live or r is None or r.shape != v.shape or r.size < 2:
                continue
            signal[name] = signal.get(name, 0.0) + float(np.sum(r ** 2))
            noise[name] = noise.get(name, 0.0) + float(np.sum((r - v) ** 2))
    rows = []
    for name in signal:
        layer = _layer(name, layers)
        if layer is None:
            continue
        snr = float("inf") if noise[name] == 0 else 10 * np.log10(max(signal[name], EPS) / noise[name])
        rows.append({"layer": layer, "tensor": name, "snr_db": _finite(snr)})
    rows.sort(key=lambda r: (r["snr_db"] is None, r["snr_db"] if r["snr_db"] is not None else 0))
    return rows


def _float_tensors(model: bytes, x: dict, quant: dict) -> dict[str, np.ndarray]:
    """Every float or (dequantized, per-tensor) integer tensor of the main subgraph after one run
    (`runtime.intermediates`), as float64, keyed by the name of the float tensor it stands for."""
    from compiler.affine import dequantize
    from compiler.quant import names
    from compiler.runtime import intermediates

    out = {}
    for name, v in intermediates(model, x).items():
        q = quant.get(name)
        if v.dtype in (np.int8, np.int16, np.uint8) and q is not None and q.scale is not None and len(q.scale) == 1:
            v = dequantize(v, q)
        elif v.dtype != np.float32:
            continue
        out.setdefault(names.original(name), np.asarray(v, np.float64))
    return out


# ---------------------------------------------------------------------------------------- verify

def verify(build_dir: str | os.PathLike, data: str, *, max_drop: float | None = None,
           min_agreement: float | None = None, min_snr: float | None = None, limit: int | None = None,
           layers: bool = True, reference: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the build over `data` and compare with the float reference; writes DIR/verify.json.
    Returns the report; report["breaches"] lists the budgets breached (one line each)."""
    from compiler.manifest import read_manifest

    start = time.perf_counter()
    build = Path(build_dir)
    manifest = read_manifest(build)
    if reference is not None and layers:
        _check_reference(Path(reference))
    inputs, labels, refs, fixture = _load_data(data, manifest, limit)
    out_names = [o["name"] for o in manifest["outputs"]]
    if refs is not None:
        missing = [n for n in out_names if n not in refs]
        if missing:
            raise UsageError(f"no reference for output(s) {', '.join(missing)}; the data has "
                             f"{', '.join(sorted(refs)) or 'none'}")
    # The build runs before TensorFlow is used: in a process where TF has run, LiteRT's WHILE loops
    # run many times slower (measured ~20x on contect-small), so the Keras reference comes second.
    compiled = _run_build(build, manifest, inputs)
    if refs is None:
        refs = _keras_reference(fixture, inputs, out_names)
    n = len(next(iter(compiled.values())))
    ref_label = "npz references" if fixture is None else f"Keras model of fixture {fixture.name}"
    report: dict[str, Any] = {"build": str(build), "data": data, "examples": n,
                              "quantization": manifest.get("quantization"), "reference": ref_label, "outputs": {}}
    first = out_names[0]
    for name in out_names:
        r, c = refs[name][:n].reshape(n, -1), compiled[name].reshape(n, -1)
        report["outputs"][name] = {"snr_db": _finite(snr_db(r, c)), "max_abs_error": float(np.max(np.abs(r - c))),
                                   "cosine": round(cosine(r, c), 6)}
    ref_dec, out_dec = decisions(refs[first][:n]), decisions(compiled[first])
    report["agreement"] = round(float(np.mean(ref_dec == out_dec)), 6)
    if labels is not None:
        lab = np.asarray(labels).reshape(n, -1)
        lab = lab[:, 0].astype(np.int64) if lab.shape[1] == 1 else np.argmax(lab, axis=1)
        report["float_accuracy"] = round(float(np.mean(ref_dec == lab)) * 100, 4)
        report["compiled_accuracy"] = round(float(np.mean(out_dec == lab)) * 100, 4)
        report["accuracy_drop_pp"] = round(report["float_accuracy"] - report["compiled_accuracy"], 4)
    if layers:
        try:
            report["layers"] = localize(build, manifest, inputs, reference=reference)
        except TflcError as e:
            report["layers"] = []
            report["layers_skipped"] = str(e).splitlines()[0]
    breaches = []
    if max_drop is not None:
        if "accuracy_drop_pp" not in report:
            raise UsageError("--max-drop needs labels: use a fixture with an evaluation split or a .npz with 'labels'")
        if report["accuracy_drop_pp"] > max_drop:
            breaches.append(f"accuracy drop {report['accuracy_drop_pp']:.2f} pp > --max-drop {max_drop:g} pp")
    if min_agreement is not None and report["agreement"] < min_agreement:
        breaches.append(f"decision agreement {report['agreement']:.4f} < --min-agreement {min_agreement:g}")
    if min_snr is not None:
        for name, o in report["outputs"].items():
            if o["snr_db"] is not None and o["snr_db"] < min_snr:
                breaches.append(f"output {name} SNR {o['snr_db']:.1f} dB < --min-snr {min_snr:g} dB")
    report["budgets"] = {"max_drop": max_drop, "min_agreement": min_agreement, "min_snr": min_snr}
    report["breaches"] = breaches
    report["seconds"] = round(time.perf_counter() - start, 2)
    _write_json_atomic(build / "verify.json", report)
    return report


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".verify-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_table(report: dict) -> str:
    lines = [f"verify {report['build']} on {report['data']} ({report['examples']} examples, "
             f"quantization {report.get('quantization')}, reference: {report['reference']})"]
    if "accuracy_drop_pp" in report:
        lines.append(f"  accuracy   float {report['float_accuracy']:.2f}%   compiled {report['compiled_accuracy']:.2f}%"
                     f"   drop {report['accuracy_drop_pp']:+.2f} pp")
    lines.append(f"  agreement  {report['agreement'] * 100:.2f}% of decisions")
    lines.append(f"  {'output':<24} {'SNR dB':>8} {'max |err|':>11} {'cosine':>9}")
    for name, o in report["outputs"].items():
        snr = "inf" if o["snr_db"] is None else f"{o['snr_db']:.1f}"
        lines.append(f"  {name:<24} {snr:>8} {o['max_abs_error']:>11.4g} {o['cosine']:>9.6f}")
    rows = report.get("layers") or []
    if rows:
        lines.append(f"  worst layers (SNR of compiled tensors vs the float build, {len(rows)} tensors):")
        for r in rows[:10]:
            snr = "inf" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
            lines.append(f"    {snr:>7} dB  {r['layer']:<32} {r['tensor'][:70]}")
    elif report.get("layers_skipped"):
        lines.append(f"  per-layer localization skipped: {report['layers_skipped']}")
    for b in report["breaches"]:
        lines.append(f"  BUDGET BREACHED: {b}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("build", metavar="DIR", help="build folder written by tflc compile")
    parser.add_argument("--data", required=True, metavar="fixtures:NAME|data.npz",
                        help="evaluation data: a fixture (its evaluation split, reference = its Keras model) or a "
                             ".npz with one array per input, optional 'labels' and 'reference_<output>' arrays")
    parser.add_argument("--max-drop", type=float, default=None, metavar="PP",
                        help="fail (exit 1) if accuracy drops by more than PP percentage points")
    parser.add_argument("--min-agreement", type=float, default=None, metavar="F",
                        help="fail if fewer than this fraction of decisions agree with the float model")
    parser.add_argument("--min-snr", type=float, default=None, metavar="DB", help="fail if an output's SNR is below DB")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N examples")
    parser.add_argument("--no-layers", action="store_true", help="skip per-layer localization")
    parser.add_argument("--reference", metavar="DIR", default=None,
                        help="single-stage float build to compare tensor by tensor (default: the float build "
                             "of the build's source, made with its pipeline minus quantize)")


def run(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive integer, got {args.limit}")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise UsageError(f"--min-agreement is a fraction in [0, 1], got {args.min_agreement}")
    report = verify(args.build, args.data, max_drop=args.max_drop, min_agreement=args.min_agreement,
                    min_snr=args.min_snr, limit=args.limit, layers=not args.no_layers,
                    reference=args.reference)
    print(format_table(report))
    print(f"wrote {Path(args.build) / 'verify.json'}")
    for b in report["breaches"]:
        print(f"tflc: budget breached: {b}", file=sys.stderr)
    return 1 if report["breaches"] else 0
