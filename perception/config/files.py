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

__all__ = ["NODE_KINDS", "TYPE_KEY", "flatten", "load_config", "parse_value"]

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
    return data
