"""Node graphs as plain Python data, and the two ways to run one: subprocesses or a launch file.

A :class:`GraphSpec` lists :class:`NodeSpec` s (module, console script, parameters, parameter
files, remaps); the graphs themselves are defined in :mod:`smrl_ros.graphs`. Two consumers
share each description:

* :class:`GraphRunner` starts every node as ``python -m <module> --ros-args ...`` (no
  ``launch``, no ``ros2`` CLI: the pip-only path, the tests and ``make demo``);
* :func:`launch_description` turns a graph builder into a ``launch.LaunchDescription`` for
  ``ros2 launch`` on a ROS 2 install (``launch/*.launch.py`` are thin wrappers over it).

Inline parameters are written to a YAML parameter file (``/**: ros__parameters: ...``) rather
than ``-p name:=value`` so types survive exactly (``500.0`` stays a float, a path stays a
string); parameter files listed in ``params_files`` come first and inline values override them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from smrl_train.child_processes import die_with_parent

PACKAGE = "smrl_ros"


@dataclass(frozen=True)
class NodeSpec:
    """One node: ``module`` has a ``main(args)``; ``executable`` is its console script."""

    name: str
    module: str
    executable: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    remaps: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""

    @property
    def label(self) -> str:
        """The node's name with its namespace (``arm1/smrl_explorer``), unique in a graph."""
        return f"{self.namespace.strip('/')}/{self.name}" if self.namespace.strip("/") else self.name

    def ros_args(self, inline_params_file: str | None = None) -> list[str]:
        """The ``--ros-args ...`` part of the command line."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remaps.items():
            args += ["-r", f"{src}:={dst}"]
        for path in self.params_files:
            args += ["--params-file", str(path)]
        if inline_params_file is not None:
            args += ["--params-file", inline_params_file]
        return args

    def command(self, inline_params_file: str | None = None, python: str = sys.executable) -> list[str]:
        """The full command line (``python -u -m module --ros-args ...``)."""
        return [python, "-u", "-m", self.module, *self.ros_args(inline_params_file)]


@dataclass(frozen=True)
class GraphSpec:
    """A named set of nodes started together. The graph is done when a node fails, or when
    a node exits and ``wait_for`` is empty (an explorer, a trainer: its job is done), or
    when every node ``wait_for`` names (labels) has exited (a fleet's explorers)."""

    name: str
    nodes: tuple[NodeSpec, ...]
    wait_for: tuple[str, ...] = ()

    def node(self, label: str) -> NodeSpec:
        for n in self.nodes:
            if n.label == label:
                return n
        raise KeyError(label)

    def done(self, exited: Mapping[str, int | None]) -> bool:
        """Whether the graph should stop, given the exit codes of the nodes that exited."""
        if any(code != 0 for code in exited.values()):
            return True
        if self.wait_for:
            return all(label in exited for label in self.wait_for)
        return bool(exited)


def params_yaml(parameters: Mapping[str, Any]) -> str:
    """A parameter file applying ``parameters`` to any node (``/**``)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}
    return yaml.safe_dump({"/**": {"ros__parameters": plain}}, sort_keys=True)


# ---------------------------------------------------------------------------------------
# Running a graph as subprocesses


def ros_environment(domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a node process gets: Fast DDS, discovery on this machine, unbuffered
    output, and ``domain_id`` when given (tests give every graph its own)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def _file_stem(label: str) -> str:
    """A node's files are named for its label, flat (``arm1/smrl_explorer`` -> ``arm1__smrl_explorer``)."""
    return label.replace("/", "__")


class GraphRunner:
    """Start every node of a graph as a subprocess; stop them all on exit (context manager).

    Each node's stdout and stderr go to ``log_dir/<name>.log``. :meth:`stop` sends SIGINT
    (the nodes shut down cleanly), then SIGTERM, then SIGKILL, each after a timeout.
    """

    def __init__(self, graph: GraphSpec, domain_id: int | None = None, log_dir: str | Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self.graph = graph
        self.env = ros_environment(domain_id, env)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"smrl_{graph.name}_")
        self.log_dir = Path(log_dir) if log_dir is not None else Path(self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, only: Sequence[str] | None = None) -> GraphRunner:
        for spec in self.graph.nodes:
            if only is not None and spec.label not in only:
                continue
            self.start_node(spec)
        return self

    def start_node(self, spec: NodeSpec) -> subprocess.Popen[bytes]:
        params_file = None
        if spec.parameters:
            params_file = str(Path(self._tmp.name) / f"{_file_stem(spec.label)}.params.yaml")
            Path(params_file).write_text(params_yaml(spec.parameters))
        log = open(self.log_path(spec.label), "wb")  # noqa: SIM115 - closed in stop()
        self._logs[spec.label] = log
        # Each node in its own session: a Ctrl-C reaches it only through the runner's clean
        # stop; and it dies with the runner, whatever ends the runner.
        proc = subprocess.Popen(spec.command(params_file), stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=self.cwd, start_new_session=True, preexec_fn=die_with_parent())
        self.processes[spec.label] = proc
        return proc

    def log_path(self, label: str) -> Path:
        """Where the node ``label`` logs (``arm1/smrl_explorer`` -> ``arm1__smrl_explorer.log``)."""
        return self.log_dir / f"{_file_stem(label)}.log"

    def log(self, label: str) -> str:
        path = self.log_path(label)
        return path.read_text(errors="replace") if path.exists() else ""

    def exited(self) -> dict[str, int]:
        """Return codes of the nodes that have exited."""
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def wait_exit(self, label: str, timeout: float) -> int | None:
        """The node's return code once it exits, or None after ``timeout`` s."""
        try:
            return self.processes[label].wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> dict[str, int]:
        """Stop every node (SIGINT, then SIGTERM, then SIGKILL); return their exit codes."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in self.processes.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)  # the node's own session: its children too
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            for p in alive:
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for log in self._logs.values():
            log.close()
        return {n: p.returncode for n, p in self.processes.items()}

    def __enter__(self) -> GraphRunner:
        return self

    def close(self) -> None:
        """Stop every node and remove the generated parameter files."""
        self.stop()
        self._tmp.cleanup()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Launch files (imported lazily: launch/launch_ros exist only on a ROS 2 install)


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


def launch_description(arguments: Sequence[LaunchArgument],
                       build: Callable[[Mapping[str, str]], GraphSpec]) -> Any:
    """A ``launch.LaunchDescription`` that declares ``arguments`` and starts the nodes of
    ``build({argument: value})`` through launch_ros (console scripts in ``lib/smrl_ros``).

    As :func:`smrl_ros.run_graph.main`: the first node to exit ends the launch (the explorer,
    the trainer or an adapter with ``exit_when_done`` when their job is done; a node that
    refuses to start), the others are stopped, and ``ros2 launch`` exits non-zero, naming the
    node and its status, when that node failed."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def ended(graph: GraphSpec, label: str, exited: dict[str, int | None]) -> Callable[[Any, Any], list[Any] | None]:
        def on_exit(event: Any, context: Any) -> list[Any] | None:
            if context.is_shutdown:
                return None  # stopping anyway (Ctrl-C, or another node ended the launch)
            if event.returncode != 0:
                # An exception from an event handler makes the launch service shut down and
                # return 1 (a Shutdown action would return 0).
                raise NodeFailed(f"{label} exited with status {event.returncode}")
            exited[label] = event.returncode
            return [Shutdown(reason=f"{label} finished")] if graph.done(exited) else None
        return on_exit

    def setup(context: Any) -> list[Any]:
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
        graph = build(values)
        exited: dict[str, int | None] = {}
        return [
            # An empty list is left out (the node's default applies): launch_ros cannot type it.
            Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=spec.namespace or None,
                 parameters=[*spec.params_files, {k: list(v) if isinstance(v, tuple) else v
                                                  for k, v in spec.parameters.items() if v != () and v != []}],
                 remappings=list(spec.remaps.items()), output="screen", on_exit=ended(graph, spec.label, exited))
            for spec in graph.nodes
        ]

    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({"choices": list(a.choices)} if a.choices else {}))
                for a in arguments]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])


class NodeFailed(RuntimeError):
    """A node of a launched graph exited with a non-zero status (ends the launch with status 1)."""


def as_bool(text: str) -> bool:
    """A launch-argument boolean (``true``/``false``, any case)."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")
