#!/usr/bin/env python3
"""Train the project's embedded default detector on generated scenes.

Why: there is no model hub on the target machines, yet the demo and the
end-to-end tests need a detector that works on the synthetic scenario out of
the box. This script renders training frames with `perception.sim`, trains a
small anchor-free detector (three conv stages, strides 8/16/32, FCOS-style
centre sampling, per-class sigmoid scores) on the CPU, exports it to ONNX in
the Ultralytics YOLOv8 detect layout `[B, 4+nc, N]` (cx, cy, w, h in input
pixels, sigmoid scores; metadata `names`, `stride`, `imgsz`) so that the
normal engine path (`create_engine` + `Detector`, family auto) runs it, and
measures held-out AP@0.5 through that same path.

Training data are whole 640x360 frames at scale 1 (640x384 letterboxed), so
distant pedestrians a few pixels wide keep their pixels; training runs on
random crops of them (scale jitter 1-2x, half of them centred on an object
drawn class-balanced), a third of the compute per step of a whole frame. The
exported model takes 576x960: 640x360 frames upscaled 1.5x, where objects
under 16 px tall (more than half of the scenario's pedestrians) get the
pixels the stride-8 head needs (`--export-imgsz 384 640` gives the cheaper
scale-1 model).

Setup (a gitignored venv beside the project venv):

    python3 -m venv /work/main/.venv-train
    /work/main/.venv-train/bin/pip install -r requirements/train.txt -r requirements/base.txt

Run (from the repository root):

    PYTHONPATH=$PWD .venv-train/bin/python tools/train_default_detector.py

Stages can be run separately (`--stage data|train|export|eval|all`); rendered
data is cached as npz under `.cache/default_detector/` (gitignored), keyed by
the data settings, so a re-run only trains.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

log = logging.getLogger("train_default_detector")

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "default_detector"
MODELS = ROOT / "models"
CLASS_NAMES = ("car", "pedestrian", "cyclist")
NC = len(CLASS_NAMES)
STRIDES = (8, 16, 32)
SRC_W, SRC_H = 640, 360


@dataclass(frozen=True)
class Config:
    """Everything that determines the data and the model (written to the JSON)."""

    imgsz: tuple[int, int] = (384, 640)  # (H, W), multiple of 32: 640x360 sources at scale 1
    data_seed: int = 20261125
    train_scenarios: int = 220
    frames_per_scenario: int = 3
    heldout_seeds: tuple[int, ...] = tuple(range(900001, 900011))
    heldout_frames_per_scenario: int = 2
    min_visibility: float = 0.3
    min_side_px: float = 2.0  # in source pixels; smaller boxes are ignored, not negatives
    min_area_px: float = 8.0
    width: int = 32  # base channel width
    crop: tuple[int, int] = (256, 384)  # (H, W) of the training crops, multiple of 32
    scale_range: tuple[float, float] = (1.0, 2.0)  # the exported model sees 1.5x
    centred_crop_p: float = 0.5
    epochs: int = 400
    batch: int = 16
    lr: float = 4e-3
    weight_decay: float = 5e-4
    time_budget_s: float = 2700.0
    train_seed: int = 0
    # one thread: on a shared (oversubscribed) CPU a second OpenMP thread
    # mostly spin-waits; measured 3x more CPU per step with two
    threads: int = 1
    # bfloat16 autocast of the convolutions (fp32 weights, loss and decoding):
    # half the CPU time per step on CPUs with AVX512-BF16/AMX
    bf16: bool = True
    # warm start: a state dict of this architecture (a fine-tune), "" = from scratch
    init_from: str = ""
    # input (H, W) of the exported model; None: imgsz. Larger than imgsz runs
    # 640x360 frames upscaled (small objects bigger), with scale_range shifted
    # to match in training; not part of the data cache key
    export_imgsz: tuple[int, int] | None = (576, 960)


# ------------------------------------------------------------------- data
def _letterbox_params(imgsz: tuple[int, int]) -> tuple[float, int, int, int, int]:
    """Scale, resized (w, h) and (left, top) pad of the project's centred
    letterbox for a 640x360 source (same rounding as perception.core.preprocess)."""
    h, w = imgsz
    r = min(h / SRC_H, w / SRC_W)
    rw, rh = max(round(SRC_W * r), 1), max(round(SRC_H * r), 1)
    left = round((w - rw) / 2 - 0.1)
    top = round((h - rh) / 2 - 0.1)
    return r, rw, rh, left, top


def _letterbox(image_bgr: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = imgsz
    _r, rw, rh, left, top = _letterbox_params(imgsz)
    out = np.full((h, w, 3), 114, np.uint8)
    resized = cv2.resize(image_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
    out[top : top + rh, left : left + rw] = resized[:, :, ::-1]  # BGR -> RGB
    return out


# Box convention of the labels: the simulator's (and the demo's) 2D ground
# truth as is, OpenCV pixel centres at integers, a box spanning its pixels'
# squares (cam.xyxy = (umin - 0.5, vmin - 0.5, umax + 0.5, vmax + 0.5)); this is
# the convention of the camera matrix the renderer casts its rays with, so
# the detector's boxes, the ground truth and the 3D geometry agree.
# Cache format 1 (files without a "format" entry) stored cam.xyxy + (0, 0, 1, 1)
# (a wrong "+1 for inclusive indices"): _unpack subtracts it and re-applies
# the size filter.
CACHE_FORMAT = 2
LEGACY_LABEL_OFFSET = np.array([0, 0, 1, 1], np.float32)


def _big(xyxy: np.ndarray, cfg: Config) -> np.ndarray:
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return (wh.min(axis=1) >= cfg.min_side_px) & (wh.prod(axis=1) >= cfg.min_area_px)


def _split_gt(cam, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept boxes xyxy source px, their classes, ignored boxes): kept are
    visible enough and not tiny; ignored are the other visible objects."""
    vis = cam.visibility
    seen = cam.visible_pixels > 0
    xyxy = np.nan_to_num(cam.xyxy.astype(np.float32))
    keep = seen & (vis >= cfg.min_visibility) & _big(xyxy, cfg)
    ign = seen & ~keep
    return xyxy[keep], cam.class_ids[keep].astype(np.int64), xyxy[ign]


