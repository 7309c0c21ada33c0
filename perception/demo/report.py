"""The demo's report: scores and counts of one recording (report.json), the
same as a table (report.md) and the plots (latency.png, accuracy.png)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from perception.demo import metrics
from perception.demo.plots import bar_chart, line_chart
from perception.demo.recorder import Recording

__all__ = ["build_report", "markdown", "write_outputs"]

log = logging.getLogger("perception.demo")


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


SIM_CLOCK_STAGES = ("capture_to_receive_ms", "capture_to_publish_ms")
"""Latency rows measured against the node's ROS clock (stamp -> that clock)."""


def build_report(
    rec: Recording,
    cameras: list[str],
    fusion: list[str],
    scenario: bool,
    total: int,
    names: list[str],
    model: Path,
) -> dict:
    """Scores and counts of one run (JSON-ready)."""
    report: dict[str, Any] = {"frames_expected_per_camera": total}
    counts: dict[str, Any] = {}
    for cam in cameras:
        counts[cam] = {
            "ground_truth_frames": len(rec.gt2d.get(cam, {})),
            "detection_frames": len(rec.dets.get(cam, {})),
            "track_frames": len(rec.tracks.get(cam, {})),
            "detections": sum(len(v) for v in rec.dets.get(cam, {}).values()),
            "latency_samples": len(rec.latency.get(cam, [])),
        }
    for name in fusion:
        counts[name] = {
            "object_frames": len(rec.objects.get(name, {})),
            "objects": sum(len(v) for v in rec.objects.get(name, {}).values()),
        }
    counts["overlay_frames"] = rec.overlay_frames
    report["counts"] = counts
    # frames: own counts (the nodes' diagnostics timers run on sim time and stop
    # with /clock, so their last counters can miss the final second)
    frames: dict[str, dict[str, Any]] = {}
    for cam in cameras:
        published = len(rec.gt2d.get(cam, {})) if scenario else total
        processed = len(rec.dets.get(cam, {}))
        frames[cam] = {
            "published": published,
            "processed": processed,
            "not_processed": max(published - processed, 0),
        }
    for status, values in rec.diagnostics.items():
        if ": camera " in status:
            cam = status.rsplit(" ", 1)[-1]
            frames.setdefault(cam, {})["last_diagnostics"] = {
                k: int(values[k])
                for k in ("received", "processed", "skipped", "stale", "rejected")
                if k in values
            }
    report["frames"] = frames
    report["diagnostics"] = {k: v for k, v in rec.diagnostics.items() if ": camera " not in k}
    rows = rec.latency_rows(cameras)
    # in a scenario the nodes run on its /clock, which moves in whole frame
    # steps: a difference between a stamp and that clock says nothing (it read
    # -11 / 0 ms); the wall-clock table is the pipeline latency
    left_out = SIM_CLOCK_STAGES if scenario else ()
    samples = {
        s: [row[i] for row in rows]
        for i, s in enumerate(rec.latency_fields)
        if i > 0 and s not in left_out
    }
    report["latency_ms"] = metrics.latency_summary(samples)
    if scenario:
        report["pipeline_latency_ms"] = _wall_latency(rec, cameras, fusion)
        scored = [
            (rec.gt2d[c][s], rec.dets[c][s])
            for c in cameras
            for s in sorted(rec.dets.get(c, {}))
            if s in rec.gt2d.get(c, {})
        ]
        report["detection_ap50"] = metrics.detection_ap(scored)
        seqs = {
            c: [
                (rec.gt2d[c][s], rec.tracks[c][s])
                for s in sorted(rec.tracks.get(c, {}))
                if s in rec.gt2d.get(c, {})
            ]
            for c in cameras
        }
        try:
            report["tracking"] = metrics.tracking_metrics(seqs)
        except ImportError as exc:  # motmetrics is in requirements/dev.txt, not base.txt
            log.warning(f"tracking metrics skipped: {exc} (pip install motmetrics==1.4.0)")
            report["tracking"] = {"mota": None, "idf1": None, "id_switches": None,
                                  "error": f"motmetrics not importable: {exc}"}  # fmt: skip
        pairs = [
            (rec.gt3d[s], rec.objects[n][s])
            for n in fusion
            for s in sorted(rec.objects.get(n, {}))
            if s in rec.gt3d
        ]
        report["centre_error_3d"] = metrics.centre_errors(pairs, max_distance=2.0)
        if all(g.shape[-1] >= 6 and o.shape[-1] >= 6 for g, o in pairs):
            report["size_error_3d"] = metrics.size_errors(pairs, max_distance=2.0)
        report["scoring"] = {
            "classes": list(metrics.CLASSES),
            "min_visibility": 0.3,
            "iou": 0.5,
            "class_map": {n: metrics.map_class(n) for n in names if metrics.map_class(n)},
            "centre_match_m": 2.0,
            "frame": "base_link",
        }
    return _clean(report)


