"""The rooms hold: the core never imports ROS, and the robot room never imports torch or MuJoCo."""

from __future__ import annotations

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
    assert "smrl_train.robot.runtime" in modules and "smrl_train.robot.exploration" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {ROBOT_FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"smrl_train.robot imported: {out.stdout}"