def _frame_jobs(cfg: Config) -> list[tuple[int, float, int]]:
    """(scenario seed, density, frame index) of the training frames, drawn from
    the data seed: varied seeds give varied traffic, colours and lighting."""
    rng = np.random.default_rng(cfg.data_seed)
    jobs = []
    for k in range(cfg.train_scenarios):
        seed = int(cfg.data_seed % 100000 * 100 + k)
        density = float(rng.uniform(0.6, 1.8))
        idx = rng.choice(40, size=cfg.frames_per_scenario, replace=False)
        jobs.extend((seed, density, int(i)) for i in sorted(idx))
    return jobs


def _scenario(seed: int, density: float):
    from perception.sim import Scenario, default_rig

    rig = replace(default_rig(), lidar=None)
    return Scenario(seed=seed, duration_s=20.0, rate_hz=2.0, rig=rig, density=density)


def _render_train(args: tuple[Config, list[tuple[int, float, int]]]) -> list[dict]:
    cfg, jobs = args
    out = []
    cache: dict[int, object] = {}
    for seed, density, idx in jobs:
        sc = cache.get(seed)
        if sc is None:
            cache.clear()
            sc = cache[seed] = _scenario(seed, density)
        frame = sc.frame(idx)
        for cam in frame.cameras.values():
            boxes, cls, ign = _split_gt(cam, cfg)
            out.append(
                {
                    "image": _letterbox(cam.image_bgr, cfg.imgsz),
                    "boxes": boxes,
                    "cls": cls,
                    "ignore": ign,
                }
            )
    return out


def _render_heldout(args: tuple[Config, list[tuple[int, int]]]) -> list[dict]:
    cfg, jobs = args
    out = []
    for seed, idx in jobs:
        frame = _scenario(seed, 1.0).frame(idx)
        for cam in frame.cameras.values():
            boxes, cls, ign = _split_gt(cam, cfg)
            out.append({"image": cam.image_bgr, "boxes": boxes, "cls": cls, "ignore": ign})
    return out


