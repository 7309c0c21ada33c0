"""Parameter specs: types, defaults, ranges and choices read from one YAML per node.

The spec files (perception/ros/specs/*.params.yaml) are the single source of
defaults for the nodes, the CLIs, the demo and the benchmarks. This module reads
and checks them without ROS, so the same rules (and the same error wording) hold
in a ROS parameter callback, in a CLI and in an offline pipeline.
"""

from __future__ import annotations

import array
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SPEC_DIR",
    "TYPES",
    "ParamSpec",
    "ParameterError",
    "load_spec",
    "resolve",
    "section_specs",
    "select",
    "validate",
]

SPEC_DIR = Path(__file__).resolve().parents[1] / "ros" / "specs"
"""Where <name>.params.yaml live (installed with the package as data)."""

TYPES = (
    "bool",
    "int",
    "double",
    "string",
    "string_array",
    "double_array",
    "int_array",
)
"""Parameter types, named as ROS 2 names them."""

_ARRAY_TYPES = ("string_array", "double_array", "int_array")


class ParameterError(ValueError):
    """A parameter value is invalid; the message names it, what is allowed and the value."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type, default, allowed values and what it is for."""

    name: str
    type: str
    default: Any
    description: str = ""
    choices: tuple[Any, ...] | None = None
    range: tuple[float, float] | None = None
    dynamic: bool = False


@cache
def _load(name: str) -> dict[str, dict[str, ParamSpec]]:
    path = SPEC_DIR / f"{name}.params.yaml"
    raw = yaml.safe_load(path.read_text())
    out: dict[str, dict[str, ParamSpec]] = {}
    for section, params in raw.items():
        out[section] = {}
        for pname, p in params.items():
            if p["type"] not in TYPES:
                raise ValueError(f"{path}: {pname}: unknown type {p['type']!r}")
            out[section][pname] = ParamSpec(
                name=pname,
                type=p["type"],
                default=p["default"],
                description=p.get("description", ""),
                choices=tuple(p["choices"]) if "choices" in p else None,
                range=(p["range"][0], p["range"][1]) if "range" in p else None,
                dynamic=bool(p.get("dynamic", False)),
            )
            reason = validate(f"{path.name}: {section}.{pname}", out[section][pname], p["default"])
            if reason:
                raise ValueError(f"default breaks its own spec: {reason}")
    return out


def load_spec(name: str) -> dict[str, dict[str, ParamSpec]]:
    """specs/<name>.params.yaml as {section: {param: ParamSpec}} (a fresh copy of the dicts)."""
    return {section: dict(params) for section, params in _load(name).items()}


def section_specs(name: str, section: str, group: str = "") -> dict[str, ParamSpec]:
    """The specs of one section; with `group` ("model.") only those under it, names relative."""
    specs = _load(name)[section]
    return {k[len(group) :]: v for k, v in specs.items() if k.startswith(group)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple, array.array))


_TYPE_OK: dict[str, Callable[[Any], bool]] = {
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "double": lambda v: isinstance(v, float),
    "string": lambda v: isinstance(v, str),
    "string_array": lambda v: _is_seq(v) and all(isinstance(x, str) for x in v),
    "double_array": lambda v: _is_seq(v) and all(_is_number(x) for x in v),
    "int_array": lambda v: _is_seq(v) and all(_is_int(x) for x in v),
}


def validate(full_name: str, spec: ParamSpec, value: Any) -> str | None:
    """Reason why `value` is not acceptable for `spec`, or None (ints pass as doubles)."""
    if spec.type == "double" and _is_int(value):
        value = float(value)
    if not _TYPE_OK[spec.type](value):
        return f"{full_name}: expected {spec.type}, got {type(value).__name__} {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{full_name}: expected one of {list(spec.choices)}, got {value!r}"
    if (
        spec.range is not None
        and spec.type in ("int", "double")
        and not (spec.range[0] <= value <= spec.range[1])
    ):
        return f"{full_name}: expected a value in [{spec.range[0]}, {spec.range[1]}], got {value!r}"
    if spec.type == "double" and math.isnan(value):
        return f"{full_name}: expected a number, got NaN"
    return None


def _normalise(spec: ParamSpec, value: Any) -> Any:
    """The canonical Python value: float for doubles, a fresh list for arrays."""
    if spec.type == "double":
        return float(value)
    if spec.type == "double_array":
        return [float(x) for x in value]
    if spec.type in _ARRAY_TYPES:
        return list(value)
    return value


def resolve(
    specs: Mapping[str, ParamSpec], values: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """Every parameter of `specs`: the given value, else the default, checked and normalised.

    Keys of `values` are names relative to `prefix` (as in `specs`); `prefix` only
    makes the messages name the full parameter. Unknown keys are refused with the
    closest known names. Raises ParameterError listing every problem at once.
    Doubles come back as float, arrays as lists.
    """
    errors = []
    for key in values:
        if key not in specs:
            close = difflib.get_close_matches(key, list(specs), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            errors.append(f"{prefix}{key}: unknown parameter{hint}")
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        value = values.get(name, spec.default)
        reason = validate(prefix + name, spec, value)
        if reason:
            errors.append(reason)
            continue
        out[name] = _normalise(spec, value)
    if errors:
        raise ParameterError("; ".join(errors))
    return out


def select(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of a flat dict under `prefix`, with the prefix removed.

    E.g. select(node_params, "tracker.") for TrackerParams.from_flat.
    """
    return {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
