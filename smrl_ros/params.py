"""Node parameters declared from a dataclass and read back typed.

A node's parameters are one frozen dataclass (the single schema): each field's default is
the parameter default, ``field(metadata={"help": ...})`` its description (see :func:`param`).
:func:`declare` declares them all; :func:`read` builds the dataclass back, converting and
checking each value, and raises a :class:`ParameterError` naming the parameter and the
expected type (``rate_hz:=fast`` -> "parameter 'rate_hz': expected float, got str 'fast'").
A float parameter (and each element of a list of floats) is finite: no node has a use for NaN
or infinity, and a NaN compares false with every bound a ``__post_init__`` checks.

Parameters are declared with dynamic typing and checked here instead of by rclpy, because
rcl parses ``-p rate_hz:=500`` as an integer and rclpy would then refuse it for a float
parameter with an error that does not say what to write instead. Parameters that shape safety
carry a range (``param(..., low=, high=)``): it goes into the descriptor
(``FloatingPointRange`` / ``IntegerRange``, so ``ros2 param describe`` shows it and rclpy
refuses a value outside it at declaration and at run time), and :func:`read` checks it again
for every value, NaN and infinities included (a float range also means finite).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter value has the wrong type or is out of range (the message names it)."""


def param(default: Any, help: str, low: float | None = None,  # noqa: A002 - reads naturally at the call site
          high: float | None = None) -> Any:
    """A dataclass field with a default and a description for ``ros2 param describe``; ``low``
    and ``high`` (both or neither) bound a number parameter, inclusive."""
    metadata: dict[str, Any] = {"help": help}
    if (low is None) != (high is None):
        raise TypeError("give both low and high, or neither")
    if low is not None:
        if not isinstance(default, (int, float)) or isinstance(default, bool) or not low <= default <= high:
            raise TypeError(f"a range needs a number default inside it, got {default!r} for [{low}, {high}]")
        metadata["range"] = (low, high)
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_range(name: str, value: Any, bounds: tuple[float, float] | None) -> None:
    """Raise ParameterError unless ``value`` is finite and inside ``bounds`` (when given)."""
    if bounds is None:
        return
    low, high = bounds
    if not (math.isfinite(value) and low <= value <= high):
        raise ParameterError(f"parameter '{name}': must be a finite number in [{_number(low)}, {_number(high)}], "
                             f"got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def convert(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` (as rclpy holds it) against the field type ``tp``; return it converted."""
    def fail() -> ParameterError:
        shown = f"{type(value).__name__} {value!r}" if value is not None else "nothing (not set)"
        return ParameterError(f"parameter '{name}': expected {_type_name(tp)}, got {shown}")

    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        inner = typing.get_args(tp)[0]
        if value is None or (isinstance(value, (bytes, bytearray)) and len(value) == 0):
            return ()  # an empty list has no element type in ROS: it arrives unset or as bytes
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise fail()
        converted = []
        for i, v in enumerate(value):
            try:
                converted.append(convert(f"{name}[{i}]", v, inner))
            except ParameterError as exc:
                if "finite" in str(exc):
                    raise ParameterError(f"parameter '{name}': must be finite numbers, got {list(value)!r}") from None
                raise fail() from None
        return tuple(converted)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        if not math.isfinite(value):  # no parameter means NaN or infinity (a period, a goal, a pose)
            raise ParameterError(f"parameter '{name}': must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise TypeError(f"parameter '{name}': unsupported field type {tp}")


def _ros_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _descriptor(f: dataclasses.Field, read_only: bool) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=f.metadata.get("help", ""), dynamic_typing=True,
                                     read_only=read_only)
    bounds = f.metadata.get("range")
    if bounds is not None:
        if isinstance(f.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(bounds[0]),
                                                                  to_value=float(bounds[1]), step=0.0)]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(bounds[0]), to_value=int(bounds[1]), step=0)]
    return descriptor


def declare(node: Any, cls: type, read_only: tuple[str, ...] = ()) -> None:
    """Declare one parameter per field of dataclass ``cls`` on ``node``.

    Raises:
        ParameterError: a value given at start lies outside its declared range.
    """
    for f in dataclasses.fields(cls):
        try:
            node.declare_parameter(f.name, _ros_default(f.default), _descriptor(f, f.name in read_only))
        except InvalidParameterValueException as exc:
            if "range" not in f.metadata:
                raise ParameterError(f"parameter '{f.name}': {exc}") from None
            low, high = f.metadata["range"]
            given = getattr(node, "_parameter_overrides", {}).get(f.name)
            raise ParameterError(f"parameter '{f.name}': must be a finite number in [{_number(low)}, {_number(high)}], "
                                 f"got {getattr(given, 'value', given)!r}") from None


def read(node: Any, cls: type[T]) -> T:
    """The dataclass ``cls`` built from the node's current parameter values.

    Raises:
        ParameterError: naming the parameter, the expected type and what was given; also
            re-raises the dataclass's own ``__post_init__`` validation as ParameterError.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: convert(f.name, node.get_parameter(f.name).value, hints[f.name])
              for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        check_range(f.name, kwargs[f.name], f.metadata.get("range"))
    try:
        return cls(**kwargs)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ParameterError(str(exc)) from None


def field_type(cls: type, name: str) -> Any:
    """The annotation of field ``name`` of ``cls`` (for converting a changed parameter)."""
    return typing.get_type_hints(cls)[name]


def help_table(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every parameter: for the docs' tables."""
    hints = typing.get_type_hints(cls)
    return [(f.name, _type_name(hints[f.name]), repr(_ros_default(f.default)), _help(f))
            for f in dataclasses.fields(cls)]


def _help(f: dataclasses.Field) -> str:
    bounds = f.metadata.get("range")
    text = f.metadata.get("help", "")
    return text if bounds is None else f"{text} (range [{_number(bounds[0])}, {_number(bounds[1])}])"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def markdown_rows(cls: type) -> list[str]:
    """The rows of a node's parameter table in docs/ros.md and docs/deployment.md, generated
    from its declarations (``python -m smrl_ros.params`` prints them; a test keeps the docs in
    step)."""
    return [f"| `{name}` | {kind} | `{default}` | {text} |" for name, kind, default, text in help_table(cls)]


NODE_PARAMS = {"smrl_sim": ("smrl_ros.sim_node", "SimParams"),
               "smrl_controller": ("smrl_ros.controller_node", "ControllerParams"),
               "smrl_explorer": ("smrl_ros.explorer_node", "ExplorerParams"),
               "smrl_adapter": ("smrl_ros.adapter_node", "AdapterParams"),
               "smrl_trainer": ("smrl_ros.trainer_node", "TrainerParams")}


def main() -> None:
    import importlib

    for node, (module, name) in NODE_PARAMS.items():
        print(f"`{node}` ({name})\n\n| parameter | type | default | meaning |\n|---|---|---|---|")
        print("\n".join(markdown_rows(getattr(importlib.import_module(module), name))) + "\n")


if __name__ == "__main__":
    main()
