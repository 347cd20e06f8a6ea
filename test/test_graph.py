"""Node graphs as data: command lines, parameter files, the subprocess runner, launch files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sensor_msgs.msg import JointState

from smrl_ros import topics
from smrl_ros.graph_runner import GraphSpec, NodeSpec, params_yaml
from smrl_ros.graphs import control_graph, controller_node, sim_graph

from conftest import REPO
from ros_harness import FakeRobot, command_arrays, load_launch, ros_graph


def test_command_line_carries_name_remaps_and_parameter_files() -> None:
    spec = NodeSpec("ctl", "smrl_ros.controller_node", "smrl_controller", parameters={"rate_hz": 500.0},
                    params_files=("config/a.yaml",), remaps={"/joint_states": "/arm/joint_states"},
                    namespace="/left")
    cmd = spec.command("/tmp/inline.yaml", python="python3")
    assert cmd[:4] == ["python3", "-u", "-m", "smrl_ros.controller_node"]
    args = cmd[4:]
    assert args[0] == "--ros-args"
    assert ["-r", "__node:=ctl"] == args[1:3] and "__ns:=/left" in args
    assert "/joint_states:=/arm/joint_states" in args
    # The YAML files come in order: the shared file, then the inline values that override it.
    files = [args[i + 1] for i, a in enumerate(args) if a == "--params-file"]
    assert files == ["config/a.yaml", "/tmp/inline.yaml"]


def test_inline_parameters_keep_their_types() -> None:
    text = params_yaml({"rate_hz": 500.0, "count": 3, "joints": ("a", "b"), "path": "true", "flag": True})
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert values == {"rate_hz": 500.0, "count": 3, "joints": ["a", "b"], "path": "true", "flag": True}
    assert isinstance(values["rate_hz"], float) and isinstance(values["path"], str)


def test_deployment_graphs() -> None:
    graph = control_graph("m.onnx", use_sim=True, controller_parameters={"rate_hz": 100.0})
    assert [n.name for n in graph.nodes] == ["smrl_sim", "smrl_controller"]
    # With the sim bridge the controller drives the arm of the bridge's config.
    assert graph.node("smrl_controller").parameters == {"model_path": "m.onnx", "rate_hz": 100.0,
                                                        "urdf_path": str(REPO / "urdf" / "smrl_arm.urdf"),
                                                        "ee_link": "ee_link"}
    six = control_graph("m.onnx", config="config/reach_six_axis.yaml",
                        controller_parameters={"ee_link": "flange"}).node("smrl_controller").parameters
    assert six["urdf_path"] == str(REPO / "urdf" / "six_axis.urdf") and six["ee_link"] == "flange"  # an override
    # On a real arm, the model's metadata names the arm: no second default here.
    real = control_graph("m.onnx", use_sim=False)
    assert [n.executable for n in real.nodes] == ["smrl_controller"]
    assert real.node("smrl_controller").parameters == {"model_path": "m.onnx"}
    assert sim_graph(mode="lockstep").node("smrl_sim").parameters["mode"] == "lockstep"


@pytest.mark.parametrize("name", ["sim.launch.py", "control.launch.py"])
def test_launch_files_build_their_graph_from_the_shared_description(name: str) -> None:
    module = load_launch(name)
    defaults = {a.name: a.default for a in module.ARGUMENTS}
    if name == "control.launch.py":
        defaults["model_path"] = "m.onnx"
    graph = module.build(defaults)
    assert isinstance(graph, GraphSpec) and graph.nodes
    for node in graph.nodes:
        assert node.executable in ("smrl_sim", "smrl_controller")


@pytest.mark.parametrize("name", ["sim.launch.py", "control.launch.py", "explore.launch.py", "adapt.launch.py",
                                  "train.launch.py"])
def test_launch_files_are_real_launch_files(name: str) -> None:
    pytest.importorskip("launch", reason="launch/launch_ros come with a ROS 2 install, not from pip")
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install, not from pip")
    from launch import LaunchDescription

    assert isinstance(load_launch(name).generate_launch_description(), LaunchDescription)


@pytest.mark.ros
def test_runner_starts_a_graph_and_stops_it_cleanly(tmp_path: Path) -> None:
    with ros_graph(sim_graph(), tmp_path) as (runner, probe):
        states = probe.subscribe(topics.JOINT_STATES, JointState, topics.STATE_SUB_QOS)
        states.wait_count(3, 20.0)
        assert runner.exited() == {}
        assert runner.stop() == {"smrl_sim": 0}  # SIGINT: a clean shutdown, exit status 0


@pytest.mark.ros
def test_controller_leaves_the_arm_holding_when_stopped(tmp_path: Path) -> None:
    from smrl_train.export.onnx_export import export_adapted_policy, spec_from_env
    from smrl_train.sim.envs import ArmTaskEnv

    from conftest import small_config
    from standin_policy import JointGoalPolicy

    env = ArmTaskEnv(small_config("reach"))
    spec = spec_from_env(env)
    home = env.sim.home
    model = tmp_path / "far.onnx"
    export_adapted_policy(JointGoalPolicy(spec.obs_dim, spec.n_joints), home + 1.0, spec, model)
    with ros_graph(GraphSpec("stop", (controller_node(str(model)),)), tmp_path) as (runner, probe):
        robot = FakeRobot(probe, spec.joint_names, home, rate=20.0, track=False)
        robot.wait_connected()
        robot.resume()
        robot.commands.wait_count(3, 20.0)
        assert not np.allclose(command_arrays(robot.commands)[-1], home)  # heading for the goal
        assert runner.stop() == {"smrl_controller": 0}
        time.sleep(0.2)
        np.testing.assert_allclose(command_arrays(robot.commands)[-1], home)  # the last word: hold
        robot.close()


@pytest.mark.ros
def test_nodes_die_with_a_killed_runner(tmp_path: Path) -> None:
    """SIGKILL of ``run_graph`` (no clean stop possible) still ends its nodes: they run in their
    own session, and used to outlive it (an explorer kept recording)."""
    import subprocess
    import sys

    from smrl_ros.graph_runner import ros_environment
    from smrl_ros.probe import claim_domain_id

    claim = claim_domain_id()
    log_dir = tmp_path / "logs"
    parent = subprocess.Popen([sys.executable, "-m", "smrl_ros.run_graph", "sim.launch.py", "--log-dir", str(log_dir)],
                              env=ros_environment(claim.domain_id), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        node_pid = None
        deadline = time.monotonic() + 30.0
        while node_pid is None and time.monotonic() < deadline:
            children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
            node_pid = int(children[0]) if children and (log_dir / "smrl_sim.log").exists() else None
            time.sleep(0.2)
        assert node_pid is not None, "the sim node did not start"
        parent.kill()
        parent.wait(10.0)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                os.kill(node_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(node_pid, 9)
            pytest.fail("the sim node outlived its killed runner")
    finally:
        if parent.poll() is None:
            parent.kill()
        claim.release()
