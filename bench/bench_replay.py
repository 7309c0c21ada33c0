"""Replay throughput: today's per-bag demo loop vs `perception replay` on one
machine vs on a local Ray with 1 and 2 workers.

Inputs: N generated scenario bags (`python -m perception.sim.bag --depth`:
3 cameras with depth, LiDAR and ground truth; default 8 x 10 s at 10 Hz),
made once into a cache folder (rendering costs about 0.5-1 s per frame).
Each mode replays every bag with config/pipeline_carla.yaml (the demo's
pipeline: detection + 2D tracking of 3 cameras, depth fusion + 3D tracking
per camera) and the repository's default model; the rate is camera images
per second of wall time, start-up included. The demo loop (`./dev demo
--video BAG`: images extracted from one camera and pushed through live ROS
processes) is measured on `--demo-bags` bags and its rate per image
extrapolated to the whole set (stated in the output). Ray's start-up (ray.init,
then the workers' engines loaded) is reported on its own.

Writes bench/results/replay.json and prints a table.

    ./dev exec python bench/bench_replay.py                       # 8 x 10 s bags
    ./dev exec python bench/bench_replay.py --bags 4 --duration 5  # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CACHE = REPO / ".cache" / "replay-bench"
PIPELINE = REPO / "config" / "pipeline_carla.yaml"
CAMERAS = 3


def make_bags(n: int, duration: float, cache: Path) -> list[Path]:
    """`n` scenario bags (seeds 1..n) of `duration` s, generated once into `cache`."""
    bags = []
    for seed in range(1, n + 1):
        bag = cache / f"drive_s{seed}_d{duration:g}"
        if not (bag / "metadata.yaml").is_file():
            shutil.rmtree(bag, ignore_errors=True)
            bag.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            cmd = [sys.executable, "-m", "perception.sim.bag", str(bag), "--seed", str(seed),
                   "--duration", str(duration), "--depth"]  # fmt: skip
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"generated {bag.name} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        bags.append(bag)
    return bags


# --------------------------------------------------------------------- modes
def _images(results: list[Any]) -> int:
    return sum(r.images for r in results)


def run_demo(bags: list[Path], work: Path) -> dict[str, Any]:
    """`./dev demo --video BAG` per bag (one camera played through live ROS
    processes at the demo's default 10 Hz); images / wall time, process start
    included, as a user sees it."""
    rows = []
    for bag in bags:
        out = work / f"demo-{bag.name}"
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "perception.demo", "--video", str(bag), "--out", str(out),
               "--quiet", "--max-frames", "100000"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"demo failed on {bag}:\n{proc.stderr[-2000:]}")
        report = json.loads((out / "report.json").read_text())
        published, processed = _demo_frames(report)
        rows.append({"bag": bag.name, "images": published, "processed": processed,
                     "wall_s": round(wall, 2)})  # fmt: skip
    images = sum(r["images"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {"bags": rows, "images": images, "wall_s": round(wall, 2),
            "fps": round(images / wall, 2)}  # fmt: skip


def _demo_frames(report: dict[str, Any]) -> tuple[int, int]:
    """Images the demo published and those it got results for (its report's
    `frames` per camera; the demo plays one camera)."""
    frames = report.get("frames", {})
    published = sum(int(v.get("published") or 0) for v in frames.values())
    processed = sum(int(v.get("processed") or 0) for v in frames.values())
    return published, processed


def run_local_mode(bags: list[Path], out: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    from perception.replay.job import ReplayConfig, run_local

    config = ReplayConfig(str(PIPELINE), str(out), overrides)
    t0 = time.monotonic()
    results = run_local([str(b) for b in bags], config, progress=False)
    wall = time.monotonic() - t0
    _check(results)
    images = _images(results)
    return {"images": images, "wall_s": round(wall, 2), "fps": round(images / wall, 2)}


def run_processes_mode(
    bags: list[Path], out: Path, overrides: tuple[str, ...], processes: int
) -> dict[str, Any]:
    """`processes` plain OS processes, each replaying its share of the bags
    (round robin) with one detector thread, started together and timed until
    the last ends: what this machine gives two independent jobs with no
    scheduler at all, the ceiling for Ray with that many workers."""
    shares = [bags[k::processes] for k in range(processes)]
    code = (
        "import json, sys, time\n"
        "from perception.replay.job import ReplayConfig, run_local\n"
        "a = json.loads(sys.argv[1])\n"
        "t0 = time.monotonic()\n"
        "rs = run_local(a['bags'], ReplayConfig(a['pipeline'], a['out'], tuple(a['ov'])),"
        " progress=False)\n"
        "bad = [(r.key, r.reason) for r in rs if r.status != 'ok']\n"
        "print(json.dumps({'images': sum(r.images for r in rs), 'bad': bad,"
        " 'run_s': time.monotonic() - t0}))\n"
    )
    ov = [*overrides, "detector.model.threads=1"]
    t0 = time.monotonic()
    procs = []
    for share in (s for s in shares if s):
        job = {"bags": [str(b) for b in share], "pipeline": str(PIPELINE), "out": str(out)}
        job["ov"] = ov
        cmd = [sys.executable, "-c", code, json.dumps(job)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO))
    reports = [json.loads(p.communicate(timeout=1800)[0].strip().splitlines()[-1]) for p in procs]
    wall = time.monotonic() - t0
    bad = [b for r in reports for b in r["bad"]]
    if bad or any(p.returncode for p in procs):
        raise RuntimeError(f"replay processes failed: {bad}")
    images = sum(r["images"] for r in reports)
    slowest = max(r["run_s"] for r in reports)  # without interpreter start and imports
    return {"images": images, "wall_s": round(wall, 2), "fps": round(images / wall, 2),
            "processes": len(procs), "fps_after_startup": round(images / slowest, 2)}  # fmt: skip


def run_ray_mode(
    bags: list[Path],
    out: Path,
    overrides: tuple[str, ...],
    workers: int,
    cpus_per_worker: float | None = None,
) -> dict[str, Any]:
    from perception.replay.job import ReplayConfig
    from perception.replay.ray_runner import run_ray_detailed

    config = ReplayConfig(str(PIPELINE), str(out), overrides)
    run = run_ray_detailed(
        [str(b) for b in bags], config, None, workers, progress=False,
        cpus_per_worker=cpus_per_worker,
    )  # fmt: skip
    _check(run.results)
    images = _images(run.results)
    steady = run.total_s - run.workers_ready_s - run.shutdown_s
    return {
        "images": images,
        "wall_s": round(run.total_s, 2),
        "fps": round(images / run.total_s, 2),
        "ray_init_s": round(run.init_s, 2),
        "workers_ready_s": round(run.workers_ready_s, 2),
        "shutdown_s": round(run.shutdown_s, 2),
        "engine_load_s": [w["load_s"] for w in run.worker_info],
        "fps_after_startup": round(images / steady, 2),
    }


def _check(results: list[Any]) -> None:
    bad = [(r.key, r.reason) for r in results if r.status != "ok"]
    if bad:
        raise RuntimeError(f"replay failed: {bad}")


def same_outputs(a: Path, b: Path) -> bool:
    """MCAP outputs byte-identical for every input of two runs."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.mcap"))
    return bool(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# --------------------------------------------------------------------- stages
def stage_costs(bag: Path, out: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    """Where one input's time goes, per camera image: the replay loop with
    timers around its parts (reading + deserialising the bag, image decode,
    detector, 2D tracking, fusion + 3D tracking, output writing, scoring)."""
    from perception.pipeline import pipeline as pipeline_mod
    from perception.pipeline.detection import DetectionStage
    from perception.replay import report as report_mod
    from perception.replay import sources, writer
    from perception.replay.job import ReplayConfig, Replayer

    acc: dict[str, float] = {}
    saved: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)
        saved.append((owner, name, fn))

        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)

    def timed_groups(owner: Any) -> None:
        fn = owner.groups
        saved.append((owner, "groups", fn))

        def groups(self: Any, *a: Any, **k: Any) -> Any:
            it = fn(self, *a, **k)
            while True:
                t0 = time.perf_counter()
                try:
                    g = next(it)
                except StopIteration:
                    return
                finally:
                    acc["read"] = acc.get("read", 0.0) + time.perf_counter() - t0
                yield g

        owner.groups = groups

    replayer = Replayer(ReplayConfig(str(PIPELINE), str(out), overrides))
    replayer.run(str(bag))  # warm-up (first inference calls are slower)
    timed_groups(sources.BagSource)
    timed(DetectionStage, "_decode", "decode")
    timed(DetectionStage, "_track", "track2d")
    timed(DetectionStage, "process", "detection_stage")
    timed(pipeline_mod.Pipeline, "_fuse", "fusion3d")
    timed(writer.ResultWriter, "add", "write")
    timed(report_mod.Scores, "add", "score")
    timed(writer.ResultWriter, "close", "finish")
    timed(report_mod, "write_report", "finish")
    try:
        t0 = time.perf_counter()
        result = replayer.run(str(bag))
        total = time.perf_counter() - t0
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)
        replayer.close()
    images = result.images
    frames = [json.loads(x) for x in (out / result.key / "frames.jsonl").read_text().splitlines()]
    engine = {k: sum(r[k] / r["batch_size"] for r in frames) / 1000.0
              for k in ("preprocess_ms", "inference_ms", "postprocess_ms")}  # fmt: skip
    detector_rest = (
        acc.pop("detection_stage") - acc["decode"] - acc["track2d"] - sum(engine.values())
    )
    parts = {"read": acc["read"], "decode": acc["decode"],
             "preprocess": engine["preprocess_ms"], "inference": engine["inference_ms"],
             "postprocess": engine["postprocess_ms"], "detector_other": detector_rest,
             "track2d": acc["track2d"], "fusion3d": acc["fusion3d"], "write": acc["write"],
             "score": acc["score"], "finish": acc["finish"]}  # fmt: skip
    parts["other"] = total - sum(parts.values())
    size = sum(f.stat().st_size for f in bag.rglob("*") if f.is_file())
    return {
        "bag": bag.name,
        "images": images,
        "frame_groups": result.frames,
        "wall_s": round(total, 3),
        "ms_per_image": {k: round(1000 * v / images, 3) for k, v in parts.items()},
        "bag_mb_per_frame_group": round(size / 1e6 / max(result.frames, 1), 2),
        "read_mb_per_s": round(size / 1e6 / parts["read"], 1) if parts["read"] > 0 else None,
    }


