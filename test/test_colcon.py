"""The colcon path: ``colcon build`` installs an ament_python package that ROS 2 tools find.

Slow (it installs colcon from PyPI into a cached venv the first time): ``make test-slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

COLCON_VENV = Path(os.environ.get("SMRL_COLCON_VENV", Path.home() / ".cache" / "smrl" / "colcon_venv"))
NODE_SCRIPTS = ("smrl_sim", "smrl_controller")


def _colcon() -> Path:
    colcon = COLCON_VENV / "bin" / "colcon"
    if not colcon.exists():
        subprocess.run([sys.executable, "-m", "venv", str(COLCON_VENV)], check=True, timeout=120)
        subprocess.run([str(COLCON_VENV / "bin" / "pip"), "install", "-q", "colcon-common-extensions"],
                       check=True, timeout=600)
    return colcon


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "smrl_ros").symlink_to(REPO)
    out = subprocess.run([str(_colcon()), "build", "--base-paths", "src", "--build-base", str(ws / "build"),
                          "--install-base", str(ws / "install"), "--event-handlers", "console_direct-"],
                         cwd=ws, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return ws / "install" / "smrl_ros"


def test_share_files_and_the_ament_index_marker_are_installed(install: Path) -> None:
    share = install / "share" / "smrl_ros"
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "smrl_ros").is_file()
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("urdf", "*.urdf")):
        shipped = sorted(p.name for p in (REPO / folder).glob(pattern))
        assert shipped and sorted(p.name for p in (share / folder).glob(pattern)) == shipped, folder


def test_node_console_scripts_are_where_ros2_run_looks(install: Path) -> None:
    for name in NODE_SCRIPTS:
        script = install / "lib" / "smrl_ros" / name
        assert script.is_file() and os.access(script, os.X_OK), f"{script} missing: add the console script"


def test_installed_package_finds_its_share_folder_through_the_ament_index(install: Path) -> None:
    site = next((install / "lib").glob("python3*/site-packages"))
    code = ("from ament_index_python.packages import get_package_share_directory as g\n"
            "from smrl_train.config import package_root\n"
            "import smrl_train\n"
            "print(g('smrl_ros')); print(package_root()); print(smrl_train.__file__)\n")
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(install)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
                         check=True, timeout=60)
    share, root, module = out.stdout.split()
    assert Path(share) == install / "share" / "smrl_ros"
    assert Path(module).is_relative_to(install), "imported the source tree, not the install"
    assert Path(root) == Path(share)  # configs and URDFs resolve against the installed share folder
