#!/usr/bin/env python3
"""The GPU check of issue 19: one script for a GPU machine as it is (PyTorch
with CUDA, onnx, onnxruntime on the CPU, OpenCV; no ROS, no TensorRT, no
network), under 8 minutes. It writes bench/results/gpu.json and gpu.md (and
copies both to $OUT when that is set) and prints the table last.

What runs, in this order (each part is timed against one deadline; what no
longer fits is recorded as skipped):

1. env: torch/CUDA/driver/device, library versions, the device's copy
   bandwidth (device to device, pinned host to device) as ceilings.
2. tests: the CUDA variants of the torch engine, converter and preprocessing
   tests (pytest -k cuda on test/test_gpu_*.py, test/test_engines_torch.py).
3. correctness: the embedded default detector and YOLO11n (random weights,
   tools/export_gpu_models.py) through the torch engine on CUDA, fp32 and
   fp16, fixed-shape CUDA graphs, preprocessing/decoding/NMS on the GPU
   (`TorchDetector`), against the ONNX Runtime CPU path (`Detector`) on the
   same frames: detections within 0.5 px (fp32) / 2 px (fp16).
4. preprocess: `GpuPreprocessor` vs the CPU `Preprocessor` on 1080p frames
   (largest difference in LSB), and its time per 1080p frame: upload
   (pinned / pageable) and the on-device letterbox, target <= 0.3 ms.
5. latency: YOLO11n at batch 1 on a 1080p frame: the model's own CUDA
   forward (graph replay, device events) vs end to end (numpy frame in,
   boxes out), target <= 1.2x; eager (no graph) for comparison.
6. cameras: 6 cameras at 1080p: one engine at batch 6 vs 6 engines at
   batch 1 (one after another): throughput and per-frame latency, target
   batched >= 2x; also decoding/NMS on the GPU vs on the CPU.

`--dry-run` runs the same code on the CPU with a tiny configuration
(2 small frames, the tiny YOLO11 test fixture in place of YOLO11n, few
repetitions, no pytest step): what CI executes (test/test_gpu_check.py). Without
torch the torch parts are recorded as skipped. Nothing in a dry run is a GPU
measurement.

On the GPU machine (see docs/gpu.md), from the repository root:
    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py
Exit status: 0 when every correctness check passed (targets are reported,
not enforced), 1 when one failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = ROOT / "models" / "default_detector.onnx"
YOLO11N = ROOT / "bench" / "results" / "models" / "yolo11n.onnx"
TINY_YOLO = ROOT / "test" / "fixtures" / "reference" / "yolo11t_dynamic.onnx"
RESULTS = ROOT / "bench" / "results"
TARGETS = {
    "fp32_px": 0.5,
    "fp16_px": 2.0,
    "preprocess_ms_per_1080p_frame": 0.3,
    "e2e_over_forward_batch1": 1.2,
    "batched_over_separate_throughput": 2.0,
}
SCENARIO_SEEDS = (900123, 900126)  # held out of the default detector's training
CONF, IOU = 0.25, 0.5


# ---------------------------------------------------------------- plumbing
@dataclass
class Check:
    """Run-wide settings and results."""

    dry: bool
    device: str
    deadline: float
    reps: int
    frame_hw: tuple[int, int]
    cameras: int
    yolo: Path
    yolo_hw: tuple[int, int]  # engine input for frame_hw with letterbox (rect)
    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    torch: Any = None

    def left(self) -> float:
        return self.deadline - time.monotonic()


def section(name: str, need_torch: bool = True, min_s: float = 10.0) -> Callable[..., Any]:
    """Run a part, record its status, time and result; skip it when torch is
    missing or the deadline is near; never let one part stop the others."""

    def wrap(fn: Callable[[Check], dict[str, Any]]) -> Callable[[Check], None]:
        def run(ck: Check) -> None:
            t0 = time.monotonic()
            entry: dict[str, Any]
            if need_torch and ck.torch is None:
                entry = {"status": "skipped", "reason": "torch is not installed"}
            elif ck.left() < min_s:
                entry = {"status": "skipped", "reason": f"time budget ({ck.left():.0f} s left)"}
            else:
                print(f"[gpu_check] {name} ...", flush=True)
                try:
                    entry = {"status": "ok", **fn(ck)}
                except Exception as exc:  # recorded; the other parts still run
                    entry = {
                        "status": "error",
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=6),
                    }
                    ck.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            entry["seconds"] = round(time.monotonic() - t0, 2)
            ck.results[name] = entry
            print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']} s)", flush=True)

        return run

    return wrap


def _sync(ck: Check) -> None:
    if ck.device.startswith("cuda"):
        ck.torch.cuda.synchronize()


def device_ms(ck: Check, fn: Callable[[], Any], reps: int, warmup: int = 3) -> dict[str, float]:
    """Median/p10/p90 milliseconds of `fn` on the device (CUDA events around
    each call; on the CPU a host clock around a synchronous call)."""
    torch = ck.torch
    for _ in range(warmup):
        fn()
    _sync(ck)
    times = []
    for _ in range(reps):
        if ck.device.startswith("cuda"):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return _stats(times)


def host_ms(ck: Check, fn: Callable[[], Any], reps: int, warmup: int = 3) -> dict[str, float]:
    """Median/p10/p90 wall milliseconds of a call that returns host results."""
    for _ in range(warmup):
        fn()
    _sync(ck)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(ck)
        times.append((time.perf_counter() - t0) * 1e3)
    return _stats(times)


def attempt(entry: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    """entry[key] = fn(), or the error as text: an optional measurement
    (the fused graphs) never costs the part its other numbers."""
    try:
        entry[key] = fn()
    except Exception as exc:  # recorded, not raised
        entry[key] = {"error": f"{type(exc).__name__}: {exc}"}


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(a)), 4),
        "p10_ms": round(float(np.percentile(a, 10)), 4),
        "p90_ms": round(float(np.percentile(a, 90)), 4),
        "n": int(a.size),
    }


def _frames(ck: Check) -> list[np.ndarray]:
    """Camera images of held-out scenarios (what the default detector was
    trained on), resized to the check's frame size: 3 cameras per seed."""
    import cv2

    from perception.sim import Scenario, default_rig

    if ck.frames:
        return ck.frames
    h, w = ck.frame_hw
    # rendered at 640x360 (what the default detector saw in training) and
    # scaled to the frame size; the dry run renders its small frames directly
    rig = replace(default_rig(w, h) if ck.dry else default_rig(), lidar=None)
    out: list[np.ndarray] = []
    for seed in SCENARIO_SEEDS:
        frame = Scenario(seed=seed, duration_s=4.0, rate_hz=1.0, rig=rig).frame(2)
        out += [cam.image_bgr for cam in frame.cameras.values()]
        if len(out) >= ck.cameras:
            break
    ck.frames = [
        cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in out[: max(ck.cameras, 2)]
    ]
    return ck.frames


