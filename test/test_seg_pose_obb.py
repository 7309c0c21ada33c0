"""Segmentation, pose and oriented-box decoding on synthetic outputs with known
answers (no torch, no Ultralytics: runs on the oldest supported stack too).

The comparison with Ultralytics' own predictor on real exports is
test/test_seg_pose_obb_reference.py; here: the mask resize against a
full-frame reimplementation of Ultralytics' ``process_mask_native`` (OpenCV
resizes), the rotated NMS against a plain-Python Fast-NMS, task recognition
and the bad-input paths.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from perception.core.decoders import resolve_layout
from perception.core.detector import Detector, ImageFailure
from perception.core.engines.base import Engine, EngineInfo
from perception.core.errors import ModelLayoutError
from perception.core.masks import bilinear_matrix, crop_boxes, mask_geometry, process_masks
from perception.core.nms import nms_rotated, probiou
from perception.core.preprocess import ImageTransform, Preprocessor, PreprocessSpec


def info(
    outputs: tuple[tuple[int, ...], ...],
    in_shape: tuple[int, int, int, int] = (1, 3, 320, 320),
    metadata: dict[str, str] | None = None,
) -> EngineInfo:
    return EngineInfo(
        name="fake", runtime="fake", device="cpu", precision="fp32", input_name="images",
        input_shape=in_shape, input_dtype="float32",
        output_names=tuple(f"out{i}" for i in range(len(outputs))), output_shapes=outputs,
        metadata=metadata or {},
    )  # fmt: skip


def meta(nc: int, task: str, head: str, **extra: str) -> dict[str, str]:
    names = {i: f"c{i}" for i in range(nc)}
    return {"author": "Ultralytics", "names": str(names), "stride": "32", "task": task,
            "head": head, "imgsz": "[320, 320]", **extra}  # fmt: skip


class FakeEngine(Engine):
    """Returns canned outputs (per call, the same list)."""

    def __init__(self, engine_info: EngineInfo, outputs: list[np.ndarray]) -> None:
        self._info = engine_info
        self.outputs = outputs

    @property
    def info(self) -> EngineInfo:
        return self._info

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.outputs


def letterbox_tf(w: int, h: int, in_h: int, in_w: int) -> ImageTransform:
    spec = PreprocessSpec(resize="letterbox", align="center", rgb=True, scale=1 / 255, stride=32)
    (tf,) = Preprocessor(spec, (in_h, in_w), (in_h, in_w)).plan([(w, h)])
    return tf


# ---------------------------------------------------------------- mask resize
@pytest.mark.parametrize(("n_in", "n_out"), [(80, 300), (80, 250), (64, 64), (96, 1080), (90, 37)])
def test_bilinear_matrix_is_opencv_linear_resize(n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(n_in + n_out)
    x = rng.normal(size=(3, n_in)).astype(np.float32)
    ref = cv2.resize(x, (n_out, 3), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(x @ bilinear_matrix(n_in, n_out).T, ref, atol=1e-4)


def ultralytics_native_masks(
    protos: np.ndarray, coef: np.ndarray, xyxy: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Full-frame reimplementation of Ultralytics' process_mask_native (8.4):
    logits -> bilinear x f -> crop the letterbox content (its formula, from
    the shapes) -> bilinear to the image -> > 0 -> keep x1 <= c < x2 rows alike."""
    c, mh, mw = protos.shape
    h, w = shape
    logits = (coef @ protos.reshape(c, -1)).reshape(-1, mh, mw).astype(np.float32)
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    im1_h, im1_w = mh * f, mw * f
    g = min(im1_h / h, im1_w / w)
    pad_w = (im1_w - max(round(w * g), 1)) / 2
    pad_h = (im1_h - max(round(h * g), 1)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + max(round(h * g), 1), left + max(round(w * g), 1)
    out = np.zeros((len(coef), h, w), bool)
    cols, rows = np.arange(w), np.arange(h)
    for i, m in enumerate(logits):
        if f > 1:
            m = cv2.resize(m, (mw * f, mh * f), interpolation=cv2.INTER_LINEAR)
        m = cv2.resize(m[top:bottom, left:right], (w, h), interpolation=cv2.INTER_LINEAR)
        x1, y1, x2, y2 = xyxy[i]
        inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        out[i] = (m > 0) & inside
    return out


@pytest.mark.parametrize(
    ("w", "h", "in_h", "in_w"),
    [
        (400, 300, 320, 320),  # f = 1
        (250, 360, 320, 320),  # odd padding: f = 4
        (250, 360, 352, 256),  # rect input: f = 2
        (1280, 720, 384, 640),
        (101, 77, 96, 128),
    ],
)
def test_masks_inside_boxes_equal_full_frame_reference(w: int, h: int, in_h: int, in_w: int):
    rng = np.random.default_rng(w * h)
    mh, mw = in_h // 4, in_w // 4
    # smooth random prototypes (real ones are smooth; noise would make every
    # pixel a boundary pixel)
    protos = np.stack(
        [cv2.GaussianBlur(rng.normal(size=(mh, mw)).astype(np.float32), (0, 0), 2) for _ in "x" * 8]
    )
    coef = rng.normal(size=(12, 8)).astype(np.float32)
    xy = rng.uniform(0, [w * 0.8, h * 0.8], (12, 2))
    wh = rng.uniform(3, [w * 0.5, h * 0.5], (12, 2))
    xyxy = np.c_[xy, np.minimum(xy + wh, [w, h])].astype(np.float32)
    tf = letterbox_tf(w, h, in_h, in_w)
    ours = process_masks(protos, coef, xyxy, tf)
    ref = ultralytics_native_masks(protos, coef, xyxy, (h, w))
    assert ours.image_size == (w, h) and len(ours) == 12
    dense = ours.to_dense()
    # float rounding at logits of ~0 may flip a pixel, nothing more
    assert (dense != ref).sum() <= 3
    # computed inside each box only: the crop is the box rounded outwards
    np.testing.assert_array_equal(ours.boxes, crop_boxes(xyxy, (w, h)))
    for i in range(12):
        assert ours.crops[i].shape == (
            ours.boxes[i, 3] - ours.boxes[i, 1],
            ours.boxes[i, 2] - ours.boxes[i, 0],
        )


def test_mask_geometry_falls_back_to_exact_crop_for_other_alignments() -> None:
    # content 2 px from the top (not Ultralytics' centring): its edges are not
    # whole at f = 1, so f = 4, where the crop is exact in input pixels
    tf = ImageTransform((400, 300), (320, 240), (0, 2), (320, 320))
    geo = mask_geometry((80, 80), tf)
    assert geo.factor == 4
    # the image's last row samples prototype rows of its own content only
    assert geo.rows.hi[-1] <= 62
    assert mask_geometry((80, 80), letterbox_tf(400, 300, 320, 320)).factor == 1


def test_process_masks_empty_and_degenerate_boxes() -> None:
    tf = letterbox_tf(400, 300, 320, 320)
    protos = np.ones((4, 80, 80), np.float32)
    empty = process_masks(protos, np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), tf)
    assert len(empty) == 0 and empty.image_size == (400, 300)
    flat = np.array([[10, 10, 10, 50], [0, 0, 400, 300]], np.float32)  # zero width, whole image
    m = process_masks(protos, np.ones((2, 4), np.float32), flat, tf)
    assert m.crops[0].size == 0 and m.crops[1].all() and m.crops[1].shape == (300, 400)


