"""Synthetic MOTChallenge-style tracking sequences with exact ground truth: a
benchmark source wide enough to tune a tracker on one split and check it on
another (bench/bench_tracking.py), not a renderer of real scenes.

Each sequence comes from a `family` (one hard case each) and a `seed`, and is
the same, row for row, for the same (family, seed) on every machine. Families:

* ``crowd``: two crowds crossing in a band, long mutual occlusions between
  people of similar size;
* ``occlusion``: people walking behind wide static occluders (pillars), fully
  hidden for up to ~3 s;
* ``dropped``: 10-50 % of the frames dropped (single and in bursts) and the
  capture times jittered, so the stamps are uneven;
* ``ego``: a camera that pans, shakes and moves forward/back (zoom), so every
  box drifts; `render_image` draws each frame (a fixed texture canvas seen
  through the camera, objects as textured rectangles) for image-based camera
  motion compensation, and `affine` holds the true frame-to-frame motion;
* ``approach``: cars and people approaching or receding on a road (pinhole
  projection), so box sizes change fast;
* ``noisy``: a mixed scene under heavy detector noise, one of three levels
  picked by the seed.

Detection noise (misses and miss bursts, false positives, box jitter, low
scores while partly occluded) applies to every family at a moderate level.
The splits are fixed here, before anything is tuned on them: tune on
`TUNE_SEEDS`, report on `HELDOUT_SEEDS`.

Frames and ids in `gt`/`det` rows are MOTChallenge-style: frame numbers are
1-based indices into the delivered frames (dropped frames never appear), boxes
are x, y, w, h in pixels, clipped to the image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "FAMILIES",
    "GT_MIN_VISIBILITY",
    "HELDOUT_SEEDS",
    "IMAGE_SIZE",
    "NOISE_LEVELS",
    "SPLITS",
    "TUNE_SEEDS",
    "MotSequence",
    "NoiseLevel",
    "generate",
    "split_seeds",
]

FAMILIES: tuple[str, ...] = ("crowd", "occlusion", "dropped", "ego", "approach", "noisy")
TUNE_SEEDS: tuple[int, ...] = (0, 1, 2)
HELDOUT_SEEDS: tuple[int, ...] = (100, 101, 102, 103, 104)
SPLITS: dict[str, tuple[int, ...]] = {"tune": TUNE_SEEDS, "heldout": HELDOUT_SEEDS}

IMAGE_SIZE: tuple[int, int] = (960, 540)  # width, height
FPS = 30.0  # nominal capture rate
N_TICKS = 240  # captured frames before drops (8 s)
GT_MIN_VISIBILITY = 0.1  # gt rows below this visible fraction are not scored
_NS = 1_000_000_000
_GRID = 8  # visibility: _GRID x _GRID sample points per box
_MIN_HEIGHT = 10.0  # px: smaller objects are not gt (no detector sees them)
_MIN_IN_IMAGE = 0.2  # a box less than this much inside the image is not gt


@dataclass(frozen=True)
class NoiseLevel:
    """Detector noise. `miss` is the miss probability of a fully visible object;
    `burst` the per-frame chance that an object starts a run of 2-8 misses;
    `fp_rate` the mean number of false positives per frame (mostly low score);
    `jitter` the box noise std as a fraction of box size; `graded_scores`
    False gives every detection a high score however occluded its object is
    (a detector whose boxes are all confident, as MOTChallenge's public
    detections with score 1: what OC-SORT-style trackers are built for)."""

    miss: float
    burst: float
    fp_rate: float
    jitter: float
    graded_scores: bool = True


NOISE_LEVELS: dict[str, NoiseLevel] = {
    "clean": NoiseLevel(miss=0.03, burst=0.003, fp_rate=0.05, jitter=0.02, graded_scores=False),
    "moderate": NoiseLevel(miss=0.06, burst=0.008, fp_rate=0.4, jitter=0.03),
    "heavy1": NoiseLevel(miss=0.15, burst=0.02, fp_rate=1.5, jitter=0.05),
    "heavy2": NoiseLevel(miss=0.25, burst=0.03, fp_rate=3.0, jitter=0.07),
    "heavy3": NoiseLevel(miss=0.35, burst=0.04, fp_rate=5.0, jitter=0.09),
}


@dataclass(frozen=True)
class MotSequence:
    """One generated sequence.

    Attributes:
        family, seed: what generated it.
        noise: the detector noise level name (key of NOISE_LEVELS).
        image_size: (width, height) in pixels.
        fps: nominal capture rate; `stamps_ns` are the true capture times of
            the delivered frames (uneven where frames were dropped or jittered).
        stamps_ns: (F,) int64.
        gt: (M, 7) float64 rows frame, id, x, y, w, h, visibility (every
            object at least partly in the image; score with `gt_scored()`).
        det: (K, 7) float64 rows frame, -1, x, y, w, h, score.
        affine: (F, 2, 3) true global affine taking image coordinates of the
            previous delivered frame to this one (identity for frame 1 and for
            a static camera).
        camera: (F, 2, 3) world-to-image affine of each delivered frame.
        drop_rate: fraction of captured frames that were not delivered.
    """

    family: str
    seed: int
    noise: str
    image_size: tuple[int, int]
    fps: float
    stamps_ns: np.ndarray
    gt: np.ndarray
    det: np.ndarray
    affine: np.ndarray
    camera: np.ndarray
    drop_rate: float
    _boxes: np.ndarray = field(repr=False)  # (F, N, 4) image xyxy, NaN when absent
    _occluders: np.ndarray = field(repr=False)  # (K, 4) world xyxy
    _textures: Sequence[np.ndarray] = field(repr=False)  # per object, uint8
    _canvas_key: tuple[int, int, tuple[int, int]] = field(repr=False)  # see _canvas

    @property
    def name(self) -> str:
        return f"{self.family}-{self.seed}"

    @property
    def n_frames(self) -> int:
        return int(self.stamps_ns.shape[0])

    def gt_scored(self, min_visibility: float = GT_MIN_VISIBILITY) -> np.ndarray:
        """The gt rows a tracker is scored against (visible enough to track)."""
        return self.gt[self.gt[:, 6] >= min_visibility]

    def frame_detections(self) -> list[np.ndarray]:
        """Per delivered frame, an (N, 6) float32 array x1 y1 x2 y2 score class
        (the layout boxmot trackers take)."""
        out = []
        frames = self.det[:, 0].astype(np.int64)
        order = np.argsort(frames, kind="stable")
        det, frames = self.det[order], frames[order]
        bounds = np.searchsorted(frames, np.arange(1, self.n_frames + 2))
        for k in range(self.n_frames):
            r = det[bounds[k] : bounds[k + 1]]
            a = np.zeros((len(r), 6), np.float32)
            a[:, 0:2] = r[:, 2:4]
            a[:, 2:4] = r[:, 2:4] + r[:, 4:6]
            a[:, 4] = r[:, 6]
            out.append(a)
        return out

    def render_image(self, k: int) -> np.ndarray:
        """Grayscale (H, W) uint8 image of delivered frame k (0-based): the
        background canvas through the camera, the objects as textured
        rectangles drawn far to near, static occluders in front."""
        w, h = self.image_size
        img = _warp(_canvas(*self._canvas_key), self.camera[k], (w, h))
        boxes = self._boxes[k]
        present = np.flatnonzero(np.isfinite(boxes[:, 0]))
        for i in present[np.argsort(boxes[present, 3], kind="stable")]:
            _paste(img, boxes[i], self._textures[i])
        occ = _apply(self.camera[k], self._occluders)
        for j, box in enumerate(occ):
            _paste(img, box, self._textures[len(self._textures) - len(occ) + j])
        return img

    def images(self) -> Iterator[np.ndarray]:
        for k in range(self.n_frames):
            yield self.render_image(k)


def split_seeds(split: str) -> tuple[int, ...]:
    """Seeds of a named split ("tune" or "heldout")."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    return SPLITS[split]


