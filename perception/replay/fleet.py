"""Fleet summary of a replay run and the comparison of two runs.

`write_fleet_summary(results, out)` writes OUT/fleet.json (every input's
result plus the aggregate: frames, throughput, summed counters, mean
metrics, failures with reasons) and OUT/fleet.md (the same as tables).

`perception replay compare RUN_A RUN_B` (`main_compare`) reads both runs'
fleet.json and says per drive which metrics got better or worse and by how
much: compare.md, compare.json and a bar chart per changed metric family.
Whether higher is better is known per metric name (`direction`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from perception.replay import storage
from perception.replay.job import InputResult

__all__ = [
    "FLEET_JSON",
    "FLEET_MD",
    "compare_runs",
    "compare_summaries",
    "direction",
    "flatten_metrics",
    "load_summary",
    "main_compare",
    "summarize",
    "write_fleet_summary",
]

log = logging.getLogger("perception.replay.fleet")

FLEET_JSON = "fleet.json"
FLEET_MD = "fleet.md"
SCHEMA = 1

# Metric names (the last part of a flattened key) where lower is better, and
# those that only describe the data (counts of ground truth): never "better".
_LOWER = ("switch", "false_positive", "miss", "unmatched", "error", "latency", "frag", "rmse",
          "lost", "dropped", "rejected", "failed")  # fmt: skip
_LOWER_SUFFIX = ("_m", "_ms", "_s", "_px")  # distances and durations
_PERCENTILES = ("p50", "p90", "p95", "p99", "mean", "max")  # of latencies
_NEUTRAL = {"gt_objects", "objects", "n", "frames", "images", "matched", "gt", "count"}
# Columns of the per-input table, in this order when present.
_HEADLINE = ("ap50", "ap", "map", "mota", "idf1", "id_switches", "median_m")


# --------------------------------------------------------------------- helpers
def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested metrics as {"a/b/c": value} (booleans and
    text dropped; NaN and null kept as NaN: "not measurable" is an answer)."""
    flat: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_metrics(v, f"{key}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[key] = float(v)
        elif v is None:  # NaN as written to JSON
            flat[key] = float("nan")
    return flat


def direction(name: str) -> int:
    """+1 when a larger value of metric `name` is better, -1 when smaller is,
    0 when it only counts the data."""
    leaf = name.rsplit("/", 1)[-1].lower()
    if leaf in _NEUTRAL:
        return 0
    if any(t in leaf for t in _LOWER) or leaf.endswith(_LOWER_SUFFIX) or leaf in _PERCENTILES:
        return -1
    return 1


def _finite_mean(values: Iterable[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _json_safe(obj: Any) -> Any:
    """NaN/inf as null: fleet.json stays strict JSON for any reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _images(r: Mapping[str, Any]) -> float:
    """Camera images of one input: fps is per image, over its wall time."""
    return float(r.get("fps") or 0.0) * float(r.get("wall_s") or 0.0)


# --------------------------------------------------------------------- summary
def summarize(
    results: Sequence[InputResult | Mapping[str, Any]], elapsed_s: float | None = None
) -> dict[str, Any]:
    """The fleet summary as a dict (what fleet.json holds).

    `elapsed_s` is the run's wall time (all workers together), giving the
    fleet's throughput; without it only the per-worker rate is known.
    """
    rows = [asdict(r) if isinstance(r, InputResult) else dict(r) for r in results]
    ok = [r for r in rows if r["status"] == "ok"]
    counters: dict[str, dict[str, int]] = {}
    for r in rows:
        for cam, cs in (r.get("counters") or {}).items():
            acc = counters.setdefault(cam, {})
            for name, n in cs.items():
                if isinstance(n, (int, float)):
                    acc[name] = acc.get(name, 0) + int(n)
    flat = [flatten_metrics(r.get("metrics") or {}) for r in ok]
    names = sorted({k for f in flat for k in f})
    images = sum(_images(r) for r in rows)
    busy = sum(float(r.get("wall_s") or 0.0) for r in rows)
    agg: dict[str, Any] = {
        "inputs": len(rows),
        "ok": len(ok),
        "failed": sum(r["status"] == "failed" for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "retried": sum(int(r.get("attempts") or 1) > 1 for r in rows),
        "frames": sum(int(r.get("frames") or 0) for r in rows),
        "images": round(images),
        "busy_s": round(busy, 3),
        "fps_per_worker": round(images / busy, 2) if busy > 0 else 0.0,
        "counters": counters,
        "metrics_mean": {n: _finite_mean(f[n] for f in flat if n in f) for n in names},
    }
    if elapsed_s is not None:
        agg["elapsed_s"] = round(elapsed_s, 3)
        agg["fps"] = round(images / elapsed_s, 2) if elapsed_s > 0 else 0.0
    failures = [{"input": r["input"], "key": r["key"], "reason": r.get("reason", "")}
                for r in rows if r["status"] == "failed"]  # fmt: skip
    return {"schema": SCHEMA, "aggregate": agg, "failures": failures, "inputs": rows}


def _headline(names: Iterable[str], limit: int = 6) -> list[str]:
    """The metric columns of the per-input table: well-known ones first."""
    names = sorted(set(names))
    leaf = {n: n.rsplit("/", 1)[-1].lower() for n in names}
    picked = [n for h in _HEADLINE for n in names if leaf[n] == h and n.count("/") == 0]
    picked += [n for h in _HEADLINE for n in names if leaf[n] == h and n not in picked]
    return picked[:limit]


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def fleet_markdown(summary: Mapping[str, Any]) -> str:
    """fleet.md: aggregate, failures, one row per input."""
    agg = summary["aggregate"]
    fps = agg.get("fps", agg["fps_per_worker"])
    lines = ["# Replay fleet summary", ""]
    lines.append(_row("inputs", "ok", "failed", "skipped", "retried", "frames", "images", "fps"))
    lines.append("|---:" * 8 + "|")
    lines.append(_row(*(agg[k] for k in ("inputs", "ok", "failed", "skipped", "retried")),
                      agg["frames"], agg["images"], _fmt(fps)))  # fmt: skip
    if "elapsed_s" in agg:
        per_worker = _fmt(agg["fps_per_worker"])
        lines += ["", f"Wall time {agg['elapsed_s']:.1f} s; per worker {per_worker} images/s "
                  f"over {agg['busy_s']:.1f} s busy."]  # fmt: skip
    means = agg.get("metrics_mean") or {}
    if means:
        lines += ["", "## Mean metrics (inputs with ground truth)", "", _row("metric", "mean")]
        lines += ["|---|---:|", *(_row(k, _fmt(v)) for k, v in means.items())]
    if summary["failures"]:
        lines += ["", "## Failures", "", _row("input", "reason"), "|---|---|"]
        lines += [_row(f["input"], f["reason"]) for f in summary["failures"]]
    rows = summary["inputs"]
    cols = _headline(k for r in rows for k in flatten_metrics(r.get("metrics") or {}))
    lines += ["", "## Inputs", "", _row("input", "status", "frames", "fps", "attempts", *cols)]
    lines.append("|---|---" + "|---:" * (3 + len(cols)) + "|")
    for r in rows:
        flat = flatten_metrics(r.get("metrics") or {})
        vals = [_fmt(flat[c]) if c in flat else "" for c in cols]
        fps_r = _fmt(float(r.get("fps") or 0.0))
        lines.append(_row(r["key"], r["status"], r.get("frames", 0), fps_r, r.get("attempts", 1),
                          *vals))  # fmt: skip
    return "\n".join(lines) + "\n"


def write_fleet_summary(
    results: Sequence[InputResult], out: str | Path, elapsed_s: float | None = None
) -> tuple[str, str]:
    """Write fleet.json and fleet.md under `out` (folder or URI); returns both locations."""
    summary = summarize(results, elapsed_s)
    text = json.dumps(_json_safe(summary), indent=1, sort_keys=False) + "\n"
    return (storage.write_text(str(out), FLEET_JSON, text),
            storage.write_text(str(out), FLEET_MD, fleet_markdown(summary)))  # fmt: skip


def load_summary(run: str | Path) -> dict[str, Any]:
    """A run's fleet.json (run: its output folder or URI, or the file itself)."""
    run = str(run)
    try:
        if run.endswith(".json"):
            folder, _, name = run.rpartition("/")
            text = storage.read_text(folder or ".", name)
        else:
            text = storage.read_text(run, FLEET_JSON)
    except (OSError, storage.OutputError) as exc:
        msg = f"{run}: expected a replay output with {FLEET_JSON}: {exc}"
        raise storage.OutputError(msg) from exc
    data: dict[str, Any] = json.loads(text)
    if "inputs" not in data:
        raise storage.OutputError(f"{run}: {FLEET_JSON} has no 'inputs' (not a fleet summary)")
    return data


# --------------------------------------------------------------------- compare
def _metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    return flatten_metrics(row.get("metrics") or {})


def compare_summaries(
    a: Mapping[str, Any], b: Mapping[str, Any], min_change: float = 1e-9
) -> dict[str, Any]:
    """Per drive (matched by output key): each metric in A and B, the change
    B - A and whether it is better, worse or the same; a verdict per drive."""
    rows_a = {r["key"]: r for r in a["inputs"]}
    rows_b = {r["key"]: r for r in b["inputs"]}
    drives: list[dict[str, Any]] = []
    for key in sorted(set(rows_a) | set(rows_b)):
        ra, rb = rows_a.get(key), rows_b.get(key)
        entry: dict[str, Any] = {
            "key": key,
            "input": (rb or ra or {}).get("input", key),
            "status_a": ra["status"] if ra else "absent",
            "status_b": rb["status"] if rb else "absent",
            "metrics": [],
        }
        if ra is None or rb is None:
            entry["verdict"] = "only in A" if rb is None else "only in B"
            drives.append(entry)
            continue
        ma, mb = _metrics_of(ra), _metrics_of(rb)
        better = worse = 0
        for name in sorted(set(ma) | set(mb)):
            va, vb = ma.get(name, float("nan")), mb.get(name, float("nan"))
            sign = direction(name)
            if math.isfinite(va) and math.isfinite(vb):
                delta = vb - va
                change = "same"
                if abs(delta) > min_change and sign != 0:
                    change = "better" if delta * sign > 0 else "worse"
            else:
                delta, change = float("nan"), "n/a"
            better += change == "better"
            worse += change == "worse"
            rel = delta / abs(va) if math.isfinite(delta) and va not in (0.0,) else float("nan")
            entry["metrics"].append({"metric": name, "a": va, "b": vb, "delta": delta,
                                     "relative": rel, "change": change})  # fmt: skip
        if entry["status_a"] == "ok" and entry["status_b"] == "failed":
            entry["verdict"] = "worse (failed)"
        elif entry["status_a"] == "failed" and entry["status_b"] == "ok":
            entry["verdict"] = "better (fixed)"
        else:
            entry["verdict"] = ("mixed" if better and worse else "better" if better
                                else "worse" if worse else "same")  # fmt: skip
        entry["better"], entry["worse"] = better, worse
        drives.append(entry)
    verdicts = [d["verdict"].split()[0] for d in drives]
    totals = {v: verdicts.count(v) for v in ("better", "worse", "mixed", "same")}
    return {"drives": drives, "totals": totals}


def compare_markdown(cmp: Mapping[str, Any], name_a: str, name_b: str) -> str:
    t = cmp["totals"]
    lines = [f"# Replay comparison: {name_b} vs {name_a}", "",
             f"Drives better {t['better']}, worse {t['worse']}, mixed {t['mixed']}, "
             f"same {t['same']} (of {len(cmp['drives'])}).", "",
             "| # | drive | verdict | better | worse | largest changes |",
             "|---:|---|---|---:|---:|---|"]  # fmt: skip
    for i, d in enumerate(cmp["drives"], 1):
        moved = [m for m in d["metrics"] if m["change"] in ("better", "worse")]
        moved.sort(key=lambda m: -abs(m["relative"]) if math.isfinite(m["relative"]) else 0.0)
        top = ", ".join(f"{m['metric']} {_fmt(m['a'])}→{_fmt(m['b'])} ({m['delta']:+.3g})"
                        for m in moved[:3])  # fmt: skip
        lines.append(f"| {i} | {d['key']} | {d['verdict']} | {d.get('better', 0)} | "
                     f"{d.get('worse', 0)} | {top} |")  # fmt: skip
    lines += ["", "## Every metric", "", "| drive | metric | A | B | change | |",
              "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for d in cmp["drives"]:
        for m in d["metrics"]:
            delta = "" if not math.isfinite(m["delta"]) else f"{m['delta']:+.4g}"
            lines.append(f"| {d['key']} | {m['metric']} | {_fmt(m['a'], 4)} | {_fmt(m['b'], 4)} | "
                         f"{delta} | {m['change']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _plots(cmp: Mapping[str, Any], out: Path, name_a: str, name_b: str) -> list[Path]:
    """Per headline metric: its value in A and in B over the drives (numbered
    as in the table), so both the direction and the size of a change show."""
    from perception.demo.plots import line_chart

    drives = cmp["drives"]
    names = _headline(m["metric"] for d in drives for m in d["metrics"]) or sorted(
        {m["metric"] for d in drives for m in d["metrics"] if direction(m["metric"])}
    )
    paths = []
    for name in names[:4]:
        xs, ya, yb = [], [], []
        for i, d in enumerate(drives, 1):
            m = next((m for m in d["metrics"] if m["metric"] == name), None)
            if m is not None and math.isfinite(m["a"]) and math.isfinite(m["b"]):
                xs.append(float(i))
                ya.append(m["a"])
                yb.append(m["b"])
        if not xs:
            continue
        sign = "higher" if direction(name) > 0 else "lower"
        safe = name.replace("/", "_")
        title = f"{name} per drive, {name_a} vs {name_b} ({sign} is better)"
        series = {name_a[:20]: (xs, ya), name_b[:20]: (xs, yb)}
        paths.append(line_chart(series, out / f"compare_{safe}.png", title, "drive #", name))
    return paths


def compare_runs(a: str | Path, b: str | Path, out: str | Path) -> Path:
    """Compare run B against run A (their output folders or URIs); write
    compare.md, compare.json and compare_<metric>.png into `out`; return compare.md."""
    sa, sb = load_summary(a), load_summary(b)
    name_a, name_b = str(a).rstrip("/").rsplit("/", 1)[-1], str(b).rstrip("/").rsplit("/", 1)[-1]
    cmp = compare_summaries(sa, sb)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    plots = _plots(cmp, dest, name_a, name_b)
    md = compare_markdown(cmp, name_a, name_b)
    md += "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    (dest / "compare.json").write_text(
        json.dumps(_json_safe({"a": str(a), "b": str(b), **cmp}), indent=1) + "\n"
    )
    path = dest / "compare.md"
    path.write_text(md)
    return path


def main_compare(argv: list[str] | None = None) -> int:
    """`perception replay compare RUN_A RUN_B [--out DIR]`."""
    p = argparse.ArgumentParser(
        prog="perception replay compare",
        description="Which drives got better or worse from run A to run B, by how much.",
    )
    p.add_argument("run_a", help="the reference run: its --out folder or URI")
    p.add_argument("run_b", help="the run to judge")
    p.add_argument("--out", type=Path, default=None,
                   help="where compare.md and the plots go (default RUN_B/compare when "
                   "RUN_B is a folder, else ./compare)")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out
    if out is None:
        folder = storage.local_dir(args.run_b)
        out = folder / "compare" if folder is not None else Path("compare")
    try:
        path = compare_runs(args.run_a, args.run_b, out)
    except storage.OutputError as exc:
        log.error("%s", exc)
        return 2
    print(path.read_text().split("\n## Every metric")[0].rstrip())
    log.info("comparison in %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main_compare())
