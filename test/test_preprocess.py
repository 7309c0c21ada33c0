"""Letterbox/resize per family, batching, buffers and the exact inverse mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.core.errors import InputImageError
from perception.core.preprocess import (
    ImageTransform,
    Preprocessor,
    PreprocessSpec,
    _gather_planes,
    _odd_factor_views,
    _rows_for_odd_factor,
)

ULTRA = PreprocessSpec(resize="letterbox", align="center", rgb=True, scale=1 / 255)
YOLOX = PreprocessSpec(resize="letterbox", align="top_left", rgb=False, scale=1.0)
RTDETR = PreprocessSpec(resize="stretch", rgb=True, scale=1 / 255)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ultralytics_letterbox(img: np.ndarray, new: tuple[int, int], auto: bool) -> np.ndarray:
    """Independent re-statement of Ultralytics' LetterBox (centre, pad 114,
    rect 'auto' = pad only to the stride), to check the layout pixel for pixel."""
    h, w = img.shape[:2]
    r = min(new[0] / h, new[1] / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = new[1] - nw, new[0] - nh
    if auto:
        dw, dh = dw % 32, dh % 32
    dw, dh = dw / 2, dh / 2
    if (w, h) != (nw, nh):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114,) * 3)


@pytest.mark.parametrize(("h", "w"), [(1080, 1920), (600, 900), (360, 250), (480, 640), (7, 3000)])
@pytest.mark.parametrize("rect", [True, False])
def test_ultralytics_layout_pixel_exact(h: int, w: int, rect: bool) -> None:
    img = _image(h, w)
    pre = Preprocessor(ULTRA, None, (640, 640), rect=rect)
    batch, (tf,) = pre([img])
    want = _ultralytics_letterbox(img, (640, 640), auto=rect)
    assert batch.shape == (1, 3, *want.shape[:2])
    expected = want[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_allclose(batch[0], expected, rtol=0, atol=1e-6)
    assert tf.input_size == (want.shape[1], want.shape[0])


def test_rect_shape_for_1080p_is_640x384() -> None:
    pre = Preprocessor(ULTRA, None, (640, 640))
    batch, (tf,) = pre([_image(1080, 1920)])
    assert batch.shape == (1, 3, 384, 640)
    assert tf.resized_size == (640, 360) and tf.offset == (0, 12)


def test_fixed_model_shape_wins_over_target() -> None:
    pre = Preprocessor(ULTRA, (320, 320), (640, 640))
    batch, (tf,) = pre([_image(1080, 1920)])
    assert batch.shape == (1, 3, 320, 320)
    assert tf.resized_size == (320, 180) and tf.offset == (0, 70)


def test_yolox_top_left_bgr_raw() -> None:
    img = _image(600, 900)
    batch, (tf,) = Preprocessor(YOLOX, (416, 416))([img])
    assert tf.offset == (0, 0) and tf.resized_size == (416, 277)
    resized = cv2.resize(img, (416, 277), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(batch[0, :, :277, :], resized.transpose(2, 0, 1))
    assert (batch[0, :, 277:, :] == 114).all()
    floor = PreprocessSpec(
        resize="letterbox", align="top_left", rgb=False, scale=1.0, rounding="floor"
    )
    _, (tf2,) = Preprocessor(floor, (416, 416))([_image(600, 1116)])
    assert tf2.resized_size == (416, 223)  # 223.66 truncated, as YOLOX's demo does
    _, (tf3,) = Preprocessor(YOLOX, (416, 416))([_image(600, 1116)])
    assert tf3.resized_size == (416, 224)


def test_rtdetr_stretch_and_mean_std() -> None:
    img = _image(300, 500)
    spec = PreprocessSpec(
        resize="stretch", rgb=True, scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)
    )
    batch, (tf,) = Preprocessor(spec, (320, 320))([img])
    assert tf.offset == (0, 0) and tf.resized_size == (320, 320)
    rgb = cv2.resize(img, (320, 320), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    want = (rgb.astype(np.float32) / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(batch[0], want.transpose(2, 0, 1), atol=1e-5)


def test_rgb_input_skips_swap() -> None:
    img = _image(64, 64)
    a, _ = Preprocessor(ULTRA, (64, 64), input_color="bgr")([img])
    a = a.copy()
    b, _ = Preprocessor(ULTRA, (64, 64), input_color="rgb")([np.ascontiguousarray(img[..., ::-1])])
    np.testing.assert_array_equal(a, b)


def test_batch_of_mixed_sizes_and_buffer_reuse() -> None:
    pre = Preprocessor(ULTRA, None, (640, 640))
    imgs = [_image(1080, 1920, 1), _image(480, 640, 2), _image(600, 300, 3)]
    batch, tfs = pre(imgs)
    # one tensor holding every letterboxed image: the largest stride-aligned rect
    assert batch.shape == (3, 3, 640, 640)
    assert all(t.input_size == (640, 640) for t in tfs)
    for img, tf, slot in zip(imgs, tfs, batch, strict=True):
        single, (tf1,) = Preprocessor(ULTRA, (640, 640), (640, 640))([img])
        np.testing.assert_array_equal(slot, single[0])
        assert tf1 == tf
    # reuse: a second call with other content overwrites the same buffer fully,
    # including padding where an earlier, larger image had been
    first = batch
    batch2, _ = pre([imgs[2], imgs[0], imgs[1]])
    assert batch2 is first
    for img, slot in zip([imgs[2], imgs[0], imgs[1]], batch2, strict=True):
        single, _ = Preprocessor(ULTRA, (640, 640), (640, 640))([img])
        np.testing.assert_array_equal(slot, single[0])


def test_non_contiguous_input() -> None:
    big = _image(200, 300)
    view = big[10:150:1, 20:260]
    a, _ = Preprocessor(ULTRA, None, (320, 320))([view])
    a = a.copy()
    b, _ = Preprocessor(ULTRA, None, (320, 320))([np.ascontiguousarray(view)])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("h", "w"), [(1080, 1920), (600, 1116), (361, 250), (3, 999)])
def test_inverse_mapping_is_exact(h: int, w: int) -> None:
    pre = Preprocessor(ULTRA, None, (640, 640))
    (tf,) = pre.plan([(w, h)])
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [w, h], (50, 2))
    boxes = np.concatenate([xy, xy + 1], axis=1).clip(0, [w, h, w, h]).astype(np.float32)
    back = tf.boxes_to_original(tf.boxes_to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    # the image corners map to the resized image's corners in the tensor
    corners = tf.boxes_to_input(np.array([[0, 0, w, h]], np.float32))[0]
    left, top = tf.offset
    np.testing.assert_allclose(
        corners, [left, top, left + tf.resized_size[0], top + tf.resized_size[1]], atol=1e-3
    )


def test_inverse_mapping_clips() -> None:
    tf = ImageTransform((100, 50), (64, 32), (0, 16), (64, 64))
    out = tf.boxes_to_original(np.array([[-10, 0, 80, 70]], np.float32))
    np.testing.assert_allclose(out, [[0, 0, 100, 50]])
    raw = tf.boxes_to_original(np.array([[-10, 0, 80, 70]], np.float32), clip=False)
    assert raw[0, 0] < 0 and raw[0, 2] > 100


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((0, 10, 3), np.uint8), "non-empty"),
        (np.zeros((10, 0, 3), np.uint8), "non-empty"),
        (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 1), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "dtype uint8"),
        (np.zeros((10, 10, 3), np.uint16), "dtype uint8"),
        ([[1, 2, 3]], "numpy.ndarray"),
    ],
)
def test_bad_images_raise(image: object, match: str) -> None:
    pre = Preprocessor(ULTRA, (64, 64))
    with pytest.raises(InputImageError, match=match):
        pre([_image(8, 8), image])  # type: ignore[list-item]


def test_empty_batch_and_bad_config() -> None:
    with pytest.raises(InputImageError, match="at least one image"):
        Preprocessor(ULTRA, (64, 64))([])
    with pytest.raises(ValueError, match="target_hw"):
        Preprocessor(ULTRA, None, None)
    with pytest.raises(ValueError, match="resize"):
        PreprocessSpec(resize="crop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="std"):
        PreprocessSpec(std=(1.0, 0.0, 1.0))


@pytest.mark.parametrize(("h", "w", "k"), [(1080, 1920, 3), (1800, 3200, 5), (720, 1280, 2)])
def test_odd_factor_row_shortcut_is_bit_exact(h: int, w: int, k: int) -> None:
    """The row-skipping shortcut for odd integer downscales equals cv2.resize."""
    img = _image(h, w, seed=k)
    target = (h // k * 640 // (w // k), 640) if w >= h else (640, 640)
    pre = Preprocessor(ULTRA, None, target, rect=False)
    batch, (tf,) = pre([img])
    assert tf.resized_size == (w // k, h // k)
    resized = cv2.resize(img, tf.resized_size, interpolation=cv2.INTER_LINEAR)
    left, top = tf.offset
    rw, rh = tf.resized_size
    want = resized[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_allclose(batch[0, :, top : top + rh, left : left + rw], want, atol=1e-6)
    rows = _rows_for_odd_factor(img, rw, rh)
    assert rows.shape[0] == (h // k if k % 2 else h)  # the shortcut applies to odd k only


@pytest.mark.parametrize(
    ("h", "w", "k"),
    [(1080, 1920, 3), (1800, 3200, 5), (1083, 1923, 3), (9, 9, 3), (21, 14, 7), (35, 25, 5)],
)
def test_odd_factor_plane_gather_is_bit_exact(h: int, w: int, k: int) -> None:
    """The per-channel nearest gather equals cv2.resize INTER_LINEAR, for odd
    and even widths and heights, and each plane gets its own channel."""
    img = _image(h, w, seed=h + w)
    rh, rw = h // k, w // k
    planes = [np.full((rh, rw), 7, dtype=np.uint8) for _ in range(3)]
    assert _gather_planes(img, rw, rh, planes)
    want = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
    for c in range(3):
        np.testing.assert_array_equal(planes[c], want[..., c])


def test_odd_factor_views_stay_inside_the_image() -> None:
    """Channel 0's view starts one byte before a used row and the last one
    ends one byte into the next row: both inside the buffer (numpy checks),
    and the bytes they cover are the image's own."""
    img = _image(9, 6)
    views = _odd_factor_views(img, 3)
    flat = img.reshape(-1)
    assert [v.shape for v in views] == [(3, 18)] * 3
    np.testing.assert_array_equal(views[0][0], flat[18 - 1 : 36 - 1])
    np.testing.assert_array_equal(views[2][2], flat[7 * 18 + 1 : 8 * 18 + 1])
    assert not any(v.flags.writeable for v in views)


