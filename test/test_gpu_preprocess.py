"""GPU preprocessing (perception/core/gpu_preprocess.py) and the pure-torch NMS
(perception/core/engines/torch_detect.py) against their CPU twins. Run on
the CPU here (torch in a separate venv; skipped without torch) and on CUDA
where a device is present (bench/gpu_check.py on the GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional runtime)")
cv2 = pytest.importorskip("cv2")

from perception.core.engines.torch_detect import nms_torch  # noqa: E402
from perception.core.gpu_preprocess import GpuPreprocessor, linear_taps  # noqa: E402
from perception.core.nms import nms  # noqa: E402
from perception.core.preprocess import Preprocessor, PreprocessSpec  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]  # fmt: skip

YOLO = PreprocessSpec()
YOLOX = PreprocessSpec(align="top_left", rgb=False, scale=1.0)
RTDETR = PreprocessSpec(resize="stretch")
IMAGENET = PreprocessSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CASES = [
    ((1080, 1920), (640, 640), YOLO, True),  # odd factor 3: the CPU path's exact gather
    ((1080, 1920), (640, 640), YOLO, False),
    ((720, 1280), (640, 640), YOLO, True),  # factor 2
    ((300, 400), (640, 640), YOLO, True),  # upscale
    ((257, 333), (320, 320), YOLOX, False),
    ((480, 640), (320, 320), RTDETR, True),
    ((100, 50), (640, 640), IMAGENET, False),
]


def _images(h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 7 % 256], -1).astype(np.uint8)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8), smooth]


def _lsb(spec: PreprocessSpec, a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference in 0-255 pixel steps."""
    scale = np.abs(spec.affine()[0]).reshape(1, 3, 1, 1)
    return float((np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale).max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("src", "dst", "spec", "fixed"), CASES)
def test_matches_cpu_preprocessor(
    src: tuple[int, int], dst: tuple[int, int], spec: PreprocessSpec, fixed: bool, device: str
) -> None:
    imgs = _images(*src)
    cpu = Preprocessor(spec, dst if fixed else None, dst)
    gpu = GpuPreprocessor(spec, dst if fixed else None, dst, device=device)
    want, tf_cpu = cpu(imgs)
    got, tf_gpu = gpu(imgs)
    assert tf_cpu == tf_gpu
    assert got.dtype == torch.float32 and got.device.type == device
    assert got.shape == want.shape
    # the acceptance bound is 1 LSB; on the OpenCV builds checked it is exact
    assert _lsb(spec, want, got.cpu().numpy()) <= 1.0


def test_bit_exact_with_this_opencv() -> None:
    """The int32 resize reproduces cv2.resize INTER_LINEAR exactly (here:
    OpenCV's vectorised rounding, borders, odd and even factors, upscales)."""
    rng = np.random.default_rng(5)
    pre = GpuPreprocessor(YOLO, None, (640, 640), device="cpu")
    for (h, w), (rh, rw) in [((300, 400), (480, 640)), ((1080, 1920), (480, 853)),
                             ((33, 1000), (700, 20)), ((5, 7), (64, 64))]:  # fmt: skip
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        got = pre.resize(torch.from_numpy(img)[None], rh, rw)[0].numpy()
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1
        assert (diff == 0).mean() > 0.99, f"{(h, w)}->{(rh, rw)}: {(diff == 0).mean():.4f}"


def test_linear_taps_weights() -> None:
    s0, s1, w0, w1 = linear_taps(10, 4)
    assert (w0 + w1 == 2048).all()
    assert s0.min() >= 0 and s1.max() <= 9
    # columns outside the image take the border pixel with full weight
    s0, s1, w0, w1 = linear_taps(4, 10)
    assert s0[0] == 0 and w0[0] == 2048 and s0[-1] == 3 and w0[-1] == 2048


@pytest.mark.parametrize("device", DEVICES)
def test_half_output_and_out_buffer(device: str) -> None:
    imgs = _images(360, 640)
    cpu_batch, _ = Preprocessor(YOLO, (384, 640))(imgs)
    out = torch.full((2, 3, 384, 640), -7.0, dtype=torch.float16, device=device)
    pre = GpuPreprocessor(YOLO, (384, 640), device=device, dtype=torch.float16)
    got, _ = pre(imgs, out=out)
    assert got.data_ptr() == out.data_ptr() and got.dtype == torch.float16
    np.testing.assert_allclose(got.float().cpu().numpy(), cpu_batch, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_placement_changes_repad(device: str) -> None:
    """A slot whose image changes size gets its border rewritten."""
    pre = GpuPreprocessor(YOLO, (320, 320), device=device)
    cpu = Preprocessor(YOLO, (320, 320))
    for h, w in [(100, 300), (300, 100), (100, 300)]:
        imgs = _images(h, w, seed=h)
        got, _ = pre(imgs)
        want, _ = cpu(imgs)
        assert _lsb(YOLO, want, got.cpu().numpy()) <= 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_and_host_buffer_inputs(device: str) -> None:
    imgs = _images(120, 160)
    pre = GpuPreprocessor(YOLO, (128, 160), device=device)
    want, _ = Preprocessor(YOLO, (128, 160))(imgs)
    on_device = [torch.from_numpy(i).to(device) for i in imgs]
    got, _ = pre(on_device)
    assert _lsb(YOLO, want, got.cpu().numpy()) <= 1.0
    staged = []
    for k, img in enumerate(imgs):
        buf = pre.host_buffer(k, 120, 160)
        buf[...] = img
        staged.append(buf)
    got, _ = pre(staged)
    assert _lsb(YOLO, want, got.cpu().numpy()) <= 1.0


# ---------------------------------------------------------------- NMS
def _boxes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.choice(np.linspace(0.3, 0.9, 25), n).astype(np.float32)  # many ties
    groups = rng.integers(0, 3, n)
    return boxes, scores, groups


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", range(4))
def test_nms_matches_numpy(seed: int, device: str) -> None:
    boxes, scores, groups = _boxes(400, seed)
    for iou in (0.3, 0.5, 0.7):
        want = nms(boxes, scores, iou, groups)
        t = (torch.from_numpy(a).to(device) for a in (boxes, scores, groups))
        b, s, g = t
        got = nms_torch(b, s, iou, g).cpu().numpy()
        np.testing.assert_array_equal(got, want)
        # the host fallback (packed bits) when the rounds do not settle
        slow = nms_torch(b, s, iou, g, max_rounds=1).cpu().numpy()
        np.testing.assert_array_equal(slow, want)
        np.testing.assert_array_equal(nms_torch(b, s, iou).cpu().numpy(), nms(boxes, scores, iou))


def test_nms_empty_and_degenerate() -> None:
    empty = nms_torch(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert empty.numel() == 0
    boxes = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 5, 5]], np.float32)
    scores = np.array([0.5, 0.5, 0.4], np.float32)
    got = nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), 0.0).numpy()
    np.testing.assert_array_equal(got, nms(boxes, scores, 0.0))
