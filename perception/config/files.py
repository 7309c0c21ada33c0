"""Pipeline files (config/*.yaml): ROS 2 parameter files read without ROS.

Each top-level key is a node name; its `perception.node_type` parameter says
which node it is. `load_config` reads a file as `run_config` and the launch
files pass it to rcl (nested maps flattened to dotted names) and applies
`NODE.PARAM=VALUE` overrides, so replay, the demo and the live nodes all
run the same parameters.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import yaml

from perception.config.names import check_camera_names
from perception.config.spec import ParameterError, ParamSpec, resolve, section_specs

__all__ = ["NODE_KINDS", "TYPE_KEY", "check_node", "flatten", "load_config", "parse_value"]

TYPE_KEY = "perception.node_type"
NODE_KINDS = ("detector", "detector_lifecycle", "tracker", "fusion", "overlay")


def parse_value(text: str) -> Any:
    """YAML scalar or list; empty text is the empty string (YAML would say null,
    which rcl refuses)."""
    return yaml.safe_load(text) if text.strip() else ""


def _target_nodes(data: dict[str, Any], node: str, item: str) -> list[str]:
    """Node names an override addresses: a pattern must match a node of the
    file (a typo would otherwise be silently ignored); a plain name may add one."""
    if not any(ch in node for ch in "*?["):
        return [node]
    names = [n for n in data if fnmatch.fnmatchcase(n, node)]
    if not names:
        raise ValueError(f"--set {item!r}: {node!r} matches none of the nodes {list(data)}")
    return names


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML maps -> dotted parameter names (what rcl does with them)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


_ROS_OWN = ("use_sim_time", TYPE_KEY)
"""Parameters every ROS node has (not in our specs)."""


def param_groups(kind: str, params: dict[str, Any]) -> list[tuple[str, dict[str, ParamSpec]]]:
    """(prefix, specs) of every parameter group a node of `kind` declares
    (its cameras from `params`' camera_names)."""
    if kind in ("detector", "detector_lifecycle"):
        cams = params.get("camera_names") or []
        return [
            ("", section_specs("detector", "node")),
            ("tracker.", section_specs("tracker", "tracker")),
            *((f"cameras.{c}.", section_specs("detector", "camera")) for c in cams),
        ]
    if kind == "fusion":
        return [("", section_specs("fusion", "node")),
                ("tracker3d.", section_specs("tracker", "tracker3d"))]  # fmt: skip
    if kind == "tracker":
        return [("", section_specs("tracker", "tracker_node")),
                ("tracker.", section_specs("tracker", "tracker"))]  # fmt: skip
    return [("", section_specs("overlay", "node"))]


def check_node(name: str, params: dict[str, Any]) -> None:
    """Refuse a node's unknown (misspelled) or invalid parameters with the
    reason: rclpy would silently ignore an undeclared name."""
    kind = params[TYPE_KEY]
    groups = param_groups(kind, params)
    errors: list[str] = []
    if kind in ("detector", "detector_lifecycle"):
        try:
            check_camera_names(params.get("camera_names") or [], f"{name}.camera_names")
        except ParameterError as exc:
            raise ParameterError(str(exc)) from None  # before its cameras.* groups
    for prefix, specs in sorted(groups, key=lambda g: -len(g[0])):
        mine = {
            k[len(prefix) :]: v
            for k, v in params.items()
            if k.startswith(prefix) and k not in _ROS_OWN and not k.startswith("qos_overrides.")
            and not any(p and k.startswith(p) and len(p) > len(prefix) for p, _ in groups)
        }  # fmt: skip
        try:
            resolve(specs, mine, f"{name}.{prefix}")
        except ParameterError as exc:
            errors.append(str(exc))
    if errors:
        raise ParameterError("; ".join(errors))


def load_config(path: Path, overrides: list[str]) -> dict[str, Any]:
    """Read the parameter file (flattened to dotted names) and apply
    `node.param=value` overrides (node may be a shell pattern over node names)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of node names, got {type(data).__name__}")
    for body in data.values():
        if isinstance(body, dict) and isinstance(body.get("ros__parameters"), dict):
            body["ros__parameters"] = flatten(body["ros__parameters"])
    for item in overrides:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        for name in _target_nodes(data, node, item):
            params = data.setdefault(name, {}).setdefault("ros__parameters", {})
            params[param] = parse_value(value)
    for name, body in data.items():
        params = (body or {}).get("ros__parameters")
        if not isinstance(params, dict) or TYPE_KEY not in params:
            raise ValueError(f"{path}: node {name!r}: expected ros__parameters with {TYPE_KEY}")
        if params[TYPE_KEY] not in NODE_KINDS:
            raise ValueError(
                f"{TYPE_KEY}: expected one of {sorted(NODE_KINDS)}, got {params[TYPE_KEY]!r}"
            )
        check_node(name, params)
    return data
