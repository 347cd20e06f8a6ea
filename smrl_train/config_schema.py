"""The strict mapping-to-dataclass machinery every config section is built with.

:func:`from_dict` builds a frozen dataclass from a plain mapping (parsed YAML): an unknown key
or a value of the wrong type stops with a :class:`ConfigError` naming the dotted key and the
expected type; lists become tuples, nested dataclasses are built recursively. :func:`to_dict`
is the inverse. The family sections (:mod:`smrl_train.config`) and the ``smac:`` section
(:mod:`smrl_train.smac.config`) both build on this module, which imports neither.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
INT_LIMIT = 2**63


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type (message names the key)."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists to tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__}")
        return _build(tp, value, key)  # type: ignore[arg-type]
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__}")
        inner = typing.get_args(tp)[0]
        return tuple(_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        # YAML reads 1e-3 as a string and 5 as an int; both are fine where a float is wanted.
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected float, got bool {value!r}")
        if isinstance(value, (int, float, str)):
            try:
                return float(value)
            except ValueError:
                pass
            except OverflowError:  # an integer with hundreds of digits
                raise ConfigError(f"{key}: must be a finite float, got an integer of {len(str(value))} digits") \
                    from None
        raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        if not -INT_LIMIT <= value < INT_LIMIT:  # numpy and torch take seeds and sizes as int64
            raise ConfigError(f"{key}: must fit in a signed 64-bit integer, got an integer of {len(str(value))} digits")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    return value


def yaml_error_line(exc: Exception) -> str:
    """A YAML parser error on one line: the problem and where (PyYAML's message spans lines)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields or name == "root":
            known = ", ".join(n for n in fields if n != "root")
            raise ConfigError(f"unknown key '{key}' (known keys here: {known})")
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, strictly (unknown keys and bad types raise)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    return _build(cls, data, prefix)


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-able) form of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
