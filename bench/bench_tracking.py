#!/usr/bin/env python3
"""Tracking benchmark: this package's tracker vs boxmot ByteTrack, OC-SORT and
BoT-SORT, side by side in one run on the same detections.

* Synthetic accuracy (perception/sim/mot.py): six families of generated
  sequences (crowd, occlusion, dropped, ego, approach, noisy), several seeds
  each, from a fixed split: `--split heldout` (default, the numbers to report)
  or `--split tune` (the only split to tune on). MOTA, IDF1 and ID switches
  per sequence (motmetrics, IoU 0.5, gt rows with visibility >= 0.1), averaged
  over the seeds of each family.
* TUD-Campus and TUD-Stadtmitte from the motmetrics wheel: the boxes of
  `test.txt` (ids dropped, score 1.0) are the detections.
* Speed: median per-frame `update()` time on generated scenes with 3-10 boxes
  and with 200 boxes per frame (and on every accuracy sequence).

Time steps: our tracker gets each frame's capture stamp (`stamp_ns`), boxmot
gets the frames in order (`--boxmot-stamps`: boxmot's `variable_dt` mode with
the same stamps). Camera motion (ego family only; the camera is
static elsewhere): BoT-SORT runs its own CMC (default `ecc`) on the rendered
images; ours gets `camera_motion` from `perception.core.tracking.cmc`'s
estimator on the same images, when the tracker has that input (detected at
run time; `--cmc truth` feeds the true affine instead, `--cmc off` nothing).
BoT-SORT runs motion-only (`use_embeddings=False`).

Our side runs in the project venv; boxmot runs in its own venv
(bench/setup_bench_tracking.sh) as a subprocess of this same script in
`--worker` mode, which never imports `perception`. Writes
bench/results/tracking.json (tracking_tune.json for the tune split) and
prints tables.

    ./dev exec python bench/bench_tracking.py [--split tune|heldout]
        [--families crowd,ego] [--seeds 0,1] [--no-tud] [--no-speed] [--no-boxmot]
        [--boxmot-stamps] [--cmc images|truth|off] [--out PATH]
"""

from __future__ import annotations

import argparse
import inspect
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
BOXMOT_TRACKERS = ("ByteTrack", "OcSort", "BotSort")
METRICS = ("mota", "idf1", "idsw", "fp", "fn")


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


# ---------------------------------------------------------------- synthetic jobs
def load_sim_module():
    """perception/sim/mot.py by path: it needs numpy only, and importing the
    `perception.sim` package would pull in the rest of the scenario code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_sim_mot", ROOT / "perception/sim/mot.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def sim_jobs(
    families: list[str], seeds: list[int], tmp: Path, noise: str | None = None
) -> dict[str, dict]:
    """One job per (family, seed): detections, stamps, scored gt (a MOT file
    under `tmp`) and, for the ego family, the rendered frames (an .npy there).
    `noise` replaces every family's detector noise (None: each family's own)."""
    mot = load_sim_module()
    jobs = {}
    for family in families:
        for seed in seeds:
            seq = mot.generate(family, seed, noise)
            gt_path = tmp / f"{seq.name}-gt.txt"
            np.savetxt(gt_path, seq.gt_scored()[:, :6], delimiter=",", fmt="%.3f")
            images = None
            if family == "ego":
                images = tmp / f"{seq.name}-images.npy"
                w, h = seq.image_size
                arr = np.lib.format.open_memmap(
                    images, mode="w+", dtype=np.uint8, shape=(seq.n_frames, h, w)
                )
                for k, img in enumerate(seq.images()):
                    arr[k] = img
                arr.flush()
                del arr
            jobs[seq.name] = {
                "family": family,
                "seed": seed,
                "frames": [f.tolist() for f in seq.frame_detections()],
                "stamps_ns": seq.stamps_ns.tolist(),
                "image_size": list(seq.image_size),
                "images": None if images is None else str(images),
                "true_affine": seq.affine.tolist(),
                "gt": str(gt_path),
                "noise": seq.noise,
                "drop_rate": seq.drop_rate,
            }
    return jobs


def stamped(frames: list, fps: float) -> list[int]:
    return [round(k * NS / fps) for k in range(len(frames))]


# ---------------------------------------------------------------- boxmot worker
def make_boxmot(name: str, with_images: bool, variable_dt: bool):
    """boxmot tracker `name` with default parameters; BoT-SORT motion-only,
    with its camera-motion compensation where there are images.
    `variable_dt`: boxmot's own capture-time mode (update(timestamp_s=...))."""
    import boxmot

    kwargs = {"variable_dt": True} if variable_dt else {}
    if name == "BotSort":
        return boxmot.BotSort(use_embeddings=False, use_cmc=with_images, **kwargs)
    return getattr(boxmot, name)(**kwargs)