def jpeg_decode_ms() -> dict[str, dict[str, float]]:
    """Decoding one JPEG camera image (quality 90, one OpenCV thread): what
    reading a drive recorded with CompressedImage costs per image instead of
    the raw images of the generated bags."""
    import cv2

    from perception.sim.rig import default_rig
    from perception.sim.scenario import Scenario

    out = {}
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for w, h in ((640, 360), (1920, 1080)):
            img = Scenario(1, 0.1, 10.0, default_rig(w, h, 90.0)).frame(0).cameras["rgb_front"]
            _ok, buf = cv2.imencode(".jpg", img.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            for _ in range(5):
                cv2.imdecode(buf, cv2.IMREAD_COLOR)
            n = 100
            t0 = time.perf_counter()
            for _ in range(n):
                cv2.imdecode(buf, cv2.IMREAD_COLOR)
            out[f"{w}x{h}"] = {
                "decode_ms": round((time.perf_counter() - t0) / n * 1000, 3),
                "jpeg_kb": round(len(buf) / 1e3, 1),
                "raw_bgr_mb": round(img.image_bgr.nbytes / 1e6, 2),
            }
    finally:
        cv2.setNumThreads(threads)
    return out


# --------------------------------------------------------------------- main
def _table(res: dict[str, Any]) -> str:
    modes = res["modes"]
    base_demo = modes.get("demo_loop", {}).get("fps")
    base_local = modes["replay_local_1"]["fps"]
    lines = ["| mode | images | wall s | images/s | x demo loop | x local replay |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, m in modes.items():
        xd = f"{m['fps'] / base_demo:.1f}" if base_demo else ""
        lines.append(f"| {name} | {m['images']} | {m['wall_s']} | {m['fps']} | {xd} | "
                     f"{m['fps'] / base_local:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bags", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="sim seconds per bag (10 Hz)")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--demo-bags", type=int, default=1, help="bags the demo loop is timed on")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "replay.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bags = make_bags(args.bags, args.duration, args.cache)
    if args.generate_only:
        return 0
    from perception.demo.topology import resolve_model

    model, _ = resolve_model(None, None)
    overrides = (f"detector.model.path={model}",)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    modes: dict[str, dict[str, Any]] = {}
    try:
        if args.demo_bags > 0:
            print("demo loop ...", file=sys.stderr)
            demo = run_demo(bags[: args.demo_bags], work)
            total_images = args.bags * round(args.duration * 10) * CAMERAS
            demo["extrapolated_wall_s"] = round(total_images / demo["fps"], 1)
            demo["note"] = (f"measured on {args.demo_bags} bag(s), one camera each (the demo "
                            f"plays one image topic); {total_images} images at this rate would "
                            f"take {demo['extrapolated_wall_s']} s")  # fmt: skip
            modes["demo_loop"] = demo
        print("local replay ...", file=sys.stderr)
        modes["replay_local_1"] = run_local_mode(bags, work / "local", overrides)
        print("local replay, 1 detector thread ...", file=sys.stderr)
        one = (*overrides, "detector.model.threads=1")
        modes["replay_local_1_thread1"] = run_local_mode(bags, work / "local_t1", one)
        print("2 plain processes, 1 detector thread each ...", file=sys.stderr)
        modes["local_2_processes"] = run_processes_mode(bags, work / "proc2", overrides, 2)
        print("ray 1 worker ...", file=sys.stderr)
        modes["ray_1"] = run_ray_mode(bags, work / "ray1", overrides, 1)
        print("ray 1 worker of 1 CPU ...", file=sys.stderr)
        modes["ray_1_cpu1"] = run_ray_mode(bags, work / "ray1c1", overrides, 1, 1.0)
        print("ray 2 workers ...", file=sys.stderr)
        modes["ray_2"] = run_ray_mode(bags, work / "ray2", overrides, 2)
        identical = same_outputs(work / "local", work / "ray2") and same_outputs(
            work / "local", work / "proc2"
        )
        print("stage costs ...", file=sys.stderr)
        stages = stage_costs(bags[0], work / "stages", overrides)
        stages["jpeg_decode"] = jpeg_decode_ms()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = modes
    targets = {
        "replay_vs_demo_loop": round(m["replay_local_1"]["fps"] / m["demo_loop"]["fps"], 2)
        if "demo_loop" in m
        else None,
        "ray2_vs_ray1": round(m["ray_2"]["fps"] / m["ray_1"]["fps"], 2),
        # like for like: workers of one CPU each (ray_2's are), one vs two
        "ray2_vs_ray1_cpu1": round(m["ray_2"]["fps"] / m["ray_1_cpu1"]["fps"], 2),
        "ray2_vs_ray1_after_startup": round(
            m["ray_2"]["fps_after_startup"] / m["ray_1"]["fps_after_startup"], 2
        ),
        "ray2_vs_local_1_thread": round(m["ray_2"]["fps"] / m["replay_local_1_thread1"]["fps"], 2),
        # the machine's own ceiling for two workers: two independent processes
        # (no Ray) vs one, each with one detector thread
        "two_processes_vs_one": round(
            m["local_2_processes"]["fps"] / m["replay_local_1_thread1"]["fps"], 2
        ),
        "ray2_vs_two_processes": round(m["ray_2"]["fps"] / m["local_2_processes"]["fps"], 3),
        "ray1_vs_local": round(m["ray_1"]["fps"] / m["replay_local_1"]["fps"], 3),
        "ray1_vs_local_after_startup": round(
            m["ray_1"]["fps_after_startup"] / m["replay_local_1"]["fps"], 3
        ),
    }
    first = args.cache / f"drive_s1_d{args.duration:g}"
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    res = {
        "command": " ".join(["bench/bench_replay.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "bags": {
            "count": args.bags,
            "duration_s": args.duration,
            "rate_hz": 10,
            "cameras": CAMERAS,
            "depth": True,
            "lidar": True,
            "image_size": [640, 360],
            "mb_each": round(size / 1e6),
            "pipeline": str(PIPELINE.relative_to(REPO)),
            "model": str(model),
        },
        "modes": modes,
        "targets": targets,
        "ray_outputs_identical_to_local": identical,
        "stages": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(_table(res))
    print(json.dumps({"targets": targets, "identical": identical}, indent=1))
    print(f"stages (ms per image): {stages['ms_per_image']}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
