"""`perception replay --ray [ADDRESS]`: the replay job on Ray.

One actor per worker wraps a `Replayer` (the engine is loaded once per
worker); each input is one task (tracking needs its frames in order, so an
input is never split). The driver keeps one input in flight per actor, so a
free worker takes the next input as soon as it is done.

Faults: a worker process that dies (killed, out of memory) is restarted by
Ray (`max_restarts`) and its input is submitted again by this driver, at most
`max_attempts` times (`InputResult.attempts` counts them). The Replayer writes
each input's outputs under a temporary name and renames them when complete,
so a retried input's outputs exist once. An input that fails by itself
(corrupt, missing topics) is reported by the Replayer and not retried.

No address starts a local Ray (a laptop, CI) whose processes listen on
127.0.0.1 only, with no dashboard; an address joins a running cluster whose
nodes have this package installed (same image) and get this process's
LD_LIBRARY_PATH. Workers never import rclpy: the pipeline is ROS-free.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from perception.core.errors import PerceptionError
from perception.replay.job import InputResult, ReplayConfig

__all__ = [
    "RAY_MISSING",
    "RayReplayError",
    "RayRun",
    "ReplayWorker",
    "import_ray",
    "run_ray",
    "run_ray_detailed",
]

log = logging.getLogger("perception.replay.ray")

RAY_MISSING = (
    "--ray needs Ray, which is not installed here: pip install -r requirements/replay.txt "
    "(scripts/bootstrap.sh installs it into .venv)"
)
DEFAULT_REPLAYER = "perception.replay.job:Replayer"
# Modules a worker must never load: the pipeline is ROS-free, and a Ray worker
# must not start DDS participants.
_BLOCKED_MODULES = ("rclpy",)
# Environment a worker on a cluster node gets from this process.
_FORWARDED_ENV = ("LD_LIBRARY_PATH", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY")
_LOCAL_OBJECT_STORE = 128 * 1024 * 1024  # results are small dataclasses; inputs are paths


class RayReplayError(PerceptionError, RuntimeError):
    """Ray is missing, or its workers cannot start (the reason says which)."""


@dataclass
class RayRun:
    """Results of a Ray replay and where its time went (the start-up is logged
    and reported by the benchmark).

    Attributes:
        results: one per input, in input order.
        init_s: ray.init (0 when a running Ray was reused).
        workers_ready_s: actors created and their Replayers built (engine loaded).
        total_s: the whole call, start-up and shutdown included.
        workers: actors used.
        address: "local" or the cluster address joined.
        worker_info: per actor: pid, node ip, Replayer construction time.
    """

    results: list[InputResult]
    init_s: float = 0.0
    workers_ready_s: float = 0.0
    total_s: float = 0.0
    workers: int = 0
    address: str = "local"
    worker_info: list[dict[str, Any]] = field(default_factory=list)


def import_ray() -> ModuleType:
    """The ray module, or RayReplayError naming the requirements file."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise RayReplayError(f"{RAY_MISSING} ({exc})") from exc


def _load_class(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class ReplayWorker:
    """The body of one Ray actor: one Replayer, inputs run one at a time.

    Made a Ray actor class by `ray.remote(ReplayWorker)` at run time, so this
    module imports without Ray.
    """

    def __init__(self, config: ReplayConfig, replayer: str = DEFAULT_REPLAYER) -> None:
        for name in _BLOCKED_MODULES:  # `import rclpy` now fails instead of starting DDS
            if name not in sys.modules:
                sys.modules[name] = None  # type: ignore[assignment]
        t0 = time.monotonic()
        self._replayer = _load_class(replayer)(config)
        self._load_s = time.monotonic() - t0

    def info(self) -> dict[str, Any]:
        """Who this worker is (also the readiness probe: it answers once built)."""
        import socket

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "load_s": round(self._load_s, 3),
            "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
            "ros_loaded": any(sys.modules.get(m) is not None for m in _BLOCKED_MODULES),
        }

    def run(self, source: str) -> InputResult:
        result: InputResult = self._replayer.run(source)
        return result


