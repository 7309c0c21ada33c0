"""What every generated parameter class shares (see perception/config/generated.py).

A generated class is a frozen dataclass whose fields mirror one section of a
spec YAML (dotted names become nested classes). This base reads its specs,
checks every construction against them, and converts to and from the flat
dotted dicts that ROS parameters, YAML configs and CLIs use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

from perception.config.spec import ParameterError, ParamSpec, resolve, section_specs, validate

__all__ = ["SpecParams"]

_P = TypeVar("_P", bound="SpecParams")


class SpecParams:
    """Base of the generated parameter classes.

    SPEC is (spec file stem, section); GROUP is the dotted prefix of a nested
    class inside its section ("" for the top level, "model." for `.model`).
    """

    SPEC: ClassVar[tuple[str, str]]
    GROUP: ClassVar[str] = ""

    @classmethod
    def specs(cls) -> dict[str, ParamSpec]:
        """Specs of this class's parameters, names relative to GROUP ("model.path" -> "path")."""
        return section_specs(cls.SPEC[0], cls.SPEC[1], cls.GROUP)

    @classmethod
    def from_flat(cls: type[_P], values: Mapping[str, Any], prefix: str = "") -> _P:
        """From flat dotted names relative to this class ("model.path"); missing = default.

        `prefix` only names the parameters fully in messages ("cameras.front.").
        Raises ParameterError listing every bad or unknown value.
        """
        resolved = resolve(cls.specs(), values, prefix)
        return cls._from_resolved({cls.GROUP + k: v for k, v in resolved.items()})

    @classmethod
    def _from_resolved(cls: type[_P], v: Mapping[str, Any]) -> _P:
        """Build from resolved values keyed by names of the whole section (generated)."""
        raise NotImplementedError

    def to_flat(self) -> dict[str, Any]:
        """Flat dotted names relative to this class -> values (arrays as lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, SpecParams):
                out.update({f"{f.name}.{k}": x for k, x in value.to_flat().items()})
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    def with_flat(self: _P, changes: Mapping[str, Any], prefix: str = "") -> _P:
        """A validated copy with some flat dotted values changed (as from_flat)."""
        return type(self).from_flat({**self.to_flat(), **changes}, prefix)

    def __post_init__(self) -> None:
        """Refuse values that break the spec, also when constructed directly;
        store ints given for doubles as floats and lists as tuples."""
        specs = self.specs()
        errors = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            spec = specs.get(f.name)
            if spec is None:  # a nested group: it checked itself
                continue
            reason = validate(self.GROUP + f.name, spec, value)
            if reason:
                errors.append(reason)
            elif spec.type == "double" and not isinstance(value, float):
                object.__setattr__(self, f.name, float(value))
            elif spec.type == "double_array":
                object.__setattr__(self, f.name, tuple(float(x) for x in value))
            elif spec.type.endswith("_array") and not isinstance(value, tuple):
                object.__setattr__(self, f.name, tuple(value))
        if errors:
            raise ParameterError("; ".join(errors))