def _wall_latency(rec: Recording, cameras: list[str], fusion: list[str]) -> dict:
    """Wall-clock delay from the ground truth's arrival (published with the
    images) to each output's arrival, both seen by the recorder: the detector's
    own capture stamps are sim time, which stops between frames."""
    arr = rec.arrival

    def delays(out_tables: list[dict], ref_tables: list[dict]) -> list[float]:
        vals = []
        for out, ref in zip(out_tables, ref_tables, strict=True):
            a, r = arr.get(id(out), {}), arr.get(id(ref), {})
            vals += [(a[s] - r[s]) * 1e3 for s in a if s in r]
        return vals

    gts = [rec.gt2d[c] for c in cameras]
    samples = {
        "detections": delays([rec.dets[c] for c in cameras], gts),
        "tracks": delays([rec.tracks[c] for c in cameras], gts),
        "objects_3d": delays([rec.objects[n] for n in fusion], gts),
        "overlay": delays([rec.overlay_frames_at], [rec.gt2d[cameras[0]]]),
    }
    return metrics.latency_summary(samples)


def markdown(report: dict) -> str:
    """report.md: the report as tables."""
    run_ = report["run"]
    lines = [
        "# Perception demo report",
        "",
        f"- source: {run_['source']} (seed {run_['seed']}, {run_['duration_s']} s at "
        f"{run_['rate_hz']} Hz, x{run_['speed']}, {run_['image_size'][0]}x"
        f"{run_['image_size'][1]})"
        if run_["source"] == "scenario"
        else f"- source: {run_['source']} ({report['frames_expected_per_camera']} frames at "
        f"{run_['rate_hz']} Hz)",
        f"- model: `{run_['model']}`",
        f"- pipeline: `{run_['pipeline']['config']}` with the demo's overrides "
        "(report.json: run.pipeline.overrides; pipeline.yaml: the result)",
        f"- wall time: {run_['timings_s'].get('total_s')} s; overlay video: "
        f"`{run_['overlay_video']}`",
        "",
    ]
    if "detection_ap50" in report:
        ap = report["detection_ap50"]
        lines += [
            "## Detection AP@0.5 (ground truth with visibility >= 0.3)",
            "",
            "| class | AP@0.5 | GT boxes |",
            "|---|---|---|",
        ]
        for c in metrics.CLASSES:
            lines.append(f"| {c} | {ap.get(c)} | {ap.get('n_gt.' + c)} |")
        lines += [f"| **mean** | **{ap.get('mean')}** | |", ""]
        tr = report["tracking"]
        lines += [
            "## Tracking (all cameras, class-agnostic, IoU 0.5)",
            "",
            "| MOTA | IDF1 | ID switches | FP | misses | GT |",
            "|---|---|---|---|---|---|",
            f"| {tr.get('mota')} | {tr.get('idf1')} | {tr.get('id_switches')} | "
            f"{tr.get('false_positives')} | {tr.get('misses')} | {tr.get('gt_objects')} |",
            "",
        ]
        ce = report["centre_error_3d"]
        lines += [
            "## 3D centre error (fusion objects vs ground truth in base_link, <= 2 m)",
            "",
            "| median (m) | p95 (m) | matched | unmatched |",
            "|---|---|---|---|",
            f"| {ce.get('median_m')} | {ce.get('p95_m')} | {ce.get('matched')} | "
            f"{ce.get('unmatched')} |",
            "",
        ]
        se = report.get("size_error_3d")
        if se:
            lines += [
                "## 3D size error (the same matches; norm of the (long, short, height) "
                "extent errors)",
                "",
                "| median (m) | p95 (m) | length median | width median | height median |",
                "|---|---|---|---|---|",
                f"| {se.get('median_m')} | {se.get('p95_m')} | {se.get('length_median_m')} | "
                f"{se.get('width_median_m')} | {se.get('height_median_m')} |",
                "",
            ]
    if "pipeline_latency_ms" in report:
        lines += [
            "## Pipeline latency (ms, wall clock: images published -> output received)",
            "",
            "| output | p50 | p95 | n |",
            "|---|---|---|---|",
        ]
        for stage, v in report["pipeline_latency_ms"].items():
            lines.append(f"| {stage} | {v['p50']} | {v['p95']} | {v['n']} |")
        lines.append("")
    else:
        lines += ["## Counts (no ground truth)", "", "| camera | frames | detections |",
                  "|---|---|---|"]  # fmt: skip
        for cam, v in report["counts"].items():
            if isinstance(v, dict) and "detection_frames" in v:
                lines.append(f"| {cam} | {v['detection_frames']} | {v['detections']} |")
        lines.append("")
    lines += [
        "## Latency per stage (ms, all cameras, detector's own clock)",
        "",
        *(
            [
                f"({', '.join(SIM_CLOCK_STAGES)} left out: the nodes run on the scenario's "
                "/clock, which advances in whole frame steps.)",
                "",
            ]
            if "pipeline_latency_ms" in report
            else []
        ),
        "| stage | p50 | p95 | n |",
        "|---|---|---|---|",
    ]
    for stage, v in report["latency_ms"].items():
        lines.append(f"| {stage} | {v['p50']} | {v['p95']} | {v['n']} |")
    lines += [
        "",
        "## Frames per camera",
        "",
        "| camera | published | processed | not processed | last /diagnostics: "
        "skipped | stale | rejected |",
        "|---|---|---|---|---|---|---|",
    ]
    for cam, v in report["frames"].items():
        d = v.get("last_diagnostics", {})
        lines.append(
            f"| {cam} | {v.get('published')} | {v.get('processed')} | {v.get('not_processed')} "
            f"| {d.get('skipped')} | {d.get('stale')} | {d.get('rejected')} |"
        )
    lines += ["", "Plots: `latency.png`, `accuracy.png`.", ""]
    return "\n".join(lines)


