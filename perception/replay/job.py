"""One replay job: inputs, their results, and the worker that runs them.

The API shared by the local runner and the Ray runner (`perception.replay.ray_runner`):
a `Replayer` is created once per worker (it loads the engine once) and
`run()`s inputs one after another; every input gets fresh trackers. Results
are plain dataclasses that serialise to JSON (the fleet summary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "InputResult",
    "ReplayConfig",
    "Replayer",
    "expand_inputs",
    "finished_result",
    "input_key",
    "run_local",
]

log = logging.getLogger("perception.replay")

Status = Literal["ok", "failed", "skipped"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
"""Files a folder of inputs is searched for besides bags."""


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

    @property
    def images(self) -> int:
        """Camera images the pipeline processed (all cameras): its `processed` counters."""
        return sum(int(c.get("processed", 0)) for c in self.counters.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputResult:
        """From `to_dict()` output (unknown keys are ignored: newer writers)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


# ------------------------------------------------------------------ inputs
def _is_uri(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def input_key(input: str) -> str:
    """Output folder name of an input: readable name + hash of its absolute path
    (the same input always gets the same folder, two drives named alike do not)."""
    ident = input if _is_uri(input) else os.path.abspath(input)
    name = ident.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".mcap", ".db3", *VIDEO_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "input"
    return f"{safe}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}"


def expand_inputs(args: Iterable[str]) -> list[str]:
    """Inputs of a command line as absolute paths, in order, without repeats.

    A `.txt` file lists inputs, one per line (blank lines and lines starting
    with # are skipped; relative paths are relative to the list); a folder that
    is not a rosbag2 stands for the bags and videos directly inside it. Missing
    paths are kept (they are reported as failed, the others still run).
    """
    from perception.replay.sources import is_bag

    out: list[str] = []

    def add(item: str, base: Path | None, depth: int) -> None:
        if _is_uri(item):
            out.append(item)
            return
        p = Path(item).expanduser()
        if base is not None and not p.is_absolute():
            p = base / p
        if p.suffix == ".txt" and p.is_file():
            if depth > 8:
                raise ValueError(f"{p}: lists nested more than 8 deep (a loop?)")
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    add(line, p.parent, depth + 1)
            return
        if p.is_dir() and not is_bag(p):
            found = [
                c
                for c in sorted(p.iterdir())
                if is_bag(c) or (c.is_file() and c.suffix.lower() in VIDEO_SUFFIXES)
            ]
            if found:
                for c in found:
                    add(str(c), None, depth)
                return
        out.append(str(p.absolute()))

    for a in args:
        add(a, None, 0)
    return list(dict.fromkeys(out))


def finished_result(out: str, input: str) -> InputResult | None:
    """The result of an earlier complete run of `input` under `out` (a folder
    or a URI); None when it has none or its result.json is unreadable, so it
    runs again."""
    from perception.replay import storage
    from perception.replay.writer import RESULT_FILE, is_finished

    key = input_key(input)
    try:
        folder = storage.local_dir(out)
        if folder is not None and not is_finished(folder, key):
            return None
        if folder is None and not storage.is_finished(out, key):
            return None
        text = storage.read_text(out, f"{key}/{RESULT_FILE}")
        return InputResult.from_dict(json.loads(text))
    except (OSError, ValueError, TypeError):
        return None


# ------------------------------------------------------------------ worker
class Replayer:
    """Runs inputs through the pipeline of `config.pipeline`, one after another.

    The engine is loaded once (here); every input gets fresh pipeline stages
    (trackers), so `run(input)` depends only on the input and the config and
    gives the same outputs wherever and however often it runs.
    """

    def __init__(self, config: ReplayConfig, log_sink: Any = None) -> None:
        from perception.pipeline import build_detector
        from perception.pipeline.topology import load_pipeline_spec

        self.config = config
        self.spec = load_pipeline_spec(config.pipeline, list(config.overrides))
        d = self.spec.detector
        self.detector = build_detector(
            d.model,
            score_threshold=d.score_threshold,
            iou_threshold=d.iou_threshold,
            max_detections=d.max_detections,
        )
        self.log_sink = log_sink if log_sink is not None else logging.getLogger("perception.replay")

    def close(self) -> None:
        """Release the engine."""
        self.detector.engine.close()

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finished(self, input: str) -> InputResult | None:
        """The result of an earlier complete run of `input` in the output folder."""
        return finished_result(self.config.out, input)

    def run(self, input: str, progress: Callable[[int, int], None] | None = None) -> InputResult:
        """Replay one input into `OUT/<key>/` (atomically); never raises for a
        bad input: the result says `failed` with the reason. `progress(groups,
        images)` is called after every frame group."""
        from perception.replay import storage
        from perception.replay.writer import remove_leftovers, staging_dir

        key = input_key(input)
        if self.config.resume:
            done = self.finished(input)
            if done is not None:
                done.status = "skipped"
                return done
        folder = storage.local_dir(self.config.out)
        if folder is not None:  # stage next to the final folder: one rename publishes
            remove_leftovers(folder, key)
            tmp = staging_dir(folder, key)
        else:  # an object store: stage locally, upload when complete
            tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-"))
        try:
            return self._run(input, key, tmp, progress)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _run(
        self,
        input: str,
        key: str,
        tmp: Path,
        progress: Callable[[int, int], None] | None,
    ) -> InputResult:
        from perception.pipeline import ThrottledLog
        from perception.pipeline.topology import build_pipeline
        from perception.replay import storage
        from perception.replay.report import Scores, write_report
        from perception.replay.sources import InputError, open_source
        from perception.replay.writer import RESULT_FILE, ResultWriter, commit

        t0 = time.monotonic()
        result = InputResult(input=input, key=key, status="failed")
        spec = self.spec
        pipeline = build_pipeline(spec, log=ThrottledLog(self.log_sink), detector=self.detector)
        names = list(self.detector.class_names)
        scores = Scores(names, {c: f.node for c, f in spec.fusion.items()})
        writer: ResultWriter | None = None
        source = None
        images = 0
        try:
            source = open_source(input, spec)
            writer = ResultWriter(tmp, spec, names)
            for group in source.groups(self.config.max_frames):
                results = pipeline.process(group.frames)
                writer.add(results, result.frames)
                scores.add(group, results)
                result.frames += 1
                images += len(results)
                if progress is not None:
                    progress(result.frames, images)
            result.outputs = writer.close()
            writer = None
        except InputError as exc:
            result.reason = str(exc)
        except Exception as exc:  # an engine or pipeline failure: this input only
            log.debug("replay of %s failed", input, exc_info=True)
            where = f" after {result.frames} frame groups" if result.frames else ""
            result.reason = f"{type(exc).__name__}{where}: {exc}"
        finally:
            if writer is not None:
                writer.abort()
        result.counters = _counters(pipeline.counters(), source)
        result.wall_s = round(time.monotonic() - t0, 3)
        result.fps = round(images / result.wall_s, 2) if result.wall_s > 0 else 0.0
        if result.reason:
            return result
        notes = list(source.notes) if source is not None else []
        if images == 0:
            result.reason = "no image could be processed (see counters)"
            return result
        result.status = "ok"
        result.reason = "; ".join([*notes, *_problems(result.counters)])
        result.metrics, detail = scores.compute()
        report = {
            **result.to_dict(),
            "images": images,
            "pipeline": spec.path,
            "overrides": list(self.config.overrides),
            "model": spec.detector.model.path,
            "class_names": names,
            "notes": notes,
            "per_camera": {c: dict(v) for c, v in scores.counts.items()},
            "detail": detail,
            "latency_ms": scores.latency_summary(),
        }
        result.outputs.update(write_report(tmp, report, scores))
        result.outputs["result"] = RESULT_FILE
        (tmp / RESULT_FILE).write_text(json.dumps(_clean_json(result.to_dict()), indent=2) + "\n")
        folder = storage.local_dir(self.config.out)
        if folder is not None:
            commit(tmp, folder / key)  # replaces an older output of the same input
        else:
            storage.publish(tmp, self.config.out, key)
        return result


def _clean_json(obj: Any) -> Any:
    from perception.replay.report import clean

    return clean(obj)


_PROBLEM_PREFIXES = ("error.", "input.", "fusion.error.")


def _problems(counters: dict[str, dict[str, int]]) -> list[str]:
    """What went wrong per camera though the input completed (bad images, stamps
    out of order, missing depth ...), e.g. "rgb_front: error.truncated 1"."""
    out = []
    for cam, c in counters.items():
        items = [f"{k} {v}" for k, v in c.items() if v and k.startswith(_PROBLEM_PREFIXES)]
        if items:
            out.append(f"{cam}: {', '.join(items)}")
    return out


def _counters(pipeline: dict[str, dict[str, int]], source: Any) -> dict[str, dict[str, int]]:
    """The pipeline's counters per camera plus the source's problems as `input.<kind>`."""
    out = {cam: dict(c) for cam, c in pipeline.items() if any(c.values())}  # a video: 1 camera
    if source is not None:
        for cam, problems in source.problems.items():
            row = out.setdefault(cam, {})
            row.update({f"input.{k}": int(v) for k, v in sorted(problems.items())})
    return out


# ------------------------------------------------------------------ local runner
class _Progress:
    """A one-line progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.index = 0
        self.name = ""
        self.t0 = time.monotonic()

    def start(self, index: int, name: str) -> None:
        self.index, self.name, self.t0 = index, name, time.monotonic()
        if self.enabled and not self.tty:
            log.info("replay %d/%d: %s", index + 1, self.total, name)

    def update(self, groups: int, images: int) -> None:
        if not self.tty or groups % 5:
            return
        done = int(30 * self.index / max(self.total, 1))
        rate = images / max(time.monotonic() - self.t0, 1e-6)
        sys.stderr.write(
            f"\r[{'#' * done}{'.' * (30 - done)}] {self.index + 1}/{self.total} "
            f"{self.name[:40]}: {groups} frames, {rate:.1f} images/s\x1b[K"
        )
        sys.stderr.flush()

    def done(self, r: InputResult) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        text = f"{r.status}, {r.frames} frames, {r.fps:.1f} images/s, {r.wall_s:.1f} s"
        if r.reason:
            text += f" ({r.reason})"
        (log.warning if r.status == "failed" else log.info)(
            "replay %d/%d %s: %s", self.index + 1, self.total, r.key, text
        )


def run_local(
    inputs: Sequence[str], config: ReplayConfig, progress: bool = True
) -> list[InputResult]:
    """Replay `inputs` one after another in this process and write the fleet
    summary (after every input, so an interrupted run still has one).
    Finished inputs are skipped with `config.resume`; the engine is only
    loaded when something is left to run."""
    from perception.replay import storage
    from perception.replay.fleet import write_fleet_summary
    from perception.replay.writer import remove_leftovers

    folder = storage.local_dir(config.out)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)
    t0 = time.monotonic()
    bar = _Progress(len(inputs), progress)
    results: list[InputResult] = []
    replayer: Replayer | None = None
    try:
        for i, item in enumerate(inputs):
            bar.start(i, input_key(item))
            done = finished_result(config.out, item) if config.resume else None
            if done is not None:
                done.status = "skipped"
                result = done
            else:
                if replayer is None:
                    replayer = Replayer(config)
                result = replayer.run(item, bar.update)
            results.append(result)
            bar.done(result)
            write_fleet_summary(results, config.out, time.monotonic() - t0)
    finally:
        if replayer is not None:
            replayer.close()
    return results