# ---------------------------------------------------------------- rotated NMS
def fast_nms_reference(r: np.ndarray, s: np.ndarray, cls: np.ndarray, thr: float) -> list[int]:
    order = sorted(range(len(s)), key=lambda i: (-float(s[i]), i))
    iou = probiou(r, r)
    keep = []
    for pos, j in enumerate(order):
        if not any(iou[i, j] > thr and cls[i] == cls[j] for i in order[:pos]):
            keep.append(j)
    return keep


def test_probiou_properties() -> None:
    box = np.array([[50, 60, 40, 10, 0.3]])
    assert probiou(box, box)[0, 0] == pytest.approx(1.0, abs=1e-3)
    turned = box.copy()
    turned[0, 4] += math.pi  # same rectangle
    swapped = np.array([[50, 60, 10, 40, 0.3 + math.pi / 2]])  # same rectangle too
    assert probiou(box, turned)[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert probiou(box, swapped)[0, 0] == pytest.approx(1.0, abs=1e-3)
    far = np.array([[500, 600, 40, 10, 0.3]])
    assert probiou(box, far)[0, 0] < 1e-3
    across = np.array([[50, 60, 40, 10, 0.3 + math.pi / 2]])
    assert 0.05 < probiou(box, across)[0, 0] < 0.9
    rng = np.random.default_rng(0)
    a = np.c_[rng.uniform(0, 100, (5, 2)), rng.uniform(5, 30, (5, 2)), rng.uniform(0, 3, 5)]
    np.testing.assert_allclose(probiou(a, a), probiou(a, a).T, atol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 7, 200, 1500])
