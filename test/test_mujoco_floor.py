"""The lowest MuJoCo setup.py allows (``mujoco>=X.Y``) builds and runs the arm families, so smrl
installs beside suites that pin an older MuJoCo than requirements.txt (docs/guide.md,
"Installing"): a fresh venv with MuJoCo X.Y.0 and the pinned versions of the other runtime
dependencies (no torch, no ROS) runs the env, store and arm-model tests. Slow: it downloads
wheels from PyPI (make test-slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The runtime dependencies the tests below import, at requirements.txt's pins; pytest to run them.
OTHERS = ("numpy", "gymnasium", "PyYAML", "safetensors", "tqdm", "onnx", "onnxruntime", "matplotlib", "pytest")
TESTS = ("test/test_envs.py", "test/test_store.py", "test/test_arm_models.py")


def floor_version() -> str:
    """``X.Y.0`` for setup.py's ``mujoco>=X.Y`` (or ``X.Y.Z`` as written)."""
    found = re.search(r'"mujoco>=([0-9.]+)"', (REPO / "setup.py").read_text())
    assert found, "setup.py declares no mujoco floor"
    parts = found.group(1).split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def pins(names: tuple[str, ...]) -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    wanted = {n.lower() for n in names}
    return [line.split("#")[0].strip() for line in lines
            if line.split("==")[0].split("[")[0].strip().lower() in wanted]


@pytest.mark.slow
def test_the_mujoco_floor_runs_the_env_tests(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    requirements = [f"mujoco=={floor_version()}", *pins(OTHERS)]
    assert len(requirements) == 1 + len(OTHERS), requirements
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements], check=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO, env=env,
                         capture_output=True, text=True)
    version = subprocess.run([python, "-c", "import mujoco; print(mujoco.__version__)"], capture_output=True,
                             text=True).stdout.strip()
    assert version == floor_version()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
