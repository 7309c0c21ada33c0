"""Render a few frames of a scenario: time them and save a contact sheet.

    python -m perception.sim.preview --seed 0 --frames 10 --out /tmp/sim.png --json /tmp/sim.json

Prints the render time per frame (all cameras + LiDAR + ground truth), and
writes one row per frame (cameras side by side, GT boxes drawn: green
visibility >= 0.5, orange below) so a person can see what the generator does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from perception.sim.rig import Rig, default_rig
from perception.sim.scenario import CLASS_NAMES, Scenario

__all__ = ["main"]

_log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sim_preview", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=10, help="frames to render (0.3 s apart)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--no-lidar", action="store_true")
    p.add_argument("--out", default="", help="contact sheet PNG (empty: none)")
    p.add_argument("--json", default="", help="timings as JSON (empty: none)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import cv2

    rig = default_rig(args.width, args.height)
    if args.no_lidar:
        rig = Rig(rig.cameras, None)
    step = 3
    sc = Scenario(args.seed, duration_s=max(args.frames, 1) * step / 10.0, rate_hz=10.0, rig=rig)
    times, rows = [], []
    for i in range(0, sc.n_frames, step):
        t0 = time.perf_counter()
        f = sc.frame(i)
        times.append(time.perf_counter() - t0)
        if args.out:
            tiles = []
            for cam in f.cameras.values():
                img = cam.image_bgr.copy()
                for k in range(len(cam.object_ids)):
                    if cam.visible_pixels[k] == 0:
                        continue
                    x1, y1, x2, y2 = (int(v) for v in np.rint(cam.xyxy[k]))
                    col = (0, 200, 0) if cam.visibility[k] >= 0.5 else (0, 140, 255)
                    cv2.rectangle(img, (x1, y1), (x2, y2), col, 1)
                    label = f"{cam.object_ids[k]} {CLASS_NAMES[cam.class_ids[k]][:3]}"
                    cv2.putText(img, label, (x1, max(y1 - 2, 8)), 0, 0.3, col, 1)
                tiles.append(img)
            rows.append(np.concatenate(tiles, 1))
    ms = np.asarray(times) * 1000.0
    result = {
        "seed": args.seed,
        "resolution": [args.width, args.height],
        "cameras": len(rig.cameras),
        "lidar": rig.lidar is not None,
        "frames": len(ms),
        "actors": len(sc.actors),
        "render_ms_median": float(np.median(ms)),
        "render_ms_p95": float(np.percentile(ms, 95)),
        "render_ms_max": float(ms.max()),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
    }
    _log.info(
        "%d frames %dx%d x%d cameras%s: median %.0f ms, p95 %.0f ms, max %.0f ms "
        "(load average %.2f)",
        len(ms), args.width, args.height, len(rig.cameras), " + lidar" if rig.lidar else "",
        result["render_ms_median"], result["render_ms_p95"], result["render_ms_max"],
        result["load_avg_1min"],
    )  # fmt: skip
    if args.out and rows:
        cv2.imwrite(args.out, np.concatenate(rows, 0))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