def _chunks(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def _pack(samples: list[dict], path: Path) -> None:
    counts = np.array([len(s["boxes"]) for s in samples], np.int64)
    icounts = np.array([len(s["ignore"]) for s in samples], np.int64)
    np.savez(
        path,
        images=np.stack([s["image"] for s in samples]),
        boxes=np.concatenate([s["boxes"] for s in samples]).reshape(-1, 4),
        cls=np.concatenate([s["cls"] for s in samples]).astype(np.int64),
        counts=counts,
        ignore=np.concatenate([s["ignore"] for s in samples]).reshape(-1, 4),
        icounts=icounts,
        format=np.array(CACHE_FORMAT),
    )


def _unpack(path: Path, cfg: Config) -> list[dict]:
    """Samples of a cache file, labels in the current convention (see
    CACHE_FORMAT: format-1 labels are shifted back and size-filtered again,
    boxes now under the minimum size becoming ignore regions)."""
    with np.load(path) as npz:
        z = {k: npz[k] for k in npz.files}  # each npz[k] access re-reads the array
    b0 = np.concatenate([[0], np.cumsum(z["counts"])])
    i0 = np.concatenate([[0], np.cumsum(z["icounts"])])
    legacy = int(z.get("format", 1)) == 1
    out = []
    for k in range(len(z["counts"])):
        boxes = z["boxes"][b0[k] : b0[k + 1]]
        cls = z["cls"][b0[k] : b0[k + 1]]
        ign = z["ignore"][i0[k] : i0[k + 1]]
        if legacy:
            boxes, ign = boxes - LEGACY_LABEL_OFFSET, ign - LEGACY_LABEL_OFFSET
            big = _big(boxes, cfg)
            boxes, cls, ign = boxes[big], cls[big], np.concatenate([ign, boxes[~big]])
        out.append({"image": z["images"][k], "boxes": boxes, "cls": cls, "ignore": ign})
    return out


def _cache_format(path: Path) -> int:
    with np.load(path) as npz:
        return int(npz["format"]) if "format" in npz.files else 1


def _data_key(cfg: Config) -> str:
    keys = (
        "imgsz", "data_seed", "train_scenarios", "frames_per_scenario", "min_visibility",
        "min_side_px", "min_area_px",
    )  # fmt: skip
    return "_".join(str(getattr(cfg, k)).replace(" ", "") for k in keys)


def _write_render_info(path: Path, images: int, wall_s: float, workers: int) -> None:
    info = {"images": images, "render_wall_s": round(wall_s, 1), "workers": workers}
    path.with_suffix(".json").write_text(json.dumps(info))


def _render_info(path: Path) -> dict:
    side = path.with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}


def make_data(cfg: Config, workers: int) -> tuple[Path, Path]:
    """Render (once) and cache training and held-out samples."""
    from multiprocessing import get_context

    CACHE.mkdir(parents=True, exist_ok=True)
    import hashlib

    key = hashlib.sha1(_data_key(cfg).encode()).hexdigest()[:12]
    train_path = CACHE / f"train_{key}.npz"
    hkey = hashlib.sha1(
        f"{cfg.heldout_seeds}_{cfg.heldout_frames_per_scenario}_{cfg.min_visibility}_"
        f"{cfg.min_side_px}_{cfg.min_area_px}".encode()
    ).hexdigest()[:12]
    held_path = CACHE / f"heldout_{hkey}.npz"
    ctx = get_context("fork")
    if not train_path.exists():
        t0 = time.time()
        jobs = _frame_jobs(cfg)
        # keep a scenario's frames in one worker (its setup is reused)
        per_seed: dict[int, list] = {}
        for j in jobs:
            per_seed.setdefault(j[0], []).append(j)
        groups = list(per_seed.values())
        parts = [[j for g in groups[i::workers] for j in g] for i in range(workers)]
        with ctx.Pool(workers) as pool:
            done = pool.map(_render_train, [(cfg, p) for p in parts])
        samples = [s for part in done for s in part]
        _pack(samples, train_path)
        _write_render_info(train_path, len(samples), time.time() - t0, workers)
        log.info("rendered %d training images in %.0f s", len(samples), time.time() - t0)
    if not held_path.exists():
        t0 = time.time()
        jobs = [
            (s, int(i))
            for s in cfg.heldout_seeds
            for i in np.linspace(5, 35, cfg.heldout_frames_per_scenario).round().astype(int)
        ]
        with ctx.Pool(workers) as pool:
            samples = [
                s for part in pool.map(_render_heldout, [(cfg, p) for p in _chunks(jobs, workers)])
                for s in part
            ]  # fmt: skip
        _pack(samples, held_path)
        _write_render_info(held_path, len(samples), time.time() - t0, workers)
        log.info("rendered %d held-out images in %.0f s", len(samples), time.time() - t0)
    return train_path, held_path