def generate(family: str, seed: int, noise: str | None = None) -> MotSequence:
    """The sequence of (family, seed); the same on every call and machine.
    `noise` (a NOISE_LEVELS key) replaces the family's own detector noise:
    the same objects, motion and frames under another detector."""
    if family not in _FAMILY_FNS:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if noise is not None and noise not in NOISE_LEVELS:
        raise ValueError(f"noise: expected one of {sorted(NOISE_LEVELS)}, got {noise!r}")
    fam_index = FAMILIES.index(family)
    rng = np.random.default_rng([fam_index, int(seed), 17])
    w, h = IMAGE_SIZE
    scene = _FAMILY_FNS[family](rng, seed)
    if noise is not None:
        scene = replace(scene, noise=noise)
    t = scene.times
    n_ticks = t.shape[0]
    cam = scene.camera if scene.camera is not None else np.tile(_IDENTITY, (n_ticks, 1, 1))
    world = scene.boxes
    img_boxes = _apply_many(cam, world)  # (T, N, 4)

    # Which captured frames are delivered.
    keep = np.ones(n_ticks, bool)
    if scene.drop_rate > 0:
        keep = _drop_mask(rng, n_ticks, scene.drop_rate)
    idx = np.flatnonzero(keep)
    img_boxes = img_boxes[idx]
    cam = cam[idx]
    stamps = np.round(t[idx] * _NS).astype(np.int64)
    n_frames = idx.shape[0]

    occ_img = _apply_many(cam, np.broadcast_to(scene.occluders, (n_frames, *scene.occluders.shape)))
    level = NOISE_LEVELS[scene.noise]
    gt_rows, det_rows = [], []
    n_obj = world.shape[1]
    burst_left = np.zeros(n_obj, np.int64)
    ghosts = _ghosts(rng, w, h)
    for k in range(n_frames):
        boxes = img_boxes[k]
        present = np.isfinite(boxes[:, 0])
        vis = _visibility(boxes, present, occ_img[k], w, h)
        clipped = _clip(boxes, w, h)
        cw = clipped[:, 2] - clipped[:, 0]
        ch = clipped[:, 3] - clipped[:, 1]
        full = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-9)
        inside = present & (cw >= 2) & (ch >= _MIN_HEIGHT) & (cw * ch >= _MIN_IN_IMAGE * full)
        for i in np.flatnonzero(inside):
            x1, y1, x2, y2 = clipped[i]
            gt_rows.append((k + 1, i + 1, x1, y1, x2 - x1, y2 - y1, round(float(vis[i]), 4)))
        # Detections of real objects: every random draw happens for every
        # object, present or not, so one object's fate never shifts another's.
        n_draw = n_obj
        u_det = rng.random((n_draw,))
        u_burst = rng.random((n_draw,))
        burst_len = rng.integers(2, 9, n_draw)
        score_hi = np.clip(rng.normal(0.82, 0.08, (n_draw,)), 0.5, 0.99)
        score_mid = rng.uniform(0.15, 0.5, (n_draw,))
        score_lo = rng.uniform(0.1, 0.35, (n_draw,))
        u_weak = rng.random((n_draw,))
        jit = rng.normal(0.0, 1.0, (n_draw, 4))
        starting = inside & (burst_left == 0) & (u_burst < level.burst)
        burst_left = np.where(starting, burst_len, burst_left)
        for i in np.flatnonzero(inside):
            v = vis[i]
            if burst_left[i] > 0:
                continue
            if v >= 0.6:
                p, s = 1.0 - level.miss, score_hi[i] if u_weak[i] > 0.05 else score_mid[i]
            elif v >= 0.3:
                p, s = (1.0 - level.miss) * 0.75, score_mid[i]
            else:
                p, s = 0.1, score_lo[i]
            if not level.graded_scores:
                s = score_hi[i]
            if u_det[i] >= p:
                continue
            box = _jitter(boxes[i], jit[i], level.jitter * (1.5 if v < 0.6 else 1.0))
            box = _clip(box[None], w, h)[0]
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                det_rows.append((k + 1, -1, box[0], box[1], box[2] - box[0], box[3] - box[1], s))
        burst_left = np.maximum(burst_left - 1, 0)
        for box, s in _false_positives(rng, level, ghosts, w, h):
            det_rows.append((k + 1, -1, box[0], box[1], box[2] - box[0], box[3] - box[1], s))

    affine = np.tile(_IDENTITY, (n_frames, 1, 1))
    for k in range(1, n_frames):
        affine[k] = _compose(cam[k], _invert(cam[k - 1]))
    textures = [_texture(rng, 48, 24, (60, 200)) for _ in range(n_obj)]
    textures += [_texture(rng, 64, 32, (30, 90)) for _ in range(scene.occluders.shape[0])]
    return MotSequence(
        family=family,
        seed=int(seed),
        noise=scene.noise,
        image_size=(w, h),
        fps=FPS,
        stamps_ns=stamps,
        gt=np.asarray(gt_rows, np.float64).reshape(-1, 7),
        det=np.asarray(det_rows, np.float64).reshape(-1, 7),
        affine=affine,
        camera=cam,
        drop_rate=float(1.0 - n_frames / n_ticks),
        _boxes=img_boxes,
        _occluders=scene.occluders,
        _textures=textures,
        _canvas_key=(fam_index, int(seed), scene.canvas_size),
    )