@contextlib.contextmanager
def _loopback_only(ray: ModuleType) -> Iterator[None]:
    """Make a local Ray advertise and listen on 127.0.0.1 only.

    `ray.init(_node_ip_address="127.0.0.1")` alone is not enough: Ray maps a
    loopback address to the host's routable one, and its servers then listen
    on that interface. With clusters disabled (what Ray does on Windows and
    macOS) it keeps loopback. The flag is read by this process and by every
    process that ray.init starts (they inherit the environment), so it is set
    for the start-up only.
    """
    constants = importlib.import_module("ray._private.ray_constants")
    var = getattr(constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_env, saved_flag = os.environ.get(var), getattr(constants, "ENABLE_RAY_CLUSTER", True)
    os.environ[var] = "0"
    setattr(constants, "ENABLE_RAY_CLUSTER", False)  # noqa: B010 - read by ray.init
    try:
        yield
    finally:
        setattr(constants, "ENABLE_RAY_CLUSTER", saved_flag)  # noqa: B010
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env


def _start_ray(ray: ModuleType, address: str | None, num_cpus: int) -> bool:
    """Connect to (or start) Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves this machine
    common: dict[str, Any] = {
        "namespace": "perception-replay",
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    try:
        if address:
            env = {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        else:
            with _loopback_only(ray):
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    object_store_memory=_LOCAL_OBJECT_STORE,
                    **common,
                )
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayReplayError(f"could not start or join {where}: {exc}") from exc
    return True


def _detector_threads(config: ReplayConfig, threads: int) -> ReplayConfig:
    """Give each detector `threads` runtime threads (the CPUs of its actor)
    unless the overrides already choose; several workers on one machine would
    otherwise each start one thread per core."""
    from perception.config.files import TYPE_KEY, load_config

    if threads <= 0 or any(".model.threads=" in o for o in config.overrides):
        return config
    try:
        data = load_config(Path(config.pipeline), list(config.overrides))
    except Exception:  # the Replayer reports a bad file with its own message
        return config
    extra = tuple(
        f"{name.lstrip('/')}.model.threads={threads}"
        for name, body in data.items()
        if str(body.get("ros__parameters", {}).get(TYPE_KEY, "")).startswith("detector")
    )
    return replace(config, overrides=(*config.overrides, *extra))


def _worker_death_types(ray: ModuleType) -> tuple[type[BaseException], ...]:
    exc = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError")
    return tuple(getattr(exc, n) for n in names if hasattr(exc, n))


def _short(exc: BaseException) -> str:
    """The last meaningful line of a (possibly remote) exception."""
    text = str(exc).strip().splitlines()
    lines = [line.strip() for line in text if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def run_ray(
    inputs: list[str],
    config: ReplayConfig,
    address: str | None = None,
    workers: int = 2,
    **kwargs: Any,
) -> list[InputResult]:
    """Replay `inputs` on Ray with `workers` actors; results in input order.

    Keyword arguments are those of `run_ray_detailed`.
    """
    return run_ray_detailed(inputs, config, address, workers, **kwargs).results


def run_ray_detailed(
    inputs: Sequence[str],
    config: ReplayConfig,
    address: str | None = None,
    workers: int = 2,
    *,
    max_attempts: int = 3,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float = 0.0,
    progress: Callable[[InputResult], None] | None = None,
    replayer: str = DEFAULT_REPLAYER,
    keep_ray: bool = False,
) -> RayRun:
    """Replay `inputs` on Ray; see the module docstring for the model.

    Args:
        inputs: input paths or URIs (duplicates are run once).
        config: the job; its `out` is shared by all workers.
        address: a Ray cluster to join ("auto", "HOST:6379", "ray://..."); None
            starts a local Ray sized for `workers` (stopped at the end).
        workers: actors, each with its own Replayer.
        max_attempts: starts of one input before a dying worker fails it.
        cpus_per_worker: Ray CPUs per actor (also the detector's threads);
            default: a local Ray shares this machine's cores, a cluster 1.
        gpus_per_worker: Ray GPUs per actor (fractions share a GPU).
        progress: called with each finished input's result.
        replayer: "module:Class" built in each actor from `config`.
        keep_ray: leave a Ray that this call started running (tests reuse it).
    """
    if workers < 1:
        raise RayReplayError(f"--workers: expected at least 1, got {workers}")
    ray = import_ray()
    t0 = time.monotonic()
    todo = list(dict.fromkeys(str(i) for i in inputs))
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if address else float(max(1, (os.cpu_count() or 1) // workers))
    started = _start_ray(ray, address, num_cpus=max(1, int(workers * cpus_per_worker)))
    run = RayRun(results=[], workers=workers, address=address or "local")
    run.init_s = time.monotonic() - t0 if started else 0.0
    log.info("ray: %s in %.2f s", "started" if started else "reused", run.init_s)
    try:
        job = _detector_threads(config, int(cpus_per_worker))
        actor_cls = ray.remote(ReplayWorker).options(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=-1,  # bounded by max_attempts per input
            max_task_retries=0,  # the driver resubmits (and counts attempts)
        )
        actors = [actor_cls.remote(job, replayer) for _ in range(workers)]
        try:
            run.worker_info = ray.get([a.info.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            raise RayReplayError(f"replay workers could not start: {_short(exc)}") from exc
        run.workers_ready_s = time.monotonic() - t0
        _check_workers(run.worker_info)
        log.info(
            "ray: %d workers ready in %.2f s (engine load %s s)",
            workers,
            run.workers_ready_s,
            [w["load_s"] for w in run.worker_info],
        )
        by_input = _schedule(ray, actors, todo, max_attempts, progress)
        run.results = [by_input[i] for i in todo]
        for a in actors:
            ray.kill(a)
    finally:
        if started and not keep_ray:
            ray.shutdown()
    run.total_s = time.monotonic() - t0
    return run


def _check_workers(info: list[dict[str, Any]]) -> None:
    here = os.environ.get("LD_LIBRARY_PATH", "")
    for w in info:
        if w["ros_loaded"]:
            log.warning("ray worker %s has rclpy loaded; the replay pipeline does not need it", w)
        if w["ld_library_path"] != here:
            log.warning(
                "ray worker %s on %s runs with LD_LIBRARY_PATH=%r, this process with %r",
                w["pid"],
                w["host"],
                w["ld_library_path"],
                here,
            )


def _failed(source: str, reason: str) -> InputResult:
    from perception.replay.job import input_key

    return InputResult(source, input_key(source), "failed", reason=reason)


def _schedule(
    ray: ModuleType,
    actors: list[Any],
    todo: list[str],
    max_attempts: int,
    progress: Callable[[InputResult], None] | None,
) -> dict[str, InputResult]:
    """One input in flight per actor; a worker's death resubmits its input."""
    died = _worker_death_types(ray)
    pending: deque[tuple[str, int]] = deque((i, 1) for i in todo)
    idle = list(range(len(actors)))
    inflight: dict[Any, tuple[int, str, int]] = {}
    done: dict[str, InputResult] = {}

    def finish(source: str, result: InputResult) -> None:
        done[source] = result
        if progress is not None:
            progress(result)

    while pending or inflight:
        while idle and pending:
            k = idle.pop()
            source, attempt = pending.popleft()
            inflight[actors[k].run.remote(source)] = (k, source, attempt)
        ready, _ = ray.wait(list(inflight), num_returns=1)
        k, source, attempt = inflight.pop(ready[0])
        idle.append(k)
        try:
            result = ray.get(ready[0])
        except died as exc:
            if attempt < max_attempts:
                log.warning(
                    "ray: worker died on %s (attempt %d/%d), retrying: %s",
                    source,
                    attempt,
                    max_attempts,
                    _short(exc),
                )
                pending.appendleft((source, attempt + 1))
                continue
            result = _failed(source, f"worker died {attempt} times: {_short(exc)}")
        except ray.exceptions.RayTaskError as exc:  # the Replayer raised: a bug, not a fault
            result = _failed(source, f"replay error: {_short(exc)}")
        result.attempts = attempt
        finish(source, result)
    return done
