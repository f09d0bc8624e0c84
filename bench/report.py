"""Turn measured scenarios into rows, ratios, the markdown tables, the stdout tables and Figure 4's PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bench.suite import Scenario, median

MB = 1e6  # the paper reports MB
PAPER = {
    "float_unpartitioned_mb": 3614, "partitioned_11_mb": 1172, "partitioned_ratio": 1 / 3.1,
    "quantized_partitioned_ratio": 1 / 5.7, "time_increase": 0.52,
    "text": "paper (Contect on a phone): float 3614 MB, 11-stage 1172 MB, time +52%",
}


def _mb(n) -> str:
    return "–" if n is None else f"{n / MB:,.1f}"


def _s(x) -> str:
    return "–" if x is None else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _x(r) -> str:
    return "–" if r is None else f"{r:.2f}×" if r >= 0.1 else f"1/{1 / r:.1f}"


def scenario_row(sc: Scenario) -> dict:
    row: dict = {"key": sc.key, "label": sc.label, "group": sc.group, "pipeline": sc.pipeline, "quant": sc.quant,
                 "stages_asked": sc.stages_asked, "compile_error": sc.compile_error, "errors": sc.errors,
                 "compiled_now": sc.compiled, "build": str(sc.build) if sc.build else None,
                 "compiled_from": f"{sc.parent.key}/stage_00.tflite" if sc.parent else "float.tflite",
                 "compile_pipeline": sc.step or sc.pipeline}
    if sc.build is not None and sc.compile_error is None and (sc.build / "manifest.json").is_file():
        manifest = json.loads((sc.build / "manifest.json").read_text())
        row["stages"] = len(manifest["stages"])
        row["bytes"] = sum(s["bytes"] for s in manifest["stages"])
        row["quantization"] = manifest.get("quantization")
        try:
            rep = json.loads((sc.build / "report.json").read_text())
        except (OSError, ValueError):
            rep = {}
        est = rep.get("memory_estimate") or {}
        row["estimated_peak"] = est.get("peak")
        row["estimated_stages"] = est.get("stages")
        row["partition"] = (rep.get("passes") or {}).get("partition")
    runs = sc.runs
    row["runs"] = [{"peak": r["memory"]["VmHWM"], "rss_anon_end": r["memory"].get("RssAnon"),
                    "rss_file_end": r["memory"].get("RssFile"), "check_s": r["runs"][0].get("check_s"), "load_s": r["load_s"], "infer_s": r["infer_s"],
                    "total_s": r["total_s"],
                    "stages": r["runs"][0]["stages"]} for r in runs]
    for key in ("peak", "rss_anon_end", "rss_file_end", "check_s", "load_s", "infer_s", "total_s"):
        row[key] = median([r[key] for r in row["runs"]])
    est, peak = row.get("estimated_peak"), row.get("peak")
    row["estimate_error_pct"] = (est - peak) / peak * 100 if est is not None and peak else None
    return row


def add_ratios(rows: list[dict], float_key: str, int8_key: str, baseline_peak: float | None) -> None:
    ref = {r["key"]: r for r in rows}
    f, q = ref.get(float_key, {}), ref.get(int8_key, {})
    for r in rows:
        r["peak_vs_float"] = _ratio(r.get("peak"), f.get("peak"))
        r["size_vs_float"] = _ratio(r.get("bytes"), f.get("bytes"))
        r["time_vs_int8"] = _ratio(r.get("total_s"), q.get("total_s"))
        if baseline_peak and r.get("peak") is not None:
            r["above_baseline"] = r["peak"] - baseline_peak
            fa = (f.get("peak") or 0) - baseline_peak
            r["above_baseline_vs_float"] = _ratio(r["above_baseline"], fa) if fa > 0 else None


def _runs(row: dict, key: str, fmt) -> str:
    vals = [fmt(r[key]) for r in row.get("runs", [])]
    return f" [{', '.join(vals)}]" if len(vals) > 1 else ""


def _paper(row: dict) -> str:
    k = row["key"]
    if k == "float-1":
        return f"{PAPER['float_unpartitioned_mb']} MB"
    if k == "float-auto":
        return f"{PAPER['partitioned_11_mb']} MB, 11 stages (1/3.1), time +52%"
    if k.endswith("-auto"):
        return "1/5.7 of float with 8-bit weights (issue)"
    return ""


def _status(row: dict) -> str:
    if row.get("compile_error"):
        return f"compile failed: {row['compile_error']}"
    if row.get("errors") and not row.get("runs"):
        return f"run failed: {row['errors'][0]}"
    return ""


def _table(columns: list[str], rows: list[dict], first, cells) -> list[str]:
    """A markdown table: `first(r)` then `cells(r)` per row; a row that failed (see `_status`) shows why."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        bad = _status(r)
        row = [first(r), bad, *[""] * (len(columns) - 2)] if bad else [first(r), *cells(r)]
        out.append("| " + " | ".join(row) + " |")
    return out


