#!/usr/bin/env python3
"""Mask postprocess benchmark: one 1920x1080 frame, 20 instances, ours vs
Ultralytics' own postprocess on the same raw outputs (issue 18).

Raw outputs of a YOLO11-seg-shaped model (80 classes, 32 mask coefficients)
are generated once (seeded): 20 anchors above the threshold with boxes of
40-480 x 60-600 px in the frame (street-scene sizes, spread so NMS keeps
all 20), every other anchor below it, and smooth random prototypes (blurred
noise, so masks are blobs, not salt and pepper). Two letterbox geometries:
a fixed 640x640 export (prototypes 160x160) and the 384x640 rectangle a
dynamic export gets (96x160).

Timed, each the median over rounds that alternate ours and Ultralytics (so
both see the same machine load):

* ours.masks: `perception.core.masks.process_masks` (masks at the frame's
  resolution, computed inside each box) on the 20 kept detections;
* ours.post: the Detector's whole postprocess from the raw outputs
  (decode, NMS, mapping to frame pixels, masks);
* ultra.masks: `ultralytics.utils.ops.process_mask_native` on the same
  prototypes, coefficients and frame-pixel boxes (what its predictor runs
  with ``retina_masks=True``: masks at the frame's resolution, like ours);
* ultra.post: `SegmentationPredictor.postprocess` with ``retina_masks=True``
  (NMS, boxes, masks, Results objects) on the same outputs;
* ultra.post_lowres: the same with its default ``retina_masks=False``, for
  reference only: masks at the input tensor's resolution (640x640 incl. the
  letterbox bars), not the frame's, so not the same output.

The Ultralytics side runs in the reference venv (tools/setup_reference_venv.sh)
as a subprocess of this script in ``--worker`` mode, which never imports
`perception`; it also returns its masks once, and the mask IoU of ours vs
its ``process_mask_native`` is reported. ours.masks_cold is the first call
for a new geometry (the per-geometry resize weights are built and cached).

Targets: ours.masks <= 0.5 x ultra.masks and < 3 ms.

    source scripts/env.sh && python bench/bench_masks.py [--rounds 40] [--ref-python PATH]
Writes bench/results/masks.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
FRAME_WH = (1920, 1080)
NC, NM, INSTANCES = 80, 32, 20
CONF, IOU, MAX_DET = 0.25, 0.7, 300  # Ultralytics predict defaults
GEOMETRIES = {"fixed640": (640, 640), "rect384x640": (384, 640)}  # tensor (H, W)
TARGETS = {"ours_over_ultralytics_masks_max": 0.5, "ours_masks_ms_max": 3.0}
SEED = 18


def _stats(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "n": int(arr.size),
    }


def letterbox(in_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized w, h), (left, top)) of the frame in the tensor, Ultralytics'
    LetterBox rounding (the same as perception.core.preprocess)."""
    w, h = FRAME_WH
    r = min(in_hw[0] / h, in_hw[1] / w)
    rw, rh = max(round(w * r), 1), max(round(h * r), 1)
    return (rw, rh), (round((in_hw[1] - rw) / 2 - 0.1), round((in_hw[0] - rh) / 2 - 0.1))


