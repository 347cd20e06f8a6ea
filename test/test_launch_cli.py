"""The launch files through the real ``ros2 launch`` CLI, as a ROS user runs them.

Needs the ``ros2`` CLI (ros2cli, ros2launch) and this package built with ``colcon build`` and
sourced: ``make test`` does both when the launch stack's wheels are present (see the
Makefile's ``test-launch``); elsewhere the module is skipped with that reason. Each launch
must end by itself when its job is done or when a node fails, with nothing left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from smrl_ros.probe import claim_domain_id

ROS2 = shutil.which("ros2")


def _built() -> bool:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return False
    try:
        return (Path(get_package_share_directory("smrl_ros")) / "launch" / "adapt.launch.py").is_file()
    except PackageNotFoundError:
        return False


pytestmark = pytest.mark.skipif(
    ROS2 is None or not _built(),
    reason="needs the ros2 CLI and smrl_ros built with colcon and sourced (make test does both when the "
           "ROS 2 launch stack's wheels are present)")

TINY = ("['offline.steps=200', 'offline.log_every=50', 'online.iterations=1', "
        "'online.updates_per_iteration=20', 'online.eval_every=0', 'eval.diagnostic_tasks=0']")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's working directory with a small reward-labelled dataset in ``data/reach``."""
    from smrl_train.data.generate import generate_dataset

    from conftest import small_config

    work = tmp_path_factory.mktemp("ws")
    generate_dataset(small_config("reach", n_train=2, n_test=1, episode_length=20), work / "data" / "reach",
                     progress=False)
    return work


def ros2_launch(cwd: Path, launch_file: str, *arguments: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """``ros2 launch smrl_ros <launch_file> <arguments>`` in ``cwd`` in its own process group and
    DDS domain; returns when it ends by itself (a launch still running at ``timeout`` fails the
    test). Afterwards nothing of its process group may be left."""
    claim = claim_domain_id()
    env = {**os.environ, "ROS_DOMAIN_ID": str(claim.domain_id)}
    proc = subprocess.Popen([ROS2, "launch", "smrl_ros", launch_file, *arguments], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ros2 launch {launch_file} did not end by itself within {timeout:.0f} s:\n{out[-4000:]}")
    finally:
        claim.release()
    try:
        os.killpg(proc.pid, 0)
        left = True
    except ProcessLookupError:
        left = False
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"ros2 launch {launch_file} left processes running:\n{out[-4000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_the_readme_sequence_runs_as_a_script_with_relative_paths(workspace: Path) -> None:
    """train (offline) -> explore -> train (online on the recordings) -> adapt, each step a
    ``ros2 launch`` that returns when its job is done, every path relative to the working
    directory (outputs land there, not in the install tree)."""
    steps = [
        ("train.launch.py", "data:=data/reach", "run_dir:=runs/r", "phases:=[offline]", f"overrides:={TINY}"),
        ("explore.launch.py", "bundle:=runs/r/offline_only/bundle", "store:=rec/round1", "dataset:=data/reach",
         "tasks:=[0, 1]", "episodes_per_task:=2"),
        ("train.launch.py", "data:=data/reach", "run_dir:=runs/r", "recordings:=[rec/round1]", f"overrides:={TINY}"),
        ("adapt.launch.py", "bundle:=runs/r/smac/bundle", "task_index:=0", "output_dir:=adapted",
         "exit_when_done:=true"),
    ]
    for launch_file, *arguments in steps:
        done = ros2_launch(workspace, launch_file, *arguments)
        assert done.returncode == 0, f"{launch_file}: exit {done.returncode}\n{done.stdout[-4000:]}"
    assert (workspace / "runs" / "r" / "offline_only" / "bundle" / "policy.onnx").is_file()
    assert len(list((workspace / "rec" / "round1" / "episodes").glob("*.safetensors"))) == 4
    assert (workspace / "runs" / "r" / "smac" / "bundle" / "bundle.json").is_file()
    assert list((workspace / "adapted").glob("*.onnx")), "the adapter wrote its adapted policy"


def test_a_node_that_refuses_to_start_ends_the_launch_with_a_failure(workspace: Path) -> None:
    # The controller exits 2 (no such model); the sim bridge used to keep the launch alive.
    done = ros2_launch(workspace, "control.launch.py", "model_path:=missing.onnx", timeout=60.0)
    assert done.returncode != 0
    assert "refusing to start" in done.stdout and "smrl_controller exited with status 2" in done.stdout, \
        done.stdout[-4000:]