# ---------------------------------------------------------------- scenes
@dataclass
class _Scene:
    times: np.ndarray  # (T,) capture time of each tick, seconds
    boxes: np.ndarray  # (T, N, 4) world xyxy, NaN when absent
    occluders: np.ndarray  # (K, 4) world xyxy
    camera: np.ndarray | None = None  # (T, 2, 3) world -> image
    noise: str = "moderate"
    drop_rate: float = 0.0
    canvas_size: tuple[int, int] = IMAGE_SIZE


def _times(rng: np.random.Generator, jitter_frac: float) -> np.ndarray:
    """Capture times of N_TICKS ticks at FPS with jitter (strictly increasing)."""
    dt = 1.0 / FPS
    j = rng.uniform(-jitter_frac, jitter_frac, N_TICKS) * dt
    t = np.arange(N_TICKS) * dt + j
    t[0] = 0.0
    return t


def _integrate(
    rng: np.random.Generator, t: np.ndarray, p0: np.ndarray, v0: np.ndarray, accel: float
) -> np.ndarray:
    """Positions (T, N, 2) from p0 with velocity v0 perturbed by a random walk of
    std `accel` px/s per sqrt(s) (smooth, people-like motion)."""
    dt = np.diff(t, prepend=t[0])
    n = p0.shape[0]
    dv = rng.normal(0.0, 1.0, (t.shape[0], n, 2)) * accel * np.sqrt(dt)[:, None, None]
    v = v0[None] + np.cumsum(dv, axis=0)
    return p0[None] + np.cumsum(v * dt[:, None, None], axis=0)