def test_nms_rotated_is_fast_nms(n: int) -> None:
    rng = np.random.default_rng(n)
    r = np.c_[rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, (n, 2)), rng.uniform(-0.8, 2.4, n)]
    s = rng.random(n).astype(np.float32)
    cls = rng.integers(0, 3, n)
    keep = nms_rotated(r.astype(np.float32), s, cls, 0.5, block=64)
    if n <= 200:
        assert keep.tolist() == fast_nms_reference(r.astype(np.float32), s, cls, 0.5)
    assert (np.diff(s[keep]) <= 0).all()
    agnostic = nms_rotated(r, s, cls, 0.5, agnostic=True)
    assert len(agnostic) <= len(keep)
    assert len(nms_rotated(r, s, cls, 0.5, max_det=3)) == min(3, len(keep))
    per_class = nms_rotated(r, s, cls, {0: 0.5, 1: 0.5, 2: 0.5})
    np.testing.assert_array_equal(per_class, keep)


# ---------------------------------------------------------------- recognition
def test_tasks_recognised() -> None:
    seg = resolve_layout(
        info(((1, 39, 2100), (1, 32, 80, 80)), metadata=meta(3, "segment", "Segment"))
    )
    assert (seg.family, seg.task, seg.num_classes, seg.extra_channels, seg.proto_index) == (
        "yolov8", "segment", 3, 32, 1,
    )  # fmt: skip
    # protos first, no metadata: the 4-axis output makes it a segmentation model
    bare = resolve_layout(info(((1, 32, 80, 80), (1, 116, 2100))))
    assert (bare.task, bare.num_classes, bare.output_index, bare.proto_index) == (
        "segment", 80, 1, 0,
    )  # fmt: skip
    pose = resolve_layout(
        info(((1, 56, 2100),), metadata=meta(1, "pose", "Pose", kpt_shape="[17, 3]"))
    )
    assert (pose.task, pose.kpt_shape, pose.num_classes) == ("pose", (17, 3), 1)
    guessed = resolve_layout(info(((1, 56, 2100),)), "yolo11-pose", class_names=["person"])
    assert guessed.kpt_shape == (17, 3)
    obb = resolve_layout(info(((1, 20, 2100),), metadata=meta(15, "obb", "OBB")))
    assert (obb.task, obb.num_classes, obb.extra_channels) == ("obb", 15, 1)
    assert resolve_layout(info(((1, 20, 2100),)), "yolov8_obb").num_classes == 15
    detect = resolve_layout(info(((1, 84, 2100),), metadata=meta(80, "detect", "Detect")))
    assert (detect.task, detect.extra_channels) == ("detect", 0)


@pytest.mark.parametrize(
    ("engine_info", "family", "message"),
    [
        (info(((1, 55, 2100),), metadata=meta(1, "pose", "Pose")), "auto", "kpt_shape"),
        (info(((1, 56, 2100),)), "yolov8-pose", "kpt_shape"),
        (
            info(
                ((1, 300, 38), (1, 32, 80, 80)),
                metadata=meta(3, "segment", "Segment", end2end="True"),
            ),
            "auto",
            "end2end=True",
        ),
        (info(((1, 39, 2100),), metadata=meta(3, "segment", "Segment")), "auto", "prototype"),
        (info(((1, 8, 2100),), metadata=meta(3, "obb", "OBB")), "yolov8-seg", "metadata says"),
        (info(((1, 300, 7),), (1, 3, 640, 640)), "rtdetr-obb", "family 'rtdetr'"),
        (info(((1, 8, 2100),)), "yolov8-mask", "task suffix"),
        (
            info(((1, 56, 2100),), metadata=meta(1, "pose", "Pose", kpt_shape="[17, 4]")),
            "auto",
            "2 or 3",
        ),
    ],
)
def test_task_layout_errors(engine_info: EngineInfo, family: str, message: str) -> None:
    with pytest.raises(ModelLayoutError, match=message):
        resolve_layout(engine_info, family)


