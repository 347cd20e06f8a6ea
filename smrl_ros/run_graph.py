"""Run a launch file's node graph without ROS 2's ``launch`` (the pip-only ``ros2 launch``).

    python -m smrl_ros.run_graph adapt.launch.py bundle:=runs/r/smac/bundle task_index:=3
    python -m smrl_ros.run_graph explore.launch.py --list      # the launch arguments

Every launch file in ``launch/`` is two lines over a plain-Python description (``ARGUMENTS``
and ``build``); this reads the same description, checks the ``name:=value`` arguments against
it (unknown names and values outside ``choices`` are refused, naming the known ones), starts
each node as ``python -m <module> --ros-args ...`` (:class:`smrl_ros.graph_runner.GraphRunner`) and
streams their logs with a prefix. Ctrl-C stops them all (SIGINT, then SIGTERM, then SIGKILL);
when a node exits (the explorer and the trainer do when their job is done) the others are
stopped too. The exit status is 0 when every node exited 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType

from smrl_ros.graph_runner import GraphRunner
from smrl_train.config import package_root


class LogTail:
    """Streams new lines of node logs to stdout, prefixed, from a background thread.

    Args:
        runner: the graph runner whose ``log_dir`` holds ``<node>.log`` files.
        names: nodes to follow.
        prefix: shown instead of the node name when given.
        keep: which lines (without their ROS log prefix) to show; all by default. The log
            files keep every line.
    """

    def __init__(self, runner: GraphRunner, names: Sequence[str], prefix: str = "",
                 keep: Callable[[str], bool] | None = None) -> None:
        self.runner, self.names, self.prefix, self.keep = runner, list(names), prefix, keep
        self.offsets = {n: 0 for n in self.names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.flush()

    def flush(self) -> None:
        for name in self.names:
            try:
                with open(self.runner.log_path(name), "rb") as f:
                    f.seek(self.offsets[name])
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            self.offsets[name] += end
            for line in chunk[:end].decode(errors="replace").splitlines():
                # "[INFO] [stamp] [node]: text" -> "text": the prefix names the node already.
                text = line.split("]: ", 1)[-1] if line.startswith("[") and "]: " in line else line
                if self.keep is None or self.keep(text):
                    print(f"   [{self.prefix or name}] {text}", flush=True)

    def __enter__(self) -> LogTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.flush()


def load_launch_module(name: str) -> ModuleType:
    """The module of ``launch/<name>`` (``.launch.py`` may be left out)."""
    if not name.endswith(".launch.py"):
        name += ".launch.py"
    path = package_root() / "launch" / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in (package_root() / "launch").glob("*.launch.py")))
        raise SystemExit(f"run_graph: no launch file {name} (known: {known})")
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_arguments(arguments: Sequence[object], items: Sequence[str]) -> dict[str, str]:
    """``name:=value`` items checked against the launch arguments; defaults for the rest."""
    known = {a.name: a for a in arguments}  # type: ignore[attr-defined]
    values = {name: a.default for name, a in known.items()}  # type: ignore[attr-defined]
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise SystemExit(f"run_graph: expected name:=value, got {item!r}")
        if name not in known:
            raise SystemExit(f"run_graph: unknown argument {name!r} (known: {', '.join(known)})")
        choices = known[name].choices  # type: ignore[attr-defined]
        if choices and value not in choices:
            raise SystemExit(f"run_graph: {name}:={value} is not one of {', '.join(choices)}")
        values[name] = value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smrl_ros.run_graph", description=__doc__.split("\n")[0])
    parser.add_argument("launch_file", help="e.g. adapt.launch.py (in the package's launch/ folder)")
    parser.add_argument("arguments", nargs="*", metavar="name:=value")
    parser.add_argument("--list", action="store_true", help="print the launch arguments and exit")
    parser.add_argument("--log-dir", help="keep the node logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    module = load_launch_module(args.launch_file)
    if args.list:
        for a in module.ARGUMENTS:
            choices = f" (one of {', '.join(a.choices)})" if a.choices else ""
            print(f"{a.name + ':=' + repr(a.default):<40} {a.description}{choices}")
        return 0
    graph = module.build(parse_arguments(module.ARGUMENTS, args.arguments))
    print(f"starting {', '.join(n.label for n in graph.nodes)} (Ctrl-C stops them)", flush=True)
    # The user's working directory: relative outputs land there (inputs fall back to the package).
    with GraphRunner(graph, log_dir=args.log_dir) as runner:
        runner.start()
        try:
            with LogTail(runner, [n.label for n in graph.nodes]):
                # A node that ends its job (the explorer, the trainer) or fails ends the graph
                # (a fleet: when every explorer has ended its job).
                while not graph.done(runner.exited()):
                    time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        codes = runner.stop()
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad:
        print(f"exit codes: {bad}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