def _person_boxes(pos: np.ndarray, heights: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """xyxy boxes (T, N, 4) of people whose feet are at `pos` (T, N, 2)."""
    hh = heights[None, :]
    ww = hh * aspect[None, :]
    x, y = pos[..., 0], pos[..., 1]
    return np.stack([x - ww / 2, y - hh, x + ww / 2, y], axis=-1)


def _lifetimes(boxes: np.ndarray, t: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """NaN out boxes outside each object's [start, stop) time window."""
    alive = (t[:, None] >= start[None]) & (t[:, None] < stop[None])
    out = boxes.copy()
    out[~alive] = np.nan
    return out


def _height_at(y: np.ndarray, h: float) -> np.ndarray:
    """Perspective: people lower in the image are taller (ground plane)."""
    return np.clip(40.0 + (y - 0.35 * h) * 0.55, 30.0, 260.0)


def _scene_crowd(rng: np.random.Generator, seed: int) -> _Scene:
    w, h = IMAGE_SIZE
    t = _times(rng, 0.03)
    n = int(rng.integers(26, 41))
    side = rng.random(n) < 0.5  # True: walks right
    x0 = rng.uniform(-250.0, w + 250.0, n)
    y0 = rng.uniform(0.62 * h, 0.92 * h, n)
    speed = rng.uniform(25.0, 75.0, n)
    speed[rng.random(n) < 0.15] = rng.uniform(0.0, 8.0)  # a few loiter
    v0 = np.stack([np.where(side, speed, -speed), rng.normal(0.0, 4.0, n)], axis=1)
    pos = _integrate(rng, t, np.stack([x0, y0], 1), v0, accel=6.0)
    pos[..., 1] = np.clip(pos[..., 1], 0.55 * h, 0.98 * h)
    heights = _height_at(y0, h) * rng.uniform(0.9, 1.1, n)
    boxes = _person_boxes(pos, heights, rng.uniform(0.35, 0.45, n))
    return _Scene(times=t, boxes=boxes, occluders=np.zeros((0, 4)))


def _scene_occlusion(rng: np.random.Generator, seed: int) -> _Scene:
    w, h = IMAGE_SIZE
    t = _times(rng, 0.03)
    k = int(rng.integers(2, 4))
    centers = (np.arange(k) + 0.5) / k * w + rng.uniform(-40, 40, k)
    widths = rng.uniform(100.0, 170.0, k)
    tops = rng.uniform(0.1 * h, 0.35 * h, k)
    occ = np.stack([centers - widths / 2, tops, centers + widths / 2, np.full(k, h + 10.0)], 1)
    n = int(rng.integers(10, 19))
    right = rng.random(n) < 0.5
    x0 = np.where(right, rng.uniform(-150.0, 0.6 * w, n), rng.uniform(0.4 * w, w + 150.0, n))
    y0 = rng.uniform(0.6 * h, 0.92 * h, n)
    speed = rng.uniform(45.0, 120.0, n)
    v0 = np.stack([np.where(right, speed, -speed), rng.normal(0.0, 3.0, n)], axis=1)
    pos = _integrate(rng, t, np.stack([x0, y0], 1), v0, accel=3.0)
    heights = _height_at(y0, h) * rng.uniform(0.9, 1.1, n)
    boxes = _person_boxes(pos, heights, rng.uniform(0.35, 0.45, n))
    return _Scene(times=t, boxes=boxes, occluders=occ)


def _walkers(
    rng: np.random.Generator, t: np.ndarray, n: int, region: tuple[float, float, float, float]
) -> np.ndarray:
    """Mixed scene: people entering from the region's edges or present from the
    start, walking in any direction at 20-150 px/s, leaving whenever."""
    x_lo, y_lo, x_hi, y_hi = region
    present = rng.random(n) < 0.5
    edge = rng.integers(0, 2, n)  # 0 left, 1 right
    x0 = np.where(
        present,
        rng.uniform(x_lo, x_hi, n),
        np.where(edge == 0, x_lo - 30.0, x_hi + 30.0),
    )
    y_floor = y_lo + 0.55 * (y_hi - y_lo)
    y0 = rng.uniform(y_floor, y_hi, n)
    speed = rng.uniform(20.0, 150.0, n)
    ang = rng.uniform(-0.6, 0.6, n)
    sgn = np.where(present, np.where(rng.random(n) < 0.5, 1.0, -1.0), np.where(edge == 0, 1, -1))
    v0 = np.stack([sgn * speed * np.cos(ang), speed * np.sin(ang) * 0.3], axis=1)
    start = np.where(present, 0.0, rng.uniform(0.0, t[-1] * 0.7, n))
    # Integrate from each object's own start time.
    pos = _integrate(rng, t, np.zeros((n, 2)), v0, accel=15.0)
    at_start = np.array(
        [pos[min(int(np.searchsorted(t, s)), len(t) - 1), i] for i, s in enumerate(start)]
    ).reshape(n, 2)
    pos = pos - at_start[None] + np.stack([x0, y0], 1)[None]
    pos[..., 1] = np.clip(pos[..., 1], y_floor - 30.0, y_hi + 40.0)
    heights = _height_at(y0 - y_lo, y_hi - y_lo) * rng.uniform(0.8, 1.2, n)
    boxes = _person_boxes(pos, heights, rng.uniform(0.33, 0.5, n))
    stop = start + rng.uniform(3.0, 12.0, n)
    return _lifetimes(boxes, t, start, stop)


def _scene_dropped(rng: np.random.Generator, seed: int) -> _Scene:
    w, h = IMAGE_SIZE
    t = _times(rng, 0.25)
    n = int(rng.integers(12, 26))
    boxes = _walkers(rng, t, n, (0.0, 0.0, float(w), float(h)))
    return _Scene(times=t, boxes=boxes, occluders=np.zeros((0, 4)), drop_rate=rng.uniform(0.1, 0.5))


def _scene_noisy(rng: np.random.Generator, seed: int) -> _Scene:
    w, h = IMAGE_SIZE
    t = _times(rng, 0.03)
    n = int(rng.integers(12, 26))
    boxes = _walkers(rng, t, n, (0.0, 0.0, float(w), float(h)))
    level = ("heavy1", "heavy2", "heavy3")[int(seed) % 3]
    return _Scene(times=t, boxes=boxes, occluders=np.zeros((0, 4)), noise=level)


def _scene_ego(rng: np.random.Generator, seed: int) -> _Scene:
    w, h = IMAGE_SIZE
    cw, ch = 3 * w, 3 * h
    t = _times(rng, 0.03)
    n = int(rng.integers(12, 22))
    # People in the world, around the first view (world origin = canvas corner).
    x_lo, y_lo = (cw - w) / 2.0 - 150.0, (ch - h) / 2.0
    boxes = _walkers(rng, t, n, (x_lo, y_lo, x_lo + w + 300.0, y_lo + h))
    k = int(rng.integers(0, 3))
    ox = rng.uniform(x_lo, x_lo + w + 300.0, k)
    ow = rng.uniform(60.0, 120.0, k)
    occ = np.stack([ox, np.full(k, y_lo + 0.3 * h), ox + ow, np.full(k, y_lo + h + 20.0)], 1)
    # Camera: pan (sinusoid + drift), forward/back motion (zoom), shake.
    amp = rng.uniform(100.0, 250.0)
    period = rng.uniform(3.0, 7.0)
    phase = rng.uniform(0.0, 2 * math.pi)
    drift = rng.uniform(-40.0, 40.0)
    vx = amp * np.sin(2 * math.pi * t / period + phase) + drift
    vy = rng.uniform(10.0, 40.0) * np.sin(2 * math.pi * t / (period * 1.7))
    zr = rng.uniform(0.08, 0.2) * np.sin(2 * math.pi * t / rng.uniform(4.0, 9.0)) + rng.uniform(
        -0.03, 0.05
    )
    dt = np.diff(t, prepend=t[0])
    cx = cw / 2.0 + np.cumsum(vx * dt) + rng.normal(0.0, 1.0, t.shape[0])
    cy = ch / 2.0 + np.cumsum(vy * dt) + rng.normal(0.0, 1.0, t.shape[0])
    s = np.exp(np.cumsum(zr * dt))
    cam = np.zeros((t.shape[0], 2, 3))
    cam[:, 0, 0] = cam[:, 1, 1] = s
    cam[:, 0, 2] = w / 2.0 - s * cx
    cam[:, 1, 2] = h / 2.0 - s * cy
    return _Scene(times=t, boxes=boxes, occluders=occ, camera=cam, canvas_size=(cw, ch))


def _scene_approach(rng: np.random.Generator, seed: int) -> _Scene:
    """Pinhole camera 1.5 m above a flat road; objects at lateral offset X and
    depth Z(t) closing or receding at 3-15 m/s."""
    w, h = IMAGE_SIZE
    t = _times(rng, 0.03)
    f, cam_h, horizon = 600.0, 1.5, 0.42 * h
    n = int(rng.integers(8, 17))
    car = rng.random(n) < 0.6
    obj_h = np.where(car, rng.uniform(1.4, 1.8, n), rng.uniform(1.6, 1.9, n))
    obj_w = np.where(car, rng.uniform(1.7, 2.0, n), rng.uniform(0.5, 0.7, n))
    x_lat = rng.uniform(-7.0, 7.0, n)
    closing = rng.random(n) < 0.7
    speed = np.where(car, rng.uniform(6.0, 15.0, n), rng.uniform(1.5, 3.0, n))
    z0 = np.where(closing, rng.uniform(18.0, 45.0, n), rng.uniform(4.0, 12.0, n))
    vz = np.where(closing, -speed, speed)
    start = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0.0, 6.0, n))
    tt = np.maximum(t[:, None] - start[None], 0.0)
    z = z0[None] + vz[None] * tt
    x_lat_t = x_lat[None] + rng.normal(0.0, 0.3, n)[None] * tt
    valid = (z > 2.5) & (z < 80.0)
    z = np.where(valid, z, np.nan)
    u = w / 2.0 + f * x_lat_t / z
    bottom = horizon + f * cam_h / z
    bh = f * obj_h[None] / z
    bw = f * obj_w[None] / z
    boxes = np.stack([u - bw / 2, bottom - bh, u + bw / 2, bottom], axis=-1)
    boxes = _lifetimes(boxes, t, start, np.full(n, np.inf))
    return _Scene(times=t, boxes=boxes, occluders=np.zeros((0, 4)))