def test_plane_gather_declines_what_it_cannot_do_exactly() -> None:
    """Even factors, non-integer factors and row-padded (non-contiguous)
    frames go through resize + split instead; results are the same."""
    planes = [np.empty((360, 640), dtype=np.uint8) for _ in range(3)]
    assert not _gather_planes(_image(720, 1280), 640, 360, planes[:3])  # k = 2
    assert not _gather_planes(_image(1080, 1921), 640, 360, planes)  # not integer
    padded = np.zeros((1080, 1928, 3), dtype=np.uint8)[:, :1920]  # a ROS row step
    assert not padded.flags.c_contiguous
    assert not _gather_planes(padded, 640, 360, planes)
    frame = _image(1080, 1920, seed=3)
    readonly = np.frombuffer(frame.tobytes(), np.uint8).reshape(frame.shape)
    assert _gather_planes(readonly, 640, 360, planes)  # read-only buffers are fine
    padded[:] = frame
    for pixels in (False, True):
        pre = Preprocessor(ULTRA, None, (640, 640), pixels=pixels)
        a = pre([frame])[0].copy()
        b = pre([padded])[0]
        np.testing.assert_array_equal(a, b)


def test_plane_gather_off_when_opencv_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """If this OpenCV's nearest-exact rounding did not match its bilinear
    (checked once per geometry), the gather steps aside and writes nothing."""
    from perception.core import preprocess

    monkeypatch.setitem(preprocess._GATHER_OK, (27, 27, 3), False)
    planes = [np.zeros((9, 9), dtype=np.uint8) for _ in range(3)]
    assert not _gather_planes(_image(27, 27), 9, 9, planes)
    assert not any(p.any() for p in planes)
    monkeypatch.delitem(preprocess._GATHER_OK, (27, 27, 3))
    assert _gather_planes(_image(27, 27), 9, 9, planes)
    assert preprocess._GATHER_OK[(27, 27, 3)] is True
