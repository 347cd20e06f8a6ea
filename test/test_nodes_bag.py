"""A sim run recorded over DDS into rosbag2 (written with ``rosbags``, sqlite3 and MCAP), imported
with ``smrl data import-bag``: the same steps as the explorer's own recording of that run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from smrl_ros import topics
from smrl_ros.graphs import explore_graph
from smrl_train.cli import main as smrl_main
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import UNNAMED_KIND, schema_mismatches
from smrl_train.data.store import EpisodeStore
from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

from bundle_helpers import random_bundle
from conftest import small_config
from ros_harness import change_lifecycle, ros_graph, wait_until

pytestmark = pytest.mark.ros

LENGTH, EPISODES = 30, 3
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
COMMAND_TYPE = "std_msgs/msg/Float64MultiArray"


def write_bag(path: Path, messages: list[tuple[int, str, bytes]], storage: str) -> None:
    """``messages`` (receive ns, topic, CDR bytes) into a rosbag2 with rosbags' writer, as
    ``ros2 bag record -s <storage>`` would."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {topics.JOINT_STATES: writer.add_connection(topics.JOINT_STATES, JOINT_STATE_TYPE, typestore=store),
                 topics.COMMANDS: writer.add_connection(topics.COMMANDS, COMMAND_TYPE, typestore=store)}
        for t_ns, topic, raw in messages:
            writer.write(conns[topic], t_ns, raw)


class BagRecorder:
    """What ``ros2 bag record /joint_states /forward_position_controller/commands`` keeps: each
    message serialised, with the middleware's receive time (not the callback's, which lags under
    load and can reorder the topics). Its own node, context and single-threaded executor (the
    probe's events executor does not pass message info to callbacks)."""

    def __init__(self, probe_context) -> None:
        self.domain_id = probe_context.get_domain_id()

    def __enter__(self) -> BagRecorder:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = Node("bag_recorder", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._messages: list[tuple[int, str, bytes]] = []
        self._lock = threading.Lock()
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.subs = [self.node.create_subscription(JointState, topics.JOINT_STATES, self._put(topics.JOINT_STATES),
                                                   qos),
                     self.node.create_subscription(Float64MultiArray, topics.COMMANDS, self._put(topics.COMMANDS),
                                                   qos)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        return self

    def _put(self, topic: str):
        def put(msg: object, info: dict) -> None:
            with self._lock:
                self._messages.append((int(info["received_timestamp"]), topic, serialize_message(msg)))
        return put

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def messages(self) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return sorted(self._messages, key=lambda m: m[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def test_a_sim_run_recorded_to_a_bag_imports_as_the_explorers_own_recording(tmp_path: Path, capsys) -> None:
    cfg = small_config("reach", n_train=2, n_test=1, episode_length=LENGTH)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    bundle = random_bundle(cfg, tmp_path / "bundle")
    store = tmp_path / "explorer_store"
    graph = explore_graph(str(bundle), str(store), explorer_parameters={
        "dataset": str(tmp_path / "data"), "tasks": [1], "episodes_per_task": EPISODES, "episode_length": LENGTH,
        "autostart": False})
    with ros_graph(graph, tmp_path) as (runner, probe), BagRecorder(probe.context) as rec:
        # The recorder must hear the run from its first message. Each side of a DDS match
        # happens on its own: the recorder seeing a publisher does not mean that publisher's
        # writer sends to it yet (in full-suite runs the first episode's states were lost). The
        # sim republishes its idle state: one heard proves its writer matched; the recording
        # then starts over, as a bag started before the run.
        wait_until(lambda: any(t == topics.JOINT_STATES for _, t, _ in rec.messages()), 20.0, "a joint state heard")
        rec.clear()
        assert change_lifecycle(probe, "smrl_explorer", "configure")
        wait_until(lambda: all(sub.get_publisher_count() >= 1 for sub in rec.subs), 20.0, "the recorder matched")
        assert change_lifecycle(probe, "smrl_explorer", "activate")
        assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
        time.sleep(0.3)  # the last messages reach the recorder
    recorded = rec.messages()

    ref = EpisodeStore.open(store)
    ref_eps = [ref.read_episode(p) for p in ref.episode_paths()]
    assert [len(e) for e in ref_eps] == [LENGTH] * EPISODES
    worst: dict[str, float] = {}
    for storage in ("sqlite3", "mcap"):
        bag, out = tmp_path / f"bag_{storage}", tmp_path / f"imported_{storage}"
        write_bag(bag, recorded, storage)
        assert smrl_main(["data", "import-bag", str(bag), "--config", "config/reach.yaml", "--out", str(out),
                          "--stepping", "commands", "--task", "1", "--dataset", str(tmp_path / "data")]) == 0
        out_text = capsys.readouterr().out
        assert "wrote 3 episodes (90 steps)" in out_text, out_text
        print(out_text.split(" to ")[0])
        imp = EpisodeStore.open(out)
        eps = [imp.read_episode(p) for p in imp.episode_paths()]
        assert [len(e) for e in eps] == [LENGTH] * EPISODES
        for mine, theirs in zip(eps, ref_eps):
            assert mine.meta["kind"] == UNNAMED_KIND
            # Same steps: each transition ends at the same joint state (its stamp) ...
            assert np.array_equal(mine.arrays["timestamp"], theirs.arrays["timestamp"])
            for key in ("obs", "next_obs", "action"):
                worst[key] = max(worst.get(key, 0.0), float(np.abs(mine.arrays[key] - theirs.arrays[key]).max()))
        # ... and the store trains as a recording of the dataset's schema.
        dataset = EpisodeStore.open(tmp_path / "data").manifest
        assert schema_mismatches(imp.manifest, dataset) == [] and imp.manifest["reward_labelled"] is False
        trajs = RecordedEpisodeSource(load_recordings([out], dataset)).take(1, 3, with_rewards=False)
        assert [t.kind for t in trajs] == [UNNAMED_KIND] * 3
    print(f"max |imported - explorer|: {worst}")
    # Observations are the same float32 numbers (same states, same builder); actions are the
    # command deltas, equal to the policy's action unless a target was clipped at a limit.
    assert worst["obs"] < 1e-6 and worst["next_obs"] < 1e-6
    assert worst["action"] < 1e-5