# ---------------------------------------------------------------- detector glue
def anchors(rows: list[list[float]], channels: int, n: int = 2100) -> np.ndarray:
    """[1, channels, n]: the given anchor rows first, zero-score filler after."""
    out = np.zeros((1, channels, n), np.float32)
    out[0, :4] = 20.0
    for i, row in enumerate(rows):
        out[0, : len(row), i] = row
    return out


def test_segmentation_masks_in_original_pixels() -> None:
    """Prototype 0 is +1 inside a disc, -1 outside; an instance with
    coefficients (1, 0) is that disc cut by its box, at the image's resolution."""
    h_img, w_img = 480, 640  # -> 320x240 in a 320x320 tensor, 40 px bars
    yy, xx = np.mgrid[0:80, 0:80] + 0.5  # prototype cell centres
    disc = (15 - np.hypot(xx - 40, yy - 40)).astype(np.float32)  # signed distance, 15 cells
    protos = np.stack([disc, np.ones((80, 80), np.float32)])[None]
    out = anchors(
        [
            [160, 160, 160, 120, 0.9, 0.0, 1.0, 0.0],  # disc, box larger than the disc
            [160, 160, 60, 60, 0.0, 0.8, 1.0, 0.0],  # disc, box cutting it
            [60, 60, 30, 30, 0.7, 0.0, 0.0, -1.0],  # negative everywhere: dropped
        ],
        4 + 2 + 2,
    )
    eng = FakeEngine(
        info(((1, 8, 2100), (1, 2, 80, 80)), metadata=meta(2, "segment", "Segment")), [out, protos]
    )
    det = Detector(eng, conf=0.25, iou=0.5)
    assert det.task == "segment"
    (d,) = det.detect([np.zeros((h_img, w_img, 3), np.uint8)], stamps_ns=[5], frame_ids=["cam"])
    assert len(d) == 2 and d.masks is not None and d.masks.image_size == (w_img, h_img)
    assert d.class_ids.tolist() == [0, 1]
    # disc: centre (160, 160) in the tensor -> (320, 240) in the image, radius 60 -> 120 px
    yy, xx = np.mgrid[0:h_img, 0:w_img]
    expect = (xx + 0.5 - 320) ** 2 + (yy + 0.5 - 240) ** 2 < 120**2
    full0 = d.masks.full(0)
    assert (full0 != expect).mean() < 0.001
    cut = d.masks.full(1)
    x1, y1, x2, _ = d.xyxy[1]
    assert np.array_equal(cut[:, : int(np.ceil(x1))], np.zeros_like(cut[:, : int(np.ceil(x1))]))
    assert not cut[:, int(np.ceil(x2)) :].any() and not cut[: int(np.ceil(y1))].any()
    assert cut.sum() < full0.sum()
    assert d.masks.boxes[1].tolist() == [int(np.ceil(v)) for v in d.xyxy[1]]
    ids = d.masks.to_id_image()  # instance 1 lies inside instance 0, which wins
    assert ids.dtype == np.uint16 and set(np.unique(ids).tolist()) == {0, 1}
    flipped = d[::-1]
    assert flipped.masks is not None
    assert set(np.unique(flipped.masks.to_id_image([7, 9])).tolist()) == {0, 7, 9}
    # nothing above the threshold: an empty but present masks field
    (none,) = Detector(eng, conf=0.95).detect([np.zeros((h_img, w_img, 3), np.uint8)])
    assert len(none) == 0 and none.masks is not None and none.masks.image_size == (w_img, h_img)


