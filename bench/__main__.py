"""`make bench`: the paper's Table 1 and Figure 4 for one model, measured with LiteRT in fresh processes.

    python -m bench --model contect-small        # quick (seconds)
    python -m bench --model contect              # full (conversion ~3 min once, then the measurements)

Then the compile section: `tflc compile fixtures:<model>` with `--frontend native` and with
`--frontend converter` in fresh processes (wall time, own peak RSS, op count, inference time of each
build); `--skip-compile` leaves it out.

Writes bench/results/<model>.json, <model>.md and <model>_fig4.png; prints the tables on stdout and
progress on stderr. Builds are cached under bench/cache/<model>/ (see bench/suite.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import report, suite  # noqa: E402
from bench.suite import ROOT, say  # noqa: E402


def _parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stages wants comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("--stages wants positive integers")
    return counts


def _machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:
        pass
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="contect", help="fixture name (default contect; contect-small is quick)")
    p.add_argument("--runs", type=int, default=3, help="fresh processes per scenario (median reported; default 3)")
    p.add_argument("--budget", help="partition budget of the budget row (default: per model, e.g. 100MiB for contect)")
    p.add_argument("--int8", choices=("auto", "int8", "int8-dynamic"), default="auto",
                   help="int8 mode of the quantized rows: auto = full int8 if it compiles and stays within "
                   f"{suite.INT8_MAX_ABS} of float on the probe examples, else int8-dynamic (8-bit weights)")
    p.add_argument("--stages", type=_parse_counts, default=suite.FIG4_STAGES,
                   help="Figure 4 stage counts (default " + ",".join(map(str, suite.FIG4_STAGES)) + ")")
    p.add_argument("--recompile", action="store_true", help="compile every scenario even if its build is cached")
    p.add_argument("--cache", default=str(ROOT / "bench" / "cache"), help="cache folder (default bench/cache)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results"), help="results folder (default bench/results)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measuring process (default 3600)")
    p.add_argument("--compile-timeout", type=float, default=3600, help="seconds per compile (default 3600)")
    p.add_argument("--skip-compile", action="store_true",
                   help="skip the compile section (tflc compile fixtures:MODEL with --frontend native and with "
                   "--frontend converter; on full contect the converter route takes minutes and ~10 GB)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be ≥ 1")

    start = time.perf_counter()
    budget = args.budget or suite.BUDGETS.get(args.model, "100MiB")
    from compiler.passes.partition import parse_size

    budget_bytes = parse_size(budget)
    cache = suite.Cache(Path(args.cache), args.model)
    convert_s = cache.ensure_float()
    say(f"float source {cache.float}, sha256 {cache.source_sha[:12]}…")

    # Which int8: full int8 if it exists and works on this model, else the paper's 8-bit weights.
    int8_choice: dict = {"asked": args.int8}
    float1 = suite.unpartitioned("float")
    cache.compile(float1, force=args.recompile)
    int8 = args.int8
    int81 = None
    if args.int8 == "auto":
        full = suite.unpartitioned("int8")
        cache.compile(full, force=args.recompile, timeout=args.compile_timeout)
        if full.compile_error or float1.compile_error:
            int8_choice["why"] = f"full int8 does not compile: {full.compile_error or float1.compile_error}"
            works = False
        else:
            try:
                verdict = suite.int8_works(float1.build, full.build, cache.probe)
            except Exception as e:  # a runtime failure of the int8 build is a finding, not a crash of the bench
                verdict = {"works": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            int8_choice["probe"] = verdict
            works = verdict["works"]
            int8_choice["why"] = (f"full int8 compiles and stays within {suite.INT8_MAX_ABS} of float on "
                                  f"{verdict.get('examples')} probe examples (max |Δ| {verdict.get('max_abs_diff', 0):.4f})"
                                  if works else f"full int8 does not work on this model: {verdict}")
        int8, int81 = ("int8", full) if works else ("int8-dynamic", None)
        say(f"int8 rows use quantize{{mode={int8}}}: {int8_choice['why']}")
    int8_choice["mode"] = int8
    if int81 is None:
        int81 = suite.unpartitioned(int8)
        cache.compile(int81, force=args.recompile, timeout=args.compile_timeout)

    t1 = suite.table1(float1, int81, budget)
    f4 = suite.fig4(int81, args.stages)
    scenarios = t1 + f4
    for sc in scenarios:
        if sc.build is None:
            cache.compile(sc, force=args.recompile, timeout=args.compile_timeout)
    compile_s = time.perf_counter() - start - convert_s

    say(f"measuring {sum(sc.compile_error is None for sc in scenarios)} scenarios + baseline, "
        f"{args.runs} fresh processes each")
    baseline_runs = suite.run_round_robin(scenarios, cache.inputs, args.runs, args.timeout)
    ok_base = [b for b in baseline_runs if "error" not in b]
    baseline_peak = suite.median([b["memory"]["VmHWM"] for b in ok_base])

    rows = [report.scenario_row(sc) for sc in scenarios]
    report.add_ratios(rows, "float-1", f"{int8}-1", baseline_peak)
    rows1, rows4 = rows[:len(t1)], rows[len(t1):]
    tg = report.targets(rows1, int8, budget_bytes, baseline_peak)
    budget_row = rows1[-1]
    budget_row["budget"] = budget
    budget_row["budget_bytes"] = budget_bytes
    budget_row["within_budget"] = budget_row.get("peak") is not None and budget_row["peak"] <= budget_bytes

    section_start = time.perf_counter()
    comp = _compile_section(args)
    compile_section_s = time.perf_counter() - section_start

    results = Path(args.results)
    png = results / f"{args.model}_fig4.png"
    refs = {k: r["peak"] for k, r in (("float unpartitioned", rows1[0]), (f"{int8} unpartitioned", rows1[1]))
            if r.get("peak")}
    plotted = report.plot_fig4(rows4, png, f"Figure 4 — {args.model}, {int8}: memory and time vs stage count "
                               f"(median of {args.runs} fresh processes)", baseline_peak, refs)
    total_s = time.perf_counter() - start
    data = {
        "model": args.model, "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": _machine(),
        "runs_per_scenario": args.runs, "float_source": str(cache.float), "float_source_sha256": cache.source_sha,
        "int8": int8_choice, "budget": budget, "budget_bytes": budget_bytes,
        "baseline": {"peak": baseline_peak, "runs": [b.get("memory") or b for b in baseline_runs]},
        "table1": rows1, "fig4": rows4, "targets": tg, "paper": report.PAPER, "compile": comp,
        "seconds": {"convert": round(convert_s, 1), "compile": round(compile_s, 1),
                    "compile_section": round(compile_section_s, 1), "total": round(total_s, 1)},
    }
    suite.write_json(results / f"{args.model}.json", data)

    md = _markdown(args, data, rows1, rows4, tg, int8, budget, baseline_peak, png if plotted else None)
    (results / f"{args.model}.md").write_text(md)
    print(md)
    say(f"wrote {results / f'{args.model}.json'}, {results / f'{args.model}.md'}"
        + (f", {png}" if plotted else "") + f" in {total_s:.0f} s")
    failed = [r["label"] for r in rows if r.get("compile_error") and r["group"] == "table1"]
    failed += [r["frontend"] for r in comp.get("rows", []) if r.get("error")]
    return 1 if failed else 0


def _compile_section(args) -> dict:
    if args.skip_compile:
        say("compile section skipped (--skip-compile)")
        return {"skipped": True}
    rows = [report.compile_row(r) for r in
            suite.compile_section(args.model, args.runs, args.timeout, args.compile_timeout)]
    ratios = report.compile_ratios(rows)
    return {"skipped": False, "rows": rows, "ratios": ratios, "targets": report.compile_targets(ratios)}


def compile_md(model: str, comp: dict, runs: int) -> list[str]:
    lines = ["## Compile: native vs converter front-end", ""]
    if comp.get("skipped"):
        return lines + ["Skipped (`--skip-compile`).", ""]
    pipeline = next((r["pipeline"] for r in comp["rows"] if r.get("pipeline")), "the default pipeline")
    lines += [f"`tflc compile fixtures:{model} --frontend native|converter` with the default pipeline "
              f"(`{pipeline}`), one fresh process each, one after the other. compile wall = the parent's "
              "clock around the process (interpreter start, TensorFlow/Keras import and building the fixture "
              "included; in brackets the `compile_seconds` tflc reports itself, from parsing the pipeline "
              "to the last pass, before the build is written); compile peak = VmHWM of the compile process itself (read by `bench.peak` at its end, "
              "so nothing of the bench process is carried over). ops = operators of the build, every subgraph "
              "(WHILE bodies) included. run peak/load/infer/total = the build run by `bench.measure` in "
              f"{runs} fresh processes (median). Ratios are converter / native: above 1× the native "
              "front-end is faster, smaller or has fewer ops.", ""]
    lines += report.compile_md(comp["rows"], comp["ratios"])
    lines += ["", "Target (issue 13, set for full Contect, where the converter route takes ~6 min and ~10 GB; on "
              "a small model the fixed cost of starting Python, importing TensorFlow/Keras and building the fixture, "
              "paid by both routes, is most of the native route's time and memory):", ""]
    lines += report.targets_md(comp["targets"])
    return lines + [""]


def _markdown(args, data, rows1, rows4, tg, int8, budget, baseline_peak, png) -> str:
    mb = report.MB
    m = data["machine"]
    lines = [f"# tflc bench: {args.model}", "",
             f"{data['date']}, {m.get('cpu', '?')} ({m.get('cpus')} CPUs), Python {m.get('python')}, "
             f"ai-edge-litert {m.get('ai_edge_litert', '?')}. Each number is the median of {args.runs} fresh "
             "processes (`python -m bench.measure BUILD --repeat 1`, which imports numpy, ai_edge_litert and "
             "tflc's runtime but never TensorFlow); bracketed values are the single runs.",
             "",
             "- peak = VmHWM of the measuring process (runtime baseline included); "
             f"baseline (runtime imported, no model): **{(baseline_peak or 0) / mb:.1f} MB**.",
             "- time = load (manifest/hash checks + every stage's interpreter creation: mmap, XNNPACK, allocation) "
             "+ inference (every stage's set_tensor, invoke, output copies and freeing the interpreter), each summed "
             "over the stages; total = wall time of StagedModel(build)(inputs).",
             f"- int8 rows use `quantize{{mode={int8}}}`: {data['int8'].get('why', 'chosen with --int8')}.",
             f"- ratios: peak and size vs float unpartitioned, time vs {int8} unpartitioned; "
             "est. = `memory_estimate.peak` of the build's report.json (compiler.memory.estimate_run), "
             "error = (est − measured) / measured.",
             f"- {report.PAPER['text']}.",
             "", "## Table 1", ""]
    lines += report.table1_md(rows1)
    lines += ["", f"## Figure 4: `{int8}` with `partition{{stages=N}}`", ""]
    lines += report.fig4_md(rows4)
    if png is not None:
        lines += ["", f"![Figure 4]({png.name})"]
    lines += ["", "## Targets", ""]
    lines += report.targets_md(tg)
    lines += [""] + compile_md(args.model, data["compile"], args.runs)
    lines += [f"Run time: conversion {data['seconds']['convert']:.0f} s, compiles {data['seconds']['compile']:.0f} s, "
              f"compile section {data['seconds']['compile_section']:.0f} s, total {data['seconds']['total']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
