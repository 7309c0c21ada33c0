"""Test configuration. DDS settings are fixed here, before anything can import
rclpy: discovery stays on this host and each test run gets its own domain so
parallel runs on one machine never see each other."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ["ROS_DOMAIN_ID"] = os.environ.get(
    "PERCEPTION_TEST_DOMAIN_ID", str(random.SystemRandom().randint(1, 101))
)
# The engine cache's per-user key (perception/core/engines/trust.py): a key of this
# test run, never the user's own ~/.config/perception/engine-cache.key.
if "PERCEPTION_ENGINE_CACHE_KEY" not in os.environ:
    _key_dir = tempfile.mkdtemp(prefix="perception-test-key-")
    atexit.register(shutil.rmtree, _key_dir, True)  # one per run, not one left per run
    os.environ["PERCEPTION_ENGINE_CACHE_KEY"] = str(Path(_key_dir) / "engine-cache.key")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _ros_available() -> str | None:
    try:
        import rclpy  # noqa: F401
        import vision_msgs.msg  # noqa: F401
    except Exception as exc:  # any import failure means "no ROS here"
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real assets not available: {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def ros_context():
    """An isolated, initialised rclpy Context, shut down after the test."""
    reason = _ros_available()
    if reason and os.environ.get("PERCEPTION_REQUIRE_ROS") == "1":
        pytest.fail(f"rclpy/vision_msgs must import here but do not: {reason}")
    if reason:
        pytest.skip(f"rclpy/vision_msgs not importable ({reason}); run ./dev test")
    from perception.ros.testing import isolated_context

    with isolated_context() as ctx:
        yield ctx


@pytest.fixture
def executor(ros_context):
    """A SingleThreadedExecutor on the isolated context."""
    from perception.ros.testing import make_executor

    ex = make_executor(ros_context)
    try:
        yield ex
    finally:
        ex.shutdown()
