"""`./dev demo`: the whole pipeline as real ROS 2 processes on a fixed synthetic
scenario (or a real video), with a progress bar, scored into a report.

Processes: the source (sources.py: the scenario publisher in the CARLA bridge
layout with /clock, depth and ground truth, or image_publisher for a video)
-> one run_config process running config/pipeline_carla.yaml (detector with
3 cameras and tracking, one depth fusion node per camera, overlay of the front
camera), the file a vehicle launches, with only the overrides of
topology.demo_overrides -> a recorder node in this process (recorder.py).
After the source ends everything is stopped with SIGINT and the output folder
gets overlay.mp4, report.json, report.md and PNG plots (report.py).

    ./dev demo [--out DIR] [--duration 12] [--model M.onnx [--labels L]]
    ./dev demo --model M.onnx --video clip.mp4      # real data: latency and counts
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from perception.demo.topology import (
    DEFAULT_MODEL,
    REPO,
    SCENARIO_CONFIG,
    VIDEO_CONFIG,
    DemoError,
    class_names_of,
    demo_overrides,
    load_topology,
    pipeline_env,
    resolve_model,
    start_pipeline,
)

__all__ = ["DemoError", "main", "resolve_model"]

log = logging.getLogger("perception.demo")


# --------------------------------------------------------------------- progress
class Progress:
    """One-line progress bar on stderr (no tqdm)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last = 0.0

    def show(self, phase: str, done: int = 0, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        line = f"\r[{bar:<30}] {done:4d}/{self.total} {phase:<10} {now - self.t0:6.1f}s {extra}"
        sys.stderr.write(line[:120].ljust(120))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> Path:
    """Run the demo; return the output folder."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from perception.demo import sources
    from perception.demo.recorder import Recorder
    from perception.demo.report import build_report, write_outputs
    from perception.ros.testing import NodeProcess, spin_until

    t_start = time.monotonic()
    out = Path(args.out or REPO / "out" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    model, labels = resolve_model(args.model, args.labels)
    names = class_names_of(model, labels)
    env = pipeline_env()
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    scenario = args.video is None
    if scenario:
        config, total = SCENARIO_CONFIG, round(args.duration * args.rate)
    else:
        if not args.video.exists():
            raise DemoError(f"--video: expected a video file, got missing {args.video}")
        if sources.is_bag(args.video):
            args.video = sources.extract_bag_images(
                args.video, out / "bag_frames", args.image_topic, args.max_frames
            )
        config, total = VIDEO_CONFIG, sources.count_frames(args.video, args.max_frames)
    topo = load_topology(config, [])
    overrides = demo_overrides(topo, model, labels, names) + list(args.set)
    topo = load_topology(config, overrides)  # the parameters the pipeline will run with
    (out / "pipeline.yaml").write_text(
        yaml.safe_dump({n: {"ros__parameters": p} for n, p in topo.params.items()}, sort_keys=False)
    )
    cameras, fusion = list(topo.cameras), list(topo.fusion)
    progress = Progress(total, enabled=not args.quiet)
    rclpy.init()
    recorder = Recorder(topo, out / "overlay.mp4", scenario, args.rate)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder.node)
    procs: list[tuple[str, NodeProcess]] = []
    timings: dict[str, float] = {}

    def wait(pred: Any, timeout_s: float, phase: str, done: Any = lambda: 0) -> bool:
        """Spin the recorder until pred() (progress shown; the pipeline's death ends it)."""

        def step() -> None:
            for name, p in procs:
                if name == "pipeline" and not p.alive():
                    raise DemoError(f"{name} process ended early:\n{p.output()[-3000:]}")
            progress.show(phase, done())

        return spin_until(executor, pred, timeout_s, step_s=0.05, on_step=step)

    try:
        pipe = start_pipeline(topo, overrides, env)
        procs.append(("pipeline", pipe))
        if not wait(recorder.discovered, 180.0, "starting"):
            raise DemoError(f"pipeline outputs not discovered in 180 s:\n{pipe.output()[-3000:]}")
        timings["pipeline_start_s"] = time.monotonic() - t_start
        argv = (
            sources.scenario_argv(args)
            if scenario
            else sources.video_argv(args.video, topo, args.rate, total)
        )
        source = NodeProcess(argv, env=env)
        procs.append(("source", source))

        def done() -> int:
            return len(recorder.rec.tracks[cameras[0]])

        # the source publishes, then exits by itself
        wait(lambda: not source.alive(), args.timeout, "rendering" if scenario else "playing", done)
        if source.alive():
            raise DemoError(f"source still running after {args.timeout} s")
        if source.proc.returncode != 0:
            raise DemoError(f"source failed ({source.proc.returncode}):\n{source.output()[-3000:]}")
        timings["source_done_s"] = time.monotonic() - t_start
        # drain: the pipeline's last outputs, until 2 s pass without a message
        wait(lambda: time.monotonic() - recorder.rec.last_message > 2.0, 60.0, "draining", done)
        # one more diagnostics period for the final counters
        t_diag = time.monotonic() + 1.2
        wait(lambda: time.monotonic() > t_diag, 5.0, "draining", done)
        progress.show("stopping", done(), force=True)
    finally:
        codes = {}
        for name, p in reversed(procs):
            codes[name] = p.stop(timeout_s=15.0)
            with contextlib.suppress(OSError):
                shutil.copy(p._log.name, out / "logs" / f"{name}.log")
        recorder.close()
        executor.shutdown()
        rclpy.shutdown()
        progress.close()
    timings["total_s"] = time.monotonic() - t_start
    report = build_report(recorder.rec, cameras, fusion, scenario, total, names, model)
    report["run"] = {
        "model": str(model),
        "labels": str(labels or ""),
        "source": str(args.video or "scenario"),
        "seed": args.seed,
        "duration_s": args.duration,
        "rate_hz": args.rate,
        "speed": args.speed,
        "image_size": [args.width, args.height],
        "pipeline": {"config": _shown(config), "overrides": overrides},
        "exit_codes": codes,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "overlay_video": recorder.video_path.name,
    }
    write_outputs(out, report, recorder.rec, cameras)
    return out


def _shown(path: Path) -> str:
    """`path` relative to the checkout when inside it (what a user types)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)


# --------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="output folder (default out/demo-<time>)")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"ONNX detector (default {DEFAULT_MODEL.relative_to(REPO)} if present, "
        "else ../shared/data/yolox_nano.onnx)",
    )
    p.add_argument("--labels", type=Path, default=None, help="class names file, one per line")
    p.add_argument(
        "--video",
        type=Path,
        default=None,
        help="real-data mode: a video file or a rosbag2 (folder, .mcap, .db3) instead of "
        "the scenario (no ground truth)",
    )
    p.add_argument(
        "--image-topic", default=None, help="rosbag2 input: image topic (default: the first)"
    )
    p.add_argument("--max-frames", type=int, default=150, help="real-data mode: frames to play")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override a parameter of the pipeline file (run_config --set: NODE may be a "
        "pattern; pipeline.yaml in the output shows the result), e.g. "
        "detector.score_threshold=0.2",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--duration", type=float, default=12.0, help="scenario length (sim s)")
    p.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    p.add_argument(
        "--speed",
        type=float,
        default=0.5,
        help="sim s per wall s (0.5 leaves room for 3 cameras on 2 CPU cores)",
    )
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this (s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # the report; libraries stay quiet (motmetrics logs timings)
    args = _parser().parse_args(argv)
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    try:
        out = run(args)
    except DemoError as exc:
        log.error(f"demo failed: {exc}")
        return 1
    report = json.loads((out / "report.json").read_text())
    log.info(f"\n{(out / 'report.md').read_text()}")
    log.info(f"outputs in {out} (wall {report['run']['timings_s'].get('total_s')} s)")
    return 0
