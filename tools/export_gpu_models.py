"""Export the YOLO11n that bench/gpu_check.py runs: Ultralytics' own yolo11n.yaml
(80 classes, full width), random weights (`make_reference_fixtures.randomise`),
exported to ONNX by Ultralytics with dynamic batch/height/width. Nothing is
downloaded.

Random class scores of a full-width network saturate (every anchor scores 1.0
for some class), which would make the comparison of two runtimes a
comparison of ties. So the last class layer of each level is calibrated on a
synthetic scene: per class, logits over that level's anchors get mean
`CLS_MEAN` and standard deviation `CLS_STD`, which leaves on the order of a
hundred candidates above 0.25 per 640x640 frame, with scores spread up to
about 0.8.

The GPU machine has no Ultralytics: this runs here, in the reference venv, and
the ONNX file (about 10 MB) travels with the check (bench/results/ is
gitignored and named in the run's `carry`):

    YOLO_OFFLINE=1 .venv-ref/bin/python tools/export_gpu_models.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "models" / "yolo11n.onnx"
# box layer weights of std 0.25 keep the DFL softmax soft (see randomise)
TASK_HEAD = {"box_std": 0.25, "cls_std": 1.0, "cls_bias": 0.0}
CLS_MEAN, CLS_STD = -7.0, 1.0
# DFL bins: peak position mean/std over anchors, sharpness (1 / (2 sigma^2), sigma in bins)
BOX_MU, BOX_MU_STD, ALPHA = 5.0, 2.0, 0.35


def calibration_batch(imgsz: int):
    """The two synthetic scenes of the reference fixtures and their mirrors,
    letterbox-free resized to imgsz x imgsz, as a float NCHW RGB /255 batch."""
    import cv2
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tools"))
    from make_reference_fixtures import make_images

    imgs = [cv2.resize(i, (imgsz, imgsz)) for i in make_images().values()]
    imgs += [np.ascontiguousarray(i[:, ::-1]) for i in imgs]
    x = np.stack([i[..., ::-1].transpose(2, 0, 1) for i in imgs]).astype(np.float32) / 255
    return torch.from_numpy(np.ascontiguousarray(x))


def _head_inputs(net, branches, x) -> dict:
    """The outputs of each branch's last layer on batch `x` (eval mode)."""
    import torch

    seen: dict = {}
    hooks = [
        branch[-1].register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, (i[0], o)))
        for k, branch in enumerate(branches)
    ]
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


def calibrate_class_logits(net, x) -> None:
    """Per level and class: logits over the anchors of `x` get mean CLS_MEAN
    and standard deviation CLS_STD."""
    import torch

    head = net.model[-1]
    seen = _head_inputs(net, head.cv3, x)
    with torch.no_grad():
        for k, branch in enumerate(head.cv3):
            last = branch[-1]
            logits = seen[k][1].transpose(0, 1).flatten(1)  # (nc, images * anchors)
            mean, std = logits.mean(1), logits.std(1).clamp(min=1e-6)
            s = CLS_STD / std
            last.weight.mul_(s[:, None, None, None])
            last.bias.copy_(CLS_MEAN - s * (mean - last.bias))


def calibrate_box_logits(net, x, seed: int) -> None:
    """Box distributions shaped like a trained model's: per side a unimodal
    softmax over the DFL bins (logit_i = -ALPHA (i - mu)^2 up to a constant),
    its peak mu a random linear function of the features, mean BOX_MU and
    standard deviation BOX_MU_STD bins over the anchors of `x`. Random box
    layers give multimodal distributions instead, whose expectation jumps
    between distant bins on tiny logit changes: no trained model does that,
    and it would make float16 look far worse than it is."""
    import torch

    head = net.model[-1]
    seen = _head_inputs(net, head.cv2, x)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for k, branch in enumerate(head.cv2):
            last = branch[-1]
            feats = seen[k][0].transpose(0, 1).flatten(1)  # (C, images * anchors)
            bins = last.out_channels // 4
            # bin positions centred on the middle bin: the same softmax as
            # with 0..bins-1 (a constant per side cancels) with logits of
            # a trained model's size (tens, not hundreds)
            mid = (bins - 1) / 2
            i = torch.arange(bins, dtype=torch.float32) - mid
            weight = torch.zeros_like(last.weight)
            bias = torch.zeros_like(last.bias)
            for side in range(4):
                v = torch.randn(feats.shape[0], generator=gen)
                proj = v @ feats
                m, sd = proj.mean(), proj.std().clamp(min=1e-6)
                # peak mu = BOX_MU + BOX_MU_STD * (v.f - m) / sd (in bins)
                gain = BOX_MU_STD / sd
                rows = slice(side * bins, (side + 1) * bins)
                weight[rows, :, 0, 0] = (2 * ALPHA * i)[:, None] * gain * v[None, :]
                bias[rows] = -ALPHA * i**2 + 2 * ALPHA * i * (BOX_MU - mid - gain * m)
            last.weight.copy_(weight)
            last.bias.copy_(bias)


def export_yolo11n(out: Path, imgsz: int = 640, seed: int = 0) -> Path:
    """Build, randomise and export; returns `out`."""
    import torch
    from ultralytics import YOLO

    sys.path.insert(0, str(ROOT / "tools"))
    from make_reference_fixtures import randomise

    torch.manual_seed(seed)
    model = YOLO("yolo11n.yaml")
    randomise(model.model, seed=seed, task_head=TASK_HEAD)
    x = calibration_batch(imgsz)
    calibrate_class_logits(model.model, x)
    calibrate_box_logits(model.model, x, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # Ultralytics writes next to the yaml name
        try:
            path = Path(
                model.export(
                    format="onnx", imgsz=imgsz, dynamic=True, simplify=False, batch=1, device="cpu"
                )
            ).resolve()
        finally:
            os.chdir(cwd)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--imgsz", type=int, default=640)
    args = ap.parse_args(argv)
    path = export_yolo11n(args.out, args.imgsz)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
