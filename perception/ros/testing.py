"""Helpers for tests with real rclpy: isolated contexts, spinning until a
condition holds (never a bare sleep), and nodes in separate processes.

Every process started here inherits the DDS settings that keep discovery on
this host; `safe_ros_env` enforces them even when the caller forgot.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor

__all__ = [
    "NodeProcess",
    "isolated_context",
    "override_environ",
    "restore_environ",
    "safe_ros_env",
    "spin_until",
]


def safe_ros_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ plus `extra`, with localhost-only discovery forced on."""
    env = dict(os.environ)
    if extra:
        env.update(extra)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOCALHOST_ONLY"] = "1"
    env.setdefault("ROS_DOMAIN_ID", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def override_environ(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set `env` in os.environ (before rclpy.init: the middleware reads it
    there); returns what `restore_environ` puts back."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return saved


def restore_environ(saved: Mapping[str, str | None]) -> None:
    """Undo `override_environ` (unset what was unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def isolated_context() -> Iterator[Context]:
    """A fresh rclpy Context, initialised and shut down around the block."""
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        raise RuntimeError(
            "refusing to start rclpy: ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST here"
        )
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=ctx)


def spin_until(
    executor: Executor,
    predicate: Callable[[], bool],
    timeout_s: float = 10.0,
    step_s: float = 0.02,
    on_step: Callable[[], object] | None = None,
) -> bool:
    """Spin `executor` until `predicate()` is true or `timeout_s` passes.

    Returns the predicate's final value, so tests can assert on it with their
    own message. `on_step` runs before every spin (a progress display, or a
    check that raises to give up early, e.g. when a watched process died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        if on_step is not None:
            on_step()
        executor.spin_once(timeout_sec=min(step_s, remaining))


def make_executor(context: Context) -> SingleThreadedExecutor:
    """A single-threaded executor bound to `context`."""
    return SingleThreadedExecutor(context=context)


_LIVE: set[NodeProcess] = set()


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the test process dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_LOG_DIR: list[str] = []


def _log_dir() -> str:
    """One folder for this process's node logs, removed when it exits (a
    failing test shows `output()` in its message; set PERCEPTION_KEEP_NODE_LOGS=1
    to keep them). Without it every run left hundreds of node-*.log in /tmp."""
    if not _LOG_DIR:
        _LOG_DIR.append(tempfile.mkdtemp(prefix="perception-node-logs-"))
        if os.environ.get("PERCEPTION_KEEP_NODE_LOGS") != "1":
            atexit.register(shutil.rmtree, _LOG_DIR[0], True)
    return _LOG_DIR[0]


@atexit.register
def _kill_leftovers() -> None:
    """A test runner killed mid-test must not leave node processes behind."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            os.killpg(proc.proc.pid, signal.SIGKILL)


class NodeProcess:
    """Runs `python -m module args...` (or any argv) as a separate process.

    Output goes to a temporary log file (read it with `output()` when a test
    fails). `stop()` sends SIGINT first so rclpy shuts down cleanly, then
    escalates to SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115  # closed in stop()
            prefix="node-", suffix=".log", delete=False, dir=_log_dir()
        )
        self.proc = subprocess.Popen(
            self.argv,
            env=safe_ros_env(env),
            cwd=str(cwd) if cwd else None,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        _LIVE.add(self)

    @classmethod
    def module(cls, module: str, *args: str, env: Mapping[str, str] | None = None) -> NodeProcess:
        return cls([sys.executable, "-m", module, *args], env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop the process (SIGINT, then SIGTERM, then SIGKILL); return its code."""
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        _LIVE.discard(self)
        return int(self.proc.returncode)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
