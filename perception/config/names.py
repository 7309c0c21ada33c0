"""Names from configuration that become parts of ROS names (topics, parameters).

A camera name becomes a topic token (``~/<camera>/detections``) and a
parameter group (``cameras.<camera>.topic``), so it must be one ROS name
token: otherwise ``../evil`` or ``a b`` would surface as rclpy's
InvalidTopicNameException traceback after the engine was already loaded,
instead of the one-line start-up error every other bad parameter gets.
ROS-free, so pipeline files, replay and the nodes apply the same rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from perception.config.spec import ParameterError

__all__ = ["MAX_NAME_LEN", "check_camera_names", "name_token_problem"]

MAX_NAME_LEN = 64
"""Longest camera name: topics built from it stay far below the RMW limit."""

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def name_token_problem(name: object) -> str | None:
    """Why `name` cannot be one ROS name token, or None when it can."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "empty"
    if len(name) > MAX_NAME_LEN:
        return f"longer than {MAX_NAME_LEN} characters"
    if not _TOKEN.fullmatch(name):
        return "expected letters, digits and '_' only, not starting with a digit"
    return None


def check_camera_names(names: Iterable[object], what: str = "camera_names") -> None:
    """Raise ParameterError naming every camera name that is not a ROS name
    token ([A-Za-z_][A-Za-z0-9_]*, at most MAX_NAME_LEN characters)."""
    bad = [repr(name) for name in names if name_token_problem(name) is not None]
    if bad:
        raise ParameterError(
            f"{what}: invalid camera name {', '.join(bad)}: each becomes a topic name and a "
            f"parameter group, so it must be letters, digits and '_', not starting with a "
            f"digit, at most {MAX_NAME_LEN} characters"
        )
