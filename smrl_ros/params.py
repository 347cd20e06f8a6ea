"""Node parameters declared from a dataclass and read back typed.

A node's parameters are one frozen dataclass (the single schema): each field's default is
the parameter default, ``field(metadata={"help": ...})`` its description (see :func:`param`).
:func:`declare` declares them all; :func:`read` builds the dataclass back, converting and
checking each value, and raises a :class:`ParameterError` naming the parameter and the
expected type (``rate_hz:=fast`` -> "parameter 'rate_hz': expected float, got str 'fast'").

Parameters are declared with dynamic typing and checked here instead of by rclpy, because
rcl parses ``-p rate_hz:=500`` as an integer and rclpy would then refuse it for a float
parameter with an error that does not say what to write instead.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter value has the wrong type or is out of range (the message names it)."""


def param(default: Any, help: str) -> Any:  # noqa: A002 - reads naturally at the call site
    """A dataclass field with a default and a description for ``ros2 param describe``."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


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
        try:
            return tuple(convert(f"{name}[{i}]", v, inner) for i, v in enumerate(value))
        except ParameterError:
            raise fail() from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
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


def declare(node: Any, cls: type, read_only: tuple[str, ...] = ()) -> None:
    """Declare one parameter per field of dataclass ``cls`` on ``node``."""
    for f in dataclasses.fields(cls):
        descriptor = ParameterDescriptor(description=f.metadata.get("help", ""), dynamic_typing=True,
                                         read_only=f.name in read_only)
        node.declare_parameter(f.name, _ros_default(f.default), descriptor)


def read(node: Any, cls: type[T]) -> T:
    """The dataclass ``cls`` built from the node's current parameter values.

    Raises:
        ParameterError: naming the parameter, the expected type and what was given; also
            re-raises the dataclass's own ``__post_init__`` validation as ParameterError.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: convert(f.name, node.get_parameter(f.name).value, hints[f.name])
              for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
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
    return [(f.name, _type_name(hints[f.name]), repr(_ros_default(f.default)), f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)]


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