def make_inputs(in_hw: tuple[int, int], seed: int = SEED) -> dict[str, np.ndarray]:
    """Raw outputs [1, 4+NC+NM, N] and prototypes [1, NM, H/4, W/4] (see module doc)."""
    import cv2

    rng = np.random.default_rng(seed)
    ih, iw = in_hw
    n = sum((ih // s) * (iw // s) for s in (8, 16, 32))
    (rw, _), (left, top) = letterbox(in_hw)
    gain = rw / FRAME_WH[0]
    out = np.zeros((1, 4 + NC + NM, n), np.float32)
    out[0, :4] = [[iw / 2], [ih / 2], [32.0], [32.0]]
    out[0, 4 : 4 + NC] = rng.uniform(0, 0.2, (NC, n))  # below the threshold
    out[0, 4 + NC :] = rng.normal(0, 1, (NM, n))
    # 20 boxes in frame pixels on a jittered 5 x 4 layout (NMS keeps them all)
    cols, rows = 5, 4
    boxes = []
    for k in range(INSTANCES):
        cx = (k % cols + 0.5) / cols * FRAME_WH[0] + rng.uniform(-60, 60)
        cy = (k // cols + 0.5) / rows * FRAME_WH[1] + rng.uniform(-40, 40)
        bw, bh = rng.uniform(40, 480), rng.uniform(60, 600)
        boxes.append((cx, cy, bw, bh))
    frame_boxes = np.array(boxes)
    idx = rng.choice(n, INSTANCES, replace=False)
    out[0, 0, idx] = frame_boxes[:, 0] * gain + left
    out[0, 1, idx] = frame_boxes[:, 1] * gain + top
    out[0, 2, idx] = frame_boxes[:, 2] * gain
    out[0, 3, idx] = frame_boxes[:, 3] * gain
    out[0, 4 + rng.integers(0, NC, INSTANCES), idx] = rng.uniform(0.4, 0.95, INSTANCES)
    mh, mw = ih // 4, iw // 4
    noise = rng.normal(size=(NM, mh, mw)).astype(np.float32)
    protos = np.stack([cv2.GaussianBlur(p, (0, 0), 3) for p in noise])
    protos /= protos.std()
    return {"output0": out, "protos": protos[None].astype(np.float32)}


# ---------------------------------------------------------------- worker (reference venv)
def worker_serve(inputs: dict[str, Path]) -> None:
    """One JSON line per stdin command: "time NAME" -> ms of each Ultralytics
    variant once on that geometry's outputs; "masks NAME PATH" -> write its
    process_mask_native masks (packed bits) to PATH; "quit"."""
    from types import SimpleNamespace

    import torch
    import ultralytics
    from ultralytics.models.yolo.segment import SegmentationPredictor
    from ultralytics.utils import nms, ops

    frame = np.zeros((FRAME_WH[1], FRAME_WH[0], 3), np.uint8)
    setups = {}
    for name, path in inputs.items():
        data = np.load(path)
        out0, protos = torch.from_numpy(data["output0"]), torch.from_numpy(data["protos"])
        img = torch.zeros((1, 3, protos.shape[2] * 4, protos.shape[3] * 4))
        preds = {}
        for retina in (True, False):
            p = SegmentationPredictor(
                overrides={"conf": CONF, "iou": IOU, "max_det": MAX_DET, "retina_masks": retina,
                           "verbose": False, "save": False}
            )  # fmt: skip
            p.model = SimpleNamespace(names={i: str(i) for i in range(NC)}, end2end=False)
            p.batch = (["frame.png"], [frame], [""])
            preds[retina] = p
        # the kept detections, boxes in frame pixels: the inputs of process_mask_native
        res = preds[True].postprocess([out0, protos], img, [frame])
        det = nms.non_max_suppression(out0, CONF, IOU, max_det=MAX_DET, nc=NC)[0]
        boxes = ops.scale_boxes(img.shape[2:], det[:, :4].clone(), frame.shape)
        setups[name] = (out0, protos, img, preds, det[:, 6:].contiguous(), boxes, len(res[0]))
    print(
        json.dumps({"ready": True, "version": ultralytics.__version__,
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()}),
        flush=True,
    )  # fmt: skip
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "quit":
            break
        out0, protos, img, preds, coef, boxes, kept = setups[args[0]]
        if cmd == "time":
            reply: dict = {"instances": kept}
            t0 = time.perf_counter()
            ops.process_mask_native(protos[0], coef, boxes, frame.shape[:2])
            t1 = time.perf_counter()
            preds[True].postprocess([out0, protos], img, [frame])
            t2 = time.perf_counter()
            preds[False].postprocess([out0, protos], img, [frame])
            t3 = time.perf_counter()
            reply.update(masks=(t1 - t0) * 1e3, post=(t2 - t1) * 1e3, post_lowres=(t3 - t2) * 1e3)
        elif cmd == "masks":
            masks = ops.process_mask_native(protos[0], coef, boxes, frame.shape[:2]).numpy()
            np.savez_compressed(
                args[1], masks=np.packbits(masks.astype(bool), axis=-1), boxes=boxes.numpy()
            )
            reply = {"written": args[1], "n": int(masks.shape[0])}
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(reply), flush=True)


class UltraWorker:
    """The Ultralytics side, running in the reference venv."""

    def __init__(self, ref_python: str, inputs: dict[str, Path], log_path: Path) -> None:
        cmd = [ref_python, str(Path(__file__).resolve()), "--worker", "--inputs"]
        cmd += [f"{k}={v}" for k, v in inputs.items()]
        self._log = open(log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=dict(os.environ, YOLO_OFFLINE="1"), bufsize=1,
        )  # fmt: skip
        self.hello = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"ultralytics worker exited; see {self._log.name}")
            if line.startswith("{"):
                reply: dict = json.loads(line)
                return reply

    def call(self, cmd: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        self._log.close()


# ---------------------------------------------------------------- our side
class Ours:
    """The Detector's postprocess on canned outputs (no engine call timed)."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        from perception.core.detector import Detector
        from perception.core.engines.base import Engine, EngineInfo
        from perception.core.preprocess import ImageTransform

        out0, protos = data["output0"], data["protos"]
        ih, iw = protos.shape[2] * 4, protos.shape[3] * 4
        names = {i: str(i) for i in range(NC)}
        info = EngineInfo(
            name="canned", runtime="none", device="cpu", precision="fp32", input_name="images",
            input_shape=(1, 3, ih, iw), input_dtype="float32", output_names=("output0", "output1"),
            output_shapes=(out0.shape, protos.shape),
            metadata={"author": "Ultralytics", "task": "segment", "names": str(names),
                      "stride": "32", "head": "Segment"},
        )  # fmt: skip

        class Canned(Engine):
            @property
            def info(self) -> EngineInfo:
                return info

            def infer(self, batch: np.ndarray) -> list[np.ndarray]:
                return [out0, protos]

        self.det = Detector(Canned(), conf=CONF, iou=IOU, max_det=MAX_DET)
        (rw, rh), (left, top) = letterbox((ih, iw))
        self.tf = ImageTransform(FRAME_WH, (rw, rh), (left, top), (iw, ih))
        self.out0, self.protos, self.input_hw = out0, protos, (ih, iw)
        cand = self.det.decoder.decode_image(out0[0], 0, self.input_hw)
        kept = self.det._finish(cand, self.tf, 0, "", protos[0])
        self.instances = len(kept)
        self.masks_result = kept.masks
        # the kept rows' coefficients and frame boxes: the inputs of the mask step alone
        from perception.core.nms import batched_nms

        keep = batched_nms(cand.xyxy, cand.scores, cand.class_ids, IOU, max_det=MAX_DET)
        assert cand.extra is not None
        self.coef = cand.extra[keep]
        self.boxes = self.tf.boxes_to_original(cand.xyxy[keep])

    def time_masks(self) -> float:
        from perception.core.masks import process_masks

        t0 = time.perf_counter()
        process_masks(self.protos[0], self.coef, self.boxes, self.tf)
        return (time.perf_counter() - t0) * 1e3

    def time_cold_masks(self) -> float:
        from perception.core import masks

        masks._CACHE.clear()
        return self.time_masks()

    def time_post(self) -> float:
        t0 = time.perf_counter()
        cand = self.det.decoder.decode_image(self.out0[0], 0, self.input_hw)
        self.det._finish(cand, self.tf, 0, "", self.protos[0])
        return (time.perf_counter() - t0) * 1e3


def mask_ious(ours_masks: object, path: Path) -> list[float]:
    """Per-instance IoU of our masks vs Ultralytics' (same row order: both
    keep NMS order, and no instance here is dropped for an empty mask)."""
    data = np.load(path)
    ref = np.unpackbits(data["masks"], axis=-1, count=FRAME_WH[0]).astype(bool)
    dense = ours_masks.to_dense()  # type: ignore[attr-defined]
    assert dense.shape == ref.shape, (dense.shape, ref.shape)
    inter = (dense & ref).sum(axis=(1, 2))
    union = (dense | ref).sum(axis=(1, 2))
    return [float(i / u) if u else 1.0 for i, u in zip(inter, union, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Mask postprocess benchmark (see module docstring).")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ref-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "masks.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        worker_serve({k: Path(v) for k, v in (s.split("=", 1) for s in args.inputs)})
        return 0
    if not Path(args.ref_python).is_file():
        raise SystemExit(f"{args.ref_python} missing: run tools/setup_reference_venv.sh first")

    CACHE.mkdir(parents=True, exist_ok=True)
    data, paths = {}, {}
    for name, hw in GEOMETRIES.items():
        data[name] = make_inputs(hw)
        paths[name] = CACHE / f"masks_{name}.npz"
        np.savez(paths[name], **data[name])
    ultra = UltraWorker(args.ref_python, paths, CACHE / "masks_worker.log")
    result: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "ultralytics": ultra.hello["version"], "torch": ultra.hello["torch"],
                    "torch_threads": ultra.hello["torch_threads"]},
        "frame": list(FRAME_WH),
        "instances": INSTANCES,
        "settings": {"conf": CONF, "iou": IOU, "max_det": MAX_DET, "classes": NC,
                     "mask_coefficients": NM},
        "method": "median over rounds; each round times ours (masks, post) and then "
                  "Ultralytics (masks, post, post_lowres) once, alternating which side "
                  "goes first; same raw outputs on both sides",
        "targets": TARGETS,
        "runs": {},
    }  # fmt: skip
    try:
        for name in GEOMETRIES:
            ours = Ours(data[name])
            cold = ours.time_cold_masks()
            ref_path = CACHE / f"masks_{name}_ultralytics.npz"
            ultra.call(f"masks {name} {ref_path}")
            ious = mask_ious(ours.masks_result, ref_path)
            times: dict[str, list[float]] = {
                k: [] for k in ("masks", "post", "u_masks", "u_post", "u_post_lowres")
            }
            u_instances = 0
            for r in range(args.warmup + args.rounds):
                first_ours = r % 2 == 0
                if not first_ours:
                    u = ultra.call(f"time {name}")
                m, p = ours.time_masks(), ours.time_post()
                if first_ours:
                    u = ultra.call(f"time {name}")
                if r < args.warmup:
                    continue
                times["masks"].append(m)
                times["post"].append(p)
                times["u_masks"].append(u["masks"])
                times["u_post"].append(u["post"])
                times["u_post_lowres"].append(u["post_lowres"])
                u_instances = u["instances"]
            run = {
                "input_hw": list(GEOMETRIES[name]),
                "instances": {"ours": ours.instances, "ultralytics": u_instances},
                "mask_iou_vs_ultralytics": {"min": min(ious), "mean": float(np.mean(ious))},
                "ours_masks_cold_ms": cold,
                **{k: _stats(v) for k, v in times.items()},
            }
            ratio = run["masks"]["median_ms"] / run["u_masks"]["median_ms"]
            run["ours_over_ultralytics_masks"] = ratio
            run["ours_over_ultralytics_post"] = (
                run["post"]["median_ms"] / run["u_post"]["median_ms"]
            )
            run["targets_met"] = bool(
                ratio <= TARGETS["ours_over_ultralytics_masks_max"]
                and run["masks"]["median_ms"] < TARGETS["ours_masks_ms_max"]
            )
            result["runs"][name] = run
    finally:
        ultra.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {args.out}")
    return 0


def print_table(result: dict) -> None:
    m = result["machine"]
    print(
        f"mask postprocess, {result['frame'][0]}x{result['frame'][1]} frame, "
        f"{result['instances']} instances; median ms ({m['cpus']} CPUs, torch threads "
        f"{m['torch_threads']}, ultralytics {m['ultralytics']})"
    )
    head = (
        f"{'geometry':<13}{'inst':>5}{'ours.masks':>11}{'cold':>7}{'ultra.masks':>12}"
        f"{'ratio':>7}{'ours.post':>10}{'ultra.post':>11}{'ratio':>7}{'u.lowres':>9}"
        f"{'IoU min':>9}{'targets':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, run in result["runs"].items():
        print(
            f"{name:<13}{run['instances']['ours']:>5}{run['masks']['median_ms']:>11.2f}"
            f"{run['ours_masks_cold_ms']:>7.2f}{run['u_masks']['median_ms']:>12.2f}"
            f"{run['ours_over_ultralytics_masks']:>7.3f}{run['post']['median_ms']:>10.2f}"
            f"{run['u_post']['median_ms']:>11.2f}{run['ours_over_ultralytics_post']:>7.3f}"
            f"{run['u_post_lowres']['median_ms']:>9.2f}"
            f"{run['mask_iou_vs_ultralytics']['min']:>9.4f}"
            f"{'met' if run['targets_met'] else 'MISSED':>9}"
        )
    t = result["targets"]
    print(
        f"targets: ours.masks <= {t['ours_over_ultralytics_masks_max']} x ultra.masks "
        f"(process_mask_native, masks at the frame's resolution) and < {t['ours_masks_ms_max']} ms"
    )
    print("cold: first call for a new geometry (resize weights built, then cached)")
    print("ultra.post: SegmentationPredictor.postprocess, retina_masks=True (the same output);")
    print("u.lowres: retina_masks=False, masks at the input tensor's resolution (not comparable)")


if __name__ == "__main__":
    sys.exit(main())