def test_segmentation_failures_are_per_image_or_per_batch() -> None:
    rows = [[160, 160, 60, 60, 0.9, 1.0, 0.0]]
    good = anchors(rows, 4 + 1 + 2)
    bad = good.copy()
    bad[0, 5, 0] = np.nan  # a mask coefficient of a detection
    protos = np.ones((2, 2, 80, 80), np.float32)
    md = meta(1, "segment", "Segment")
    eng = FakeEngine(
        info(((-1, 7, 2100), (-1, 2, 80, 80)), (-1, 3, 320, 320), md),
        [np.concatenate([good, bad]), protos],
    )
    res = Detector(eng, conf=0.25).detect_each([np.zeros((320, 320, 3), np.uint8)] * 2)
    assert not isinstance(res[0], ImageFailure) and len(res[0]) == 1
    assert isinstance(res[1], ImageFailure) and res[1].kind == "nonfinite_output"
    eng.outputs = [np.concatenate([good, good]), np.ones((2, 2, 40, 40), np.float32)]
    with pytest.raises(ModelLayoutError, match="prototypes"):
        Detector(eng, conf=0.25).detect_each([np.zeros((320, 320, 3), np.uint8)] * 2)


@pytest.mark.parametrize("dims", [3, 2])
def test_pose_keypoints_in_original_pixels(dims: int) -> None:
    # 640x480 image -> scale 0.5, 40 px bar at the top of the 320x320 tensor
    kp = [100, 140, 0.9, 300, 10, 0.2] if dims == 3 else [100, 140, 300, 10]
    out = anchors([[160, 160, 40, 40, 0.9, *kp]], 4 + 1 + 2 * dims)
    md = meta(1, "pose", "Pose", kpt_shape=f"[2, {dims}]")
    det = Detector(FakeEngine(info(((1, 5 + 2 * dims, 2100),), metadata=md), [out]), conf=0.25)
    (d,) = det.detect([np.zeros((480, 640, 3), np.uint8)])
    assert det.task == "pose" and d.keypoints is not None and d.keypoints.shape == (1, 2, 3)
    vis = (0.9, 0.2) if dims == 3 else (1.0, 1.0)
    # (100, 140) -> (200, 200); (300, 10) -> (600, -60) clipped to y = 0
    np.testing.assert_allclose(d.keypoints[0], [[200, 200, vis[0]], [600, 0, vis[1]]], atol=1e-5)
    np.testing.assert_allclose(d.xyxy[0], [280, 200, 360, 280])
    (none,) = Detector(det.engine, conf=0.95).detect([np.zeros((480, 640, 3), np.uint8)])
    assert none.keypoints is not None and none.keypoints.shape == (0, 2, 3)


def test_obb_rotated_nms_and_mapping() -> None:
    a = math.pi / 6
    out = anchors(
        [
            [160, 160, 100, 20, 0.9, 0.0, a],
            [162, 160, 100, 20, 0.8, 0.0, a],  # same class, overlapping: suppressed
            [160, 160, 100, 20, 0.0, 0.7, a + math.pi / 2],  # other class: kept
        ],
        4 + 2 + 1,
    )
    det = Detector(
        FakeEngine(info(((1, 7, 2100),), metadata=meta(2, "obb", "OBB")), [out]), conf=0.25
    )
    (d,) = det.detect([np.zeros((480, 640, 3), np.uint8)])
    assert det.task == "obb" and d.obb is not None
    assert d.class_ids.tolist() == [0, 1]
    # tensor (160, 160) -> image (320, 240); sizes x2
    np.testing.assert_allclose(d.obb[0], [320, 240, 200, 40, a], atol=1e-4)
    corners = cv2.boxPoints(((320, 240), (200, 40), math.degrees(a)))
    np.testing.assert_allclose(d.xyxy[0], [*corners.min(0), *corners.max(0)], atol=1e-3)
    (agn,) = Detector(det.engine, conf=0.25, agnostic=True).detect(
        [np.zeros((480, 640, 3), np.uint8)]
    )
    assert len(agn) == 2  # the crossing box overlaps less than 0.45
    (none,) = Detector(det.engine, conf=0.95).detect([np.zeros((480, 640, 3), np.uint8)])
    assert none.obb is not None and none.obb.shape == (0, 5)


def test_other_four_axis_outputs_do_not_make_a_segmentation_model() -> None:
    # a YOLOX-like output with an extra feature map: still a detector
    lay = resolve_layout(info(((1, 3549, 85), (1, 64, 52, 52)), (1, 3, 416, 416)))
    assert (lay.family, lay.task, lay.num_classes) == ("yolox", "detect", 80)
    forced = resolve_layout(info(((1, 3549, 85), (1, 32, 104, 104)), (1, 3, 416, 416)), "yolox")
    assert forced.task == "detect"