def _measured_cells(r: dict) -> list[str]:
    """The cells both tables share: peak [runs], ×float, est. (error), load, infer, total [runs], ×int8."""
    err = r.get("estimate_error_pct")
    return [f"{_mb(r.get('peak'))}{_runs(r, 'peak', lambda v: f'{v / MB:.1f}')}", _x(r.get("peak_vs_float")),
            f"{_mb(r.get('estimated_peak'))} ({'–' if err is None else f'{err:+.1f}%'})", _s(r.get("load_s")),
            _s(r.get("infer_s")), f"{_s(r.get('total_s'))}{_runs(r, 'total_s', _s)}", _x(r.get("time_vs_int8"))]


def table1_md(rows: list[dict]) -> list[str]:
    def cells(r):
        m = _measured_cells(r)
        return [str(r.get("stages", "–")), f"{_mb(r.get('bytes'))} ({_x(r.get('size_vs_float'))})",
                *m[:2], _mb(r.get("above_baseline")), *m[2:], _paper(r)]

    columns = ["scenario", "stages", "size MB (×float)", "peak MB, median [runs]", "×float peak", "above baseline MB",
               "est. peak MB (error)", "load s", "infer s", "total s, median [runs]", "×int8 time", "paper"]
    return _table(columns, rows, lambda r: r["label"], cells)


def fig4_md(rows: list[dict]) -> list[str]:
    columns = ["N asked", "stages", "peak MB, median [runs]", "×float peak", "est. peak MB (error)", "load s",
               "infer s", "total s, median [runs]", "×int8 time"]
    return _table(columns, rows, lambda r: str(r["stages_asked"]),
                  lambda r: [str(r.get("stages", "–")), *_measured_cells(r)])


def targets(rows: list[dict], int8: str, budget_bytes: int | None, baseline_peak: float | None) -> list[dict]:
    """The issue's targets, each with measured value, goal and verdict."""
    ref = {r["key"]: r for r in rows}
    f, q, auto, bud = (ref.get(k, {}) for k in ("float-1", f"{int8}-1", f"{int8}-auto", f"{int8}-budget"))
    out = []
    ratio = auto.get("peak_vs_float")
    out.append({"target": f"{int8} auto peak ≤ 1/15 of float unpartitioned (goal 1/20)", "measured": _x(ratio),
                "met": ratio is not None and ratio <= 1 / 15, "goal_met": ratio is not None and ratio <= 1 / 20})
    excess = auto.get("above_baseline_vs_float")
    if excess is not None:
        out.append({"target": "same, counting only memory above the runtime baseline (informative)",
                    "measured": _x(excess), "met": excess <= 1 / 15, "goal_met": excess <= 1 / 20})
    t = auto.get("time_vs_int8")
    out.append({"target": f"staged {int8} (auto) time ≤ 1.15× unpartitioned {int8}", "measured": _x(t),
                "met": t is not None and t <= 1.15})
    if budget_bytes is not None:
        peak = bud.get("peak")
        added = peak - baseline_peak if peak is not None and baseline_peak else None
        out.append({"target": f"budget: measured peak − measured runtime baseline ≤ B = {budget_bytes / MB:.1f} MB",
                    "measured": f"{_mb(added)} MB above the {_mb(baseline_peak)} MB baseline "
                                f"({bud.get('stages', '–')} stages)",
                    "met": added is not None and added <= budget_bytes})
    errs = [(r["label"], r["estimate_error_pct"]) for r in rows if r.get("estimate_error_pct") is not None]
    worst = max(errs, key=lambda e: abs(e[1])) if errs else None
    out.append({"target": "estimated peak within ±25% of measured in every row",
                "measured": f"worst {worst[1]:+.1f}% ({worst[0]})" if worst else "–",
                "met": bool(errs) and all(abs(e) <= 25 for _, e in errs)})
    return out


def targets_md(tg: list[dict]) -> list[str]:
    out = ["| target | measured | met |", "|---|---|---|"]
    for t in tg:
        met = "yes" if t["met"] else "**no**"
        if "goal_met" in t:
            met += f" (goal 1/20: {'yes' if t['goal_met'] else 'no'})"
        note = f" — {t['note']}" if t.get("note") else ""
        out.append(f"| {t['target']} | {t['measured']}{note} | {met} |")
    return out