def write_outputs(out: Path, report: dict, rec: Recording, cameras: list[str]) -> None:
    """report.json, report.md and the PNG plots."""
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    series = {}
    rows = sorted(rec.latency_rows(cameras), key=lambda r: r[0])
    if rows:
        t0 = rows[0][0]
        x = [r[0] - t0 for r in rows]
        for i, stage in enumerate(rec.latency_fields[1:], start=1):
            series[stage.removesuffix("_ms")] = (x, [r[i] for r in rows])
    line_chart(
        series, out / "latency.png", "Detector latency per stage (all cameras)", "stamp (s)", "ms"
    )
    values: dict[str, float] = {}
    if "detection_ap50" in report:
        ap = report["detection_ap50"]
        values.update({f"AP {c}": ap.get(c) for c in metrics.CLASSES})
        values["mAP"] = ap.get("mean")
        values["MOTA"] = report["tracking"].get("mota")
        values["IDF1"] = report["tracking"].get("idf1")
        title = "Detection AP@0.5 and tracking (MOTA, IDF1)"
    else:
        for cam, c in report["counts"].items():
            if isinstance(c, dict) and "detection_frames" in c:
                values[f"{cam} det/frame"] = c["detections"] / max(c["detection_frames"], 1)
        title = "Detections per frame (no ground truth)"
    values = {k: (float("nan") if v is None else float(v)) for k, v in values.items()}
    bar_chart(values, out / "accuracy.png", title, "score")
