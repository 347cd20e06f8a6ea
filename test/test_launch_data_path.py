"""launch_pytest tests of the launch files: ``ros2 launch``'s own machinery starting the graphs.

They need launch, launch_ros and launch_pytest (a ROS 2 install, or the launch stack's wheels
that ``make test`` installs into an overlay when they are present) and this package built with
``colcon build``; elsewhere the module is skipped with that reason. The same graphs also run
as real processes over DDS through :class:`smrl_ros.graph_runner.GraphRunner` (``test_nodes_*.py``,
``test_graphs_data_path.py``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest comes with a ROS 2 install (not from pip); make test runs this "
                            "module when the launch stack's wheels are present")

import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.wait_for_message import wait_for_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from launch import LaunchDescription  # noqa: E402
from smrl_ros import topics  # noqa: E402

LAUNCH = Path(__file__).resolve().parent.parent / "launch"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from smrl_train.data.generate import generate_dataset

    from bundle_helpers import random_bundle
    from conftest import small_config

    tmp = tmp_path_factory.mktemp("launch")
    cfg = small_config("reach", n_train=2, n_test=1, episode_length=20)
    generate_dataset(cfg, tmp / "data", progress=False)
    return {"tmp": tmp, "data": tmp / "data", "bundle": random_bundle(cfg, tmp / "bundle")}


def include(name: str, **arguments: str) -> LaunchDescription:
    source = PythonLaunchDescriptionSource(str(LAUNCH / name))
    return LaunchDescription([IncludeLaunchDescription(source, launch_arguments=arguments.items()),
                              launch_pytest.actions.ReadyToTest()])


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def ros_node():
    rclpy.init()
    node = rclpy.create_node("launch_test_probe")
    yield node
    node.destroy_node()
    rclpy.shutdown()


@launch_pytest.fixture
def sim_launch():
    return include("sim.launch.py", mode="lockstep")


@pytest.mark.launch(fixture=sim_launch)
def test_sim_launch_publishes_joint_states(ros_node) -> None:
    ok, msg = wait_for_message(JointState, ros_node, topics.JOINT_STATES, time_to_wait=30.0)
    assert ok and len(msg.name) == 5


@launch_pytest.fixture
def control_launch(assets):
    return include("control.launch.py", model_path=str(assets["bundle"] / "prior_policy.onnx"))


@pytest.mark.launch(fixture=control_launch)
def test_control_launch_drives_the_arm(ros_node) -> None:
    from smrl_ros.probe import Inbox

    commands: Inbox[Float64MultiArray] = Inbox()
    states: Inbox[JointState] = Inbox()
    ros_node.create_subscription(Float64MultiArray, topics.COMMANDS, commands._put, topics.COMMAND_QOS)
    ros_node.create_subscription(JointState, topics.JOINT_STATES, states._put, topics.STATE_SUB_QOS)
    deadline = time.monotonic() + 60.0
    first = None
    while time.monotonic() < deadline:
        rclpy.spin_once(ros_node, timeout_sec=0.2)
        if first is None and len(commands) and len(states):
            first = list(states.latest.position)
        if first is not None and len(commands) >= 20 and max(
                abs(a - b) for a, b in zip(states.latest.position, first)) > 0.01:
            break
    assert len(commands) >= 20, f"{len(commands)} commands from smrl_controller within 60 s"
    assert len(commands.latest.data) == 5 and all(math.isfinite(v) for v in commands.latest.data)
    assert max(abs(a - b) for a, b in zip(states.latest.position, first)) > 0.01, "the commands move the sim arm"


@launch_pytest.fixture
def control_launch_inactive(assets):
    return include("control.launch.py", model_path=str(assets["bundle"] / "prior_policy.onnx"), autostart="false")


@pytest.mark.launch(fixture=control_launch_inactive)
def test_control_launch_without_autostart_leaves_the_controller_unconfigured(ros_node) -> None:
    from lifecycle_msgs.srv import GetState

    from smrl_ros.probe import Inbox

    commands: Inbox[Float64MultiArray] = Inbox()
    ros_node.create_subscription(Float64MultiArray, topics.COMMANDS, commands._put, topics.COMMAND_QOS)
    client = ros_node.create_client(GetState, "/smrl_controller/get_state")
    assert client.wait_for_service(timeout_sec=30.0), "the controller's lifecycle services are not up"
    future = client.call_async(GetState.Request())
    rclpy.spin_until_future_complete(ros_node, future, timeout_sec=10.0)
    assert future.result() is not None and future.result().current_state.label == "unconfigured"
    ok, _ = wait_for_message(JointState, ros_node, topics.JOINT_STATES, time_to_wait=30.0)
    assert ok, "the sim bridge runs"
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        rclpy.spin_once(ros_node, timeout_sec=0.1)
    assert len(commands) == 0, "an unconfigured controller commands nothing"


@launch_pytest.fixture
def explore_launch(assets):
    return include("explore.launch.py", bundle=str(assets["bundle"]), store=str(assets["tmp"] / "rec"),
                   dataset=str(assets["data"]), tasks="[0, 1]", episode_length="20")


@pytest.mark.launch(fixture=explore_launch)
def test_explore_launch_records_episodes(assets) -> None:
    from smrl_train.data.store import load_task_arrays

    store = assets["tmp"] / "rec"
    assert wait_until(lambda: len(list((store / "episodes").glob("*.safetensors"))) == 4, 60.0)
    arrays = load_task_arrays(store)
    assert set(arrays) == {0, 1} and all(a.reward is None and len(a) == 40 for a in arrays.values())


@launch_pytest.fixture
def fleet_launch(assets):
    return include("fleet.launch.py", arms="2", bundle=str(assets["bundle"]), store=str(assets["tmp"] / "fleet"),
                   dataset=str(assets["data"]), episode_length="20")


@pytest.mark.launch(fixture=fleet_launch)
def test_fleet_launch_records_two_arms_into_one_store(assets) -> None:
    from smrl_train.data.store import EpisodeStore

    store = assets["tmp"] / "fleet"
    assert wait_until(lambda: len(list((store / "episodes").glob("*.safetensors"))) == 4, 90.0)
    episodes = list(EpisodeStore.open(store).iter_episodes())
    assert {(e.task_index, e.meta["robot_id"]) for e in episodes} == {(0, "arm1"), (1, "arm2")}


@launch_pytest.fixture
def adapt_launch(assets):
    return include("adapt.launch.py", bundle=str(assets["bundle"]), task_index="0",
                   output_dir=str(assets["tmp"] / "adapted"))


@pytest.mark.launch(fixture=adapt_launch)
def test_adapt_launch_adapts_and_deploys(ros_node) -> None:
    from smrl_ros.probe import Inbox

    inbox: Inbox[String] = Inbox()
    ros_node.create_subscription(String, "/smrl_adapter/result", inbox._put, topics.LATCHED_QOS)
    deadline = time.monotonic() + 90.0
    while not len(inbox) and time.monotonic() < deadline:
        rclpy.spin_once(ros_node, timeout_sec=0.2)
    assert len(inbox), "no adaptation result within 90 s"
    result = json.loads(inbox.latest.data)
    assert result["error"] == "" and Path(result["model"]).is_file() and len(result["exploration_returns"]) == 2


@launch_pytest.fixture
def train_launch(assets):
    tiny = ("['offline.steps=200', 'offline.log_every=50', 'online.iterations=1', "
            "'online.updates_per_iteration=20', 'online.eval_every=0', 'eval.diagnostic_tasks=0']")
    return include("train.launch.py", data=str(assets["data"]), run_dir=str(assets["tmp"] / "runs"), overrides=tiny)


@pytest.mark.launch(fixture=train_launch)
def test_train_launch_trains_and_exports_bundles(assets) -> None:
    runs = assets["tmp"] / "runs"
    assert wait_until(lambda: (runs / "smac" / "bundle" / "bundle.json").exists(), 300.0)
    assert (runs / "offline_only" / "bundle" / "policy.onnx").exists()
