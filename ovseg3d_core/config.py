"""Typed dataclass configs shared by the library, the training scripts and the ROS nodes.

Every tunable is declared once with :func:`setting` (default from the papers, a description
and an allowed range); the same object is loaded from YAML, validated on construction and
flattened into ROS parameter descriptors by the nodes, so the three never drift apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of its range."""


def setting(
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """Declare one config field with its description and allowed range (inclusive)."""
    metadata = {"description": description, "low": low, "high": high, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ParameterSpec:
    """One flattened config leaf, as a ROS node declares it."""

    name: str
    default: Any
    type: type
    description: str
    low: float | None
    high: float | None
    choices: tuple[Any, ...] | None


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_type(hint: Any) -> Any:
    """Strip ``X | None`` to ``X``; keep other hints unchanged."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _coerce(name: str, value: Any, hint: Any) -> Any:
    hint = _leaf_type(hint)
    origin = typing.get_origin(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping for {hint.__name__}, got {type(value).__name__}")
        return hint.from_dict(value, _prefix=f"{name}.")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = [value_ if item is Any else _coerce(f"{name}[{i}]", value_, item) for i, value_ in enumerate(value)]
        return items if origin is list else tuple(items)
    return value


class Config:
    """Mixin for ``@dataclass`` configs: strict YAML/dict loading, range checks, flattening."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            low, high, choices = (f.metadata.get(k) for k in ("low", "high", "choices"))
            if choices is not None and value not in choices:
                raise ConfigError(f"{type(self).__name__}.{f.name}={value!r} is not one of {list(choices)}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if low is not None and value < low:
                    raise ConfigError(f"{type(self).__name__}.{f.name}={value} is below its minimum {low}")
                if high is not None and value > high:
                    raise ConfigError(f"{type(self).__name__}.{f.name}={value} is above its maximum {high}")

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, _prefix: str = "") -> C:
        data = dict(data or {})
        hints = _resolved_types(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys {[_prefix + k for k in unknown]}; known: {sorted(known)}")
        kwargs = {k: _coerce(_prefix + k, v, hints[k]) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, section: str | None = None) -> C:
        """Load from a YAML file; ``section`` picks a top-level key (e.g. ``scene``)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with path.open() as fh:
            data = yaml.safe_load(fh) or {}
        if section is not None:
            data = data.get(section, {})
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping{f' under {section!r}' if section else ''}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def parameters(cls, prefix: str = "") -> list[ParameterSpec]:
        """Flatten nested configs into dotted leaves (``pooling.iterations``) for ROS parameters."""
        hints = _resolved_types(cls)
        default = cls()
        specs: list[ParameterSpec] = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = _leaf_type(hints[f.name])
            name = prefix + f.name
            if dataclasses.is_dataclass(hint):
                specs.extend(hint.parameters(prefix=name + "."))
                continue
            specs.append(
                ParameterSpec(
                    name=name,
                    default=getattr(default, f.name),
                    type=typing.get_origin(hint) or hint,
                    description=f.metadata.get("description", ""),
                    low=f.metadata.get("low"),
                    high=f.metadata.get("high"),
                    choices=f.metadata.get("choices"),
                )
            )
        return specs

    @classmethod
    def from_flat(cls: type[C], flat: Mapping[str, Any]) -> C:
        """Inverse of :meth:`parameters`: build from dotted keys (as ROS parameters arrive)."""
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.from_dict(nested)
