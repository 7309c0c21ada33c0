"""Offline tracking CLI: MOTChallenge detections in, tracks out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from perception.cli.track import main
from perception.core.tracking.motchallenge import read_mot


def write_dets(path: Path, with_gap: bool = True) -> None:
    """Two people walking in opposite directions for 30 frames; the first is
    missed for frames 10-13; one junk row per frame with a low score."""
    lines = []
    for f in range(1, 31):
        if not (with_gap and 10 <= f <= 13):
            lines.append(f"{f},-1,{100 + 4 * f},200,40,100,0.9,-1,-1,-1")
        lines.append(f"{f},-1,{500 - 3 * f},220,45,110,0.8,-1,-1,-1")
        lines.append(f"{f},-1,{50 * (f % 7)},20,30,30,0.05,-1,-1,-1")
    path.write_text("\n".join(lines) + "\n")


def test_cli_writes_tracks_with_stable_ids(tmp_path: Path) -> None:
    det, out = tmp_path / "det.txt", tmp_path / "tracks.txt"
    write_dets(det)
    assert main([str(det), "--fps", "25", "-o", str(out)]) == 0
    rows = read_mot(out)
    assert rows.shape[0] > 50
    raw = np.loadtxt(out, delimiter=",")
    assert raw.shape[1] == 10
    ids_a = set(rows[rows[:, 2] < 300, 1].astype(int))
    ids_b = set(rows[rows[:, 2] >= 300, 1].astype(int))
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b  # kept through the gap
    assert (rows[:, 6] >= 0.5).all()  # junk rows never tracked


def test_cli_parameters_change_the_result(tmp_path: Path) -> None:
    det, out = tmp_path / "det.txt", tmp_path / "tracks.txt"
    write_dets(det)
    # Lost tracks dropped after 0.1 s: the 4-frame gap (0.16 s) splits a track.
    assert (
        main(
            [
                str(det),
                "--fps",
                "25",
                "-o",
                str(out),
                "--max-lost-s",
                "0.1",
                "--no-recovery",
                "--solver",
                "scipy",
            ]
        )
        == 0
    )
    rows = read_mot(out)
    assert len(set(rows[rows[:, 2] < 300, 1].astype(int))) == 2


def test_cli_rejects_bad_input(tmp_path: Path, caplog) -> None:
    det = tmp_path / "det.txt"
    write_dets(det)
    assert main([str(det), "--fps", "25", "--high-score", "2"]) == 2
    assert main([str(det), "--fps", "0"]) == 2
    assert main([str(tmp_path / "missing.txt"), "--fps", "25"]) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("1,2,3\n")
    assert main([str(bad), "--fps", "25"]) == 2
    assert "expected at least 6 fields" in caplog.text


def test_cli_runs_as_module(tmp_path: Path) -> None:
    det = tmp_path / "det.txt"
    write_dets(det, with_gap=False)
    proc = subprocess.run(
        [sys.executable, "-m", "perception.cli.track", str(det), "--fps", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 60 and lines[0].startswith("1,")


def test_cli_options_come_from_the_tracker_spec(tmp_path: Path, caplog) -> None:
    """Every tracker parameter is an option with the spec's default; a bad value
    is refused with the spec's (or the tracker's) message naming the option."""
    from perception.cli.track import build_parser
    from perception.config import TrackerParams

    args = build_parser().parse_args(["det.txt", "--fps", "25"])
    assert {k: getattr(args, k) for k in TrackerParams.specs()} == TrackerParams().to_flat()
    det = tmp_path / "det.txt"
    write_dets(det)
    assert main([str(det), "--fps", "25", "--high-score", "2"]) == 2
    assert "--high-score (high_score): expected a value in [0.0, 1.0], got 2.0" in caplog.text
    assert main([str(det), "--fps", "25", "--low-score", "0.7", "--high-score", "0.6"]) == 2
    assert "--low-score (low_score): expected <= high_score" in caplog.text