# ------------------------------------------------------------------ model
def build_model(cfg: Config):
    """Small CSP-free backbone + top-down FPN + one shared head on P3/P4/P5."""
    import torch
    from torch import nn

    def cbs(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
        )

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a = cbs(c, c)
            self.b = cbs(c, c)

        def forward(self, x):
            return x + self.b(self.a(x))

    class Net(nn.Module):
        def __init__(self, w: int, nc: int) -> None:
            super().__init__()
            self.nc = nc
            c1, c2, c3, c4, c5 = w // 2, w, 2 * w, 5 * w // 2, 3 * w
            self.stem = nn.Sequential(cbs(3, c1, 3, 2), cbs(c1, c2, 3, 2))  # /4
            self.s3 = nn.Sequential(cbs(c2, c3, 3, 2), Block(c3))  # /8
            self.s4 = nn.Sequential(cbs(c3, c4, 3, 2), Block(c4))  # /16
            self.s5 = nn.Sequential(cbs(c4, c5, 3, 2), Block(c5))  # /32
            f = c3
            self.l3, self.l4, self.l5 = cbs(c3, f, 1), cbs(c4, f, 1), cbs(c5, f, 1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.m3, self.m4 = cbs(f, f), cbs(f, f)
            self.head = cbs(f, f)
            self.reg = nn.Conv2d(f, 4, 1)
            self.cls = nn.Conv2d(f, nc, 1)
            prior = 0.01
            nn.init.constant_(self.cls.bias, -math.log((1 - prior) / prior))
            nn.init.constant_(self.reg.bias, 1.0)

        def levels(self, x):
            """Raw (reg (B,4,h,w), cls logits (B,nc,h,w)) per stride."""
            x = self.stem(x)
            p3 = self.s3(x)
            p4 = self.s4(p3)
            p5 = self.s5(p4)
            f5 = self.l5(p5)
            f4 = self.m4(self.l4(p4) + self.up(f5))
            f3 = self.m3(self.l3(p3) + self.up(f4))
            out = []
            for f in (f3, f4, f5):
                h = self.head(f)
                out.append((self.reg(h), self.cls(h)))
            return out

    torch.manual_seed(cfg.train_seed)
    return Net(cfg.width, NC)


def grid(imgsz: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) cell centres in input pixels and (N,) strides, levels in order."""
    h, w = imgsz
    cs, ss = [], []
    for s in STRIDES:
        ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
        cs.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], 1))
        ss.append(np.full(xs.size, s))
    return np.concatenate(cs).astype(np.float32), np.concatenate(ss).astype(np.float32)


def assign(
    boxes: np.ndarray, cls: np.ndarray, ignore: np.ndarray, centres: np.ndarray, strides: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label assignment for one image (boxes in input px).

    Each box goes to one level by its longer side (<= 48 px: stride 8,
    <= 128: 16, else 32); on it, cells whose centre is inside the box and
    within 1.5 strides of the box centre are positives, and the cell holding
    the box centre always is. Overlaps go to the smaller box. Returns
    (gt index per cell or -1, box per cell (N,4), cls-loss weight per cell:
    0 inside ignored boxes that are not positives).
    """
    n = len(centres)
    gt = np.full(n, -1, np.int64)
    best_area = np.full(n, np.inf, np.float32)
    for j, b in enumerate(boxes):
        side = max(b[2] - b[0], b[3] - b[1])
        s = 8 if side <= 48 else 16 if side <= 128 else 32
        on = strides == s
        cx, cy = 0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])
        px, py = centres[:, 0], centres[:, 1]
        inside = (px > b[0]) & (px < b[2]) & (py > b[1]) & (py < b[3])
        near = (np.abs(px - cx) < 1.5 * s) & (np.abs(py - cy) < 1.5 * s)
        pos = on & inside & near
        centre_cell = on & (np.abs(px - cx) <= 0.5 * s) & (np.abs(py - cy) <= 0.5 * s)
        pos |= centre_cell
        area = (b[2] - b[0]) * (b[3] - b[1])
        take = pos & (area < best_area)
        gt[take] = j
        best_area[take] = area
    weight = np.ones(n, np.float32)
    for b in ignore:
        px, py = centres[:, 0], centres[:, 1]
        inside = (px >= b[0] - 4) & (px <= b[2] + 4) & (py >= b[1] - 4) & (py <= b[3] + 4)
        weight[inside & (gt < 0)] = 0.0
    tbox = np.zeros((n, 4), np.float32)
    if len(boxes):
        tbox[gt >= 0] = boxes[gt[gt >= 0]]
    return gt, tbox, weight


