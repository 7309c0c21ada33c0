"""perception.sim.mot: the synthetic tracking sequences are deterministic, the
splits never overlap, and each family really has the hard case it is named
for (otherwise a tracker tuned on them would be tuned on nothing)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from perception.sim import mot
from perception.sim.mot import FAMILIES, HELDOUT_SEEDS, TUNE_SEEDS, generate, split_seeds


@functools.cache
def _seq(family: str, seed: int) -> mot.MotSequence:
    return generate(family, seed)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh rows a (N, 4) against b (M, 4)."""
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(
        np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    ih = np.clip(
        np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def _matched_visibility(seq: mot.MotSequence) -> tuple[np.ndarray, np.ndarray]:
    """For each detection row: best-IoU gt visibility (NaN if IoU < 0.5), score."""
    vis = np.full(len(seq.det), np.nan)
    for f in range(1, seq.n_frames + 1):
        d_idx = np.flatnonzero(seq.det[:, 0] == f)
        g = seq.gt[seq.gt[:, 0] == f]
        if len(d_idx) == 0 or len(g) == 0:
            continue
        iou = _iou(seq.det[d_idx, 2:6], g[:, 2:6])
        best = iou.argmax(axis=1)
        ok = iou[np.arange(len(d_idx)), best] >= 0.5
        vis[d_idx[ok]] = g[best[ok], 6]
    return vis, seq.det[:, 6]


def test_same_family_and_seed_give_the_same_sequence() -> None:
    a, b = generate("ego", 1), generate("ego", 1)
    for name in ("stamps_ns", "gt", "det", "affine", "camera"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.render_image(5), b.render_image(5))
    c = generate("ego", 2)
    assert not np.array_equal(a.gt[:50], c.gt[:50])


def test_splits_are_fixed_and_disjoint() -> None:
    assert set(TUNE_SEEDS).isdisjoint(HELDOUT_SEEDS)
    assert split_seeds("tune") == TUNE_SEEDS
    assert split_seeds("heldout") == HELDOUT_SEEDS
    with pytest.raises(ValueError):
        split_seeds("train")
    with pytest.raises(ValueError):
        generate("nope", 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_are_well_formed(family: str) -> None:
    seq = _seq(family, TUNE_SEEDS[0])
    w, h = seq.image_size
    assert seq.n_frames > 50
    assert np.all(np.diff(seq.stamps_ns) > 0)
    for rows in (seq.gt, seq.det):
        assert rows.shape[1] == 7 and len(rows) > 100
        assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= seq.n_frames
        assert np.all(rows[:, 4] > 0) and np.all(rows[:, 5] > 0)
        assert np.all(rows[:, 2] >= 0) and np.all(rows[:, 2] + rows[:, 4] <= w + 1e-6)
        assert np.all(rows[:, 3] >= 0) and np.all(rows[:, 3] + rows[:, 5] <= h + 1e-6)
    assert np.all((seq.gt[:, 6] >= 0) & (seq.gt[:, 6] <= 1))
    assert np.all((seq.det[:, 6] > 0) & (seq.det[:, 6] < 1))
    # One gt row per (frame, id).
    keys = seq.gt[:, 0] * 10_000 + seq.gt[:, 1]
    assert len(np.unique(keys)) == len(keys)
    frames = seq.frame_detections()
    assert len(frames) == seq.n_frames
    assert sum(len(f) for f in frames) == len(seq.det)
    # Moderate noise everywhere: some misses, some false positives, and
    # partly occluded objects get lower scores than fully visible ones.
    vis, score = _matched_visibility(seq)
    assert np.isnan(vis).sum() > 0  # false positives
    assert len(seq.det) < len(seq.gt_scored()) * 1.1
    full, part = score[vis >= 0.6], score[(vis >= 0.3) & (vis < 0.6)]
    if len(part) > 10:
        assert part.mean() < full.mean() - 0.2


def test_dropped_frames_make_uneven_stamps() -> None:
    for seed in TUNE_SEEDS:
        seq = _seq("dropped", seed)
        dt = np.diff(seq.stamps_ns) / 1e9
        assert 0.08 <= seq.drop_rate <= 0.52
        assert dt.max() > 2.5 / seq.fps  # runs of dropped frames
        assert dt.min() < 0.9 / seq.fps  # capture jitter
        assert len(np.unique(np.round(dt * 1e4))) > 20
    # The other families keep every frame.
    assert _seq("crowd", 0).drop_rate == 0.0


def test_ego_camera_moves_and_the_images_follow_the_true_affine() -> None:
    seq = _seq("ego", TUNE_SEEDS[0])
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    moving = [np.abs(a - ident).max() > 0.5 for a in seq.affine[1:]]
    assert np.mean(moving) > 0.8
    scale = seq.camera[:, 0, 0]
    assert scale.max() / scale.min() > 1.1  # forward/back motion
    k = 40
    prev, cur = seq.render_image(k - 1).astype(np.float64), seq.render_image(k).astype(np.float64)
    warped = mot._warp(prev.astype(np.uint8), seq.affine[k], seq.image_size).astype(np.float64)
    # Compare away from the borders; objects move on their own, so use the median.
    inner = (slice(40, -40), slice(40, -40))
    err_aligned = np.median(np.abs(warped - cur)[inner])
    err_static = np.median(np.abs(prev - cur)[inner])
    assert err_aligned < 0.5 * err_static
    assert all(np.array_equal(a, ident) for a in _seq("crowd", 0).affine)


def test_occlusion_leaves_long_gaps_in_the_detections_of_a_gt_id() -> None:
    seq = _seq("occlusion", TUNE_SEEDS[0])
    assert len(seq._occluders) >= 2
    long_gaps = 0
    for tid in np.unique(seq.gt[:, 1]):
        g = seq.gt[seq.gt[:, 1] == tid]
        seen = []  # frames where a detection covers this id's gt box
        for row in g:
            d = seq.det[seq.det[:, 0] == row[0]]
            if len(d) and _iou(row[None, 2:6], d[:, 2:6]).max() >= 0.5:
                seen.append(row[0])
        if len(seen) >= 2 and np.diff(seen).max() > 15:
            long_gaps += 1
    assert long_gaps >= 2


def test_crowd_has_mutual_occlusion() -> None:
    seq = _seq("crowd", TUNE_SEEDS[0])
    assert len(np.unique(seq.gt[:, 1])) >= 20
    assert np.mean(seq.gt[:, 6] < 0.5) > 0.15  # no occluders: people hide people


def test_approach_changes_box_size_fast() -> None:
    seq = _seq("approach", TUNE_SEEDS[0])
    fast = 0
    for tid in np.unique(seq.gt[:, 1]):
        g = seq.gt[(seq.gt[:, 1] == tid) & (seq.gt[:, 6] > 0.9)]
        if len(g) < 30:
            continue
        h = g[:, 5]
        if h.max() / h.min() > 2.0:
            fast += 1
    assert fast >= 2


def test_noisy_levels_grow_with_the_seed_and_add_false_positives() -> None:
    levels = [_seq("noisy", s).noise for s in (0, 1, 2)]
    assert levels == ["heavy1", "heavy2", "heavy3"]
    assert all(_seq(f, 0).noise == "moderate" for f in FAMILIES if f != "noisy")

    def fp_share(seq: mot.MotSequence) -> float:
        vis, _ = _matched_visibility(seq)
        return float(np.isnan(vis).mean())

    assert fp_share(_seq("noisy", 2)) > fp_share(_seq("noisy", 0)) > fp_share(_seq("dropped", 0))


def test_clean_noise_keeps_the_scene_and_gives_confident_boxes() -> None:
    """`noise="clean"`: the same objects and frames, every detection scored
    high (MOTChallenge-style public detections), no persistent ghost boxes."""
    base = mot.generate("crowd", 0)
    clean = mot.generate("crowd", 0, noise="clean")
    assert clean.noise == "clean"
    np.testing.assert_array_equal(base.gt, clean.gt)
    np.testing.assert_array_equal(base.stamps_ns, clean.stamps_ns)
    real = clean.det[:, 6] >= 0.5
    assert real.mean() > 0.97  # only the rare random false positive is low
    assert clean.det.shape[0] < base.det.shape[0] * 1.2
    with pytest.raises(ValueError, match="noise"):
        mot.generate("crowd", 0, noise="nope")
