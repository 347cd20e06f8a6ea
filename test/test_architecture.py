"""The rooms hold: the core never imports ROS, and the robot room never imports torch or MuJoCo."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import smrl_train
import smrl_train.robot

REPO = Path(__file__).resolve().parent.parent


def _core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(smrl_train.__path__, "smrl_train."))


def test_core_modules_do_not_import_rclpy() -> None:
    modules = _core_modules()
    assert "smrl_train.sim.envs" in modules and "smrl_train.data.store" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') or m.endswith('_msgs'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"smrl_train imported ROS modules: {out.stdout}"


def test_core_sources_never_mention_rclpy_imports() -> None:
    # Belt and braces: a lazily imported rclpy inside a function would escape the test above.
    for path in (REPO / "smrl_train").rglob("*.py"):
        text = path.read_text()
        assert "import rclpy" not in text and "from rclpy" not in text, path


# What the robot side must never load: training (torch) and simulation (MuJoCo, gymnasium).
ROBOT_FORBIDDEN = ("torch", "mujoco", "gymnasium")


def _robot_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(smrl_train.robot.__path__, "smrl_train.robot."))


def test_robot_room_never_imports_torch_or_mujoco() -> None:
    modules = ["smrl_train.robot", *_robot_modules()]
    assert {"smrl_train.robot.runtime", "smrl_train.robot.exploration", "smrl_train.robot.episode_driver"} <= \
        set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ROBOT_FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"smrl_train.robot imported: {out.stdout}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Which smrl_train modules each smrl_train module imports, at module level or inside a
    function (a lazy import is still a dependency)."""
    paths = {_module_name(p): p for p in (REPO / "smrl_train").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` depends on pkg.mod when that is a module, else on pkg.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_import_graph_finds_lazy_imports() -> None:
    graph = _import_graph()
    # config_loader imports sim.arm_sim only inside load_config: still an edge.
    assert "smrl_train.sim.arm_sim" in graph["smrl_train.config_loader"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_smrl_train_has_no_import_cycles() -> None:
    cycle = _find_cycle(_import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_our_nodes_never_overwrite_an_attribute_of_rclpy_s_node() -> None:
    """A node class assigning ``self._timers`` once replaced rclpy's own list of the node's
    timers, and the executor silently stopped seeing the arm driver's timer. No class of ours
    that is an rclpy node may assign a name rclpy's Node or LifecycleNode already uses."""
    import importlib
    import inspect
    import textwrap

    from rclpy.lifecycle import LifecycleNode
    from rclpy.node import Node

    def self_attributes(obj: object, assigned_only: bool) -> set[str]:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        targets = ([t for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
                   if assigned_only else list(ast.walk(tree)))
        return {t.attr for t in targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                and t.value.id == "self"}

    taken = set(dir(Node)) | set(dir(LifecycleNode)) | self_attributes(Node, False) | \
        self_attributes(LifecycleNode, False)
    assert {"_timers", "_subscriptions", "_clients"} <= taken
    ours = {cls for path in (REPO / "smrl_ros").glob("*.py")
            for _, cls in inspect.getmembers(importlib.import_module(f"smrl_ros.{path.stem}"), inspect.isclass)
            if issubclass(cls, Node) and cls.__module__.startswith("smrl_ros")}
    assert len(ours) >= 6  # ManagedNode, sim, controller, explorer, adapter, trainer
    for cls in ours:
        clash = sorted(self_attributes(cls, True) & taken)
        assert not clash, f"{cls.__module__}.{cls.__name__} assigns rclpy's {clash}"
