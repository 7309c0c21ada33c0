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
from perception.replay import storage
from perception.replay.fleet import write_fleet_summary
from perception.replay.job import InputResult, ReplayConfig, finished_result, input_key
from perception.replay.writer import remove_leftovers

__all__ = [
    "RAY_MISSING",
    "RayReplayError",
    "RayRun",
    "ReplayWorker",
    "import_ray",
    "lib_dirs",
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
_RESTART_TIMEOUT_S = 300.0  # a dead worker must be back (engine loaded) within this


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
        shutdown_s: stopping the local Ray this call started.
        workers: actors used.
        address: "local" or the cluster address joined.
        worker_info: per actor: pid, node ip, Replayer construction time.
    """

    results: list[InputResult]
    init_s: float = 0.0
    workers_ready_s: float = 0.0
    total_s: float = 0.0
    shutdown_s: float = 0.0
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
                    # Ray runs its workers at nice 15 to keep its own services
                    # responsive; on a machine shared with other work that made
                    # replay 3x slower than the local runner (measured on 2 busy
                    # cores). Workers here are the job, as `perception replay` is.
                    _system_config={"worker_niceness": 0},
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
    progress: bool | Callable[[InputResult], None] = True,
    replayer: str = DEFAULT_REPLAYER,
    keep_ray: bool = False,
    summary: bool = True,
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
        progress: log a line per finished input (True), or call this with
            each finished input's result.
        replayer: "module:Class" built in each actor from `config`.
        keep_ray: leave a Ray that this call started running (tests reuse it).
        summary: write OUT/fleet.json and fleet.md after every finished input
            (as the local runner does), so an interrupted run still has one.
    """
    if workers < 1:
        raise RayReplayError(f"--workers: expected at least 1, got {workers}")
    ray = import_ray()
    t0 = time.monotonic()
    todo = list(dict.fromkeys(str(i) for i in inputs))
    results: dict[str, InputResult] = {}
    report = _Report(todo, config.out, t0, progress, summary)
    folder = storage.local_dir(config.out)
    if folder is not None:  # what a killed earlier run left (as run_local does)
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)
    if config.resume:  # finished inputs need no worker (nor Ray, when all are done)
        for source in todo:
            done = finished_result(config.out, source)
            if done is not None:
                done.status = "skipped"
                results[source] = done
                report(source, done)
        todo = [s for s in todo if s not in results]
    if not todo:
        return RayRun(results=[results[s] for s in report.order], total_s=time.monotonic() - t0)
    if workers > len(todo):
        log.info("ray: %d workers for %d inputs: starting %d", workers, len(todo), len(todo))
        workers = len(todo)  # each worker loads an engine: none for nothing
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if address else float(max(1, (os.cpu_count() or 1) // workers))
    t_init = time.monotonic()
    started = _start_ray(ray, address, num_cpus=max(1, int(workers * cpus_per_worker)))
    run = RayRun(results=[], workers=workers, address=address or "local")
    run.init_s = time.monotonic() - t_init if started else 0.0
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

        def make_actor() -> Any:
            return actor_cls.remote(job, replayer)

        results.update(_schedule(ray, actors, make_actor, todo, max_attempts, report))
        run.results = [results[s] for s in report.order]
        for a in actors:
            ray.kill(a)
    finally:
        if started and not keep_ray:
            t_stop = time.monotonic()
            ray.shutdown()
            run.shutdown_s = time.monotonic() - t_stop
    run.total_s = time.monotonic() - t0
    return run


def lib_dirs(value: str) -> tuple[str, ...]:
    """The folders of an LD_LIBRARY_PATH that exist, in order (libraries such
    as OpenCV add folders that do not, which change nothing)."""
    return tuple(os.path.realpath(d) for d in value.split(os.pathsep) if d and os.path.isdir(d))


def _check_workers(info: list[dict[str, Any]]) -> None:
    here = lib_dirs(os.environ.get("LD_LIBRARY_PATH", ""))
    for w in info:
        if w["ros_loaded"]:
            log.warning("ray worker %s has rclpy loaded; the replay pipeline does not need it", w)
        if lib_dirs(w["ld_library_path"]) != here:
            log.warning(
                "ray worker %s on %s runs with LD_LIBRARY_PATH=%r, this process with %r",
                w["pid"],
                w["host"],
                w["ld_library_path"],
                here,
            )


class _Report:
    """Per finished input: a log line (or the caller's callback) and the fleet
    summary rewritten, in input order."""

    def __init__(
        self,
        order: list[str],
        out: str,
        t0: float,
        progress: bool | Callable[[InputResult], None],
        summary: bool,
    ) -> None:
        self.order, self.out, self.t0 = order, out, t0
        self.progress, self.summary = progress, summary
        self.done: dict[str, InputResult] = {}

    def __call__(self, source: str, r: InputResult) -> None:
        self.done[source] = r
        if callable(self.progress):
            self.progress(r)
        elif self.progress:
            text = f"{r.status}, {r.frames} frames, {r.fps:.1f} images/s, {r.wall_s:.1f} s"
            text += f", attempt {r.attempts}" if r.attempts > 1 else ""
            text += f" ({r.reason})" if r.reason else ""
            (log.warning if r.status == "failed" else log.info)(
                "replay %d/%d %s: %s", len(self.done), len(self.order), r.key, text
            )
        if self.summary:
            ordered = [self.done[s] for s in self.order if s in self.done]
            write_fleet_summary(ordered, self.out, time.monotonic() - self.t0)


def _failed(source: str, reason: str) -> InputResult:
    return InputResult(source, input_key(source), "failed", reason=reason)


def _schedule(
    ray: ModuleType,
    actors: list[Any],
    make_actor: Callable[[], Any],
    todo: list[str],
    max_attempts: int,
    finish: Callable[[str, InputResult], None],
) -> dict[str, InputResult]:
    """One input in flight per actor; a worker's death resubmits its input.

    After a death the actor gets no input until it answers again (Ray
    restarts it; a call made meanwhile is refused without running, which
    must not count as an attempt); an actor that Ray gave up on is replaced.
    """
    died = _worker_death_types(ray)
    unavailable = getattr(ray.exceptions, "ActorUnavailableError", ())
    pending: deque[tuple[str, int]] = deque((i, 1) for i in todo)
    idle = list(range(len(actors)))
    inflight: dict[Any, tuple[int, str, int]] = {}  # ref -> (actor, input or "" (probe), attempt)
    done: dict[str, InputResult] = {}
    deadline = {k: 0.0 for k in range(len(actors))}

    def probe(k: int) -> None:
        deadline[k] = deadline[k] or time.monotonic() + _RESTART_TIMEOUT_S
        inflight[actors[k].info.remote()] = (k, "", 0)

    while pending or any(source for _, source, _ in inflight.values()):
        while idle and pending:
            k = idle.pop()
            source, attempt = pending.popleft()
            inflight[actors[k].run.remote(source)] = (k, source, attempt)
        ready, _ = ray.wait(list(inflight), num_returns=1)
        k, source, attempt = inflight.pop(ready[0])
        if not source:  # a probe of a restarting actor
            try:
                ray.get(ready[0])
            except died as exc:
                if time.monotonic() > deadline[k]:
                    msg = f"a replay worker did not come back: {_short(exc)}"
                    raise RayReplayError(msg) from exc
                if not isinstance(exc, unavailable):  # Ray gave up on it: a new one
                    actors[k] = make_actor()
                time.sleep(0.1)
                probe(k)
                continue
            deadline[k] = 0.0
            idle.append(k)
            continue
        try:
            result = ray.get(ready[0])
        except died as exc:
            probe(k)
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
            idle.append(k)
            result = _failed(source, f"replay error: {_short(exc)}")
        else:
            idle.append(k)
        result.attempts = attempt
        done[source] = result
        finish(source, result)
    return done
