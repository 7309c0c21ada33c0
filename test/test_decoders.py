"""Family recognition and decoding on synthetic outputs with known answers,
plus the bad-input paths (unknown layout, class-count mismatch, NaN/inf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.core.decoders import (
    COCO80_NAMES,
    Decoder,
    load_labels,
    parse_names,
    resolve_layout,
    yolox_grid,
    yolox_is_decoded,
)
from perception.core.detector import Detector
from perception.core.engines.base import Engine, EngineInfo
from perception.core.errors import DecodeError, InputImageError, ModelLayoutError


def info(
    out_shape: tuple[int, ...],
    in_shape: tuple[int, int, int, int] = (1, 3, 320, 320),
    metadata: dict[str, str] | None = None,
    outputs: tuple[tuple[int, ...], ...] | None = None,
) -> EngineInfo:
    shapes = outputs if outputs is not None else (out_shape,)
    return EngineInfo(
        name="fake", runtime="fake", device="cpu", precision="fp32", input_name="images",
        input_shape=in_shape, input_dtype="float32",
        output_names=tuple(f"out{i}" for i in range(len(shapes))), output_shapes=shapes,
        metadata=metadata or {},
    )  # fmt: skip


def ultra_meta(nc: int, head: str = "Detect", **extra: str) -> dict[str, str]:
    names = {i: f"c{i}" for i in range(nc)}
    return {"author": "Ultralytics", "names": str(names), "stride": "32", "task": "detect",
            "head": head, "imgsz": "[320, 320]", **extra}  # fmt: skip


class FakeEngine(Engine):
    """Returns canned outputs: lets a test drive the whole Detector."""

    def __init__(self, engine_info: EngineInfo, outputs: list[np.ndarray]) -> None:
        self._info = engine_info
        self.outputs = outputs
        self.seen: list[tuple[int, ...]] = []

    @property
    def info(self) -> EngineInfo:
        return self._info

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        self.seen.append(batch.shape)
        return self.outputs


# ---------------------------------------------------------------- recognition
@pytest.mark.parametrize(
    ("engine_info", "family", "nc"),
    [
        (info((1, 84, 2100), metadata=ultra_meta(80)), "yolov8", 80),
        (info((-1, -1, -1), (-1, 3, -1, -1), ultra_meta(20)), "yolov8", 20),
        (info((1, 84, 8400), (1, 3, 640, 640)), "yolov8", 80),  # no metadata: channels-first
        (info((1, 3549, 85), (1, 3, 416, 416)), "yolox", 80),  # rows == anchors
        (info((1, -1, 85), (1, 3, -1, -1)), "yolox", 80),
        (info((1, 300, 84), (1, 3, 640, 640)), "rtdetr", 80),  # 300 queries, not anchors
        (info((1, 300, 6), metadata=ultra_meta(80, "RTDETRDecoder")), "rtdetr", 80),
        (info((1, 300, 6), metadata=ultra_meta(80, "Detect", end2end="True")), "yolo_e2e", 80),
    ],
)
def test_family_recognised(engine_info: EngineInfo, family: str, nc: int) -> None:
    layout = resolve_layout(engine_info)
    assert (layout.family, layout.num_classes, len(layout.class_names)) == (family, nc, nc)


def test_rtdetr_variants() -> None:
    assert (
        resolve_layout(info((1, 300, 6), metadata=ultra_meta(80, "RTDETRDecoder"))).variant
        == "topk"
    )
    assert (
        resolve_layout(info((1, 300, 84), metadata=ultra_meta(80, "RTDETRDecoder"))).variant
        == "scores"
    )


def test_family_override_and_unknown_layouts() -> None:
    # square-ish ambiguous output without metadata: refuse, name the fix
    with pytest.raises(ModelLayoutError, match="unknown output layout"):
        resolve_layout(info((1, -1, -1), (1, 3, -1, -1)))
    with pytest.raises(ModelLayoutError, match="unknown output layout"):
        resolve_layout(info((1, 1000, 85), (1, 3, 640, 640)))  # neither anchors nor 300
    assert resolve_layout(info((1, 1000, 85), (1, 3, 640, 640)), "rtdetr").num_classes == 81
    with pytest.raises(ModelLayoutError, match="expected 3549 rows"):
        resolve_layout(info((1, 3000, 85), (1, 3, 416, 416)), "yolox")
    with pytest.raises(ModelLayoutError, match="family"):
        resolve_layout(info((1, 84, 8400)), "detr9000")
    with pytest.raises(ModelLayoutError, match="3-axis"):
        resolve_layout(info((1, 84), outputs=((1, 84), (1, 2))))
    with pytest.raises(ModelLayoutError, match="3 colour channels"):
        resolve_layout(info((1, 84, 2100), (1, 1, 320, 320)))
    with pytest.raises(ModelLayoutError, match="task: expected one of detect, segment"):
        resolve_layout(info((1, 116, 2100), metadata={**ultra_meta(80), "task": "classify"}))
    with pytest.raises(ModelLayoutError, match="prototype output"):  # seg without protos
        resolve_layout(info((1, 116, 2100), metadata={**ultra_meta(80), "task": "segment"}))


def test_class_names_sources_and_mismatch(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n\nc\n")
    assert load_labels(labels) == ("a", "b", "c")
    assert load_labels("coco") == COCO80_NAMES and len(COCO80_NAMES) == 80
    lay = resolve_layout(info((1, 7, 2100)), labels_file=labels)
    assert lay.class_names == ("a", "b", "c")
    with pytest.raises(ModelLayoutError, match="outputs 80 classes, got 3 names"):
        resolve_layout(info((1, 84, 2100)), labels_file=labels)
    with pytest.raises(ModelLayoutError, match="outputs 20 classes, got 80 names"):
        resolve_layout(info((1, 24, 2100), metadata=ultra_meta(80)))
    with pytest.raises(ModelLayoutError, match="cannot read"):
        load_labels(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ModelLayoutError, match="none"):
        load_labels(tmp_path / "empty.txt")
    # no names anywhere: numbered, with the count taken from the output
    assert resolve_layout(info((1, 3549, 8), (1, 3, 416, 416))).class_names == ("0", "1", "2")
    assert parse_names("['x', 'y']") == ("x", "y")
    with pytest.raises(ModelLayoutError, match="contiguous"):
        parse_names("{0: 'a', 2: 'b'}")
    with pytest.raises(ModelLayoutError, match="literal"):
        parse_names("{0: 'a'")


# ---------------------------------------------------------------- decoding
def yolov8_output(boxes_cxcywh: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """[1, 4+nc, n] with the given rows first and low-score filler after."""
    k, nc = scores.shape
    out = np.zeros((1, 4 + nc, n), np.float32)
    out[0, :4, :] = 50.0
    out[0, 4:, :] = 1e-3
    out[0, :4, :k] = boxes_cxcywh.T
    out[0, 4:, :k] = scores.T
    return out


def test_yolov8_decode_threshold_and_classes() -> None:
    boxes = np.array([[100, 100, 20, 40], [200, 50, 10, 10], [10, 10, 4, 4]], np.float32)
    scores = np.array([[0.9, 0.1], [0.2, 0.6], [0.25, 0.1]], np.float32)
    lay = resolve_layout(info((1, 6, 2100)))
    (c,) = Decoder(lay, conf=0.25)(list([yolov8_output(boxes, scores, 2100)]), (320, 320))
    assert len(c) == 2  # 0.25 is not > 0.25
    np.testing.assert_allclose(c.xyxy, [[90, 80, 110, 120], [195, 45, 205, 55]])
    np.testing.assert_array_equal(c.class_ids, [0, 1])
    # per-class thresholds: class 1 needs > 0.7 now
    (c2,) = Decoder(lay, conf=0.25, class_conf={1: 0.7})(
        [yolov8_output(boxes, scores, 2100)], (320, 320)
    )
    np.testing.assert_array_equal(c2.class_ids, [0])
    # multi-label: every class above threshold
    (c3,) = Decoder(lay, conf=0.15, multi_label=True)(
        [yolov8_output(boxes, scores, 2100)], (320, 320)
    )
    got = sorted((int(c), round(float(s), 2)) for c, s in zip(c3.class_ids, c3.scores, strict=True))
    assert got == [(0, 0.2), (0, 0.25), (0, 0.9), (1, 0.6)]


def _yolox_raw(h: int, w: int, nc: int, rng: np.random.Generator) -> np.ndarray:
    grid, _ = yolox_grid(h, w)
    n = grid.shape[0]
    out = np.empty((1, n, 5 + nc), np.float32)
    out[0, :, :2] = rng.uniform(-0.5, 1.5, (n, 2))
    out[0, :, 2:4] = rng.uniform(-1, 2, (n, 2))
    out[0, :, 4] = rng.uniform(0, 1, n) ** 4
    out[0, :, 5:] = rng.uniform(0, 1, (n, nc))
    return out


def _decode_yolox_reference(raw: np.ndarray, h: int, w: int) -> np.ndarray:
    grid, stride = yolox_grid(h, w)
    dec = raw.copy()
    dec[0, :, :2] = (raw[0, :, :2] + grid) * stride[:, None]
    dec[0, :, 2:4] = np.exp(raw[0, :, 2:4]) * stride[:, None]
    return dec


@pytest.mark.parametrize(("h", "w"), [(416, 416), (384, 640)])
def test_yolox_raw_and_decoded_agree(h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    raw = _yolox_raw(h, w, 3, rng)
    dec = _decode_yolox_reference(raw, h, w)
    assert not yolox_is_decoded(raw, (h, w))
    assert yolox_is_decoded(dec, (h, w))
    lay = resolve_layout(info((1, -1, 8), (1, 3, -1, -1)))
    a = Decoder(lay, conf=0.3)
    b = Decoder(lay, conf=0.3)
    (ca,), (cb,) = a([raw], (h, w)), b([dec], (h, w))
    assert a.layout.variant == "raw" and b.layout.variant == "decoded"
    assert len(ca) > 10
    np.testing.assert_allclose(ca.xyxy, cb.xyxy, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(ca.class_ids, cb.class_ids)
    np.testing.assert_allclose(ca.scores, cb.scores)
    # score = obj * best class prob
    best = raw[0, :, 4:5] * raw[0, :, 5:]
    assert len(ca) == int((best.max(1) > 0.3).sum())
    # forcing the variant skips detection
    forced = Decoder(lay, conf=0.3, yolox_decoded=True)
    assert forced.layout.variant == "decoded"


def test_yolox_logit_scores_get_sigmoid() -> None:
    rng = np.random.default_rng(1)
    raw = _yolox_raw(416, 416, 2, rng)
    logits = raw.copy()
    p = np.clip(raw[0, :, 4:], 1e-6, 1 - 1e-6)
    logits[0, :, 4:] = np.log(p / (1 - p))
    lay = resolve_layout(info((1, 3549, 7), (1, 3, 416, 416)))
    (cp,) = Decoder(lay, conf=0.2)([raw], (416, 416))
    dec = Decoder(lay, conf=0.2)
    (cl,) = dec([logits], (416, 416))
    assert dec.layout.scores_are_probabilities is False
    np.testing.assert_allclose(cl.scores, cp.scores, atol=1e-5)


def test_rtdetr_scores_and_topk() -> None:
    q = np.zeros((1, 300, 4 + 3), np.float32)
    q[0, :, :4] = [0.5, 0.5, 0.1, 0.2]
    q[0, 0, :4] = [0.25, 0.5, 0.5, 0.5]
    q[0, 0, 4:] = [0.1, 0.8, 0.3]
    q[0, 1, 4:] = [0.6, 0.1, 0.1]
    lay = resolve_layout(info((1, 300, 7), (1, 3, 640, 640)))
    assert lay.family == "rtdetr" and lay.variant == "scores"
    (c,) = Decoder(lay, conf=0.5)([q], (640, 320))
    np.testing.assert_allclose(c.xyxy[0], [0, 160, 160, 480])  # normalised * (W=320, H=640)
    np.testing.assert_array_equal(c.class_ids, [1, 0])
    topk = np.zeros((1, 300, 6), np.float32)
    topk[0, :2] = [[0.25, 0.5, 0.5, 0.5, 0.8, 1], [0.5, 0.5, 0.1, 0.1, 0.6, 0]]
    lay6 = resolve_layout(info((1, 300, 6), metadata=ultra_meta(3, "RTDETRDecoder")))
    (c6,) = Decoder(lay6, conf=0.5)([topk], (640, 320))
    np.testing.assert_allclose(c6.xyxy[0], [0, 160, 160, 480])
    np.testing.assert_array_equal(c6.class_ids, [1, 0])
    topk[0, 0, 5] = 7
    with pytest.raises(DecodeError, match="class column"):
        Decoder(lay6, conf=0.5)([topk], (640, 320))


def test_e2e_decode() -> None:
    out = np.zeros((1, 300, 6), np.float32)
    out[0, 0] = [10, 20, 30, 40, 0.9, 2]
    lay = resolve_layout(info((1, 300, 6), metadata=ultra_meta(3, end2end="True")))
    (c,) = Decoder(lay, conf=0.25)([out], (320, 320))
    np.testing.assert_allclose(c.xyxy, [[10, 20, 30, 40]])
    assert c.class_ids.tolist() == [2]


# ---------------------------------------------------------------- bad outputs
def _scores() -> np.ndarray:
    return np.array([[0.9, 0.1], [0.2, 0.6]], np.float32)


@pytest.mark.parametrize("where", ["score_nan", "score_inf", "box_nan", "box_inf"])
def test_nonfinite_raise_or_drop(where: str) -> None:
    boxes = np.array([[100, 100, 20, 40], [200, 50, 10, 10]], np.float32)
    out = yolov8_output(boxes, _scores(), 2100)
    if where == "score_nan":
        out[0, 5, 1] = np.nan  # class 1 of row 1
    elif where == "score_inf":
        out[0, 4, 1] = np.inf
    elif where == "box_nan":
        out[0, 0, 1] = np.nan
    else:
        out[0, 2, 1] = -np.inf
    lay = resolve_layout(info((1, 6, 2100)))
    with pytest.raises(DecodeError, match="non-finite"):
        Decoder(lay, conf=0.25)([out], (320, 320))
    dec = Decoder(lay, conf=0.25, nonfinite="drop")
    (c,) = dec([out], (320, 320))
    assert len(c) == 1 and dec.nonfinite_rows == 1
    assert np.isfinite(c.xyxy).all()


def test_nonfinite_in_filtered_rows_is_ignored() -> None:
    out = yolov8_output(np.array([[100, 100, 20, 40]], np.float32), _scores()[:1], 2100)
    out[0, 0, 500] = np.nan  # box of a row whose scores fail the threshold
    out[0, 4, 501] = -np.inf
    (c,) = Decoder(resolve_layout(info((1, 6, 2100))), conf=0.25)([out], (320, 320))
    assert len(c) == 1


def test_yolox_nan() -> None:
    raw = _yolox_raw(416, 416, 2, np.random.default_rng(2))
    raw[0, 10, 4] = np.nan
    lay = resolve_layout(info((1, 3549, 7), (1, 3, 416, 416)))
    with pytest.raises(DecodeError, match="non-finite"):
        Decoder(lay, conf=0.2, yolox_decoded=False)([raw], (416, 416))


def test_output_shape_checked_at_run_time() -> None:
    lay = resolve_layout(info((-1, -1, -1), (-1, 3, -1, -1), ultra_meta(20)))
    with pytest.raises(ModelLayoutError, match=r"expected \[B, 24, N\]"):
        Decoder(lay)([np.zeros((1, 84, 2100), np.float32)], (320, 320))
    with pytest.raises(ModelLayoutError, match="3-axis"):
        Decoder(lay)([np.zeros((1, 24), np.float32)], (320, 320))
    with pytest.raises(ModelLayoutError, match="float"):
        Decoder(lay)([np.zeros((1, 24, 2100), np.int32)], (320, 320))


# ---------------------------------------------------------------- detector glue
def test_detector_maps_to_original_pixels_and_nms() -> None:
    # two overlapping class-0 boxes and one class-1 box on the same spot
    boxes = np.array([[160, 160, 64, 64], [162, 160, 64, 64], [160, 160, 64, 64]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]], np.float32)
    out = yolov8_output(boxes, scores, 2100)
    eng = FakeEngine(info((1, 6, 2100)), [out])
    det = Detector(eng, conf=0.25, iou=0.5)
    (d,) = det.detect([np.zeros((640, 640, 3), np.uint8)], stamps_ns=[7], frame_ids=["cam"])
    assert eng.seen == [(1, 3, 320, 320)]
    # 640x640 image -> 320x320 tensor: scale 2, no padding
    np.testing.assert_allclose(d.xyxy, [[256, 256, 384, 384], [256, 256, 384, 384]])
    assert d.class_ids.tolist() == [0, 1] and (d.stamp_ns, d.frame_id) == (7, "cam")
    (agn,) = Detector(eng, conf=0.25, iou=0.5, agnostic=True).detect(
        [np.zeros((640, 640, 3), np.uint8)]
    )
    assert len(agn) == 1
    (capped,) = Detector(eng, conf=0.25, iou=0.99, max_det=2).detect(
        [np.zeros((640, 640, 3), np.uint8)]
    )
    assert len(capped) == 2
    assert det.detect([]) == []
    with pytest.raises(InputImageError, match="stamps_ns"):
        det.detect([np.zeros((8, 8, 3), np.uint8)], stamps_ns=[1, 2])
    with pytest.raises(InputImageError, match="non-empty"):
        det.detect([np.zeros((0, 8, 3), np.uint8)])
    with pytest.raises(InputImageError, match="dtype uint8"):
        det.detect([np.zeros((8, 8, 3), np.float32)])
    out[0, 4, 5] = np.nan
    with pytest.raises(DecodeError, match="non-finite"):
        det.detect([np.zeros((640, 640, 3), np.uint8)])
    (dropped,) = Detector(eng, conf=0.25, iou=0.5, nonfinite="drop").detect(
        [np.zeros((640, 640, 3), np.uint8)]
    )
    assert len(dropped) == 2


def test_set_thresholds_at_run_time() -> None:
    boxes = np.array([[100, 100, 20, 40], [200, 50, 10, 10]], np.float32)
    out = yolov8_output(boxes, _scores(), 2100)
    det = Detector(FakeEngine(info((1, 6, 2100)), [out]), conf=0.25, iou=0.5)
    img = [np.zeros((320, 320, 3), np.uint8)]
    assert len(det.detect(img)[0]) == 2
    det.set_thresholds(conf=0.7)
    assert len(det.detect(img)[0]) == 1
    det.set_thresholds(max_det=1, conf=0.1)
    assert len(det.detect(img)[0]) == 1
    for bad in ({"conf": 1.5}, {"iou": -0.1}, {"max_det": 0}):
        with pytest.raises(ValueError, match="expected"):
            det.set_thresholds(**bad)  # type: ignore[arg-type]
    assert (det.decoder.conf, det.max_det) == (0.1, 1)  # unchanged by the bad calls
    # per-class thresholds follow a new default
    dec = Decoder(resolve_layout(info((1, 6, 2100))), conf=0.25, class_conf={1: 0.7})
    dec.set_conf(0.95)
    (c,) = dec([out], (320, 320))
    assert len(c) == 0  # class 0 now needs > 0.95, class 1 keeps 0.7 (score 0.6)