_FAMILY_FNS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "crowd": _scene_crowd,
    "occlusion": _scene_occlusion,
    "dropped": _scene_dropped,
    "ego": _scene_ego,
    "approach": _scene_approach,
    "noisy": _scene_noisy,
}


# ---------------------------------------------------------------- detections
def _drop_mask(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Delivered ticks: single drops and bursts of 2-6 until `rate` is reached;
    the first and last ticks are always delivered."""
    keep = np.ones(n, bool)
    target = round(rate * n)
    while np.count_nonzero(~keep) < target:
        start = int(rng.integers(1, n - 1))
        length = 1 if rng.random() < 0.6 else int(rng.integers(2, 7))
        keep[start : min(start + length, n - 1)] = False
    return keep


def _ghosts(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """One or two fixed image spots that a detector keeps firing on (clutter)."""
    k = int(rng.integers(1, 3))
    x = rng.uniform(0.1 * w, 0.9 * w, k)
    y = rng.uniform(0.5 * h, 0.9 * h, k)
    bh = rng.uniform(50.0, 120.0, k)
    return np.stack([x - 0.2 * bh, y - bh, x + 0.2 * bh, y], 1)


def _false_positives(
    rng: np.random.Generator, noise: NoiseLevel, ghosts: np.ndarray, w: int, h: int
) -> list[tuple[np.ndarray, float]]:
    out = []
    n = int(rng.poisson(noise.fp_rate))
    x = rng.uniform(0.0, w, n)
    y = rng.uniform(0.3 * h, h, n)
    bh = rng.uniform(40.0, 200.0, n)
    aspect = rng.uniform(0.3, 0.6, n)
    high = rng.random(n) < 0.2
    s = np.where(high, rng.uniform(0.5, 0.75, n), rng.uniform(0.1, 0.5, n))
    for i in range(n):
        box = _clip(np.array([[x[i], y[i] - bh[i], x[i] + aspect[i] * bh[i], y[i]]]), w, h)[0]
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            out.append((box, float(s[i])))
    # a clean detector has no persistent ghost boxes (the draw still happens)
    fire = (rng.random(ghosts.shape[0]) < 0.3) & noise.graded_scores
    gs = rng.uniform(0.3, 0.65, (ghosts.shape[0],))
    gj = rng.normal(0.0, 2.0, ghosts.shape)
    for i in np.flatnonzero(fire).tolist():
        out.append((_clip((ghosts[i] + gj[i])[None], w, h)[0], float(gs[i])))
    return out


def _jitter(box: np.ndarray, z: np.ndarray, frac: float) -> np.ndarray:
    bw, bh = box[2] - box[0], box[3] - box[1]
    cx = (box[0] + box[2]) / 2 + z[0] * frac * bw
    cy = (box[1] + box[3]) / 2 + z[1] * frac * bh
    bw *= math.exp(z[2] * frac)
    bh *= math.exp(z[3] * frac)
    return np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])


def _clip(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    out = boxes.copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, float(w))
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, float(h))
    return out


def _visibility(
    boxes: np.ndarray, present: np.ndarray, occluders: np.ndarray, w: int, h: int
) -> np.ndarray:
    """Visible fraction of each box: sample points not outside the image, not
    under a nearer object (larger bottom y) and not under an occluder."""
    n = boxes.shape[0]
    vis = np.zeros(n)
    if not present.any():
        return vis
    b = np.where(present[:, None], boxes, 0.0)
    g = (np.arange(_GRID) + 0.5) / _GRID
    px = b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * np.tile(g, _GRID)[None]  # (N, G*G)
    py = b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * np.repeat(g, _GRID)[None]
    ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    front = present[None, :] & (b[None, :, 3] > b[:, None, 3])  # (N, M): m in front of n
    np.fill_diagonal(front, False)
    if front.any():
        inside = (
            (px[:, :, None] >= b[None, None, :, 0])
            & (px[:, :, None] < b[None, None, :, 2])
            & (py[:, :, None] >= b[None, None, :, 1])
            & (py[:, :, None] < b[None, None, :, 3])
        )
        ok &= ~(inside & front[:, None, :]).any(axis=2)
    for o in occluders:
        ok &= ~((px >= o[0]) & (px < o[2]) & (py >= o[1]) & (py < o[3]))
    vis = ok.mean(axis=1)
    vis[~present] = 0.0
    return vis


# ---------------------------------------------------------------- geometry
_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _apply(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """xyxy boxes through an axis-aligned (scale + translation) affine."""
    out = np.empty_like(boxes, dtype=np.float64)
    out[..., 0::2] = boxes[..., 0::2] * a[0, 0] + a[0, 2]
    out[..., 1::2] = boxes[..., 1::2] * a[1, 1] + a[1, 2]
    return out


def _apply_many(cams: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, N, 4) boxes through per-tick affines (T, 2, 3)."""
    out = np.empty(boxes.shape, np.float64)
    out[..., 0::2] = boxes[..., 0::2] * cams[:, None, 0:1, 0] + cams[:, None, 0:1, 2]
    out[..., 1::2] = boxes[..., 1::2] * cams[:, None, 1:2, 1] + cams[:, None, 1:2, 2]
    return out


def _to3(a: np.ndarray) -> np.ndarray:
    return np.vstack([a, [0.0, 0.0, 1.0]])


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a after b."""
    return (_to3(a) @ _to3(b))[:2]


def _invert(a: np.ndarray) -> np.ndarray:
    return np.linalg.inv(_to3(a))[:2]


# ---------------------------------------------------------------- images
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Value noise: a random grid every `cell` px, bilinearly interpolated."""
    hh, ww = shape
    gh, gw = hh // cell + 2, ww // cell + 2
    grid = rng.random((gh, gw))
    y = np.arange(hh) / cell
    x = np.arange(ww) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


@functools.lru_cache(maxsize=2)
def _canvas(fam_index: int, seed: int, size: tuple[int, int]) -> np.ndarray:
    """Background texture with structure at several scales (corners for
    feature trackers, gradients for ECC); made on first use, from its own
    random stream, so sequences that are never drawn never pay for it."""
    rng = np.random.default_rng([fam_index, seed, 18])
    w, h = size
    img = np.zeros((h, w))
    for cell, amp in ((96, 0.5), (24, 0.3), (6, 0.2)):
        img += amp * _smooth_noise(rng, (h, w), cell)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, rows: int, cols: int, level: tuple[int, int]) -> np.ndarray:
    base = rng.uniform(*level)
    t = base + 60.0 * (_smooth_noise(rng, (rows, cols), 6) - 0.5)
    return np.clip(t, 0, 255).astype(np.uint8)


