"""Track boxes of a MOTChallenge detection file offline.

    python -m perception.cli.track det.txt --fps 25 -o tracks.txt [--high-score 0.6 ...]

Reads `frame, id, x, y, w, h, score, ...` rows (id ignored), turns frame
numbers into stamps with `--fps` (so the tracker sees real time steps, exactly
as in ROS), runs `perception.core.tracking.Tracker` and writes the tracked
boxes as `frame, track_id, x, y, w, h, score, -1, -1, -1`. Every tracker
parameter is an option (see --help), for evaluation and tuning, with the
default, description and checks of perception/ros/specs/tracker.params.yaml
(the tracker node's).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from perception.cli.spec_options import add_spec_option, params_from_options
from perception.config import ParameterError, TrackerParams
from perception.core.tracking import Tracker
from perception.core.tracking.motchallenge import (
    MotFormatError,
    frames_from_mot,
    read_mot,
    write_mot_tracks,
)

_LOG = logging.getLogger("perception.cli.track")


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if w < 0 or h < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative sizes, got {text!r}")
    return w, h


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception_track",
        description="Multi-object tracking of MOTChallenge detections (offline).",
    )
    p.add_argument("detections", help="MOTChallenge det file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="tracks file (default: stdout)")
    p.add_argument(
        "--fps",
        type=float,
        required=True,
        help="frame rate: frame n is stamped (n - 1) / fps seconds",
    )
    p.add_argument(
        "--score",
        type=float,
        default=None,
        help="use this score for every row instead of the file's column 7",
    )
    p.add_argument("--class-id", type=int, default=0, help="class of every row (default 0)")
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=(0, 0),
        help="WIDTHxHEIGHT of the images (used when coasting lost tracks)",
    )
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    g = p.add_argument_group("tracker parameters (tracker.params.yaml, as the tracker node)")
    for name, spec in TrackerParams.specs().items():
        add_spec_option(g, _flag(name), spec)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    names = list(TrackerParams.specs())
    try:
        params = params_from_options(
            TrackerParams, {n: getattr(args, n) for n in names}, {n: _flag(n) for n in names}
        )
    except ParameterError as exc:
        _LOG.error("bad tracker parameter: %s", exc)
        return 2
    cfg = params.to_config()
    if not args.fps > 0:
        _LOG.error("--fps: expected > 0, got %s", args.fps)
        return 2
    try:
        rows = read_mot(sys.stdin if args.detections == "-" else args.detections)
    except (OSError, MotFormatError) as exc:
        _LOG.error("cannot read %s: %s", args.detections, exc)
        return 2
    tracker = Tracker(cfg, frame_id="mot")
    frames = frames_from_mot(
        rows,
        args.fps,
        frame_id="mot",
        class_id=args.class_id,
        score=args.score,
        image_size=args.image_size,
    )
    results = ((f, tracker.update(det)) for f, det in frames)
    try:
        if args.output == "-":
            n = write_mot_tracks(sys.stdout, results)
        else:
            with open(args.output, "w") as out:
                n = write_mot_tracks(out, results)
    except OSError as exc:
        _LOG.error("cannot write %s: %s", args.output, exc)
        return 2
    _LOG.info("wrote %d track rows; tracker stats %s", n, tracker.stats.as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
