#!/usr/bin/env python3
"""Amodal 3D centres: centre and size error of depth lifting and LiDAR fusion
with and without class size priors, on generated street scenes.

Scenes are drawn like the demo's scenario (perception/sim/scenario.py: cars
3.9-4.9 x 1.7-1.95 x 1.4-1.7 m in four lanes along x, cyclists on the bike
strips, pedestrians on the sidewalks, all heading along +-x, a few cars with a
random yaw) around the demo's rig (perception/sim/rig.py default_rig: front,
left and right 640x360 cameras with a 90-degree field of view, a 16-beam roof
LiDAR). Depth images and LiDAR clouds are exact ray casts, the 2D boxes the
pixel extent of each object's visible pixels (`detections_from_render`), so
the numbers isolate the 3D placement from the detector; `--box-jitter` adds
Gaussian noise (fraction of the box size) to the box edges like a detector's.
Objects with fewer than 20 visible pixels are not detected; each remaining one
is scored against its own ground truth when that is the nearest ground-truth
centre to its estimate (else it counts as `other_object`: the 3D box went to
an occluder or a neighbour, a failure of the 2D box, not of the placement;
the demo's greedy matching would score it against that one). Size error:
the norm of the difference of (longer horizontal, shorter horizontal,
height) extents, as the demo reports it.

Writes bench/results/amodal.json and prints a table.

    source scripts/env.sh && python bench/bench_amodal.py [--scenes 40]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.core.fusion.amodal import AmodalConfig  # noqa: E402
from perception.core.fusion.depth import DepthLiftConfig, DepthLifter  # noqa: E402
from perception.core.fusion.lidar import LidarFusion, LidarFusionConfig  # noqa: E402
from perception.core.fusion.synthetic import (  # noqa: E402
    SceneBox,
    detections_from_render,
    lidar_scan,
    render_depth,
    rigid,
)
from perception.core.types import Detections  # noqa: E402
from perception.sim.rig import default_rig  # noqa: E402

CLASSES = ("car", "pedestrian", "cyclist")
CAR, PED, CYC = 0, 1, 2


def scene(rng: np.random.Generator) -> list[SceneBox]:
    """Boxes in base_link (ego at the origin, ground z = 0)."""
    boxes: list[SceneBox] = []
    for y in (0.0, -3.5, 3.5, 7.0):  # lanes relative to the ego lane
        x = rng.uniform(-45.0, -30.0)
        while x < 50.0:
            size = (rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.7))
            yaw = float(rng.choice((0.0, math.pi)))
            if rng.random() < 0.2:
                yaw += rng.uniform(-0.6, 0.6)  # turning, parked at an angle
            yc = y + rng.uniform(-0.25, 0.25)
            if not (y == 0.0 and abs(x) < 6.0):  # not on top of the ego
                boxes.append(SceneBox((x, yc, 0.5 * size[2]), size, yaw, CAR))
            x += size[0] + rng.exponential(12.0) + 4.0
    for y in (-5.75, 9.25):  # bike strips
        for x in rng.uniform(-35.0, 45.0, 2):
            boxes.append(SceneBox((x, y, 0.85), (1.75, 0.6, 1.7), 0.0, CYC))
    for side in (-1.0, 1.0):
        for x in rng.uniform(-30.0, 40.0, 6):
            y = 1.75 + side * rng.uniform(8.8, 10.5)  # the ego drives 1.75 m right of centre
            size = (rng.uniform(0.4, 0.55), rng.uniform(0.5, 0.65), rng.uniform(1.55, 1.9))
            boxes.append(SceneBox((x, y, 0.5 * size[2]), size, 0.0, PED))
    return boxes


def jitter(det: Detections, frac: float, rng: np.random.Generator) -> Detections:
    if frac <= 0 or len(det) == 0:
        return det
    xyxy = det.xyxy.astype(np.float64)
    wh = np.concatenate((xyxy[:, 2:] - xyxy[:, :2],) * 2, axis=1)
    xyxy = xyxy + rng.normal(0.0, frac, xyxy.shape) * wh
    xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 2.0)
    return Detections.from_arrays(
        xyxy, det.scores, det.class_ids, stamp_ns=det.stamp_ns, frame_id=det.frame_id,
        image_size=det.image_size,
    )  # fmt: skip


def size_error(est: np.ndarray, truth: tuple[float, float, float]) -> float:
    a = np.array([max(est[0], est[1]), min(est[0], est[1]), est[2]])
    b = np.array([max(truth[0], truth[1]), min(truth[0], truth[1]), truth[2]])
    return float(np.linalg.norm(a - b))


def score(
    rows: list[tuple[int, float, float]],
    boxes: list[SceneBox],
    centers: np.ndarray,
    sizes: np.ndarray,
    which: list[int],
) -> int:
    """Append (class, centre error, size error) of each estimate whose nearest
    ground truth is its own object; returns how many were not."""
    gt = np.array([b.center for b in boxes])
    other = 0
    for c, s, k in zip(centers, sizes, which, strict=True):
        d = np.linalg.norm(gt - c, axis=1)
        if int(np.argmin(d)) != k:
            other += 1
            continue
        rows.append((boxes[k].class_id, float(d[k]), size_error(s, boxes[k].size)))
    return other


def summary(rows: list[tuple[int, float, float]]) -> dict:
    out: dict = {}
    for name, sel in [("all", None), *((c, k) for k, c in enumerate(CLASSES))]:
        r = [x for x in rows if sel is None or x[0] == sel]
        if not r:
            continue
        c = np.array([x[1] for x in r])
        s = np.array([x[2] for x in r])
        out[name] = {
            "objects": len(r),
            "centre_median_m": round(float(np.median(c)), 3),
            "centre_p95_m": round(float(np.percentile(c, 95)), 3),
            "size_median_m": round(float(np.median(s)), 3),
            "size_p95_m": round(float(np.percentile(s, 95)), 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box-jitter", type=float, default=0.0)
    ap.add_argument("--no-lidar", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "amodal.json")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rig = default_rig()
    lid = rig.lidar
    assert lid is not None
    t_base_from_lidar = rigid(np.eye(3), lid.position)
    amodal = AmodalConfig.from_names(CLASSES)
    variants = {
        "depth_surface": DepthLiftConfig(),
        "depth_amodal": DepthLiftConfig(amodal=amodal),
    }
    lidar_variants = {
        "lidar_surface": LidarFusionConfig(),
        "lidar_amodal": LidarFusionConfig(amodal=amodal),
    }
    results: dict[str, list[tuple[int, float, float]]] = {
        k: [] for k in (*variants, *([] if args.no_lidar else lidar_variants))
    }
    times: dict[str, float] = {k: 0.0 for k in results}
    other: dict[str, int] = {k: 0 for k in results}
    t0 = time.perf_counter()
    for _ in range(args.scenes):
        boxes = scene(rng)
        pts = None
        if not args.no_lidar:
            pts = lidar_scan(
                [
                    SceneBox(tuple(np.subtract(b.center, lid.position)), b.size, b.yaw, b.class_id)
                    for b in boxes
                ],
                -lid.position[2],
                elevations_deg=lid.elevations_deg,
                n_azimuth=lid.n_azimuth,
                max_range=lid.max_range,
            )
        for mount in rig.cameras:
            depth, ids = render_depth(mount.model, mount.T_base_from_cam, boxes, 0.0, 80.0)
            det, which = detections_from_render(ids, boxes, frame_id=mount.name)
            det = jitter(det, args.box_jitter, rng)
            for name, cfg in variants.items():
                t1 = time.perf_counter()
                res = DepthLifter(mount.model, cfg).lift(
                    det, depth, T_target_from_camera=mount.T_base_from_cam, target_frame="base"
                )
                times[name] += time.perf_counter() - t1
                ks = [int(which[i]) for i in res.det_index]
                other[name] += score(
                    results[name], boxes, res.objects.centers, res.objects.sizes, ks
                )
            if pts is None:
                continue
            t_cam_from_lidar = np.linalg.inv(mount.T_base_from_cam) @ t_base_from_lidar
            for name, lcfg in lidar_variants.items():
                t1 = time.perf_counter()
                lres = LidarFusion(mount.model, lcfg, T_cam_from_cloud=t_cam_from_lidar).fuse(
                    det, pts, cloud_frame_id="lidar"
                )
                times[name] += time.perf_counter() - t1
                objs = lres.objects.transformed(t_base_from_lidar, "base")
                ks = [int(which[i]) for i in lres.det_index]
                other[name] += score(results[name], boxes, objs.centers, objs.sizes, ks)
    out = {
        "scenes": args.scenes,
        "seed": args.seed,
        "box_jitter": args.box_jitter,
        "wall_s": round(time.perf_counter() - t0, 1),
        "fusion_s": {k: round(v, 2) for k, v in times.items()},
        "priors": [list(p) for p in amodal.priors],
        "results": {k: summary(v) for k, v in results.items()},
        "other_object": other,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'variant':15s} {'class':11s} {'n':>5s} {'ctr med':>8s} {'ctr p95':>8s} "
          f"{'size med':>8s} {'size p95':>8s}")  # fmt: skip
    for k, per in out["results"].items():
        for c, s in per.items():
            print(
                f"{k:15s} {c:11s} {s['objects']:5d} {s['centre_median_m']:8.3f} "
                f"{s['centre_p95_m']:8.3f} {s['size_median_m']:8.3f} {s['size_p95_m']:8.3f}"
            )
    print(f"estimates nearest another object (not scored): {other}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
