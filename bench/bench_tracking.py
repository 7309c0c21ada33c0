#!/usr/bin/env python3
"""Tracking benchmark: this package's tracker vs boxmot ByteTrack and OcSort,
side by side in one run on the same detections.

* Accuracy: TUD-Campus and TUD-Stadtmitte from the motmetrics wheel; the boxes
  of `test.txt` (ids dropped, score 1.0) are the detections; MOTA, IDF1 and ID
  switches against `gt.txt` at IoU 0.5 (motmetrics).
* Speed: median per-frame `update()` time on generated scenes with 3-10 boxes
  and with 200 boxes per frame (and on the TUD frames), same arrays for all.

Our side runs in the project venv; boxmot runs in its own venv
(bench/setup_bench_tracking.sh) as a subprocess of this same script in
`--worker` mode, which never imports `perception`. Writes
bench/results/tracking.json and prints a table.

    source scripts/env.sh && python bench/bench_tracking.py [--boxmot-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
FPS = 25.0
IMAGE_SIZE = (640, 480)
NS = 1_000_000_000
TARGETS = {"small_ratio_max": 1 / 3, "large_ratio_max": 1 / 10}


# ---------------------------------------------------------------- shared helpers
def import_motmetrics():
    """motmetrics 1.4.0 calls np.asfarray, removed in numpy 2: alias it here,
    for this benchmark only."""
    if not hasattr(np, "asfarray"):
        np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # noqa: NPY201
    import motmetrics

    return motmetrics


def load_mot(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", ndmin=2)


def tud_inputs(data_dir: Path) -> dict[str, dict]:
    """Per sequence: frame numbers and per-frame (N, 6) x1 y1 x2 y2 score cls."""
    out = {}
    for seq in SEQUENCES:
        det = load_mot(data_dir / seq / "test.txt")
        last = int(det[:, 0].max())
        frames = []
        for f in range(1, last + 1):
            r = det[det[:, 0] == f]
            a = np.zeros((len(r), 6), np.float32)
            a[:, :2] = r[:, 2:4]
            a[:, 2:4] = r[:, 2:4] + r[:, 4:6]
            a[:, 4] = 1.0
            frames.append(a.tolist())
        out[seq] = {"frames": frames}
    return out


def generated_scene(n_boxes: tuple[int, int], n_frames: int, seed: int) -> list[list]:
    """Frames of (N, 6) boxes moving at constant speed with jitter; each frame
    has between n_boxes[0] and n_boxes[1] of them (objects come and go)."""
    rng = np.random.default_rng(seed)
    hi = n_boxes[1]
    cols = int(np.ceil(np.sqrt(hi * 16 / 9)))
    gx = (np.arange(hi) % cols) * (1920 / cols) + 10
    gy = (np.arange(hi) // cols) * (1080 / max(1, int(np.ceil(hi / cols)))) + 10
    w = rng.uniform(15, 40, hi)
    h = w * rng.uniform(1.5, 2.5, hi)
    v = rng.uniform(-30, 30, (hi, 2))
    frames = []
    for f in range(n_frames):
        t = f / 30.0
        n = int(rng.integers(n_boxes[0], n_boxes[1] + 1))
        idx = np.sort(rng.choice(hi, n, replace=False))
        x = gx[idx] + v[idx, 0] * t + rng.normal(0, 1.0, n)
        y = gy[idx] + v[idx, 1] * t + rng.normal(0, 1.0, n)
        a = np.zeros((n, 6), np.float32)
        a[:, 0], a[:, 1] = x, y
        a[:, 2], a[:, 3] = x + w[idx], y + h[idx]
        a[:, 4] = rng.uniform(0.3, 0.95, n)
        frames.append(a.tolist())
    return frames


def summarize(times_s: list[float]) -> dict[str, float]:
    a = np.asarray(times_s) * 1e3
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "frames": len(a),
    }


# ---------------------------------------------------------------- boxmot worker
def worker(job_path: str, result_path: str) -> None:
    """Run boxmot ByteTrack and OcSort (default parameters) on every job;
    no `perception` import here (this runs in the boxmot venv)."""
    import logging

    logging.disable(logging.WARNING)
    import boxmot
    from boxmot import ByteTrack, OcSort

    jobs = json.loads(Path(job_path).read_text())
    img = np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8)
    result = {"boxmot_version": boxmot.__version__, "runs": {}}
    import torch

    result["torch_version"] = torch.__version__
    for name, cls in (("ByteTrack", ByteTrack), ("OcSort", OcSort)):
        for key, job in jobs.items():
            tracker = cls()
            frames = [np.asarray(f, np.float32).reshape(-1, 6) for f in job["frames"]]
            rows, times = [], []
            for k, dets in enumerate(frames, 1):
                t0 = time.perf_counter()
                out = tracker.update(dets, img)
                times.append(time.perf_counter() - t0)
                for r in np.asarray(out).reshape(-1, out.shape[1] if len(out) else 8):
                    rows.append(
                        [
                            k,
                            int(r[4]),
                            float(r[0]),
                            float(r[1]),
                            float(r[2] - r[0]),
                            float(r[3] - r[1]),
                        ]
                    )
            result["runs"][f"{name}/{key}"] = {"rows": rows, "times": times}
    Path(result_path).write_text(json.dumps(result))


def run_boxmot(python: Path, jobs: dict) -> dict | None:
    if not python.exists():
        print(
            f"boxmot venv not found at {python}: run bench/setup_bench_tracking.sh; "
            "reporting this tracker only",
            file=sys.stderr,
        )
        return None
    with tempfile.TemporaryDirectory() as tmp:
        job, res = Path(tmp) / "jobs.json", Path(tmp) / "result.json"
        job.write_text(json.dumps(jobs))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--worker", str(job), str(res)],
            check=True,
            env=env,
            timeout=1800,
        )
        return json.loads(res.read_text())


# ---------------------------------------------------------------- our side
def run_ours(jobs: dict) -> tuple[dict, dict]:
    sys.path.insert(0, str(ROOT))
    import perception
    from perception.core.tracking import Tracker, TrackerConfig
    from perception.core.types import Detections

    cfg = TrackerConfig()
    runs = {}
    for key, job in jobs.items():
        tracker = Tracker(cfg)
        rows, times, times_build = [], [], []
        for k, frame in enumerate(job["frames"], 1):
            a = np.asarray(frame, np.float32).reshape(-1, 6)
            t0 = time.perf_counter()
            det = Detections.from_arrays(
                a[:, :4],
                a[:, 4],
                a[:, 5],
                stamp_ns=round((k - 1) * NS / job["fps"]),
                frame_id="bench",
                image_size=IMAGE_SIZE if key in SEQUENCES else (0, 0),
            )
            t1 = time.perf_counter()
            out = tracker.update(det)
            t2 = time.perf_counter()
            times.append(t2 - t1)
            times_build.append(t2 - t0)
            for box, tid in zip(out.xywh.tolist(), out.track_ids.tolist(), strict=True):
                rows.append([k, tid, *box])
        runs[key] = {"rows": rows, "times": times, "times_with_build": times_build}
    meta = {
        "perception_version": getattr(perception, "__version__", "0.1.0"),
        "config": cfg.as_dict(),
    }
    return runs, meta


def score(mm, gt: np.ndarray, rows: list) -> dict[str, float]:
    hyp = np.asarray(rows, np.float64).reshape(-1, 6)
    acc = mm.MOTAccumulator(auto_id=False)
    for f in sorted(set(gt[:, 0].astype(int)) | set(hyp[:, 0].astype(int))):
        g, h = gt[gt[:, 0] == f], hyp[hyp[:, 0] == f]
        dist = mm.distances.iou_matrix(g[:, 2:6], h[:, 2:6], max_iou=0.5)
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=f)
    s = mm.metrics.create().compute(
        acc,
        metrics=["mota", "idf1", "num_switches", "num_false_positives", "num_misses"],
        name="seq",
    )
    return {
        "mota": float(s["mota"].iloc[0]),
        "idf1": float(s["idf1"].iloc[0]),
        "idsw": int(s["num_switches"].iloc[0]),
        "fp": int(s["num_false_positives"].iloc[0]),
        "fn": int(s["num_misses"].iloc[0]),
    }


def score_all(mm, to_score: dict) -> dict:
    return {
        seq: {
            name: score(mm, load_mot(Path(job["gt"])), rows) for name, rows in job["rows"].items()
        }
        for seq, job in to_score.items()
    }


def score_worker(job_path: str, result_path: str) -> None:
    """Score in the boxmot venv when this venv has no motmetrics."""
    mm = import_motmetrics()
    Path(result_path).write_text(json.dumps(score_all(mm, json.loads(Path(job_path).read_text()))))


def run_score_worker(python: Path, to_score: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job, res = Path(tmp) / "score.json", Path(tmp) / "result.json"
        job.write_text(json.dumps(to_score))
        subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--score-worker", str(job), str(res)],
            check=True,
            timeout=600,
        )
        return json.loads(res.read_text())


def motmetrics_dir_from(python: Path) -> Path | None:
    """motmetrics' data folder as installed in another venv, or None."""
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import motmetrics, os; print(os.path.dirname(motmetrics.__file__))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Path(proc.stdout.strip()) / "data" if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--boxmot-python", type=Path, default=ROOT / ".venv-bench-tracking" / "bin" / "python"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tracking.json")
    p.add_argument("--worker", nargs=2, metavar=("JOBS", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--score-worker", nargs=2, metavar=("JOBS", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.score_worker:
        score_worker(*args.score_worker)
        return 0

    # motmetrics (TUD data + scoring) in this venv if installed, else in the
    # boxmot venv; without either, only the generated speed scenes run.
    try:
        mm = import_motmetrics()
        data_dir: Path | None = Path(mm.__file__).parent / "data"
    except ImportError:
        mm = None
        data_dir = motmetrics_dir_from(args.boxmot_python)
    jobs = {}
    if data_dir is not None:
        for seq, job in tud_inputs(data_dir).items():
            jobs[seq] = {**job, "fps": FPS}
    else:
        print(
            "motmetrics not found here nor in the boxmot venv: TUD accuracy skipped",
            file=sys.stderr,
        )
    jobs["gen_3_10"] = {"frames": generated_scene((3, 10), 1500, seed=1), "fps": 30.0}
    jobs["gen_200"] = {"frames": generated_scene((200, 200), 300, seed=2), "fps": 30.0}

    ours, meta = run_ours(jobs)
    theirs = run_boxmot(args.boxmot_python, jobs)

    trackers = {"ours": ours}
    if theirs is not None:
        for name in ("ByteTrack", "OcSort"):
            trackers[name] = {k: theirs["runs"][f"{name}/{k}"] for k in jobs}
    accuracy: dict[str, dict] = {}
    if data_dir is not None:
        to_score = {
            seq: {
                "gt": str(data_dir / seq / "gt.txt"),
                "rows": {name: runs[seq]["rows"] for name, runs in trackers.items()},
            }
            for seq in SEQUENCES
        }
        if mm is not None:
            accuracy = score_all(mm, to_score)
        else:
            accuracy = run_score_worker(args.boxmot_python, to_score)
    speed = {
        key: {name: summarize(runs[key]["times"]) for name, runs in trackers.items()}
        for key in jobs
    }
    for key in jobs:
        speed[key]["ours_with_detections_build"] = summarize(ours[key]["times_with_build"])

    checks = {}
    if theirs is not None:
        for seq in accuracy:
            a = accuracy[seq]
            checks[f"{seq}: MOTA >= both"] = a["ours"]["mota"] >= max(
                a["ByteTrack"]["mota"], a["OcSort"]["mota"]
            )
            checks[f"{seq}: IDF1 >= both"] = a["ours"]["idf1"] >= max(
                a["ByteTrack"]["idf1"], a["OcSort"]["idf1"]
            )
            checks[f"{seq}: IDsw <= both"] = a["ours"]["idsw"] <= min(
                a["ByteTrack"]["idsw"], a["OcSort"]["idsw"]
            )
        for key, limit in (
            ("gen_3_10", TARGETS["small_ratio_max"]),
            ("gen_200", TARGETS["large_ratio_max"]),
        ):
            ratio = speed[key]["ours"]["median_ms"] / speed[key]["ByteTrack"]["median_ms"]
            speed[key]["ratio_vs_ByteTrack"] = ratio
            speed[key]["ratio_vs_OcSort"] = (
                speed[key]["ours"]["median_ms"] / speed[key]["OcSort"]["median_ms"]
            )
            checks[f"{key}: median <= {limit:.3f} x ByteTrack"] = ratio <= limit

    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "perception": meta,
        "boxmot": None
        if theirs is None
        else {"version": theirs["boxmot_version"], "torch": theirs["torch_version"]},
        "accuracy": accuracy,
        "speed": speed,
        "checks": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print("\nAccuracy (motmetrics IoU 0.5; detections = test.txt boxes, score 1.0)")
    print(
        f"{'sequence':16s} {'tracker':10s} {'MOTA':>7s} {'IDF1':>7s} {'IDsw':>5s} "
        f"{'FP':>4s} {'FN':>4s}"
    )
    for seq, rows in accuracy.items():
        for name, m in rows.items():
            print(
                f"{seq:16s} {name:10s} {m['mota']:7.4f} {m['idf1']:7.4f} {m['idsw']:5d} "
                f"{m['fp']:4d} {m['fn']:4d}"
            )
    print("\nPer-frame update() time, median ms (p90)")
    names = list(trackers)
    print(f"{'scene':16s} " + " ".join(f"{n:>17s}" for n in names) + "   ours/ByteTrack")
    for key, row in speed.items():
        cells = " ".join(f"{row[n]['median_ms']:8.3f} ({row[n]['p90_ms']:6.3f})" for n in names)
        ratio = row.get("ratio_vs_ByteTrack")
        if ratio is None and "ByteTrack" in row:
            ratio = row["ours"]["median_ms"] / row["ByteTrack"]["median_ms"]
        print(f"{key:16s} {cells}   {'' if ratio is None else f'{ratio:.3f}'}")
    if checks:
        print("\nTargets")
        for k, ok in checks.items():
            print(f"  {'PASS' if ok else 'FAIL'}  {k}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