def _decode_torch(levels, centres, strides):
    """Concatenate levels -> (B, N, 4) xyxy in input px and (B, N, nc) logits."""
    import torch
    import torch.nn.functional as F

    regs = torch.cat([r.flatten(2) for r, _ in levels], 2).transpose(1, 2)
    logits = torch.cat([c.flatten(2) for _, c in levels], 2).transpose(1, 2)
    d = F.softplus(regs) * strides[None, :, None]
    xyxy = torch.cat([centres[None] - d[..., :2], centres[None] + d[..., 2:]], -1)
    return xyxy, logits


def _giou_loss(a, b):
    import torch

    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    elt = torch.min(a[:, :2], b[:, :2])
    erb = torch.max(a[:, 2:], b[:, 2:])
    enc = (erb - elt).clamp(min=0).prod(1) + 1e-7
    return 1 - iou + (enc - union) / enc, iou


def _crop(
    sample: dict, cfg: Config, box_weight: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training crop of a letterboxed frame: (image (h, w, 3) uint8 RGB,
    kept boxes, their classes, ignored boxes), boxes in crop pixels.

    Why: the model runs on the full 640x360 frame at scale 1 (small distant
    pedestrians stay a few pixels wide), but a crop costs a third of the
    compute per step; it is fully convolutional, so crops train the same
    weights. Scale jitter (log-uniform in cfg.scale_range) varies object
    sizes; with probability cfg.centred_crop_p the crop holds an object drawn
    class-balanced (box_weight per class), so rare cyclists are seen often.
    Boxes cut by the crop to under 40 % of their area, or scaled under the
    minimum size, become ignore regions."""
    import cv2

    img, boxes, cls = sample["image"], sample["boxes"], sample["cls"]
    H, W = img.shape[:2]
    ch, cw = cfg.crop
    lo, hi = cfg.scale_range
    s = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    s = max(s, ch / H, cw / W)  # the source region stays inside the frame
    sh, sw = ch / s, cw / s
    if len(boxes) and rng.random() < cfg.centred_crop_p:
        wb = box_weight[cls]
        j = rng.choice(len(boxes), p=wb / wb.sum())
        cx, cy = 0.5 * (boxes[j, 0] + boxes[j, 2]), 0.5 * (boxes[j, 1] + boxes[j, 3])
        x0 = cx - rng.uniform(0.15, 0.85) * sw
        y0 = cy - rng.uniform(0.15, 0.85) * sh
    else:
        x0, y0 = rng.uniform(0, W - sw), rng.uniform(0, H - sh)
    x0, y0 = float(np.clip(x0, 0, W - sw)), float(np.clip(y0, 0, H - sh))
    # the crop scales the continuous image plane (pixel i spans [i, i+1))
    # about (x0, y0); in pixel-centre coordinates (cv2's and the labels'):
    # x' = s * (x + 0.5 - x0) - 0.5
    m = np.array([[s, 0, 0.5 * s - 0.5 - s * x0], [0, s, 0.5 * s - 0.5 - s * y0]], np.float64)
    out = cv2.warpAffine(img, m, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))
    off = np.array([x0, y0, x0, y0], np.float32) - 0.5
    lim = np.array([cw, ch, cw, ch], np.float32) - 0.5

    def moved(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = (b.reshape(-1, 4) - off) * s - 0.5
        c = np.clip(t, -0.5, lim)
        return t, c

    t, c = moved(boxes)
    full = (t[:, 2:] - t[:, :2]).prod(1)
    wh = c[:, 2:] - c[:, :2]
    kept_area = wh.clip(min=0).prod(1)
    big = (wh.min(axis=1) >= cfg.min_side_px) & (kept_area >= cfg.min_area_px)
    keep = big & (kept_area >= 0.4 * np.maximum(full, 1e-6))
    gone = (wh <= 0).any(axis=1)
    _, ci = moved(sample["ignore"])
    ci = ci[((ci[:, 2:] - ci[:, :2]) > 0).all(axis=1)]
    ign = np.concatenate([ci, c[~keep & ~gone]]).astype(np.float32)
    return out, c[keep].astype(np.float32), cls[keep], ign


def train(cfg: Config, train_path: Path, out_pt: Path) -> dict:
    """Train within cfg.epochs or cfg.time_budget_s, whichever ends first
    (an epoch: one crop of every training frame)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(cfg.threads)
    samples = _unpack(train_path, cfg)
    r, _, _, left, top = _letterbox_params(cfg.imgsz)
    # pixel-centre coordinates: x_input = r * (x + 0.5) - 0.5 + left
    off = np.array([left, top, left, top], np.float32) + 0.5 * r - 0.5
    for s in samples:
        s["boxes"] = s["boxes"] * r + off
        s["ignore"] = s["ignore"] * r + off
    n_cls = np.bincount(np.concatenate([s["cls"] for s in samples]), minlength=NC)
    box_weight = (1.0 / np.maximum(n_cls, 1)).astype(np.float64)
    w = cfg.crop[1]
    c_np, s_np = grid(cfg.crop)
    centres, strides = torch.from_numpy(c_np), torch.from_numpy(s_np)
    model = build_model(cfg)
    if cfg.init_from:
        model.load_state_dict(torch.load(cfg.init_from, map_location="cpu"))
        log.info("warm start from %s", cfg.init_from)
    model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%d training images, %d objects %s, model %d params", len(samples),
             int(n_cls.sum()), n_cls.tolist(), n_params)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(samples) / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    rng = np.random.default_rng(cfg.train_seed)
    t0 = time.time()
    step = 0
    epochs_done = 0.0
    history = []
    stop = False
    lr = cfg.lr
    for epoch in range(cfg.epochs):
        if stop:
            break
        model.train()
        order = rng.permutation(len(samples))
        sums = np.zeros(3)
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch : (k + 1) * cfg.batch]
            crops = [_crop(samples[i], cfg, box_weight, rng) for i in idx]
            flip = rng.random(len(idx)) < 0.5
            x = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2).float()
            x = (x / 255.0).contiguous(memory_format=torch.channels_last)
            x[torch.from_numpy(flip)] = x[torch.from_numpy(flip)].flip(-1)
            # photometric jitter: per-image gain, per-channel tint and bias
            n = len(idx)
            gain = rng.uniform(0.7, 1.3, (n, 1, 1, 1)) * rng.uniform(0.9, 1.1, (n, 3, 1, 1))
            bias = rng.uniform(-0.08, 0.08, (n, 1, 1, 1))
            x = (
                (x * torch.from_numpy(gain.astype(np.float32)))
                .add_(torch.from_numpy(bias.astype(np.float32)))
                .clamp_(0, 1)
            )
            gts, tbs, wts, tcs = [], [], [], []
            for j, (_img, b, c, ig) in enumerate(crops):
                if flip[j]:
                    b, ig = b.copy(), ig.copy()
                    b[:, [0, 2]] = (w - 1) - b[:, [2, 0]]  # pixel-centre coordinates
                    ig[:, [0, 2]] = (w - 1) - ig[:, [2, 0]]
                g, tb, wt = assign(b, c, ig, c_np, s_np)
                tc = np.zeros((len(g), NC), np.float32)
                tc[g >= 0, c[g[g >= 0]]] = 1.0
                gts.append(g)
                tbs.append(tb)
                wts.append(wt)
                tcs.append(tc)
            pos = torch.from_numpy(np.stack(gts) >= 0)
            tbox = torch.from_numpy(np.stack(tbs))
            weight = torch.from_numpy(np.stack(wts))
            tcls = torch.from_numpy(np.stack(tcs))
            # cosine LR with a short warm-up over the epochs or the time
            # budget, whichever runs out first
            progress = min(1.0, max(step / total, (time.time() - t0) / cfg.time_budget_s))
            if progress >= 1.0:
                stop = True
                break
            lr = cfg.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * progress))
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                levels = model.levels(x)
            levels = [(r.float(), c.float()) for r, c in levels]
            xyxy, logits = _decode_torch(levels, centres, strides)
            npos = max(int(pos.sum()), 1)
            # focal loss; positives' targets are the (detached) IoU so that
            # scores rank by localisation quality (varifocal-style)
            if pos.any():
                lbox, iou = _giou_loss(xyxy[pos], tbox[pos])
                tq = tcls.clone()
                tq[pos] = tcls[pos] * iou.detach().clamp(min=0.1)[:, None]
            else:
                lbox = xyxy.sum() * 0
                tq = tcls
            p = logits.sigmoid()
            bce = F.binary_cross_entropy_with_logits(logits, tq, reduction="none")
            mod = torch.where(tcls > 0, tq, 0.75 * p.detach().pow(2))
            lcls = (bce * mod * weight[..., None]).sum() / npos
            lbox = lbox.sum() / npos
            loss = lcls + 2.0 * lbox
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            sums += (loss.item(), lcls.item(), lbox.item())
        steps_done = k if stop else steps_per_epoch
        if steps_done == 0:
            break
        epochs_done = epoch + (steps_done / steps_per_epoch)
        m = sums / steps_done
        history.append([round(float(v), 4) for v in m])
        log.info("epoch %.2f/%d loss %.3f cls %.3f box %.3f lr %.2e  %.0f s",
                 epochs_done, cfg.epochs, *m, lr, time.time() - t0)  # fmt: skip
    if stop:
        log.info("time budget %.0f s reached after %.2f epochs", cfg.time_budget_s, epochs_done)
    wall = time.time() - t0
    torch.save(model.state_dict(), out_pt)
    return {
        "epochs_run": round(epochs_done, 2),
        "train_wall_s": round(wall, 1),
        "train_images": len(samples),
        "train_objects": int(n_cls.sum()),
        "train_objects_per_class": dict(zip(CLASS_NAMES, n_cls.tolist(), strict=True)),
        "params": int(n_params),
        "loss_history": history,
    }


