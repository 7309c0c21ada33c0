"""`perception replay --ray`: the same outputs as local replay, faults handled.

One local Ray (2 workers) serves the module; two generated 3-camera scenario
bags are replayed locally and on Ray and their outputs compared (MCAP byte
for byte, frame table and result without the timings). A worker that dies in
the middle of an input (SIGKILL, as the OOM killer does) has the input
retried with outputs equal to a clean run's, once; a corrupt input is
reported while the others complete. Ray's processes listen on loopback only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perception.replay.job import ReplayConfig, input_key, run_local

REPO = Path(__file__).resolve().parents[1]
PIPELINE = str(REPO / "config" / "pipeline_carla.yaml")
MODEL = REPO / "models" / "default_detector.onnx"  # classes car, pedestrian, cyclist
OVERRIDES = (f"detector.model.path={MODEL}",)
TIMING = ("wall_s", "fps", "attempts")  # result fields that depend on the machine


def _ray() -> Any:
    if os.environ.get("PERCEPTION_REQUIRE_ROS") == "1":  # ./dev test: the bootstrap installs it
        import ray

        return ray
    return pytest.importorskip("ray", reason="pip install -r requirements/replay.txt")


# A Replayer whose worker process is killed (SIGKILL) at frame group 5 of the
# input named CRASH_INPUT, the first time only (a marker file remembers).
_CRASHING = textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    from perception.replay.job import Replayer

    class CrashOnce(Replayer):
        def run(self, input, progress=None):
            marker = Path(os.environ["CRASH_MARKER"])
            crash = Path(input).name == os.environ["CRASH_INPUT"] and not marker.exists()

            def step(groups, images):
                if crash and groups == 5:
                    marker.write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)

            return super().run(input, step)
    """
)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 2 s scenario bags (3 cameras with depth, ground truth), small images."""
    root = tmp_path_factory.mktemp("bags")
    out = []
    for seed in (1, 2):
        bag = root / f"drive{seed}"
        cmd = [sys.executable, "-m", "perception.sim.bag", str(bag), "--seed", str(seed),
               "--duration", "2", "--depth", "--width", "320", "--height", "180"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=240)
        out.append(bag)
    return out


@pytest.fixture(scope="module")
def local_run(bags: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local")
    results = run_local(
        [str(b) for b in bags], ReplayConfig(PIPELINE, str(out), OVERRIDES), progress=False
    )
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    return out


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local Ray for the module, started the way run_ray starts one; its
    workers can import the crashing Replayer (PYTHONPATH is inherited)."""
    ray = _ray()
    from perception.replay import ray_runner

    helpers = tmp_path_factory.mktemp("helpers")
    (helpers / "crash_replayer.py").write_text(_CRASHING)
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(helpers), os.environ.get("PYTHONPATH")])),
        "CRASH_MARKER": str(helpers / "crashed"),
        "CRASH_INPUT": "drive1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    assert not ray.is_initialized()
    try:
        assert ray_runner._start_ray(ray, None, num_cpus=2)
        yield {"ray": ray, "marker": helpers / "crashed"}
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _outputs(folder: Path) -> dict[str, Any]:
    """What must not depend on where an input ran: every output file except
    the timing ones, the frame table without its latencies, the result
    without wall time."""
    got: dict[str, Any] = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(f.relative_to(folder))
        if f.suffix == ".mcap" or f.name == "metadata.yaml":
            got[rel] = f.read_bytes()
        elif f.name == "frames.jsonl":
            rows = [json.loads(line) for line in f.read_text().splitlines()]
            got[rel] = [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in rows]
        elif f.name == "result.json":
            got[rel] = {k: v for k, v in json.loads(f.read_text()).items() if k not in TIMING}
    assert any(k.endswith(".mcap") for k in got), sorted(got)
    return got


def _keys(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir())


@pytest.mark.slow
def test_ray_replay_equals_local_and_reports_a_corrupt_input(
    ray_session: dict[str, Any], bags: list[Path], local_run: Path, tmp_path: Path
) -> None:
    from perception.replay.ray_runner import lib_dirs, run_ray_detailed

    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + os.urandom(2000))
    inputs = [str(bags[0]), str(corrupt), str(bags[1])]
    out = tmp_path / "ray"
    run = run_ray_detailed(
        inputs, ReplayConfig(PIPELINE, str(out), OVERRIDES), None, 2, progress=False
    )
    assert [r.status for r in run.results] == ["ok", "failed", "ok"]
    assert run.results[1].reason and run.results[1].input == str(corrupt)
    assert all(r.attempts == 1 for r in run.results)
    assert len({w["pid"] for w in run.worker_info}) == 2
    for w in run.worker_info:  # ROS-free workers with this process's libraries
        assert not w["ros_loaded"]
        assert lib_dirs(w["ld_library_path"]) == lib_dirs(os.environ.get("LD_LIBRARY_PATH", ""))
    for bag in bags:
        key = input_key(str(bag))
        assert _outputs(out / key) == _outputs(local_run / key)
    assert _keys(out) == _keys(local_run)  # nothing for the corrupt input, no staging left
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["aggregate"]["ok"] == 2 and fleet["failures"][0]["input"] == str(corrupt)
    _assert_loopback_only()


@pytest.mark.slow
def test_worker_killed_mid_input_is_retried_once(
    ray_session: dict[str, Any], bags: list[Path], local_run: Path, tmp_path: Path
) -> None:
    from perception.replay.ray_runner import run_ray_detailed

    out = tmp_path / "ray"
    config = ReplayConfig(PIPELINE, str(out), OVERRIDES)
    run = run_ray_detailed([str(b) for b in bags], config, None, 2, progress=False,
                           replayer="crash_replayer:CrashOnce")  # fmt: skip
    assert ray_session["marker"].is_file(), "the worker was not killed"
    assert [r.status for r in run.results] == ["ok", "ok"], [r.reason for r in run.results]
    assert [r.attempts for r in run.results] == [2, 1]
    for bag in bags:  # the retried input's outputs: complete, once, as a clean run's
        key = input_key(str(bag))
        assert _outputs(out / key) == _outputs(local_run / key)
    assert _keys(out) == _keys(local_run)


def _assert_loopback_only() -> None:
    """Every listening socket of this process and its children (Ray's GCS,
    raylet, agents, workers) is bound to loopback."""
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    pids = {me.pid, *(p.pid for p in me.children(recursive=True))}
    loopback = ("127.", "::1", "::ffff:127.")
    listening = [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.pid in pids and c.status == psutil.CONN_LISTEN
    ]
    assert listening, "no Ray sockets found"
    assert [s for s in listening if not s[1].startswith(loopback)] == []


def test_ray_missing_names_the_requirements_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from perception.replay.ray_runner import RayReplayError, run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    with pytest.raises(RayReplayError, match=r"pip install -r requirements/replay\.txt"):
        run_ray(["x"], ReplayConfig(PIPELINE, str(tmp_path), OVERRIDES), None, 2)
    from perception.replay.cli import main

    argv = ["replay", str(tmp_path / "drive"), "--out", str(tmp_path / "out"), "--ray"]
    assert main([*argv, "--quiet"]) == 2  # a usage error, before any input runs
    assert not (tmp_path / "out").exists()