def plot_fig4(rows: list[dict], path: Path, title: str, baseline_peak: float | None,
              refs: dict[str, float]) -> bool:
    rows = [r for r in rows if r.get("runs")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    n = [r["stages"] for r in rows]
    panels = [("peak", "peak memory (VmHWM), MB", MB), ("load_s", "load time, s", 1), ("infer_s", "inference time, s", 1)]
    for ax, (key, ylabel, scale) in zip(axes, panels):
        ax.plot(n, [r[key] / scale for r in rows], "o-", color="C0", label="measured (median)")
        for r in rows:
            ax.scatter([r["stages"]] * len(r["runs"]), [x[key] / scale for x in r["runs"]], s=10, color="C0", alpha=0.35)
        if key == "peak":
            est = [(r["stages"], r["estimated_peak"] / MB) for r in rows if r.get("estimated_peak")]
            if est:
                ax.plot(*zip(*est), "s--", color="C1", label="estimated (compiler.memory)")
            if baseline_peak:
                ax.axhline(baseline_peak / MB, color="gray", ls=":", label="runtime baseline (no model)")
            for i, (label, value) in enumerate(refs.items()):
                ax.axhline(value / MB, color=f"C{i + 2}", ls="-.", lw=1, label=label)
        ax.set_xlabel("stages (partition{stages=N})")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(n)
        ax.set_xticklabels([str(v) for v in n])
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------- compile section

# Issue 13's goal for the native front-end, measured side by side with the converter route.
COMPILE_TARGETS = {"wall": 10.0, "peak": 4.0}


def compile_row(res: dict) -> dict:
    """One front-end's compile (wall, own peak, ops) and its build's fresh-process inference, medians."""
    row = {k: res.get(k) for k in ("frontend", "used_frontend", "error", "wall_s", "peak", "children_peak",
                                    "reported_compile_s", "stages", "bytes", "quantization", "pipeline")}
    hist = res.get("op_histogram") or {}
    row["op_histogram"] = dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
    row["ops"] = sum(hist.values()) if hist else None
    row["errors"] = list(res.get("errors") or [])
    row["runs"] = [{"peak": r["memory"]["VmHWM"], "load_s": r["load_s"], "infer_s": r["infer_s"],
                    "total_s": r["total_s"]} for r in res.get("runs") or []]
    for key in ("load_s", "infer_s", "total_s"):
        row[key] = median([r[key] for r in row["runs"]])
    row["run_peak"] = median([r["peak"] for r in row["runs"]])
    return row


def compile_ratios(rows: list[dict]) -> dict:
    """converter / native for compile wall time, compile peak, op count and inference time (>1: native wins)."""
    by = {r["frontend"]: r for r in rows}
    n, c = by.get("native", {}), by.get("converter", {})
    return {key: _ratio(c.get(key), n.get(key)) for key in ("wall_s", "peak", "ops", "infer_s", "total_s")}


def compile_targets(ratios: dict) -> list[dict]:
    wall, peak = ratios.get("wall_s"), ratios.get("peak")
    return [{"target": f"native compile ≥ {COMPILE_TARGETS['wall']:g}× faster (wall) than the converter route",
             "measured": _x(wall), "met": wall is not None and wall >= COMPILE_TARGETS["wall"]},
            {"target": f"native compile ≥ {COMPILE_TARGETS['peak']:g}× less peak RSS than the converter route",
             "measured": _x(peak), "met": peak is not None and peak >= COMPILE_TARGETS["peak"]}]


def compile_md(rows: list[dict], ratios: dict) -> list[str]:
    def first(r):
        used = r.get("used_frontend")
        return f"`--frontend {r['frontend']}`" + (f" (used {used})" if used and used != r["frontend"] else "")

    def cells(r):
        wall, own = r.get("wall_s"), r.get("reported_compile_s")
        return [("–" if wall is None else f"{wall:.1f}") + ("" if own is None else f" ({own:.1f})"), _mb(r.get("peak")), str(r.get("ops", "–")), str(r.get("stages", "–")),
                _mb(r.get("bytes")), _mb(r.get("run_peak")), _s(r.get("load_s")), _s(r.get("infer_s")),
                f"{_s(r.get('total_s'))}{_runs(r, 'total_s', _s)}"]

    columns = ["front-end", "compile wall s (tflc's own timer)", "compile peak RSS MB", "ops", "stages", "size MB", "run peak MB",
               "load s", "infer s", "total s, median [runs]"]
    rows = [dict(r, compile_error=r.get("error")) for r in rows]
    out = _table(columns, rows, first, cells)
    out.append("| converter / native | " + " | ".join([_x(ratios.get("wall_s")), _x(ratios.get("peak")),
                                                        _x(ratios.get("ops")), "", "", "", "",
                                                        _x(ratios.get("infer_s")), _x(ratios.get("total_s"))]) + " |")
    ops = [f"- {first(r)} ops: " + ", ".join(f"{k} {v}" for k, v in r["op_histogram"].items())
           for r in rows if r.get("op_histogram")]
    return out + ([""] + ops if ops else [])