# ----------------------------------------------------------------- export
def export(cfg: Config, pt: Path, onnx_path: Path) -> None:
    """ONNX in the YOLOv8 detect layout with Ultralytics-style metadata."""
    import torch
    from torch import nn

    model = build_model(cfg)
    model.load_state_dict(torch.load(pt, map_location="cpu"))
    model.eval()
    imgsz = cfg.export_imgsz or cfg.imgsz
    c_np, s_np = grid(imgsz)

    class Export(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("centres", torch.from_numpy(c_np))
            self.register_buffer("strides", torch.from_numpy(s_np))

        def forward(self, images):
            xyxy, logits = _decode_torch(self.net.levels(images), self.centres, self.strides)
            cxcy = 0.5 * (xyxy[..., :2] + xyxy[..., 2:])
            wh = xyxy[..., 2:] - xyxy[..., :2]
            out = torch.cat([cxcy, wh, logits.sigmoid()], -1)  # (B, N, 4+nc)
            return out.transpose(1, 2)  # (B, 4+nc, N)

    h, w = imgsz
    dummy = torch.zeros(1, 3, h, w)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
    )
    try:
        torch.onnx.export(Export(model), (dummy,), str(onnx_path), dynamo=False, **kwargs)
    except TypeError:  # torch without the `dynamo` switch
        torch.onnx.export(Export(model), (dummy,), str(onnx_path), **kwargs)
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(CLASS_NAMES)) + "}"
    meta = {
        "names": names,
        "stride": str(max(STRIDES)),
        "imgsz": f"[{h}, {w}]",
        "task": "detect",
        "batch": "1",
        "description": "perception default detector, synthetic scenes "
        "(tools/train_default_detector.py)",
        "author": "perception project",
        "license": "same as the perception package",
    }
    _set_metadata(onnx_path, meta, (4 + NC, len(c_np)))