def _warp(canvas: np.ndarray, a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Image (h, w) of `canvas` seen through world->image affine `a`, bilinear,
    edges clamped. Pure numpy so images are the same with or without OpenCV;
    an axis-aligned `a` (scale + translation, all the cameras here) samples
    rows and columns separately."""
    w, h = size
    inv = _invert(a)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    if inv[0, 1] == 0.0 and inv[1, 0] == 0.0:
        wx = (inv[0, 0] * xs + inv[0, 2])[None, :]
        wy = (inv[1, 1] * ys + inv[1, 2])[:, None]
    else:
        wx = inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None] + inv[0, 2]
        wy = inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None] + inv[1, 2]
    ch, cw = canvas.shape
    wx = np.clip(wx, 0, cw - 1.001)
    wy = np.clip(wy, 0, ch - 1.001)
    x0, y0 = wx.astype(np.int64), wy.astype(np.int64)
    fx, fy = (wx - x0).astype(np.float32), (wy - y0).astype(np.float32)
    if x0.shape[0] == 1:  # separable: whole rows, then columns
        r0, r1 = canvas[y0[:, 0]], canvas[y0[:, 0] + 1]
        c00 = np.take(r0, x0[0], axis=1).astype(np.float32)
        c01 = np.take(r0, x0[0] + 1, axis=1).astype(np.float32)
        c10 = np.take(r1, x0[0], axis=1).astype(np.float32)
        c11 = np.take(r1, x0[0] + 1, axis=1).astype(np.float32)
    else:
        c00 = canvas[y0, x0].astype(np.float32)
        c01 = canvas[y0, x0 + 1].astype(np.float32)
        c10 = canvas[y0 + 1, x0].astype(np.float32)
        c11 = canvas[y0 + 1, x0 + 1].astype(np.float32)
    top = c00 + (c01 - c00) * fx
    bot = c10 + (c11 - c10) * fx
    return np.clip(top + (bot - top) * fy + 0.5, 0, 255).astype(np.uint8)


def _paste(img: np.ndarray, box: np.ndarray, tex: np.ndarray) -> None:
    """Draw `tex` stretched over `box` (nearest neighbour), clipped to img."""
    h, w = img.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        return
    c1, r1 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    c2, r2 = min(math.ceil(x2), w), min(math.ceil(y2), h)
    if c2 <= c1 or r2 <= r1:
        return
    th, tw = tex.shape
    cols = ((np.arange(c1, c2) + 0.5 - x1) / (x2 - x1) * tw).astype(np.int64).clip(0, tw - 1)
    rows = ((np.arange(r1, r2) + 0.5 - y1) / (y2 - y1) * th).astype(np.int64).clip(0, th - 1)
    img[r1:r2, c1:c2] = tex[rows[:, None], cols[None, :]]