def worker(job_path: str, result_path: str) -> None:
    """Run the boxmot trackers on every job; no `perception` import here
    (this runs in the boxmot venv)."""
    import logging

    logging.disable(logging.WARNING)
    import boxmot
    import torch

    try:  # boxmot logs through loguru; keep its per-tracker INFO lines out
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    jobs = json.loads(Path(job_path).read_text())
    result = {
        "boxmot_version": boxmot.__version__,
        "torch_version": torch.__version__,
        "runs": {},
    }
    for name in BOXMOT_TRACKERS:
        for key, job in jobs.items():
            images = None if job.get("images") is None else np.load(job["images"], mmap_mode="r")
            w, h = job.get("image_size") or IMAGE_SIZE
            blank = np.zeros((h, w, 3), np.uint8)
            stamps = job.get("boxmot_stamps", False)
            tracker = make_boxmot(name, images is not None, stamps)
            rows, times = [], []
            for k, frame in enumerate(job["frames"], 1):
                dets = np.asarray(frame, np.float32).reshape(-1, 6)
                img = (
                    blank
                    if images is None
                    else np.repeat(np.array(images[k - 1])[:, :, None], 3, 2)
                )
                t0 = time.perf_counter()
                if stamps:
                    out = tracker.update(dets, img, timestamp_s=job["stamps_ns"][k - 1] / NS)
                else:
                    out = tracker.update(dets, img)
                out = np.asarray(out)
                times.append(time.perf_counter() - t0)
                for r in out.reshape(-1, out.shape[1] if out.size else 8):
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