def _set_metadata(path: Path, meta: dict[str, str], out_shape: tuple[int, int]) -> None:
    """Write Ultralytics-style metadata_props (read by resolve_layout/Detector)
    and the static (4+nc, N) output dims the TorchScript exporter leaves
    symbolic (family auto-detection reads them)."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for d, v in zip(dims[1:], out_shape, strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# ------------------------------------------------------------------- eval
def evaluate(cfg: Config, onnx_path: Path, held_path: Path, conf: float = 0.01) -> dict:
    """Held-out AP@0.5 per class through create_engine + Detector (auto family)."""
    from perception.core.detector import Detector
    from perception.core.engines.config import EngineConfig
    from perception.core.engines.factory import create_engine
    from perception.eval.detection_metrics import average_precision_per_class

    engine = create_engine(EngineConfig(model_path=str(onnx_path), runtime="onnxruntime"))
    det = Detector(engine, family="auto", conf=conf, iou=0.6, max_det=300)
    samples = _unpack(held_path, cfg)
    preds, gts = [], []
    t0 = time.time()
    for k in range(0, len(samples), 8):
        chunk = samples[k : k + 8]
        outs = det.detect([s["image"] for s in chunk])
        for s, d in zip(chunk, outs, strict=True):
            preds.append((d.xyxy, d.scores, d.class_ids))
            gts.append((s["boxes"], s["cls"], s["ignore"]))
    infer_s = time.time() - t0
    ap = average_precision_per_class(preds, gts, NC, iou_threshold=0.5)
    n_gt = [int(sum((g[1] == c).sum() for g in gts)) for c in range(NC)]
    res = {
        "family": det.family,
        "heldout_images": len(samples),
        "heldout_gt_per_class": dict(zip(CLASS_NAMES, n_gt, strict=True)),
        "ap50_per_class": {n: round(float(a), 4) for n, a in zip(CLASS_NAMES, ap, strict=True)},
        "map50": round(float(np.nanmean(ap)), 4),
        "eval_conf": conf,
        "eval_infer_s": round(infer_s, 2),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("data", "train", "export", "eval", "all"))
    p.add_argument("--epochs", type=int, default=Config.epochs)
    p.add_argument("--time-budget", type=float, default=Config.time_budget_s)
    p.add_argument("--train-scenarios", type=int, default=Config.train_scenarios)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=MODELS / "default_detector.onnx")
    p.add_argument("--lr", type=float, default=Config.lr)
    p.add_argument(
        "--init-from", default="", metavar="PT",
        help="warm start (fine-tune) from this state dict; copy it out of the "
        "cache first, the train stage overwrites .cache/default_detector/default_detector.pt",
    )  # fmt: skip
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=Config.scale_range, metavar=("LO", "HI"),
        help="training scale jitter (log-uniform), relative to the 640x360 source",
    )  # fmt: skip
    p.add_argument(
        "--export-imgsz", type=int, nargs=2, default=Config.export_imgsz, metavar=("H", "W"),
        help="input size of the exported model (default: 576 960)",
    )  # fmt: skip
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    cfg = Config(
        epochs=a.epochs,
        time_budget_s=a.time_budget,
        train_scenarios=a.train_scenarios,
        lr=a.lr,
        init_from=str(a.init_from),
        scale_range=(float(a.scale_range[0]), float(a.scale_range[1])),
        export_imgsz=(int(a.export_imgsz[0]), int(a.export_imgsz[1])) if a.export_imgsz else None,
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    t_all = time.time()
    train_path, held_path = make_data(cfg, a.workers)
    if a.stage == "data":
        return 0
    pt = CACHE / "default_detector.pt"
    info_path = CACHE / "train_info.json"
    if a.stage in ("train", "all"):
        info = train(cfg, train_path, pt)
        info_path.write_text(json.dumps(info))
    if a.stage in ("export", "all"):
        export(cfg, pt, a.out)
    if a.stage in ("eval", "all", "export"):
        res = evaluate(cfg, a.out, held_path)
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        report = {
            "model": a.out.name,
            "model_bytes": a.out.stat().st_size,
            "layout": "yolov8 [B, 4+nc, N]: cx, cy, w, h in input pixels, sigmoid scores",
            "class_names": list(CLASS_NAMES),
            "config": asdict(cfg),
            "data": {
                "train_cache": train_path.name,
                "heldout_cache": held_path.name,
                "train_render": _render_info(train_path),
                "heldout_render": _render_info(held_path),
                "cache_format": {
                    "train": _cache_format(train_path),
                    "heldout": _cache_format(held_path),
                    "format_1_label_offset_removed": LEGACY_LABEL_OFFSET.tolist(),
                },
            },
            "train": info,
            "heldout": res,
            "command": " ".join(
                [
                    "PYTHONPATH=$PWD .venv-train/bin/python tools/train_default_detector.py",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
            "json_written_by_stage": a.stage,
            "stage_wall_s": round(time.time() - t_all, 1),
        }
        import torch

        report["torch"] = torch.__version__
        a.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        log.info("held-out AP@0.5 %s  mAP %.3f", res["ap50_per_class"], res["map50"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
