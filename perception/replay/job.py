"""One replay job: inputs, their results, and the worker that runs them.

The API shared by the local runner and the Ray runner (`perception.replay.ray_runner`):
a `Replayer` is created once per worker (it loads the engine once) and
`run()`s inputs one after another; every input gets fresh trackers. Results
are plain dataclasses that serialise to JSON (the fleet summary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["InputResult", "ReplayConfig"]

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class ReplayConfig:
    """What every worker needs (picklable: sent to Ray actors as is).

    Attributes:
        pipeline: pipeline file (config/pipeline_*.yaml).
        overrides: `NODE.PARAM=VALUE` items, as for run_config.
        out: output folder or a pyarrow filesystem URI (file://, s3://, ...).
        resume: skip inputs whose finished output already exists.
        max_frames: stop each input after this many frame groups (0 = all).
    """

    pipeline: str
    out: str
    overrides: tuple[str, ...] = ()
    resume: bool = False
    max_frames: int = 0


@dataclass
class InputResult:
    """What became of one input (one row of the fleet summary).

    Attributes:
        input: the input as given (path or URI).
        key: its output folder name (stable: name + hash of the path).
        status: ok, failed (with `reason`) or skipped (finished earlier, --resume).
        frames: frame groups processed (one per stamp, all cameras).
        counters: per camera: received / processed / rejected ... (pipeline counters).
        metrics: AP / MOTA / IDF1 / ID switches / 3D error where the input
            carries ground truth; empty otherwise.
        wall_s: time spent on this input by its worker.
        fps: frames (per camera image) per second of wall time.
        outputs: output name -> path relative to the input's folder.
        attempts: how often it was started (> 1 after a worker died).
    """

    input: str
    key: str
    status: Status
    reason: str = ""
    frames: int = 0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    fps: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: int = 1
