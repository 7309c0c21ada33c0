"""Scores and the report of one replayed input.

`Scores` collects, per stamp, what the pipeline produced and the input's
ground truth (when the bag carries the scenario's topics) and scores them
with the demo's metrics (`perception.demo.metrics`: AP@0.5, MOTA / IDF1 / ID
switches, 3D centre error), so a replay and the demo report the same
numbers for the same outputs. `write_report` writes report.json, report.md
and the plots (`perception.demo.plots`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.types import Detections
from perception.demo import metrics
from perception.demo.plots import bar_chart, line_chart
from perception.pipeline.types import CameraResult
from perception.replay.sources import FrameGroup

__all__ = ["Scores", "clean", "write_report"]

log = logging.getLogger("perception.replay")

_STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms")


def clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python, floats rounded."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        v = float(obj)
        return round(v, 4) if math.isfinite(v) else None
    return obj


def _boxes(det: Detections, class_names: Sequence[str], tracked: bool) -> list[metrics.Box2D]:
    """Output boxes with the scenario's class names (unmapped classes left out)."""
    out = []
    n = len(class_names)
    for xyxy, score, c, tid in zip(
        det.xyxy.tolist(),
        det.scores.tolist(),
        det.class_ids.tolist(),
        det.track_ids.tolist(),
        strict=True,
    ):
        cls = metrics.map_class(class_names[c] if 0 <= c < n else str(c))
        if cls is None:
            continue
        ident = str(tid) if tracked and tid >= 0 else ""
        out.append(metrics.Box2D((xyxy[0], xyxy[1], xyxy[2], xyxy[3]), cls, float(score), ident))
    return out