def _letterbox_hw(frame_hw: tuple[int, int], imgsz: int, stride: int = 32) -> tuple[int, int]:
    """The rect letterbox input (H, W) of a frame at `imgsz` (Ultralytics' rule)."""
    from perception.core.preprocess import Preprocessor, PreprocessSpec

    pre = Preprocessor(PreprocessSpec(stride=stride), None, (imgsz, imgsz))
    tf = pre.plan([(frame_hw[1], frame_hw[0])])[0]
    return tf.input_size[1], tf.input_size[0]


# ---------------------------------------------------------------- parts
@section("env", need_torch=False, min_s=0)
def part_env(ck: Check) -> dict[str, Any]:
    import cv2
    import onnx
    import onnxruntime

    env: dict[str, Any] = {
        "dry_run": ck.dry,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "frame_hw": list(ck.frame_hw),
        "cameras": ck.cameras,
        "yolo_model": str(ck.yolo.relative_to(ROOT)),
    }
    commit = ROOT / ".git"
    if commit.exists() and shutil.which("git"):
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        env["commit"] = proc.stdout.strip() or "unknown"
    torch = ck.torch
    if torch is None:
        env["torch"] = None
        return env
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    env["device"] = ck.device
    if ck.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            sm_count=props.multi_processor_count,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit"
            proc = subprocess.run([smi, q, "--format=csv,noheader"], capture_output=True, text=True)
            env["nvidia_smi"] = proc.stdout.strip()
        # ceilings: a large device copy (bytes read + written) and pinned H2D
        n = 1 << 28  # 256 MiB
        a = torch.empty(n, dtype=torch.uint8, device="cuda")
        b = torch.empty_like(a)
        d2d = device_ms(ck, lambda: b.copy_(a), reps=20)
        host = torch.empty(n // 4, dtype=torch.uint8, pin_memory=True)
        dev = torch.empty(n // 4, dtype=torch.uint8, device="cuda")
        h2d = device_ms(ck, lambda: dev.copy_(host, non_blocking=True), reps=20)
        env["d2d_GBps"] = round(2 * n / (d2d["median_ms"] * 1e-3) / 1e9, 1)
        env["h2d_pinned_GBps"] = round(n / 4 / (h2d["median_ms"] * 1e-3) / 1e9, 1)
        del a, b, host, dev
        torch.cuda.empty_cache()
    return env


@section("tests", min_s=60)
def part_tests(ck: Check) -> dict[str, Any]:
    """The CUDA variants of the unit tests (pytest -k cuda)."""
    if ck.dry:
        return {"status_note": "dry run: not run (CI runs the test suite itself)"}
    files = [
        "test/test_gpu_onnx_torch.py",
        "test/test_gpu_preprocess.py",
        "test/test_gpu_torch_engine.py",
        "test/test_engines_torch.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", *files]
    timeout = max(30.0, min(180.0, ck.left() - 240))
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        ck.failures.append(f"tests: pytest did not finish in {timeout:.0f} s")
        return {"passed": False, "summary": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else proc.stderr.strip()[-300:]
    ok = proc.returncode == 0
    if not ok:
        ck.failures.append(f"tests: {summary}")
    failed = [ln for ln in lines if ln.startswith("FAILED")][:20]
    return {"passed": ok, "summary": summary, "failed": failed, "returncode": proc.returncode}


def _ort_detections(model: Path, frames: list[np.ndarray], conf: float, iou: float) -> list[Any]:
    from perception.core.detector import Detector
    from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine

    det = Detector(OnnxRuntimeEngine(model), conf=conf, iou=iou)
    return [det.detect([f])[0] for f in frames]


@section("correctness", min_s=30)
def part_correctness(ck: Check) -> dict[str, Any]:
    """Torch engine on the device vs ONNX Runtime on the CPU, per model and
    precision: fp32 within 0.5 px, fp16 within 2 px (original pixels)."""
    from perception.core.engines.detection_diff import DetectionDiff, diff_detections
    from perception.core.engines.torch_detect import TorchDetector
    from perception.core.engines.torch_engine import TorchEngine

    frames = _frames(ck)
    batch = len(frames)
    out: dict[str, Any] = {}
    models = [("default_detector", DEFAULT_MODEL, None), (ck.yolo.stem, ck.yolo, ck.yolo_hw)]
    for name, path, hw in models:
        ref = _ort_detections(path, frames, CONF, IOU)
        for precision in ("fp32", "fp16"):
            if ck.dry and precision == "fp16":
                continue  # CPU fp16 is slow and says nothing about the GPU
            shape = (batch, 3, *(hw or (-1, -1)))
            eng = TorchEngine(path, ck.device, precision, input_shape=shape)
            td = TorchDetector(eng, conf=CONF, iou=IOU)
            got = td.detect(frames)
            band = 0.01 if precision == "fp16" else 0.0
            diff = DetectionDiff()
            for r, g in zip(ref, got, strict=True):
                diff += diff_detections(
                    r, g, conf=CONF, iou=IOU, score_band=band, iou_band=5 * band
                )
            tol = TARGETS[f"{precision}_px"]
            ok = diff.ok(tol) and diff.ref_count > 0
            key = f"{name}.{precision}"
            out[key] = {
                **diff.as_dict(),
                "tolerance_px": tol,
                "passed": ok,
                "cuda_graphs": eng.cuda_graphs,
                "graphs": eng.graph_count,
                "post": td.last_path,
                "input_shape": list(eng.info.input_shape),
            }
            if not ok:
                ck.failures.append(f"correctness {key}: {diff.as_dict()}")
            eng.close()
    return out


@section("preprocess", min_s=20)
def part_preprocess(ck: Check) -> dict[str, Any]:
    """GPU letterbox vs the CPU one, and its cost per 1080p frame."""
    from perception.core.gpu_preprocess import GpuPreprocessor
    from perception.core.preprocess import Preprocessor, PreprocessSpec

    torch = ck.torch
    frames = _frames(ck)[: ck.cameras]
    spec = PreprocessSpec()
    hw = ck.yolo_hw
    cpu = Preprocessor(spec, hw)
    gpu = GpuPreprocessor(spec, hw, device=ck.device)
    want, _ = cpu(frames)
    got, _ = gpu(frames)
    lsb = float(np.abs(want.astype(np.float64) - got.cpu().numpy()).max() * 255)
    exact = bool(np.array_equal(want, got.cpu().numpy()))
    if lsb > 1.0:
        ck.failures.append(f"preprocess: {lsb:.2f} LSB from the CPU preprocessor")
    n = len(frames)
    res: dict[str, Any] = {"max_lsb": lsb, "exact": exact, "passed": lsb <= 1.0, "frames": n}
    on_device = [torch.from_numpy(f).to(ck.device) for f in frames]
    reps = ck.reps * 4
    # on-device letterbox/scale only (frames already uploaded)
    for b in sorted({1, n}):
        res[f"device_batch{b}"] = device_ms(ck, lambda b=b: gpu(on_device[:b]), reps)
    if ck.device.startswith("cuda"):
        h, w = ck.frame_hw
        pinned = gpu.host_buffer(0, h, w)
        pinned[...] = frames[0]
        dev = torch.empty((h, w, 3), dtype=torch.uint8, device=ck.device)
        src_pinned = torch.from_numpy(pinned)
        src_page = torch.from_numpy(frames[0].copy())
        res["upload_pinned"] = device_ms(ck, lambda: dev.copy_(src_pinned, non_blocking=True), reps)
        res["upload_pageable"] = host_ms(ck, lambda: dev.copy_(src_page), reps)
        # the whole step as the detector runs it: numpy frame in pinned memory -> tensor
        res["frame_in_pinned_to_tensor"] = host_ms(ck, lambda: gpu([pinned]), reps)
        res["numpy_frame_to_tensor"] = host_ms(ck, lambda: gpu(frames[:1]), reps)
    per_frame = res[f"device_batch{n}"]["median_ms"] / n
    res["device_ms_per_frame"] = round(per_frame, 4)
    res["target_ms"] = TARGETS["preprocess_ms_per_1080p_frame"]
    res["target_met"] = per_frame <= res["target_ms"]
    if "upload_pinned" in res:
        with_upload = per_frame + res["upload_pinned"]["median_ms"]
        res["device_plus_pinned_upload_ms_per_frame"] = round(with_upload, 4)
    return res


@section("latency", min_s=30)
def part_latency(ck: Check) -> dict[str, Any]:
    """Batch 1: the model's own forward vs the detector end to end."""
    from perception.core.engines.torch_detect import TorchDetector
    from perception.core.engines.torch_engine import TorchEngine

    torch = ck.torch
    frame = _frames(ck)[0]
    res: dict[str, Any] = {"model": ck.yolo.name, "input_hw": list(ck.yolo_hw)}
    for precision in ("fp32", "fp16"):
        if ck.dry and precision == "fp16":
            continue
        shape = (1, 3, *ck.yolo_hw)
        eng = TorchEngine(ck.yolo, ck.device, precision, input_shape=shape)
        x = torch.rand(shape, device=ck.device).to(eng.dtype)
        buf = eng.input_buffer(shape)
        if buf is not None:
            buf.copy_(x)
            x = buf
        fwd = device_ms(ck, lambda eng=eng, x=x: eng.infer_tensor(x), ck.reps * 4)
        td = TorchDetector(eng, conf=CONF, iou=IOU)
        e2e = host_ms(ck, lambda td=td: td.detect([frame]), ck.reps * 4)
        # the frame already in the page-locked buffer (a decoder writing there)
        staged = td.preprocessor.host_buffer(0, *frame.shape[:2])
        staged[...] = frame
        e2e_staged = host_ms(ck, lambda td=td, st=staged: td.detect([st]), ck.reps * 4)
        ratio = e2e["median_ms"] / fwd["median_ms"]
        entry: dict[str, Any] = {
            "forward": fwd,
            "end_to_end": e2e,
            "end_to_end_frame_in_pinned": e2e_staged,
            "e2e_frame_in_pinned_over_forward": round(
                e2e_staged["median_ms"] / fwd["median_ms"], 3
            ),
            "e2e_over_forward": round(ratio, 3),
            "cuda_graphs": eng.cuda_graphs,
            "target": TARGETS["e2e_over_forward_batch1"],
            "target_met": ratio <= TARGETS["e2e_over_forward_batch1"],
        }
        if ck.device.startswith("cuda"):
            attempt(entry, "fused", lambda eng=eng, fwd=fwd: _fused_latency(ck, eng, frame, fwd))
            eager = TorchEngine(ck.yolo, ck.device, precision, input_shape=shape, cuda_graphs=False)
            xe = torch.rand(shape, device=ck.device).to(eager.dtype)
            entry["forward_eager"] = device_ms(
                ck, lambda eager=eager, xe=xe: eager.infer_tensor(xe), ck.reps * 2
            )
            tde = TorchDetector(eager, conf=CONF, iou=IOU)
            entry["end_to_end_eager"] = host_ms(ck, lambda tde=tde: tde.detect([frame]), ck.reps)
            eager.close()
        res[precision] = entry
        eng.close()
    # the CPU path for context (ONNX Runtime on this machine's cores)
    from perception.core.detector import Detector
    from perception.core.engines.onnxruntime_engine import OnnxRuntimeEngine

    ort = Detector(OnnxRuntimeEngine(ck.yolo), conf=CONF, iou=IOU)
    res["onnxruntime_cpu_end_to_end"] = host_ms(ck, lambda: ort.detect([frame]), max(3, ck.reps))
    return res


def _fused_latency(ck: Check, eng: Any, frame: np.ndarray, fwd: dict[str, Any]) -> dict[str, Any]:
    """Upload + preprocessing + model as one captured graph (TorchDetector fuse)."""
    from perception.core.engines.detection_diff import diff_detections
    from perception.core.engines.torch_detect import TorchDetector

    fused = TorchDetector(eng, conf=CONF, iou=IOU, fuse=True)
    plain = TorchDetector(eng, conf=CONF, iou=IOU)
    same = diff_detections(plain.detect([frame])[0], fused.detect([frame])[0], conf=CONF, iou=IOU)
    e2e = host_ms(ck, lambda: fused.detect([frame]), ck.reps * 4)
    staged = fused.staging([(frame.shape[1], frame.shape[0])])[0]
    staged[...] = frame
    e2e_staged = host_ms(ck, lambda: fused.detect([staged]), ck.reps * 4)
    return {
        "same_as_unfused": same.as_dict(),
        "end_to_end": e2e,
        "end_to_end_frame_in_pinned": e2e_staged,
        "e2e_over_forward": round(e2e["median_ms"] / fwd["median_ms"], 3),
        "e2e_frame_in_pinned_over_forward": round(e2e_staged["median_ms"] / fwd["median_ms"], 3),
    }


@section("cameras", min_s=30)
def part_cameras(ck: Check) -> dict[str, Any]:
    """N cameras: one engine at batch N vs N engines at batch 1."""
    from perception.core.engines.torch_detect import TorchDetector
    from perception.core.engines.torch_engine import TorchEngine

    frames = _frames(ck)[: ck.cameras]
    n = len(frames)
    res: dict[str, Any] = {"cameras": n, "frame_hw": list(ck.frame_hw), "model": ck.yolo.name}
    for precision in ("fp32", "fp16"):
        if ck.dry and precision == "fp16":
            continue
        batched = TorchEngine(ck.yolo, ck.device, precision, input_shape=(n, 3, *ck.yolo_hw))
        one = TorchDetector(batched, conf=CONF, iou=IOU)
        engines = [
            TorchEngine(ck.yolo, ck.device, precision, input_shape=(1, 3, *ck.yolo_hw))
            for _ in range(n)
        ]
        separate = [TorchDetector(e, conf=CONF, iou=IOU) for e in engines]
        reps = ck.reps * 2
        b = host_ms(ck, lambda one=one: one.detect(frames), reps)

        completion: list[list[float]] = []

        def run_separate(separate: list[Any] = separate, log: list[Any] = completion) -> None:
            t0 = time.perf_counter()
            done = []
            for det, f in zip(separate, frames, strict=True):
                det.detect([f])
                done.append((time.perf_counter() - t0) * 1e3)
            log.append(done)

        s = host_ms(ck, run_separate, reps)
        done = np.asarray(completion[-reps:])
        sep_latency = float(np.median(done.mean(axis=1)))
        entry: dict[str, Any] = {
            "batched": {
                **b,
                "frames_per_s": round(n / (b["median_ms"] * 1e-3), 1),
                "per_frame_latency_ms": b["median_ms"],
            },
            "separate": {
                **s,
                "frames_per_s": round(n / (s["median_ms"] * 1e-3), 1),
                "per_frame_latency_ms": round(sep_latency, 4),
                "last_frame_latency_ms": s["median_ms"],
            },
        }
        ratio = entry["batched"]["frames_per_s"] / entry["separate"]["frames_per_s"]
        entry["batched_over_separate"] = round(ratio, 3)
        entry["target"] = TARGETS["batched_over_separate_throughput"]
        entry["target_met"] = ratio >= entry["target"]
        # decoding + NMS on the device vs downloading the outputs to numpy
        cpu_post = TorchDetector(batched, conf=CONF, iou=IOU, postprocess="cpu")
        entry["batched_cpu_postprocess"] = host_ms(
            ck, lambda cpu_post=cpu_post: cpu_post.detect(frames), reps
        )
        if ck.device.startswith("cuda"):
            fused = TorchDetector(batched, conf=CONF, iou=IOU, fuse=True)
            attempt(entry, "batched_fused", lambda fused=fused, reps=reps: host_ms(
                ck, lambda: fused.detect(frames), reps))  # fmt: skip
        sync = TorchDetector(batched, conf=CONF, iou=IOU, sync_stages=True)
        stages = []
        for _ in range(max(3, ck.reps)):
            sync.detect(frames)
            t = sync.last_timings
            stages.append((t.preprocess_ms, t.inference_ms, t.postprocess_ms))
        med = np.median(np.asarray(stages), axis=0)
        entry["batched_stages_ms"] = {
            "preprocess": round(float(med[0]), 4),
            "inference": round(float(med[1]), 4),
            "postprocess": round(float(med[2]), 4),
        }
        res[precision] = entry
        for e in [batched, *engines]:
            e.close()
    return res


# ---------------------------------------------------------------- report
def table(results: dict[str, Any]) -> str:
    """The markdown summary printed last and written to gpu.md."""
    env = results.get("env", {})
    dry = bool(env.get("dry_run"))
    where = env.get("gpu") or f"no GPU ({env.get('device', 'cpu')})"
    lines = [
        f"GPU check: {where}, torch {env.get('torch')}, CUDA {env.get('torch_cuda')}"
        + (": DRY RUN on the CPU, tiny configuration, not a GPU measurement" if dry else ""),
        "",
        "| part | what | value | target | met |",
        "|---|---|---|---|---|",
    ]

    def row(part: str, what: str, value: Any, target: Any = "", met: Any = "") -> None:
        if dry and target and part in ("preprocess", "latency", "cameras") and "LSB" not in what:
            met = "n/a (dry run)"
        lines.append(f"| {part} | {what} | {value} | {target} | {met} |")

    def ms(entry: dict[str, Any], *keys: str) -> str:
        return " / ".join(str(entry[k]["median_ms"]) for k in keys)

    for name in ("env", "tests", "correctness", "preprocess", "latency", "cameras"):
        r = results.get(name, {})
        if r.get("status") != "ok":
            row(name, r.get("status", "missing"), r.get("reason", r.get("error", "")))
            continue
        if name == "env" and "d2d_GBps" in r:
            row("env", "copy GB/s d2d / h2d pinned", f"{r['d2d_GBps']} / {r['h2d_pinned_GBps']}")
        if name == "tests" and "summary" in r:
            row("tests", "pytest -k cuda", r["summary"], "all pass", r.get("passed"))
        if name == "correctness":
            for key, v in r.items():
                if isinstance(v, dict) and "max_px" in v:
                    what = (
                        f"{key} max px ({v['matched']}/{v['ref_count']} paired, "
                        f"{v['unexplained']} unexplained; {100 * v['max_rel']:.2f} % of the box)"
                    )
                    row("correctness", what, f"{v['max_px']:.4f}", f"<= {v['tolerance_px']}",
                        v["passed"])  # fmt: skip
        if name == "preprocess":
            row("preprocess", "max diff vs CPU (LSB)", r["max_lsb"], "<= 1", r["passed"])
            row("preprocess", "device ms per frame", r["device_ms_per_frame"],
                f"<= {r['target_ms']}", r["target_met"])  # fmt: skip
            if "upload_pinned" in r:
                row("preprocess", "upload ms per frame pinned / pageable",
                    ms(r, "upload_pinned", "upload_pageable"))  # fmt: skip
                row("preprocess", "pinned frame -> input tensor (host ms)",
                    ms(r, "frame_in_pinned_to_tensor"))  # fmt: skip
        if name == "latency":
            for p in ("fp32", "fp16"):
                if p not in r:
                    continue
                v = r[p]
                row("latency", f"{p} batch 1 forward / end to end ms",
                    ms(v, "forward", "end_to_end"))  # fmt: skip
                row("latency", f"{p} end to end / forward", v["e2e_over_forward"],
                    f"<= {v['target']}", v["target_met"])  # fmt: skip
                row("latency", f"{p} same, frame already in pinned memory",
                    v["e2e_frame_in_pinned_over_forward"], f"<= {v['target']}",
                    v["e2e_frame_in_pinned_over_forward"] <= v["target"])  # fmt: skip
                if "forward_eager" in v:
                    row("latency", f"{p} eager forward / end to end ms",
                        ms(v, "forward_eager", "end_to_end_eager"))  # fmt: skip
                f = v.get("fused", {})
                if "error" in f:
                    row("latency", f"{p} fused graph", f["error"])
                elif f:
                    row("latency", f"{p} fused graph: end to end / forward (numpy / pinned frame)",
                        f"{f['e2e_over_forward']} / {f['e2e_frame_in_pinned_over_forward']}",
                        f"<= {v['target']}",
                        min(f["e2e_over_forward"], f["e2e_frame_in_pinned_over_forward"])
                        <= v["target"])  # fmt: skip
            if "onnxruntime_cpu_end_to_end" in r:
                row("latency", "onnxruntime CPU end to end ms",
                    ms(r, "onnxruntime_cpu_end_to_end"))  # fmt: skip
        if name == "cameras":
            for p in ("fp32", "fp16"):
                if p not in r:
                    continue
                v = r[p]
                b, s = v["batched"], v["separate"]
                row("cameras", f"{p} {r['cameras']} cams frames/s batched / separate",
                    f"{b['frames_per_s']} / {s['frames_per_s']}")  # fmt: skip
                row("cameras", f"{p} per-frame latency ms batched / separate",
                    f"{b['per_frame_latency_ms']} / {s['per_frame_latency_ms']}")  # fmt: skip
                row("cameras", f"{p} batched / separate throughput",
                    v["batched_over_separate"], f">= {v['target']}", v["target_met"])  # fmt: skip
                row("cameras", f"{p} batched ms, GPU / CPU decode+NMS",
                    f"{b['median_ms']} / {v['batched_cpu_postprocess']['median_ms']}")  # fmt: skip
                bf = v.get("batched_fused")
                if bf:
                    row("cameras", f"{p} batched ms, fused graph",
                        bf.get("error") or bf["median_ms"])  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny configuration (CI)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json", help="JSON path")
    ap.add_argument("--budget-s", type=float, default=400.0, help="stop starting parts after this")
    ap.add_argument("--reps", type=int, default=None, help="timing repetitions (x2..x4 per part)")
    ap.add_argument("--cameras", type=int, default=None, help="cameras (default 6; dry run 2)")
    ap.add_argument("--yolo", type=Path, default=None, help="the YOLO11n ONNX file")
    args = ap.parse_args(argv)
    t_start = time.monotonic()

    try:
        import torch
    except ImportError:
        torch = None
    dry = args.dry_run
    if not dry and (torch is None or not torch.cuda.is_available()):
        print("gpu_check: no CUDA device here (use --dry-run for the CPU check)", file=sys.stderr)
        return 2
    yolo = args.yolo or (TINY_YOLO if dry else YOLO11N)
    if not yolo.exists():
        print(
            f"gpu_check: {yolo} is missing: run `YOLO_OFFLINE=1 .venv-ref/bin/python "
            "tools/export_gpu_models.py` first (and carry bench/results/models)",
            file=sys.stderr,
        )
        return 2
    frame_hw = (180, 320) if dry else (1080, 1920)
    imgsz = 320 if dry else 640
    ck = Check(
        dry=dry,
        device="cpu" if dry else "cuda",
        deadline=t_start + args.budget_s,
        reps=args.reps or (2 if dry else 25),
        frame_hw=frame_hw,
        cameras=args.cameras or (2 if dry else 6),
        yolo=yolo,
        yolo_hw=_letterbox_hw(frame_hw, imgsz),
        torch=torch,
    )
    if torch is not None:
        torch.manual_seed(0)
        if dry:
            torch.set_num_threads(min(2, os.cpu_count() or 1))
    for part in (part_env, part_tests, part_correctness, part_preprocess, part_latency,
                 part_cameras):  # fmt: skip
        part(ck)
    ck.results["failures"] = ck.failures
    ck.results["total_seconds"] = round(time.monotonic() - t_start, 1)
    ck.results["targets"] = TARGETS
    text = table(ck.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ck.results, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(text)
    out_dir = os.environ.get("OUT")
    if out_dir and Path(out_dir).is_dir() and Path(out_dir).resolve() != args.out.parent.resolve():
        shutil.copy(args.out, Path(out_dir) / args.out.name)
        shutil.copy(args.out.with_suffix(".md"), Path(out_dir) / args.out.with_suffix(".md").name)
    print(text)
    print(f"wrote {args.out} ({ck.results['total_seconds']} s)")
    if ck.failures:
        print("FAILED: " + "; ".join(ck.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