def run_boxmot(python: Path, jobs: dict, tmp: Path) -> dict | None:
    if not python.exists():
        print(
            f"boxmot venv not found at {python}: run bench/setup_bench_tracking.sh; "
            "reporting this tracker only",
            file=sys.stderr,
        )
        return None
    job, res = tmp / "jobs.json", tmp / "result.json"
    job.write_text(json.dumps({k: {**v, "true_affine": None} for k, v in jobs.items()}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", str(job), str(res)],
        check=True,
        env=env,
        timeout=1800,
    )
    return json.loads(res.read_text())


# ---------------------------------------------------------------- our side
def cmc_support() -> tuple[bool, type | None]:
    """Whether Tracker.update takes `camera_motion`, and the estimator class
    (perception.core.tracking.cmc.CameraMotionEstimator) if there is one."""
    from perception.core.tracking import Tracker

    takes = "camera_motion" in inspect.signature(Tracker.update).parameters
    try:
        from perception.core.tracking.cmc import CameraMotionEstimator
    except ImportError:
        return takes, None
    return takes, CameraMotionEstimator


def run_ours(jobs: dict, cmc: str) -> tuple[dict, dict]:
    """Our tracker on every job; on jobs with images also without camera
    motion ("ours_nocmc"), to show what the compensation brings."""
    sys.path.insert(0, str(ROOT))
    import perception
    from perception.core.tracking import Tracker, TrackerConfig
    from perception.core.types import Detections

    cfg = TrackerConfig()
    takes_motion, estimator_cls = cmc_support()
    runs: dict[str, dict] = {"ours": {}, "ours_nocmc": {}}
    cmc_times: list[float] = []
    cmc_stats: dict[str, dict] = {}
    for key, job in jobs.items():
        images = None if job.get("images") is None else np.load(job["images"], mmap_mode="r")
        variants = ["ours"]
        if images is not None and takes_motion and cmc != "off":
            variants.append("ours_nocmc")
        size = tuple(job["image_size"]) if job.get("image_size") else (0, 0)
        for variant in variants:
            use_motion = variant == "ours" and images is not None and takes_motion and cmc != "off"
            estimator = None
            if use_motion and cmc == "images":
                if estimator_cls is None:
                    use_motion = False
                else:
                    estimator = estimator_cls()
            tracker = Tracker(cfg)
            rows, times, times_build = [], [], []
            for k, frame in enumerate(job["frames"], 1):
                a = np.asarray(frame, np.float32).reshape(-1, 6)
                t0 = time.perf_counter()
                det = Detections.from_arrays(
                    a[:, :4],
                    a[:, 4],
                    a[:, 5],
                    stamp_ns=int(job["stamps_ns"][k - 1]),
                    frame_id="bench",
                    image_size=size,
                )
                kwargs = {}
                if use_motion:
                    if estimator is not None:
                        c0 = time.perf_counter()
                        kwargs["camera_motion"] = estimator.estimate(
                            np.array(images[k - 1]), a[:, :4]
                        )
                        cmc_times.append(time.perf_counter() - c0)
                    else:
                        kwargs["camera_motion"] = np.asarray(job["true_affine"][k - 1])
                t1 = time.perf_counter()
                out = tracker.update(det, **kwargs)
                t2 = time.perf_counter()
                times.append(t2 - t1)
                times_build.append(t2 - t0)
                for box, tid in zip(out.xywh.tolist(), out.track_ids.tolist(), strict=True):
                    rows.append([k, tid, *box])
            runs[variant][key] = {"rows": rows, "times": times, "times_with_build": times_build}
            if estimator is not None:
                cmc_stats[key] = estimator.stats.as_dict()
    meta = {
        "perception_version": getattr(perception, "__version__", "0.1.0"),
        "config": cfg.as_dict(),
        "camera_motion": {
            "tracker_takes_camera_motion": takes_motion,
            "estimator": None if estimator_cls is None else estimator_cls.__name__,
            "source": cmc if takes_motion else "unsupported",
            "estimate_ms_median": float(np.median(cmc_times) * 1e3) if cmc_times else None,
            "estimator_stats": cmc_stats,
        },
    }
    return runs, meta


# ---------------------------------------------------------------- scoring
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
            timeout=1800,
        )
        return json.loads(res.read_text())


def family_means(per_seq: dict, jobs: dict) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and tracker: each metric averaged over the family's seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    families = sorted({jobs[k]["family"] for k in per_seq}, key=list(jobs_family_order(jobs)).index)
    for fam in families:
        keys = [k for k in per_seq if jobs[k]["family"] == fam]
        names = [n for n in per_seq[keys[0]] if all(n in per_seq[k] for k in keys)]
        out[fam] = {
            n: {m: float(np.mean([per_seq[k][n][m] for k in keys])) for m in METRICS} for n in names
        }
    return out


def jobs_family_order(jobs: dict) -> dict[str, None]:
    return {j["family"]: None for j in jobs.values() if j.get("family")}


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


def parse_list(text: str | None, cast=str) -> list | None:
    return None if text is None else [cast(x) for x in text.split(",") if x.strip()]


