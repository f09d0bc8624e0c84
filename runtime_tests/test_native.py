"""The native runner (runtime/native, `tflc-run`): same outputs as `tflc run`, one-line errors.

Each build is compiled once per session (in-process, one conversion per fixture) and run by both
runners on its sample input; the outputs must be bit-identical. The error tests run the binary as a
user would and expect one `tflc-run: error:` line, exit 2, and no output file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tflc

NATIVE = REPO / "runtime" / "native"
BIN = NATIVE / "build" / "tflc-run"
BASE = "strip-unused,dedupe-buffers"
PIPELINES = {
    "float": BASE,
    "int8-dynamic": BASE + ",quantize{mode=int8-dynamic}",
    "int8": BASE + ",quantize{mode=int8}",
}


@pytest.fixture(scope="session")
def runner() -> Path:
    """The binary, built by `make native` (idempotent: seconds when nothing changed)."""
    proc = subprocess.run(["make", "-C", str(NATIVE), "--no-print-directory"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert BIN.is_file()
    return BIN


class Builds:
    """Build folders compiled on first use: one conversion per fixture (TFLite converter front end), then
    one pass pipeline per build, as `tflc compile` runs them."""

    def __init__(self, root: Path):
        self.root = root
        self.sources: dict = {}
        self.folders: dict[tuple[str, str], Path] = {}

    def get(self, fixture: str, pipeline: str, frontend: str = "converter") -> Path:
        key = (fixture, pipeline, frontend)
        if key not in self.folders:
            from compiler import pipeline as pipelines
            from compiler.artifacts import write_build
            from compiler.frontend import load_source
            from compiler.ir import flatbuffer
            from compiler.passes import PassContext

            if (fixture, frontend) not in self.sources:
                src = load_source(f"fixtures:{fixture}", frontend=frontend)
                self.sources[fixture, frontend] = (src, flatbuffer.dumps(src.model), list(src.model.keras_layers))
            src, data, layers = self.sources[fixture, frontend]
            model = flatbuffer.loads(data)
            model.keras_layers = layers
            model = pipelines.run(model, pipelines.parse(pipeline), PassContext(source=src))
            out = self.root / f"b{len(self.folders)}"
            self.folders[key] = write_build(model, out, source=src, pipeline=pipeline, report={},
                                            sample_inputs=src.sample_inputs)
        return self.folders[key]


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> Builds:
    return Builds(tmp_path_factory.mktemp("native-builds"))


def npy_inputs(build: Path, folder: Path) -> list[str]:
    """The build's sample input as one .npy per model input, in manifest order."""
    manifest = json.loads((build / "manifest.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    sample = np.load(build / "sample_input.npz")
    paths = []
    for t in manifest["inputs"]:
        p = folder / f"{t['name']}.npy"
        np.save(p, sample[t["name"]])
        paths.append(str(p))
    return paths


def run_native(binary: Path, build: Path, inputs: list[str], out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(build), "--input", *inputs, "--output", str(out), *extra],
                          capture_output=True, text=True, timeout=300)


def assert_native_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, `tflc-run: error: ...`, naming the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tflc-run: error: "), proc.stderr
    for f in fragments:
        assert f.lower() in lines[0].lower(), (f, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ same outputs

CASES = [("contect-small", mode, part) for mode in PIPELINES for part in ("", ",partition{stages=3}")]
CASES += [("mobilenet_v2", "float", ""), ("mobilenet_v2", "float", ",partition{stages=3}"),
          ("mobilenet_v2", "int8", ",partition{stages=3}")]


def control_flow_outputs(stage: Path) -> list[str]:
    """Names of the main subgraph's outputs that a WHILE or IF op produces directly."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(stage.read_bytes(), 0))
    main = m.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    made = {t: codes[op.opcodeIndex] for op in main.operators for t in op.outputs}
    flow = (schema.BuiltinOperator.WHILE, schema.BuiltinOperator.IF)
    return [main.tensors[t].name.decode() for t in main.outputs if made.get(t) in flow]


@pytest.mark.parametrize("fixture,mode,part", CASES, ids=[f"{f}-{m}{'-p3' if p else ''}" for f, m, p in CASES])
def test_native_outputs_equal_tflc_run(runner, builds, tmp_path, fixture, mode, part):
    build = builds.get(fixture, PIPELINES[mode] + part)
    manifest = json.loads((build / "manifest.json").read_text())
    assert len(manifest["stages"]) == (3 if part else 1)
    proc = tflc("run", str(build), "--input", str(build / "sample_input.npz"), "-o", str(tmp_path / "py.npz"))
    assert proc.returncode == 0, proc.stderr
    stats = tmp_path / "stats.json"
    native = run_native(runner, build, npy_inputs(build, tmp_path / "in"), tmp_path / "out", "--stats", str(stats))
    cut_at_loop = [(st["file"], name) for st in manifest["stages"] for name in control_flow_outputs(build / st["file"])]
    if cut_at_loop:
        # LiteRT 2.3's CompiledModel leaves such an output buffer unwritten (garbage, checked by hand against
        # the Interpreter); the runner refuses the stage in one line instead of handing garbage on.
        file, name = cut_at_loop[0]
        assert_native_error(native, file, f"output '{name}' comes straight from a WHILE op")
        return
    assert native.returncode == 0, native.stderr
    assert native.stderr == ""  # LiteRT's own log lines are kept off stderr
    ref = np.load(tmp_path / "py.npz")
    for t in manifest["outputs"]:
        got = np.load(tmp_path / "out" / f"{t['name']}.npy")
        want = ref[t["name"]]
        assert got.dtype == want.dtype and got.shape == want.shape, (t["name"], got.dtype, got.shape)
        assert got.tobytes() == want.tobytes(), (t["name"], np.abs(got.astype(float) - want.astype(float)).max())
    s = json.loads(stats.read_text())
    assert [r["stage"] for r in s["stages"]] == list(range(len(manifest["stages"])))
    peak = s["at_peak"]
    assert peak["vm_rss_bytes"] == peak["rss_anon_bytes"] + peak["rss_file_bytes"] + peak["rss_shmem_bytes"]
    assert s["peak_vmhwm_bytes"] >= peak["vm_rss_bytes"] > s["baseline"]["vm_rss_bytes"]
    if part and mode == "int8":  # the handoff between stages really is int8 with its scale and zero point
        handed = {t["name"]: t for st in manifest["stages"][1:] for t in st["inputs"] if "stage" in t["source"]}
        assert any(t["dtype"] == "int8" and t["quantization"] for t in handed.values()), handed


def variable_tensors(stage: Path) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(stage.read_bytes(), 0))
    return [t.name.decode() for sg in m.subgraphs for t in sg.tensors if t.isVariable]


def test_native_front_end_build(runner, builds, tmp_path):
    """tflc's native front end lowers an LSTM to a fused UNIDIRECTIONAL_SEQUENCE_LSTM whose state tensors
    are variables, which LiteRT 2.3's CompiledModel loader refuses ("Variable tensors not yet supported";
    the Python runtime runs the build through the Interpreter). While the build has them, the runner says
    so in one line with LiteRT's reason; once it has none, its outputs must equal tflc run's."""
    build = builds.get("contect-small", PIPELINES["int8-dynamic"], frontend="native")
    assert tflc("run", str(build), "-o", str(tmp_path / "py.npz")).returncode == 0
    proc = run_native(runner, build, npy_inputs(build, tmp_path / "in"), tmp_path / "out")
    if variable_tensors(build / "stage_00.tflite"):
        assert_native_error(proc, "stage_00.tflite", "LiteRT cannot load it", "Variable tensors not yet supported")
        assert not (tmp_path / "out" / "head_output.npy").exists()
        return
    assert proc.returncode == 0, proc.stderr
    want = np.load(tmp_path / "py.npz")["head_output"]
    assert np.load(tmp_path / "out" / "head_output.npy").tobytes() == want.tobytes()


# ------------------------------------------------------------------------------------------ errors

@pytest.fixture
def staged(builds, tmp_path) -> Path:
    """A private copy of the int8-dynamic 3-stage contect-small build, free to damage."""
    src = builds.get("contect-small", PIPELINES["int8-dynamic"] + ",partition{stages=3}")
    dst = tmp_path / "build"
    shutil.copytree(src, dst)
    return dst


def _run(runner, build: Path, tmp_path: Path, inputs: list[str] | None = None) -> subprocess.CompletedProcess:
    ins = inputs if inputs is not None else npy_inputs(build, tmp_path / "in")
    return run_native(runner, build, ins, tmp_path / "out")


def _no_outputs(tmp_path: Path) -> bool:
    return not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_stage(runner, staged, tmp_path):
    (staged / "stage_01.tflite").unlink()
    assert_native_error(_run(runner, staged, tmp_path), "stage_01.tflite", "missing or not a regular file")
    assert _no_outputs(tmp_path)


def test_hash_mismatch(runner, staged, tmp_path):
    p = staged / "stage_02.tflite"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    assert_native_error(_run(runner, staged, tmp_path), "stage_02.tflite", "does not match its sha256")
    assert _no_outputs(tmp_path)


def test_malformed_stage_that_matches_its_hash_is_one_line(runner, builds, tmp_path):
    """A hostile build can ship a broken stage with a matching sha256. LiteRT dies on some (SIGSEGV) and
    refuses others; either way the runner (LiteRT runs in its child process) says so in one line."""
    import hashlib

    src = builds.get("contect-small", PIPELINES["int8-dynamic"])
    inputs = npy_inputs(src, tmp_path / "in")
    original = (src / "stage_00.tflite").read_bytes()
    crashed = 0
    for k, size in enumerate((30000, len(original) // 2, 100)):
        build = tmp_path / f"b{k}"
        shutil.copytree(src, build)
        (build / "stage_00.tflite").write_bytes(original[:size])
        m = json.loads((build / "manifest.json").read_text())
        m["stages"][0]["sha256"] = hashlib.sha256(original[:size]).hexdigest()
        (build / "manifest.json").write_text(json.dumps(m))
        line = assert_native_error(run_native(runner, build, inputs, tmp_path / f"out{k}"), "stage_00.tflite")
        crashed += "LiteRT crashed (SIGSEGV) while loading stage_00.tflite" in line
        assert not (tmp_path / f"out{k}" / "head_output.npy").exists()
    assert crashed  # the crash path itself was taken, not only LiteRT's clean refusals


def test_timeout_stops_the_run_in_one_line(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    proc = run_native(runner, staged, inputs, tmp_path / "out", "--timeout", "0.001")
    assert_native_error(proc, "no result after", "raise --timeout")
    assert _no_outputs(tmp_path)


def test_symlinked_stage_is_refused(runner, staged, tmp_path):
    """Same bytes (so the same sha256), but through a symlink: refused like the Python runtime does."""
    real = tmp_path / "elsewhere.tflite"
    shutil.move(staged / "stage_00.tflite", real)
    os.symlink(real, staged / "stage_00.tflite")
    assert_native_error(_run(runner, staged, tmp_path), "stage_00.tflite", "not a regular file")


def _set(path: list, value):
    def edit(m: dict) -> None:
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        if value is _DELETE:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return edit


_DELETE = object()

BAD_MANIFESTS = {
    "parent-path": (_set(["stages", 0, "file"], "../stage_00.tflite"), "stages[0].file"),
    "absolute-path": (_set(["stages", 0, "file"], "/etc/passwd"), "stages[0].file"),
    "missing-key": (_set(["stages", 1, "sha256"], _DELETE), "missing field 'sha256'"),
    "negative-shape": (_set(["inputs", 0, "shape", 1], -128), "inputs[0].shape[1]"),
    "absurd-shape": (_set(["inputs", 0, "shape"], [2**31 - 1] * 4), "inputs[0].shape"),
    "source-from-later-stage": (_set(["stages", 1, "inputs", 0, "source"], {"stage": 2, "output": "x"}),
                                "stages[1].inputs[0].source"),
    "wrong-format": (_set(["format"], 2), "format"),
    "unknown-dtype": (_set(["outputs", 0, "dtype"], "string"), "outputs[0].dtype"),
    "stage-order": (_set(["stages", 0, "index"], 1), "stages[0].index"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_manifest_that_fails_validation(runner, staged, tmp_path, case):
    """Refused before anything runs, by the same rules as the Python runtime's typed manifest."""
    from compiler.errors import BuildFolderError
    from compiler.manifest import parse

    edit, fragment = BAD_MANIFESTS[case]
    inputs = npy_inputs(staged, tmp_path / "in")
    m = json.loads((staged / "manifest.json").read_text())
    edit(m)
    text = json.dumps(m)
    (staged / "manifest.json").write_text(text)
    with pytest.raises(BuildFolderError):
        parse(text, "manifest.json")
    assert_native_error(_run(runner, staged, tmp_path, inputs), "manifest.json", fragment)
    assert _no_outputs(tmp_path)


def test_drop_before_last_use_fails_validation(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    m = json.loads((staged / "manifest.json").read_text())
    late = next(h for h in m["handoff"] if h["drop_after"] is not None and h["drop_after"] > 0
                and h["name"] not in {o["source"].get("output") for o in m["outputs"]})
    late["drop_after"] -= 1
    (staged / "manifest.json").write_text(json.dumps(m))
    assert_native_error(_run(runner, staged, tmp_path, inputs), "drop_after", "still uses it")


def test_manifest_that_is_not_json(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    (staged / "manifest.json").write_text('{"format": 1, "inputs": [' + "[" * 100000)
    assert_native_error(_run(runner, staged, tmp_path, inputs), "manifest.json")


def test_wrong_input_shape(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    np.save(inputs[1], np.zeros((1, 64, 128, 1), np.float32))
    assert_native_error(_run(runner, staged, tmp_path, inputs), "spec_1", "shape (1, 128, 64, 1) expected",
                        "got (1, 64, 128, 1)")
    assert _no_outputs(tmp_path)


def test_wrong_input_dtype(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    np.save(inputs[0], np.load(inputs[0]).astype(np.float64))
    assert_native_error(_run(runner, staged, tmp_path, inputs), "spec_0", "dtype float32 expected, got float64")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "fortran"])
def test_unreadable_npy(runner, staged, tmp_path, damage):
    inputs = npy_inputs(staged, tmp_path / "in")
    p = Path(inputs[2])
    if damage == "garbage":
        p.write_bytes(b"PK\x03\x04 this is not an npy file")
        fragment = "not an .npy file"
    elif damage == "truncated":
        p.write_bytes(p.read_bytes()[:-100])
        fragment = "needs 32768"
    else:
        np.save(p, np.asfortranarray(np.zeros((1, 128, 64, 1), np.float32)))
        fragment = "Fortran-ordered"
    assert_native_error(_run(runner, staged, tmp_path, inputs), str(p.name), fragment)


def test_inputs_by_name_and_count(runner, staged, tmp_path):
    inputs = npy_inputs(staged, tmp_path / "in")
    named = [f"spec_{k}={p}" for k, p in reversed(list(enumerate(inputs)))]
    proc = run_native(runner, staged, named, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "head_output.npy").is_file()
    assert_native_error(run_native(runner, staged, inputs[:2], tmp_path / "out2"), "3 input(s)", "got 2")
    assert_native_error(run_native(runner, staged, [*inputs[:2], str(tmp_path / "nope.npy")], tmp_path / "out3"),
                        "nope.npy", "no such file")


def test_output_names_are_sanitized_as_documented(runner, tmp_path):
    """Outputs named like TF tensors land in plain files: bytes outside [A-Za-z0-9._-] become '_', a
    leading '.' gets a '_' before it; values equal numpy's for the same float32 ADD and MUL."""
    from compiler.artifacts import write_build
    from ir_helpers import OP, act, binary, model_of

    a, b = act("in:0", (2, 3)), act("b", (2, 3))
    s, p = act("out/sum:0", (2, 3)), act(".hidden", (2, 3))
    model = model_of([a, b], [s, p], [binary(OP.ADD, a, b, s), binary(OP.MUL, a, b, p)], [a, b, s, p])
    build = write_build(model, tmp_path / "build")
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = run_native(runner, build, [f"b={tmp_path / 'y.npy'}", f"in:0={tmp_path / 'x.npy'}"], tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_.hidden.npy", "out_sum_0.npy"]
    assert np.load(tmp_path / "out" / "out_sum_0.npy").tobytes() == (x + y).tobytes()
    assert np.load(tmp_path / "out" / "_.hidden.npy").tobytes() == (x * y).tobytes()


def test_manifest_rules_agree_with_the_python_runtime(runner, staged, tmp_path):
    """300 seeded mutants of a real manifest (a field replaced by another kind, sign or size, or deleted):
    the native runner refuses exactly those that compiler/manifest.py refuses. (Known difference: Python
    also takes `"format": true`, which the schema's `"const": 1` and tflc-run refuse; not drawn here.)"""
    import copy
    import random

    from compiler.errors import BuildFolderError
    from compiler.manifest import parse

    base = json.loads((staged / "manifest.json").read_text())

    def paths(o, at=()):
        if at:
            yield at
        items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
        for k, v in items:
            yield from paths(v, at + (k,))

    every = list(paths(base))
    values = [None, -1, 0, 1, 2**31, 2**62, 2**63, 1.5, "", "x", "../x", "/etc/passwd", "\0", [], {}, False,
              [-1], {"model_input": "spec_0"}, _DELETE]
    rng = random.Random(0)
    refused = 0
    for _ in range(300):
        m = copy.deepcopy(base)
        path, value = rng.choice(every), rng.choice(values)
        _set(list(path), value)(m)
        text = json.dumps(m)
        (staged / "manifest.json").write_text(text)
        try:
            parse(text, "manifest.json")
            python_ok = True
        except BuildFolderError:
            python_ok = False
        proc = subprocess.run([str(runner), str(staged), "--output", str(tmp_path / "out")], capture_output=True,
                              text=True, timeout=60)
        native_ok = "manifest.json: " not in proc.stderr
        assert python_ok == native_ok, (path, value, proc.stderr)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1  # no inputs given: never runs
        refused += not python_ok
    assert 100 < refused < 300  # both kinds were drawn


def test_damaged_manifest_or_npy_bytes_give_one_printable_line(runner, staged, tmp_path):
    """200 seeded byte-level damages (changed, cut or inserted bytes) of manifest.json or an input .npy
    header: each run either works or ends with exit 2 and one printable UTF-8 line, never a crash."""
    import random

    inputs = npy_inputs(staged, tmp_path / "in")
    manifest = (staged / "manifest.json").read_bytes()
    npy = Path(inputs[0]).read_bytes()
    rng = random.Random(0)
    codes = set()
    for _ in range(200):
        target = rng.choice(["manifest", "npy"])
        buf = bytearray(manifest if target == "manifest" else npy)
        limit = len(buf) if target == "manifest" else 128
        for _ in range(rng.randint(1, 8)):
            j, op = rng.randrange(min(limit, len(buf))), rng.random()
            if op < 0.5:
                buf[j] = rng.randrange(256)
            elif op < 0.75:
                del buf[j:j + rng.randint(1, 16)]
            else:
                buf[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        (staged / "manifest.json").write_bytes(bytes(buf) if target == "manifest" else manifest)
        Path(inputs[0]).write_bytes(bytes(buf) if target == "npy" else npy)
        proc = subprocess.run([str(runner), str(staged), "--input", *inputs, "--output", str(tmp_path / "out")],
                              capture_output=True, timeout=60)
        codes.add(proc.returncode)
        assert proc.returncode in (0, 2), (target, proc.returncode, proc.stderr)
        if proc.returncode:
            line = proc.stderr.decode("utf-8")  # strict: the line is valid UTF-8
            assert line.count("\n") == 1 and line.startswith("tflc-run: error: ")
            assert all(ch.isprintable() for ch in line.rstrip("\n")), line
    assert 2 in codes


def test_handoff_quantization_must_match_the_stage_file(runner, builds, tmp_path):
    """An int8 handoff is read with the producer's scale and zero point: a manifest that records other
    ones (valid as JSON, so compiler/manifest.py takes it) is refused before the stage runs."""
    src = builds.get("contect-small", PIPELINES["int8"] + ",partition{stages=3}")
    build = tmp_path / "build"
    shutil.copytree(src, build)
    inputs = npy_inputs(build, tmp_path / "in")
    m = json.loads((build / "manifest.json").read_text())
    k, t = next((k, t) for k, st in enumerate(m["stages"]) for t in st["inputs"]
                if t["dtype"] == "int8" and t["quantization"])
    t["quantization"]["scale"][0] *= 2
    (build / "manifest.json").write_text(json.dumps(m))
    assert_native_error(run_native(runner, build, inputs, tmp_path / "out"), m["stages"][k]["file"],
                        f"input '{t['name']}' has other quantization parameters")
