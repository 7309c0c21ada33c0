#!/usr/bin/env python3
"""3D centre error of depth lifting (and LiDAR fusion) from instance masks vs
from boxes, on the generated driving scenario.

Every camera of every frame of a `perception.sim.Scenario` gives its exact 2D
ground truth: the visible extent of each actor (the box a perfect detector
would give) and its visible pixels (the instance mask a perfect segmentation
model would give, `CameraFrame.masks()`). The same rows are lifted twice,
once with `Detections.masks` set and once without, by `DepthLifter` with the
registered depth image (and, with --lidar, by `LidarFusion` with the
scenario's LiDAR cloud). The error of a lifted object is the distance of its
centre to the actor's true box centre, in the camera frame; only rows that
both variants lift are compared, so the two numbers are over the same
objects. Rows are split by visibility (< 0.9: partly occluded by another
actor or cut by the image border). The input detections are the ground
truth, so the numbers measure the lifting, not a detector.

    ./dev exec python bench/bench_mask_lifting.py [--seed 7] [--seconds 6] [--lidar]

Writes bench/results/mask_lifting.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from perception.core.fusion.depth import DepthLifter
from perception.core.types import Detections
from perception.sim import Scenario

RESULTS = Path(__file__).resolve().parent / "results"


def _errors(
    objects_centers: np.ndarray, rows: np.ndarray, det: Detections, truth: dict[int, np.ndarray]
) -> dict[int, float]:
    """Row index -> centre error (m) of each lifted object."""
    out = {}
    for c, r in zip(objects_centers, rows.tolist(), strict=True):
        gt = truth.get(int(det.track_ids[r]))
        if gt is not None:
            out[r] = float(np.linalg.norm(c - gt))
    return out


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "median_m": round(float(np.median(a)), 4),
        "mean_m": round(float(a.mean()), 4),
        "p90_m": round(float(np.percentile(a, 90)), 4),
    }


def run(seed: int, seconds: float, rate_hz: float, min_pixels: int, lidar: bool) -> dict[str, Any]:
    scenario = Scenario(seed=seed, duration_s=seconds, rate_hz=rate_hz)
    lifters = {c.name: DepthLifter(c.model) for c in scenario.rig.cameras}
    fusers: dict[str, Any] = {}
    if lidar and scenario.rig.lidar is not None:
        from perception.core.fusion.lidar import LidarFusion

        for c in scenario.rig.cameras:
            # the cloud is in the LiDAR frame (base_link axes at the mount point)
            t_base_from_lidar = np.eye(4)
            t_base_from_lidar[:3, 3] = scenario.rig.lidar.position
            t_cam_from_lidar = np.linalg.inv(c.T_base_from_cam) @ t_base_from_lidar
            fuser = LidarFusion(c.model, T_cam_from_cloud=t_cam_from_lidar)
            fusers[c.name] = (fuser, t_cam_from_lidar)
    pairs: dict[str, dict[str, list[float]]] = {
        f"{method}.{subset}": {"box": [], "mask": []}
        for method in ("depth", *(["lidar"] if fusers else []))
        for subset in ("all", "occluded")
    }
    for frame in scenario.frames():
        for mount in scenario.rig.cameras:
            cam = frame.cameras[mount.name]
            det = cam.detections(frame.stamp_ns, mount.name, min_pixels=min_pixels, masks=True)
            if len(det) == 0:
                continue
            cam_from_base = np.linalg.inv(mount.T_base_from_cam)
            truth = {
                o.id: cam_from_base[:3, :3] @ np.asarray(o.center_base) + cam_from_base[:3, 3]
                for o in frame.objects
            }
            vis = dict(zip(cam.object_ids.tolist(), cam.visibility.tolist(), strict=True))
            boxes_only = replace(det, masks=None)
            lifted = {}
            for name, d in (("mask", det), ("box", boxes_only)):
                res = lifters[mount.name].lift(d, cam.depth)
                lifted[("depth", name)] = _errors(res.objects.centers, res.det_index, det, truth)
                if fusers and frame.lidar is not None:
                    fuser, t_cam_from_lidar = fusers[mount.name]
                    lres = fuser.fuse(d, frame.lidar)
                    centers = lres.objects.centers @ t_cam_from_lidar[:3, :3].T
                    centers += t_cam_from_lidar[:3, 3]
                    lifted[("lidar", name)] = _errors(centers, lres.det_index, det, truth)
            for method in ("depth", "lidar"):
                if (method, "box") not in lifted:
                    continue
                box, mask = lifted[(method, "box")], lifted[(method, "mask")]
                for r in sorted(set(box) & set(mask)):
                    subsets = ["all"]
                    if vis[int(det.track_ids[r])] < 0.9:
                        subsets.append("occluded")
                    for subset in subsets:
                        pairs[f"{method}.{subset}"]["box"].append(box[r])
                        pairs[f"{method}.{subset}"]["mask"].append(mask[r])
    return {
        "scenario": {
            "seed": seed,
            "seconds": seconds,
            "rate_hz": rate_hz,
            "cameras": [c.name for c in scenario.rig.cameras],
            "min_pixels": min_pixels,
        },
        "centre_error": {key: {k: _summary(v) for k, v in by.items()} for key, by in pairs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rate", type=float, default=5.0, help="frames per second of the scenario")
    ap.add_argument("--min-pixels", type=int, default=50, help="smallest visible GT row lifted")
    ap.add_argument("--lidar", action="store_true", help="also LiDAR fusion (needs open3d)")
    ap.add_argument("--out", type=Path, default=RESULTS / "mask_lifting.json")
    args = ap.parse_args(argv)
    result = run(args.seed, args.seconds, args.rate, args.min_pixels, args.lidar)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    head = f"{'rows':<18} {'n':>5} {'box median':>11} {'mask median':>12}"
    print(f"{head} {'box p90':>8} {'mask p90':>9}")
    for key, by in result["centre_error"].items():
        b, m = by["box"], by["mask"]
        if not b.get("n"):
            continue
        med = f"{b['median_m']:>10.3f}m {m['median_m']:>11.3f}m"
        print(f"{key:<18} {b['n']:>5} {med} {b['p90_m']:>7.3f}m {m['p90_m']:>8.3f}m")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