class Scores:
    """Outputs and ground truth of one input, keyed by camera and stamp."""

    def __init__(self, class_names: Sequence[str], fusion_nodes: Mapping[str, str]) -> None:
        self.class_names = list(class_names)
        self.fusion_nodes = dict(fusion_nodes)  # camera -> fusion node
        self.gt2d: dict[str, dict[int, list[metrics.Box2D]]] = defaultdict(dict)
        self.gt3d: dict[int, np.ndarray] = {}
        self.dets: dict[str, dict[int, list[metrics.Box2D]]] = defaultdict(dict)
        self.tracks: dict[str, dict[int, list[metrics.Box2D]]] = defaultdict(dict)
        self.objects: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.latency: list[tuple[int, dict[str, float]]] = []

    @property
    def ground_truth(self) -> bool:
        return bool(self.gt2d) or bool(self.gt3d)

    def add(self, group: FrameGroup, results: Sequence[CameraResult]) -> None:
        for cam, boxes in group.gt2d.items():
            self.gt2d[cam][group.stamp_ns] = boxes
        if group.gt3d is not None:
            self.gt3d[group.stamp_ns] = group.gt3d
        for r in results:
            s = r.stamp_ns
            c = self.counts[r.camera]
            c["frames"] += 1
            c["detections"] += len(r.detections)
            self.dets[r.camera][s] = _boxes(r.detections, self.class_names, False)
            if r.tracks is not None:
                self.tracks[r.camera][s] = _boxes(r.tracks, self.class_names, True)
            if r.objects is not None:
                node = self.fusion_nodes.get(r.camera, r.camera)
                self.objects[node][s] = np.asarray(r.objects.centers, np.float64).reshape(-1, 3)
                c["objects"] += len(r.objects.centers)
            self.latency.append((s, {k: r.latency.get(k, float("nan")) for k in _STAGES}))

    def compute(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(headline metrics for the fleet summary, detailed tables for the
        report); both empty without ground truth. Headline keys: ap50,
        ap50_class/<class>, mota, idf1, id_switches, centre_error/{median_m,p95_m}."""
        if not self.ground_truth:
            return {}, {}
        detail: dict[str, Any] = {}
        flat: dict[str, Any] = {}
        cams = sorted(set(self.dets) | set(self.gt2d))
        scored = [
            (self.gt2d[c][s], self.dets[c][s])
            for c in cams
            for s in sorted(self.dets.get(c, {}))
            if s in self.gt2d.get(c, {})
        ]
        if scored:
            ap = metrics.detection_ap(scored)
            detail["detection_ap50"] = ap
            flat["ap50"] = ap["mean"]
            flat["ap50_class"] = {c: ap[c] for c in metrics.CLASSES}
        seqs = {
            c: [
                (self.gt2d[c][s], self.tracks[c][s])
                for s in sorted(self.tracks.get(c, {}))
                if s in self.gt2d.get(c, {})
            ]
            for c in cams
        }
        if any(seqs.values()):
            tr: dict[str, Any]
            try:
                tr = metrics.tracking_metrics({c: v for c, v in seqs.items() if v})
            except ImportError as exc:  # motmetrics: requirements/dev.txt
                log.warning("tracking metrics skipped: %s (pip install motmetrics==1.4.0)", exc)
                tr = {"error": f"motmetrics not importable: {exc}"}  # the report says why
            detail["tracking"] = tr
            for k in ("mota", "idf1", "id_switches"):
                if k in tr:
                    flat[k] = tr[k]
        pairs = [
            (self.gt3d[s], self.objects[n][s])
            for n in sorted(self.objects)
            for s in sorted(self.objects[n])
            if s in self.gt3d
        ]
        if pairs:
            ce = metrics.centre_errors(pairs, max_distance=2.0)
            detail["centre_error_3d"] = ce
            flat["centre_error"] = {"median_m": ce["median_m"], "p95_m": ce["p95_m"]}
        detail["scoring"] = {
            "classes": list(metrics.CLASSES),
            "min_visibility": 0.3,
            "iou": 0.5,
            "class_map": {
                n: metrics.map_class(n) for n in self.class_names if metrics.map_class(n)
            },
            "centre_match_m": 2.0,
        }
        return clean(flat), clean(detail)

    def latency_summary(self) -> dict[str, dict[str, float]]:
        samples = {k: [row[k] for _, row in self.latency] for k in _STAGES}
        return metrics.latency_summary(samples)


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.3f}"
    return str(v)


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: one input's result as tables."""
    lines = [
        f"# Replay: {report['input']}",
        "",
        f"- status: **{report['status']}**"
        + (f" ({report['reason']})" if report["reason"] else ""),
        f"- pipeline: `{report['pipeline']}`; model: `{report['model']}`",
        f"- frame groups: {report['frames']}; images: {report['images']}; "
        f"wall time {report['wall_s']:.2f} s ({report['fps']:.1f} images/s)",
        f"- outputs: {', '.join(f'`{v}`' for v in report['outputs'].values())}",
        "",
    ]
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    d = report.get("detail", {})
    if "detection_ap50" in d:
        ap = d["detection_ap50"]
        lines += [
            "",
            "## Detection AP@0.5 (ground truth with visibility >= 0.3)",
            "",
            "| class | AP@0.5 | GT boxes |",
            "|---|---|---|",
        ]
        lines += [
            f"| {c} | {_cell(ap.get(c))} | {_cell(ap.get('n_gt.' + c))} |" for c in metrics.CLASSES
        ]
        lines.append(f"| **mean** | **{_cell(ap.get('mean'))}** | |")
    if "tracking" in d:
        tr = d["tracking"]
        lines += [
            "",
            "## Tracking (all cameras, class-agnostic, IoU 0.5)",
            "",
            "| MOTA | IDF1 | ID switches | FP | misses | GT |",
            "|---|---|---|---|---|---|",
            f"| {_cell(tr.get('mota'))} | {_cell(tr.get('idf1'))} | "
            f"{_cell(tr.get('id_switches'))} | {_cell(tr.get('false_positives'))} | "
            f"{_cell(tr.get('misses'))} | {_cell(tr.get('gt_objects'))} |",
        ]
    if "centre_error_3d" in d:
        ce = d["centre_error_3d"]
        lines += [
            "",
            "## 3D centre error (objects vs ground truth, matched within 2 m)",
            "",
            "| median (m) | p95 (m) | matched | unmatched |",
            "|---|---|---|---|",
            f"| {_cell(ce.get('median_m'))} | {_cell(ce.get('p95_m'))} | "
            f"{_cell(ce.get('matched'))} | {_cell(ce.get('unmatched'))} |",
        ]
    lines += [
        "",
        "## Frames per camera",
        "",
        "| camera | received | processed | rejected | detections | 3D objects | problems |",
        "|---|---|---|---|---|---|---|",
    ]
    for cam, c in report["counters"].items():
        counts = report["per_camera"].get(cam, {})
        problems = ", ".join(
            f"{k} {v}"
            for k, v in c.items()
            if v and (k.startswith(("error.", "input.", "fusion.error.")))
        )
        lines.append(
            f"| {cam} | {c.get('received', '')} | {c.get('processed', '')} | "
            f"{c.get('rejected', '')} | {counts.get('detections', 0)} | "
            f"{counts.get('objects', 0)} | {problems} |"
        )
    lat = report.get("latency_ms", {})
    if lat:
        lines += [
            "",
            "## Engine time per image (ms)",
            "",
            "| stage | p50 | p95 | n |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {_cell(v['p50'])} | {_cell(v['p95'])} | {_cell(v['n'])} |"
            for k, v in lat.items()
        ]
    lines += ["", "Plots: `accuracy.png`, `latency.png`.", ""]
    return "\n".join(lines)


def write_report(folder: Path, report: dict[str, Any], scores: Scores) -> dict[str, str]:
    """report.json, report.md, accuracy.png and latency.png; returns their names."""
    (folder / "report.json").write_text(json.dumps(clean(report), indent=2) + "\n")
    (folder / "report.md").write_text(markdown(clean(report)))
    d = report.get("detail", {})
    values: dict[str, float] = {}
    if "detection_ap50" in d:
        ap = d["detection_ap50"]
        values.update({f"AP {c}": ap.get(c) for c in metrics.CLASSES})
        values["mAP"] = ap.get("mean")
        tr = d.get("tracking", {})
        values["MOTA"] = tr.get("mota")
        values["IDF1"] = tr.get("idf1")
        title = "Detection AP@0.5 and tracking (MOTA, IDF1)"
    else:
        for cam, c in scores.counts.items():
            values[f"{cam} det/frame"] = c["detections"] / max(c["frames"], 1)
        title = "Detections per frame (no ground truth)"
    values = {k: float("nan") if v is None else float(v) for k, v in values.items()}
    bar_chart(values, folder / "accuracy.png", title, "score")
    rows = sorted(scores.latency, key=lambda r: r[0])
    series: dict[str, tuple[list[float], list[float]]] = {}
    if rows:
        t0 = rows[0][0]
        x = [(s - t0) * 1e-9 for s, _ in rows]
        series = {k.removesuffix("_ms"): (x, [r[k] for _, r in rows]) for k in _STAGES}
    line_chart(series, folder / "latency.png", "Engine time per image", "stamp (s)", "ms")
    return {"report": "report.md", "report_json": "report.json", "plots": "accuracy.png"}