def best_boxmot(row: dict, metric: str) -> tuple[str, float] | None:
    cands = [(n, row[n][metric]) for n in BOXMOT_TRACKERS if n in row]
    return max(cands, key=lambda c: c[1]) if cands else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--boxmot-python", type=Path, default=ROOT / ".venv-bench-tracking" / "bin" / "python"
    )
    p.add_argument("--split", choices=("tune", "heldout"), default="heldout")
    p.add_argument("--families", help="comma list (default: all families)")
    p.add_argument("--seeds", help="comma list of seeds (overrides --split)")
    p.add_argument("--cmc", choices=("images", "truth", "off"), default="images",
                   help="camera motion for our tracker on the ego family")  # fmt: skip
    p.add_argument("--noise", help="detector noise for every family (a perception.sim.mot "
                   "NOISE_LEVELS key, e.g. clean: confident boxes only; default: "
                   "each family's own)")  # fmt: skip
    p.add_argument("--no-tud", action="store_true", help="skip the TUD sequences")
    p.add_argument("--no-speed", action="store_true", help="skip the speed-only scenes")
    p.add_argument("--no-boxmot", action="store_true", help="our tracker only")
    p.add_argument(
        "--boxmot-stamps",
        action="store_true",
        help="boxmot in its variable_dt mode with the capture stamps (default: frame order)",
    )
    p.add_argument("--out", type=Path, help="JSON (default bench/results/tracking[_tune].json)")
    p.add_argument("--worker", nargs=2, metavar=("JOBS", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--score-worker", nargs=2, metavar=("JOBS", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.score_worker:
        score_worker(*args.score_worker)
        return 0

    t_start = time.perf_counter()
    mot = load_sim_module()
    families = parse_list(args.families) or list(mot.FAMILIES)
    unknown = set(families) - set(mot.FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; known: {', '.join(mot.FAMILIES)}")
    seeds = parse_list(args.seeds, int) or list(mot.split_seeds(args.split))
    split = "custom" if args.seeds else args.split
    if args.noise is not None and args.noise not in mot.NOISE_LEVELS:
        p.error(f"--noise: expected one of {', '.join(mot.NOISE_LEVELS)}, got {args.noise!r}")
    suffix = "" if args.noise is None else f"_{args.noise}"
    out_path = args.out or ROOT / "bench" / "results" / (
        f"tracking{suffix}.json" if split == "heldout" else f"tracking_{split}{suffix}.json"
    )

    # motmetrics (TUD data + scoring) in this venv if installed, else in the
    # boxmot venv.
    try:
        mm = import_motmetrics()
        data_dir: Path | None = Path(mm.__file__).parent / "data"
    except ImportError:
        mm = None
        data_dir = motmetrics_dir_from(args.boxmot_python)
    with tempfile.TemporaryDirectory(prefix="bench_tracking_") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        jobs = sim_jobs(families, seeds, tmp, args.noise)
        t_generate = time.perf_counter() - t0
        sim_keys = list(jobs)
        if not args.no_tud and data_dir is not None:
            for seq, job in tud_inputs(data_dir).items():
                jobs[seq] = {
                    **job,
                    "stamps_ns": stamped(job["frames"], FPS),
                    "image_size": list(IMAGE_SIZE),
                    "gt": str(data_dir / seq / "gt.txt"),
                }
        elif not args.no_tud:
            print("motmetrics not found here nor in the boxmot venv: TUD skipped", file=sys.stderr)
        if not args.no_speed:
            for key, frames in (
                ("gen_3_10", generated_scene((3, 10), 1500, seed=1)),
                ("gen_200", generated_scene((200, 200), 300, seed=2)),
            ):
                jobs[key] = {"frames": frames, "stamps_ns": stamped(frames, 30.0)}

        for job in jobs.values():
            job["boxmot_stamps"] = bool(args.boxmot_stamps)
        t0 = time.perf_counter()
        ours_runs, meta = run_ours(jobs, args.cmc)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = None if args.no_boxmot else run_boxmot(args.boxmot_python, jobs, tmp)
        t_boxmot = time.perf_counter() - t0

        trackers: dict[str, dict] = {"ours": ours_runs["ours"]}
        if theirs is not None:
            for name in BOXMOT_TRACKERS:
                trackers[name] = {k: theirs["runs"][f"{name}/{k}"] for k in jobs}
        to_score = {}
        for key, job in jobs.items():
            if not job.get("gt"):
                continue
            rows = {name: runs[key]["rows"] for name, runs in trackers.items()}
            if key in ours_runs["ours_nocmc"]:
                rows["ours_nocmc"] = ours_runs["ours_nocmc"][key]["rows"]
            to_score[key] = {"gt": job["gt"], "rows": rows}
        t0 = time.perf_counter()
        if mm is not None:
            scores = score_all(mm, to_score)
        else:
            scores = run_score_worker(args.boxmot_python, to_score)
        t_score = time.perf_counter() - t0

    per_seq = {k: scores[k] for k in sim_keys}
    per_family = family_means(per_seq, jobs)
    overall: dict[str, dict[str, float]] = {}
    for name in trackers:
        if all(name in row for row in per_family.values()):
            overall[name] = {
                m: float(np.mean([row[name][m] for row in per_family.values()])) for m in METRICS
            }
    accuracy = {k: scores[k] for k in SEQUENCES if k in scores}
    speed = {
        key: {name: summarize(runs[key]["times"]) for name, runs in trackers.items()}
        for key in jobs
        if key not in sim_keys
    }
    for key in speed:
        speed[key]["ours_with_detections_build"] = summarize(
            ours_runs["ours"][key]["times_with_build"]
        )
    speed["synthetic (all frames)"] = {
        name: summarize([t for k in sim_keys for t in runs[k]["times"]])
        for name, runs in trackers.items()
    }

    checks: dict[str, bool] = {}
    if theirs is not None:
        # synthetic families, then the TUD sequences
        for name, row in (*per_family.items(), *accuracy.items()):
            for metric in ("mota", "idf1"):
                best = best_boxmot(row, metric)
                assert best is not None
                checks[f"{name}: {metric.upper()} >= best boxmot ({best[0]})"] = (
                    row["ours"][metric] >= best[1]
                )
        for key, limit in (
            ("gen_3_10", TARGETS["small_ratio_max"]),
            ("gen_200", TARGETS["large_ratio_max"]),
        ):
            if key not in speed:
                continue
            row = speed[key]
            ratio = row["ours"]["median_ms"] / row["ByteTrack"]["median_ms"]
            row["ratio_vs_ByteTrack"] = ratio
            for name in ("OcSort", "BotSort"):
                row[f"ratio_vs_{name}"] = row["ours"]["median_ms"] / row[name]["median_ms"]
            checks[f"{key}: median <= {limit:.3f} x ByteTrack"] = ratio <= limit

    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "commit": git_commit(),
        "perception": meta,
        "boxmot": None
        if theirs is None
        else {
            "version": theirs["boxmot_version"],
            "torch": theirs["torch_version"],
            "trackers": list(BOXMOT_TRACKERS),
            "time_steps": "capture stamps (variable_dt)" if args.boxmot_stamps else "frame order",
            "BotSort": "use_embeddings=False; use_cmc (default ecc) on the ego family only",
        },
        "synthetic": {
            "split": split,
            "noise": args.noise or "each family's own",
            "seeds": seeds,
            "families": families,
            "gt_min_visibility": mot.GT_MIN_VISIBILITY,
            "per_family": per_family,
            "overall": overall,
            "per_sequence": per_seq,
            "sequences": {
                k: {
                    "frames": len(jobs[k]["frames"]),
                    "noise": jobs[k]["noise"],
                    "drop_rate": round(jobs[k]["drop_rate"], 3),
                }
                for k in sim_keys
            },
        },
        "accuracy": accuracy,
        "speed": speed,
        "checks": checks,
        "runtime_s": {
            "generate": round(t_generate, 1),
            "ours": round(t_ours, 1),
            "boxmot": round(t_boxmot, 1),
            "score": round(t_score, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))
    print_tables(result)
    print(f"\nwrote {out_path}")
    return 0


def git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    return proc.stdout.strip() or None


def print_tables(result: dict) -> None:
    syn = result["synthetic"]
    print(
        f"\nSynthetic sequences, split {syn['split']} (seeds {syn['seeds']}), mean over seeds "
        f"(motmetrics IoU 0.5, gt visibility >= {syn['gt_min_visibility']})"
    )
    print(
        f"{'family':10s} {'tracker':11s} "
        + " ".join(f"{c:>7s}" for c in ("MOTA", "IDF1", "IDsw", "FP", "FN"))
    )
    rows = dict(syn["per_family"])
    if syn["overall"]:
        rows["(mean)"] = syn["overall"]
    for fam, row in rows.items():
        for name, m in row.items():
            print(
                f"{fam:10s} {name:11s} {m['mota']:7.4f} {m['idf1']:7.4f} {m['idsw']:7.1f} "
                f"{m['fp']:7.1f} {m['fn']:7.1f}"
            )
    if any(n in r for r in rows.values() for n in BOXMOT_TRACKERS):
        print("\nours >= best boxmot?")
        print(
            f"{'family':10s} "
            + f"{'MOTA ours':>9s} {'best boxmot':>18s} {'ok':>4s} "
            + f"{'IDF1 ours':>9s} {'best boxmot':>18s} {'ok':>4s}"
        )
        for fam, row in rows.items():
            cells = []
            for metric in ("mota", "idf1"):
                best = best_boxmot(row, metric)
                assert best is not None
                ok = row["ours"][metric] >= best[1]
                cells.append(
                    f"{row['ours'][metric]:9.4f} {best[1]:8.4f} {best[0]:>9s} "
                    f"{'yes' if ok else 'NO':>4s}"
                )
            print(f"{fam:10s} " + " ".join(cells))
    if result["accuracy"]:
        print("\nTUD (motmetrics IoU 0.5; detections = test.txt boxes, score 1.0)")
        print(
            f"{'sequence':16s} {'tracker':11s} {'MOTA':>7s} {'IDF1':>7s} "
            f"{'IDsw':>5s} {'FP':>5s} {'FN':>5s}"
        )
        for seq, row in result["accuracy"].items():
            for name, m in row.items():
                print(
                    f"{seq:16s} {name:11s} {m['mota']:7.4f} {m['idf1']:7.4f} {m['idsw']:5d} "
                    f"{m['fp']:5d} {m['fn']:5d}"
                )
    speed = result["speed"]
    names = [n for n in ("ours", *BOXMOT_TRACKERS) if any(n in r for r in speed.values())]
    print("\nPer-frame update() time, median ms (p90)")
    print(f"{'scene':22s} " + " ".join(f"{n:>17s}" for n in names) + "   ours/ByteTrack")
    for key, row in speed.items():
        cells = " ".join(f"{row[n]['median_ms']:8.3f} ({row[n]['p90_ms']:6.3f})" for n in names)
        ratio = (
            row["ours"]["median_ms"] / row["ByteTrack"]["median_ms"] if "ByteTrack" in row else None
        )
        print(f"{key:22s} {cells}   {'' if ratio is None else f'{ratio:.3f}'}")
    cm = result["perception"]["camera_motion"]
    print(
        f"\nours on ego: camera motion {cm['source']} ({cm['estimator']}), "
        f"estimate {cm['estimate_ms_median'] or 0:.2f} ms median (not in update())"
    )
    if result["checks"]:
        print("\nTargets")
        for k, ok in result["checks"].items():
            print(f"  {'PASS' if ok else 'FAIL'}  {k}")
    print("\nruntime s: " + ", ".join(f"{k} {v}" for k, v in result["runtime_s"].items()))


if __name__ == "__main__":
    sys.exit(main())
