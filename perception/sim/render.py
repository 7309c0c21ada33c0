"""Per-pixel ray-cast rendering of a box world: colour, depth and instance ids.

Rays come from `CameraModel.normalized_rays` (computed once per camera) and
are intersected with `synthetic.cast_rays`, the same caster the fusion tests
use: the ground plane for every pixel, then each box only for the pixels inside
its projected rectangle (that crop is what keeps three 640x360 cameras well
under a second on two cores). Casting a box alone over its rectangle also gives
its unoccluded silhouette, hence the exact visibility fraction. Colour is an
albedo from face coordinates (windows, lights, wheels, lane markings), shaded
by the face normal against one sun plus ambient light, with distance fog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.core.camera import CameraModel
from perception.core.fusion.synthetic import SceneBox, cast_rays

__all__ = ["BoxStats", "CameraRays", "Lighting", "RenderOutput", "render_camera"]

ID_GROUND = -1
ID_SKY = -2
ID_SCENERY = -3

# box styles (what texture a box gets)
STYLE_CAR, STYLE_PEDESTRIAN, STYLE_CYCLIST, STYLE_BUILDING = 0, 1, 2, 3

# road layout (metres, world y; the road runs along world x)
LANE_WIDTH = 3.5
ROAD_EDGE = 7.0  # outer lane edge line
CURB = 8.0  # bike strip between ROAD_EDGE and CURB
SIDEWALK = 11.0


@dataclass(frozen=True)
class Lighting:
    """Global lighting of a scenario (colours RGB in 0..1)."""

    sun_dir: tuple[float, float, float]  # unit vector towards the sun (world)
    sun: float  # direct intensity
    ambient: float
    tint: tuple[float, float, float]  # colour of the light
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog_m: float  # distance at which fog reaches 63 %


@dataclass(frozen=True, eq=False)
class CameraRays:
    """Precomputed rays of one camera: optical-frame directions with z = 1
    (the ray parameter is then the depth along the optical axis)."""

    model: CameraModel
    dirs_cam: np.ndarray  # (H*W, 3)
    norms: np.ndarray  # (H*W,) lengths of dirs_cam

    @classmethod
    def create(cls, model: CameraModel) -> CameraRays:
        h, w = model.height, model.width
        vv, uu = np.mgrid[0:h, 0:w]
        uv = np.stack((uu.ravel(), vv.ravel()), axis=1).astype(np.float64)
        xy = model.normalized_rays(uv)
        d = np.concatenate((xy, np.ones((xy.shape[0], 1))), axis=1)
        return cls(model, d, np.linalg.norm(d, axis=1))


@dataclass(frozen=True)
class BoxStats:
    """What one box covers in one camera (pixels in the image only).

    `projected_pixels` is its silhouette if nothing occluded it; `visible` is
    what the z-buffer kept; boxes are pixel extents (x1, y1, x2, y2) with the
    OpenCV convention of `synthetic.detections_from_render` (pixel centres at
    integers, extents +-0.5)."""

    projected_pixels: int
    visible_pixels: int
    projected_xyxy: tuple[float, float, float, float]
    visible_xyxy: tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class RenderOutput:
    image_bgr: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres along the optical axis, 0 = nothing
    ids: np.ndarray  # (H, W) int32: box key, ID_GROUND or ID_SKY
    stats: dict[int, BoxStats]  # box index -> stats, boxes with projected pixels only


def _hash01(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Deterministic value noise in [0, 1) on an integer lattice."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(np.float32) / 65536.0


def _rect(
    model: CameraModel, t_cam_from_world: np.ndarray, box: SceneBox
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (u0, u1, v0, v1), inclusive, that holds the box's
    projection; None when it is entirely behind the camera or off-image."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    hx, hy, hz = (0.5 * v for v in box.size)
    sx = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * hx
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * hy
    sz = np.array([1, -1, 1, -1, 1, -1, 1, -1]) * hz
    pts = np.stack(
        (box.center[0] + c * sx - s * sy, box.center[1] + s * sx + c * sy, box.center[2] + sz), 1
    )
    pc = pts @ t_cam_from_world[:3, :3].T + t_cam_from_world[:3, 3]
    z = pc[:, 2]
    w, h = model.width, model.height
    if (z <= 0.05).all():
        return None
    if (z <= 0.05).any():  # straddles the image plane: take the whole image
        return (0, w - 1, 0, h - 1)
    uv = model.project(pc)
    u0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
    u1 = min(int(np.ceil(uv[:, 0].max())) + 1, w - 1)
    v0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
    v1 = min(int(np.ceil(uv[:, 1].max())) + 1, h - 1)
    if u0 > u1 or v0 > v1:
        return None
    return (u0, u1, v0, v1)


def _extent(idx: np.ndarray, w: int) -> tuple[float, float, float, float]:
    u = idx % w
    v = idx // w
    return (
        float(u.min()) - 0.5,
        float(v.min()) - 0.5,
        float(u.max()) + 0.5,
        float(v.max()) + 0.5,
    )


def _in_rect(
    u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float
) -> np.ndarray:
    inside: np.ndarray = (u > u0) & (u < u1) & (v > v0) & (v < v1)
    return inside


def _box_albedo(
    style: int,
    colors: np.ndarray,
    face: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    mu: np.ndarray,
    mv: np.ndarray,
    len_u: np.ndarray,
) -> np.ndarray:
    """(N, 3) albedo of box pixels. face 0..5 = +x -x +y -y +z -z (box frame,
    +x forward); (u, v) in [0, 1] across the face (v up on vertical faces);
    (mu, mv) the same in metres, len_u the face width. colors: (3, 3) palette of the box."""
    base, second, third = colors[0], colors[1], colors[2]
    out = np.empty((face.size, 3), np.float32)
    out[:] = base
    side = face >= 2
    side &= face <= 3
    front = face == 0
    back = face == 1
    top = face == 4
    glass = np.array([0.12, 0.15, 0.2], np.float32)
    dark = np.array([0.04, 0.04, 0.045], np.float32)
    if style == STYLE_CAR:
        win = side & (v > 0.58) & (v < 0.92) & (u > 0.14) & (u < 0.86) & (np.abs(u - 0.5) > 0.03)
        out[win] = glass
        out[(front | back) & _in_rect(u, v, 0.08, 0.92, 0.6, 0.93)] = glass
        out[side & (v < 0.33) & ((np.abs(u - 0.2) < 0.09) | (np.abs(u - 0.8) < 0.09))] = dark
        out[(face <= 3) & (v < 0.1)] = dark * 3
        lights = (v > 0.38) & (v < 0.5) & ((u < 0.2) | (u > 0.8))
        out[front & lights] = (1.0, 0.97, 0.85)
        out[back & lights] = (0.75, 0.05, 0.04)
        out[front & _in_rect(u, v, 0.33, 0.67, 0.22, 0.42)] = dark * 2
        out[top] = base * 0.85
    elif style == STYLE_PEDESTRIAN:
        out[v > 0.86] = third  # head / hair
        out[(v <= 0.86) & (v > 0.45)] = base  # shirt
        out[v <= 0.45] = second  # trousers
        out[(face <= 1) & (v < 0.42) & (np.abs(u - 0.5) < 0.06)] = second * 0.5
        out[top] = third
    elif style == STYLE_CYCLIST:
        out[v > 0.88] = third  # helmet
        out[(v <= 0.88) & (v > 0.45)] = base
        bike = v <= 0.45
        out[bike] = second
        # wheels on the side faces: rings in metres (box ~1.8 m long, 1.7 m high)
        for cu in (0.22, 0.78):
            du = (u - cu) * len_u  # metres from the wheel centre
            r = np.hypot(du, mv - 0.35)
            out[side & (r < 0.35) & (r > 0.27)] = dark
            out[side & (r <= 0.27) & bike] = second * 0.6
        out[top] = third
    else:  # building: facade with a window grid
        fu = np.mod(mu, 3.0)
        fv = np.mod(mv, 3.2)
        window = (face <= 3) & (fu > 0.8) & (fu < 2.2) & (fv > 1.0) & (fv < 2.4) & (mv > 1.0)
        out[window] = second
        out[top] = base * 0.7
    return out


def _ground_albedo(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) albedo of the ground at world (x, y): asphalt with lane markings,
    bike strip, curb, sidewalk tiles, grass."""
    ay = np.abs(y)
    n = _hash01(np.floor(x * 4.0), np.floor(y * 4.0))
    out = np.empty((x.size, 3), np.float32)
    asphalt = (0.25 + 0.035 * n)[:, None] * np.array([1.0, 1.0, 1.02], np.float32)
    out[:] = asphalt
    white = np.array([0.85, 0.85, 0.82], np.float32)
    dash = np.mod(x, 9.0) < 3.0
    out[(np.abs(ay - LANE_WIDTH) < 0.075) & dash] = white
    out[np.abs(ay - ROAD_EDGE) < 0.1] = white
    out[(ay > 0.06) & (ay < 0.18)] = (0.8, 0.65, 0.1)  # double yellow centre line
    strip = (ay >= ROAD_EDGE + 0.1) & (ay < CURB)
    out[strip] = asphalt[strip] * np.array([1.15, 0.85, 0.85], np.float32)
    curb = (ay >= CURB) & (ay < CURB + 0.25)
    out[curb] = (0.7, 0.7, 0.68)
    walk = (ay >= CURB + 0.25) & (ay < SIDEWALK)
    tile = (np.mod(x, 1.5) < 0.05) | (np.mod(ay, 1.5) < 0.05)
    out[walk] = (0.55 + 0.08 * n[walk])[:, None] * np.array([1.0, 0.97, 0.92], np.float32)
    out[walk & tile] = (0.35, 0.34, 0.33)
    grass = ay >= SIDEWALK
    g = _hash01(np.floor(x * 2.0), np.floor(y * 2.0))[grass]
    out[grass] = np.stack((0.15 + 0.08 * g, 0.35 + 0.12 * g, 0.1 + 0.05 * g), 1)
    return out


def render_camera(
    rays: CameraRays,
    T_world_from_cam: np.ndarray,
    boxes: Sequence[SceneBox],
    keys: Sequence[int],
    styles: Sequence[int],
    palettes: Sequence[np.ndarray],
    lighting: Lighting,
    *,
    max_depth: float = 200.0,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> RenderOutput:
    """Render one camera. `keys[k]` is written into `ids` for box k (actor id
    or ID_SCENERY); the ground plane is z = 0 of the world. Silhouettes
    (projected pixels) are exact for boxes with a key >= 0 only; scenery is
    culled behind nearer surfaces."""
    model = rays.model
    h, w = model.height, model.width
    t_wc = np.asarray(T_world_from_cam, np.float64)
    t_cw = np.linalg.inv(t_wc)
    origin = t_wc[:3, 3]
    dirs = rays.dirs_cam @ t_wc[:3, :3].T
    best, hit = cast_rays(origin, dirs, (), 0.0)  # ground or sky
    key_img = np.where(hit == -1, ID_GROUND, ID_SKY).astype(np.int32)
    owner = np.full(h * w, -1, np.int64)  # box index of each pixel
    need_silhouette = [int(kk) >= 0 for kk in keys]
    stats: dict[int, BoxStats] = {}
    rect_idx: dict[int, np.ndarray] = {}
    grid_u = np.arange(w)
    # near to far: scenery behind what is already drawn is skipped per pixel
    # (a box cannot be hit before its bounding sphere); actors are cast over
    # their whole rectangle, occluded or not, for the silhouette
    dist = [float(np.linalg.norm(np.asarray(b.center) - origin)) for b in boxes]
    for k in sorted(range(len(boxes)), key=dist.__getitem__):
        box = boxes[k]
        r = _rect(model, t_cw, box)
        if r is None:
            continue
        u0, u1, v0, v1 = r
        idx = (np.arange(v0, v1 + 1)[:, None] * w + grid_u[None, u0 : u1 + 1]).ravel()
        if not need_silhouette[k]:
            reach = dist[k] - 0.5 * float(np.linalg.norm(box.size))
            if reach > 0:
                idx = idx[best[idx] * rays.norms[idx] > reach]
                if idx.size == 0:
                    continue
        tb, _ = cast_rays(origin, dirs[idx], (box,), None)
        sil = np.isfinite(tb)
        if not sil.any():
            continue
        idx, tb = idx[sil], tb[sil]
        upd = tb < best[idx]
        best[idx[upd]] = tb[upd]
        owner[idx[upd]] = k
        rect_idx[k] = idx
        stats[k] = BoxStats(int(idx.size), 0, _extent(idx, w), (0.0, 0.0, 0.0, 0.0))

    # albedo and normals
    albedo = np.zeros((h * w, 3), np.float32)
    shade = np.zeros(h * w, np.float32)
    sun = np.asarray(lighting.sun_dir, np.float64)
    amb, direct = lighting.ambient, lighting.sun
    ground = (owner < 0) & (key_img == ID_GROUND)
    gi = np.nonzero(ground)[0]
    p = origin + dirs[gi] * best[gi, None]
    albedo[gi] = _ground_albedo(p[:, 0], p[:, 1])
    shade[gi] = amb + direct * max(float(sun[2]), 0.0)
    for k, idx in rect_idx.items():
        sel = idx[owner[idx] == k]
        if sel.size == 0:
            continue
        key_img[sel] = int(keys[k])
        st = stats[k]
        stats[k] = BoxStats(st.projected_pixels, int(sel.size), st.projected_xyxy, _extent(sel, w))
        box = boxes[k]
        c, s = np.cos(box.yaw), np.sin(box.yaw)
        rel = origin + dirs[sel] * best[sel, None] - np.asarray(box.center)
        lx = c * rel[:, 0] + s * rel[:, 1]
        ly = -s * rel[:, 0] + c * rel[:, 1]
        lz = rel[:, 2]
        half = 0.5 * np.asarray(box.size)
        loc = np.stack((lx, ly, lz), 1)
        ax = np.argmax(np.abs(loc) / half, axis=1)
        sign = np.sign(loc[np.arange(sel.size), ax])
        face = (2 * ax + (sign < 0)).astype(np.int64)
        # face coordinates in metres (mu, mv) and normalised (u, v)
        along_u = np.where(ax == 0, 1, 0)  # x faces: u along y; others: u along x
        along_v = np.where(ax == 2, 1, 2)  # top/bottom: v along y; sides: v along z
        rows = np.arange(sel.size)
        mu = loc[rows, along_u] + half[along_u]
        mv = loc[rows, along_v] + half[along_v]
        u = mu / (2 * half[along_u])
        v = mv / (2 * half[along_v])
        len_u = 2 * half[along_u]
        albedo[sel] = _box_albedo(styles[k], palettes[k], face, u, v, mu, mv, len_u)
        n_local = np.zeros((sel.size, 3))
        n_local[rows, ax] = sign
        nx = c * n_local[:, 0] - s * n_local[:, 1]
        ny = s * n_local[:, 0] + c * n_local[:, 1]
        ndl = nx * sun[0] + ny * sun[1] + n_local[:, 2] * sun[2]
        shade[sel] = amb + direct * np.maximum(ndl, 0.0)

    # colour: shaded albedo, fog towards the horizon colour, sky gradient
    tint = np.asarray(lighting.tint, np.float32)
    rgb = albedo * shade[:, None] * tint
    horizon = np.asarray(lighting.sky_horizon, np.float32)
    sky = key_img == ID_SKY
    with np.errstate(invalid="ignore"):  # sky: inf distance, fog 1, overwritten below
        fog = (1.0 - np.exp(-best * rays.norms / lighting.fog_m)).astype(np.float32)[:, None]
    rgb *= 1.0 - fog
    rgb += horizon * fog
    si = np.nonzero(sky)[0]
    if si.size:
        d = dirs[si]
        elev = d[:, 2] / np.linalg.norm(d, axis=1)
        a = np.clip(elev * 2.5, 0.0, 1.0).astype(np.float32)[:, None]
        rgb[si] = horizon * (1.0 - a) + np.asarray(lighting.sky_top, np.float32) * a
    img = rgb * 255.0
    if noise_std > 0:
        gen = rng if rng is not None else np.random.default_rng(0)
        img += gen.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_std)
    bgr = np.clip(img, 0, 255).astype(np.uint8).reshape(h, w, 3)[:, :, ::-1]
    depth = np.where(best <= max_depth, best, 0.0).astype(np.float32).reshape(h, w)
    return RenderOutput(np.ascontiguousarray(bgr), depth, key_img.reshape(h, w), stats)
