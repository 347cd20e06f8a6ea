"""smrl_explorer as a real process over DDS on the sim bridge: complete reward-free episodes
the training loader reads, exactly the finished episodes after SIGKILL, a clean SIGTERM, and
homing between episodes as on a real arm."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from std_msgs.msg import String

from smrl_ros import topics
from smrl_ros.graph_runner import GraphSpec
from smrl_ros.graphs import SIM_DRIVER, explore_graph, explorer_node, sim_node
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import schema_mismatches
from smrl_train.data.store import EpisodeStore, load_task_arrays
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.smac.sources import RecordedEpisodeSource, load_recordings

from bundle_helpers import random_bundle
from conftest import small_config
from ros_harness import change_lifecycle, lifecycle_state, ros_graph, wait_until

pytestmark = pytest.mark.ros

HOME = [0.0, 0.3, 1.3, 1.2, 0.0]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small reward-labelled dataset (3 train tasks) and an untrained bundle for its arm."""
    tmp = tmp_path_factory.mktemp("explore_assets")
    cfg = small_config("reach", n_train=3, n_test=1, episode_length=30)
    generate_dataset(cfg, tmp / "data", progress=False)
    return {"data": tmp / "data", "bundle": random_bundle(cfg, tmp / "bundle")}


def written_count(log: str) -> int:
    return len(re.findall(r"episode \d+ written", log))


def check_store(store: Path, episode_length: int, allow_interrupted: bool = False) -> dict[int, list[int]]:
    """Every episode loads and verifies; returns {task: [episode lengths]}; indices contiguous."""
    s = EpisodeStore.open(store)
    lengths: dict[int, list[int]] = {}
    for path in s.episode_paths():
        ep = s.read_episode(path)  # checksum, shapes, finiteness
        assert ep.meta["episode_index"] == len(lengths.get(ep.task_index, [])), path
        assert ep.arrays["truncated"][-1] and not ep.arrays["truncated"][:-1].any()
        assert "reward" not in ep.arrays
        if not (allow_interrupted and ep.meta.get("interrupted")):
            assert len(ep) == episode_length, (path, len(ep))
        lengths.setdefault(ep.task_index, []).append(len(ep))
    return lengths


def replay_error(store: Path, cfg_name: str = "reach") -> float:
    """Largest |next_obs - in-process replay| over the first episode: the recorded actions, fed
    to the in-process env from the recorded start state, must reproduce the recorded states."""
    s = EpisodeStore.open(store)
    ep = s.read_episode(s.episode_paths()[0])
    env = ArmTaskEnv(small_config(cfg_name))
    sim = env.sim
    n = env.arm.n_joints
    obs0 = ep.arrays["obs"][0].astype(np.float64)
    sim.reset()
    sim.data.qpos[sim._qadr] = obs0[:n]
    sim.data.qvel[sim._dadr] = obs0[n:2 * n]
    sim.data.ctrl[sim._act] = obs0[:n]
    import mujoco

    mujoco.mj_forward(sim.model, sim.data)
    worst = 0.0
    for a, nxt in zip(ep.arrays["action"], ep.arrays["next_obs"]):
        got, *_ = env.step(a)
        worst = max(worst, float(np.max(np.abs(got - nxt))))
    return worst


def test_explorer_records_reward_free_episodes_the_training_loader_reads(assets, tmp_path: Path) -> None:
    store = tmp_path / "store"
    graph = explore_graph(str(assets["bundle"]), str(store), explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [0, 2], "episodes_per_task": 2, "episode_length": 30})
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
        log = runner.log("smrl_explorer")
    assert written_count(log) == 4 and re.search(r"done: 4 episodes \(120 steps\) written this run.* steps/s", log)
    assert check_store(store, 30) == {0: [30, 30], 2: [30, 30]}
    manifest = EpisodeStore.open(store).manifest
    dataset = EpisodeStore.open(assets["data"]).manifest
    assert manifest["reward_labelled"] is False and schema_mismatches(manifest, dataset) == []
    assert manifest["tasks"] == dataset["tasks"] and manifest["generator"]["name"] == "smrl_explorer"
    # The training loader: per-task arrays without rewards, split back into the episodes.
    arrays = load_task_arrays(store)
    assert set(arrays) == {0, 2} and all(a.reward is None and len(a) == 60 for a in arrays.values())
    a = arrays[0]
    assert np.allclose(a.next_obs[:29], a.obs[1:30])  # consecutive steps chain
    assert load_recordings([store], dataset)[2].obs.shape == (60, dataset["obs_dim"])
    source = RecordedEpisodeSource(load_recordings([store], dataset))
    trajs = source.take(0, 3, with_rewards=False)
    assert [len(t) for t in trajs] == [30, 30] and all(t.reward is None and t.kind == "explore" for t in trajs)
    # The recorded transitions are the physics: the in-process env replays them.
    assert replay_error(store) < 2e-3


def _subscriptions(probe, node_name: str) -> list[str]:
    try:
        return [t for t, _ in probe.node.get_subscriber_names_and_types_by_node(node_name, "/")]
    except Exception:  # noqa: BLE001 - the node is not discovered yet
        return []


def test_sigkill_at_random_moments_leaves_exactly_the_finished_episodes(assets, tmp_path: Path) -> None:
    store = tmp_path / "store"
    length, per_task = 60, 3
    explorer = explorer_node(str(assets["bundle"]), str(store), tasks=[0, 1, 2], episodes_per_task=per_task,
                             episode_length=length, dataset=str(assets["data"]), **SIM_DRIVER)
    graph = GraphSpec("explore", (sim_node("config/reach.yaml", "lockstep"), explorer))
    rng = random.Random(1234)
    with ros_graph(graph, tmp_path, start=False) as (runner, probe):
        runner.start_node(graph.node("smrl_sim"))
        total_before = 0
        for kill in range(3):
            proc = runner.start_node(explorer)
            wait_until(lambda: written_count(runner.log("smrl_explorer")) >= 1, 30.0, "an episode on disk")
            time.sleep(rng.uniform(0.0, 0.2))  # an episode of 60 steps takes ~0.1-0.2 s
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            written = written_count(runner.log("smrl_explorer"))
            lengths = check_store(store, length)
            n = sum(len(v) for v in lengths.values())
            # Written episodes are all there, whole; at most one more (killed between its rename
            # and its log line). Nothing partial, nothing lost.
            assert total_before + written <= n <= total_before + written + 1, (kill, written, n)
            total_before = n
        # A restart appends where the store ends and records exactly what is missing.
        proc = runner.start_node(explorer)
        assert proc.wait(60) == 0
    assert check_store(store, length) == {t: [length] * per_task for t in (0, 1, 2)}


def test_a_relative_store_is_written_under_the_working_directory(assets, tmp_path: Path) -> None:
    # Relative outputs once went to the package share folder (install/.../share/smrl_ros/rec/rel);
    # the relative config still comes from the package (an input).
    work = tmp_path / "work"
    work.mkdir()
    graph = explore_graph(str(assets["bundle"]), "rec/rel", explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [1], "episodes_per_task": 1, "episode_length": 30})
    with ros_graph(graph, tmp_path, cwd=work) as (runner, probe):
        assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
    assert check_store(work / "rec" / "rel", 30) == {1: [30]}
    from smrl_train.config import package_root
    assert not (package_root() / "rec").exists()


def test_sigterm_mid_episode_saves_it_truncated_and_exits_0(assets, tmp_path: Path) -> None:
    store = tmp_path / "store"
    length = 1200  # ~1 s per episode, so the kill below lands well inside one
    graph = explore_graph(str(assets["bundle"]), str(store), explorer_parameters={
        "tasks": [1], "episodes_per_task": 0, "episode_length": length})  # records until stopped
    with ros_graph(graph, tmp_path) as (runner, probe):
        status = probe.subscribe("/smrl_explorer/status", String, topics.LATCHED_QOS)
        wait_until(lambda: written_count(runner.log("smrl_explorer")) >= 1, 30.0, "an episode on disk")
        # Progress on the status topic: episodes, steps, rate.
        s = json.loads(status.wait_for(lambda m: any(json.loads(x.data)["episodes"] >= 1 for x in m), 10.0,
                                       "a status with an episode")[-1].data)
        assert s["state"] in ("recording", "resetting") and s["steps"] >= length and s["steps_per_s"] > 0
        # While it runs: it subscribes to joint states, never to a reward.
        wait_until(lambda: topics.JOINT_STATES in _subscriptions(probe, "smrl_explorer"), 20.0,
                   "the explorer's subscriptions")
        assert not any("reward" in t for t in _subscriptions(probe, "smrl_explorer"))
        # Kill 0.3 s after an episode boundary: mid-episode, not in the few-ms reset between two
        # (there nothing is in progress, and nothing is to be saved).
        n = written_count(runner.log("smrl_explorer"))
        wait_until(lambda: written_count(runner.log("smrl_explorer")) > n, 30.0, "the next episode on disk")
        time.sleep(0.3)
        os.killpg(runner.processes["smrl_explorer"].pid, signal.SIGTERM)
        assert runner.wait_exit("smrl_explorer", 15.0) == 0
        log = runner.log("smrl_explorer")
    assert "writing the episode in progress" in log
    lengths = check_store(store, length, allow_interrupted=True)[1]
    s = EpisodeStore.open(store)
    last = s.read_episode(s.episode_paths()[-1])
    assert last.meta["interrupted"] and 0 < len(last) < length and lengths[:-1] == [length] * (len(lengths) - 1)
    assert s.stale_temp_files() == []


def test_lifecycle_configure_opens_the_store_deactivate_ends_the_episode_activate_resumes(assets,
                                                                                         tmp_path: Path) -> None:
    """autostart false: nothing is opened until configure; activate records; deactivate
    mid-episode writes it truncated (as SIGTERM does) and stops; activate records the rest and
    the explorer exits 0 once every task has its episodes."""
    store = tmp_path / "store"
    length = 1200  # ~1 s per episode: the deactivate lands inside one
    graph = explore_graph(str(assets["bundle"]), str(store), explorer_parameters={
        "tasks": [1], "episodes_per_task": 3, "episode_length": length, "autostart": False})
    with ros_graph(graph, tmp_path) as (runner, probe):
        status = probe.subscribe("/smrl_explorer/status", String, topics.LATCHED_QOS)
        assert lifecycle_state(probe, "smrl_explorer") == "unconfigured"
        assert not store.exists()
        assert change_lifecycle(probe, "smrl_explorer", "configure")
        assert lifecycle_state(probe, "smrl_explorer") == "inactive" and EpisodeStore.open(store).episode_paths() == []
        time.sleep(0.5)
        assert written_count(runner.log("smrl_explorer")) == 0  # configured, not recording
        assert change_lifecycle(probe, "smrl_explorer", "activate")
        wait_until(lambda: written_count(runner.log("smrl_explorer")) >= 1, 30.0, "an episode on disk")
        time.sleep(0.3)
        assert change_lifecycle(probe, "smrl_explorer", "deactivate")
        wait_until(lambda: written_count(runner.log("smrl_explorer")) >= 2, 10.0, "the interrupted episode on disk")
        status.wait_for(lambda m: json.loads(m[-1].data)["state"] == "inactive" and
                        json.loads(m[-1].data)["episodes"] == 2, 5.0, "an inactive status counting 2 episodes")
        steps = json.loads(status.latest.data)["driver_steps"]
        time.sleep(0.5)
        assert json.loads(status.latest.data)["driver_steps"] == steps  # inactive: the arm is not driven
        assert change_lifecycle(probe, "smrl_explorer", "activate")
        assert runner.wait_exit("smrl_explorer", 60.0) == 0
        log = runner.log("smrl_explorer")
    assert "writing the episode in progress" in log
    lengths = check_store(store, length, allow_interrupted=True)[1]
    assert len(lengths) == 3 and lengths[0] == length and 0 < lengths[1] < length and lengths[2] == length


def test_prior_and_posterior_episodes_sample_the_policy_and_are_filed_apart(assets, tmp_path: Path) -> None:
    """episodes_per_task 3 with prior_episodes 1 and posterior_episodes 1: per task (and per
    listing: task 0 is listed twice) one explore episode (deterministic, prior z), one
    stochastic prior-z and one stochastic episode with z from the task's posterior in
    task_latents.json. Replaying each episode's seeds through the
    explorer logic reproduces every recorded action; the trainer's loader files the kinds apart."""
    from smrl_train.robot.exploration import LatentExplorer, episode_rng
    from smrl_train.robot.runtime import LatentPolicyRuntime
    from smrl_train.robot.task_latents import FILE_NAME, TaskLatents

    bundle = tmp_path / "bundle"
    shutil.copytree(assets["bundle"], bundle)
    runtime = LatentPolicyRuntime(bundle / "policy.onnx")
    dim = runtime.info.latent_dim
    means = {0: np.full((2, dim), 1.5, np.float32), 2: np.full((2, dim), -1.5, np.float32)}
    variances = {t: np.full((2, dim), 0.01, np.float32) for t in means}
    TaskLatents(dim, means, variances).save(bundle / FILE_NAME)
    store = tmp_path / "store"
    graph = explore_graph(str(bundle), str(store), explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [0, 2, 0], "episodes_per_task": 3, "prior_episodes": 1,
        "posterior_episodes": 1, "episode_length": 30, "seed": 5})  # task 0 listed twice: two blocks
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
        log = runner.log("smrl_explorer")
    assert "then per task 1 stochastic prior-z episode(s); the last 1 of each task's episodes stochastic " \
           "with z ~ its posterior, 2 tasks x 2 posterior(s)" in log
    s = EpisodeStore.open(store)
    episodes = [s.read_episode(p) for p in s.episode_paths()]
    assert [(e.task_index, e.meta["kind"], e.meta["stochastic"]) for e in episodes] == [
        (t, kind, kind != "explore") for t in (0, 0, 2) for kind in ("explore", "prior", "posterior")]
    explorer = LatentExplorer(runtime)
    for e in episodes:
        t, k = e.task_index, e.meta["episode_index"]
        latent = (means[t][k % 2], variances[t][k % 2]) if e.meta["kind"] == "posterior" else (None, None)
        replays = {}
        for stochastic in (False, True):
            explorer.begin_episode(episode_rng(5, t, k), *latent, stochastic=stochastic)
            replays[stochastic] = np.stack([explorer.act(o)[0] for o in e.arrays["obs"]])
        gap = {st: float(np.max(np.abs(r - e.arrays["action"]))) for st, r in replays.items()}
        assert gap[e.meta["stochastic"]] < 1e-5 and gap[not e.meta["stochastic"]] > 1e-3, (e.meta["kind"], gap)
    source = RecordedEpisodeSource(load_recordings([store], EpisodeStore.open(assets["data"]).manifest))
    assert source.remaining_by_kind() == {"explore": 3, "prior": 3, "posterior": 3}
    assert [t.kind for t in source.take(2, 3, with_rewards=False)] == ["explore", "prior", "posterior"]
    assert source.remaining_by_kind() == {"explore": 2, "prior": 2, "posterior": 2}


def test_posterior_episodes_without_task_latents_refuse_to_start(assets, tmp_path: Path) -> None:
    graph = explore_graph(str(assets["bundle"]), str(tmp_path / "store"), explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [0], "episodes_per_task": 2, "posterior_episodes": 1})
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_explorer", 30.0) == 2
        log = runner.log("smrl_explorer")
    assert "refusing to start" in log and "task_latents.json: not found" in log


def test_real_arm_mode_homes_between_episodes_under_the_limits(assets, tmp_path: Path) -> None:
    """No reset service: the arm (here the sim bridge in realtime mode, standing in for a real
    arm's driver) is driven back to the home pose between episodes. URDF and home pose are the
    bundle's (its metadata names the training config's arm): no parameter gives them."""
    store = tmp_path / "store"
    graph = explore_graph(str(assets["bundle"]), str(store), use_sim=False, explorer_parameters={
        "tasks": [0], "episodes_per_task": 2, "episode_length": 12, "home_tolerance": 0.02})
    assert not {"urdf_path", "ee_link", "home"} & set(graph.node("smrl_explorer").parameters)
    graph = GraphSpec("explore", (sim_node("config/reach.yaml", "realtime"), *graph.nodes))
    with ros_graph(graph, tmp_path) as (runner, probe):
        assert runner.wait_exit("smrl_explorer", 60.0) == 0
    s = EpisodeStore.open(store)
    starts = [s.read_episode(p).arrays["obs"][0][:5] for p in s.episode_paths()]
    assert len(starts) == 2 and all(np.max(np.abs(q - HOME)) <= 0.02 for q in starts)
    actions = np.concatenate([s.read_episode(p).arrays["action"] for p in s.episode_paths()])
    assert np.all(np.abs(actions) <= 1.0)


def test_ros_recorded_episodes_equal_in_process_ones(assets, tmp_path: Path) -> None:
    """Same bundle, task, seeds and start state (no reset noise): the explorer's episodes over DDS
    and the in-process recorder's are the same data, so they train the same."""
    import dataclasses

    import yaml

    from smrl_train.config_loader import load_config
    from smrl_train.config_schema import to_dict
    from smrl_train.data.episode_recorder import EpisodeRecorder
    from smrl_train.data.recordings import recording_manifest
    from smrl_train.robot.exploration import LatentExplorer, collect_in_process
    from smrl_train.robot.runtime import LatentPolicyRuntime

    base = load_config(Path(__file__).resolve().parent.parent / "config" / "reach.yaml")
    cfg = dataclasses.replace(base, env=dataclasses.replace(base.env, reset_noise=0.0))
    data = to_dict(cfg)
    data.pop("root")
    data["arm"]["urdf"] = str(base.urdf_path())
    config = tmp_path / "reach_still.yaml"
    config.write_text(yaml.safe_dump(data))
    from smrl_train.robot.task_latents import FILE_NAME, TaskLatents

    # One episode of each kind: deterministic prior-z, stochastic prior-z, stochastic posterior-z.
    bundle = tmp_path / "bundle"
    shutil.copytree(assets["bundle"], bundle)
    policy = LatentPolicyRuntime(bundle / "policy.onnx")
    dim = policy.info.latent_dim
    latents = TaskLatents(dim, {3: np.full((1, dim), 0.7, np.float32)}, {3: np.full((1, dim), 0.2, np.float32)})
    latents.save(bundle / FILE_NAME)
    length, kinds = 40, ["explore", "prior", "posterior"]
    episodes = len(kinds)
    ros_store = tmp_path / "ros"
    graph = explore_graph(str(bundle), str(ros_store), config=str(config), explorer_parameters={
        "tasks": [3], "episodes_per_task": episodes, "prior_episodes": 1, "posterior_episodes": 1,
        "episode_length": length, "seed": 7})
    with ros_graph(graph, tmp_path) as (runner, _probe):
        assert runner.wait_exit("smrl_explorer", 60.0) == 0
    local = EpisodeStore.create(tmp_path / "local", recording_manifest(policy.info, episode_length=length,
                                                                       generator={"name": "in-process"}))
    env = ArmTaskEnv(cfg)
    task = env.sample_tasks(4, cfg.tasks.seed)[3]
    collect_in_process(env, LatentExplorer(policy), EpisodeRecorder(local, 3), task, episodes, 7, length,
                       kinds=kinds, latents=latents)
    ros, mine = load_task_arrays(ros_store)[3], load_task_arrays(tmp_path / "local")[3]
    assert len(ros) == len(mine) == episodes * length
    for name in ("obs", "action", "next_obs"):
        err = float(np.max(np.abs(getattr(ros, name) - getattr(mine, name))))
        assert err < 1e-3, (name, err)
    assert np.array_equal(ros.truncated, mine.truncated) and np.array_equal(ros.terminated, mine.terminated)


class StuckParameterService:
    """A node ``slow_sim`` whose ``set_parameters`` service never answers its first request (as
    when DDS loses an answer) and answers every later one with success. Its own context and a
    multi-threaded executor, so the stuck request blocks one thread only."""

    def __init__(self, domain_id: int) -> None:
        import threading

        import rclpy
        from rcl_interfaces.msg import SetParametersResult
        from rcl_interfaces.srv import SetParameters
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self.requests = 0
        self._release = threading.Event()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("slow_sim", context=self.context, start_parameter_services=False)

        def answer(request, response):
            self.requests += 1
            if self.requests == 1:
                self._release.wait(60.0)  # the lost answer
            response.results = [SetParametersResult(successful=True) for _ in request.parameters]
            return response

        self.node.create_service(SetParameters, "/slow_sim/set_parameters", answer,
                                 callback_group=ReentrantCallbackGroup())
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        import rclpy

        self._release.set()
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(5.0)


def test_a_task_request_left_unanswered_is_sent_again(assets, tmp_path: Path) -> None:
    store = tmp_path / "store"
    graph = explore_graph(str(assets["bundle"]), str(store), explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [1], "episodes_per_task": 1, "episode_length": 30,
        "sim_node": "slow_sim", "reset_timeout_s": 1.0})
    with ros_graph(graph, tmp_path, start=False) as (runner, probe):
        service = StuckParameterService(probe.context.get_domain_id())
        try:
            runner.start()
            assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
            log = runner.log("smrl_explorer")
        finally:
            service.close()
    assert service.requests == 2
    assert "no answer from /slow_sim/set_parameters after 1 s: sending again" in log
    assert "task 1: slow_sim set to" in log and check_store(store, 30) == {1: [30]}


def test_a_reset_service_that_appears_late_is_called_once_it_is_there(assets, tmp_path: Path) -> None:
    """The explorer starts before the sim bridge: its first reset finds no service, and the
    driver's timeout check sends it once the service appears (that check once never ran: the
    node replaced rclpy's own list of its timers)."""
    store = tmp_path / "store"
    graph = explore_graph(str(assets["bundle"]), str(store), explorer_parameters={
        "dataset": str(assets["data"]), "tasks": [2], "episodes_per_task": 1, "episode_length": 30,
        "sim_node": ""})  # no task to set: the explorer resets at once
    with ros_graph(graph, tmp_path, start=False) as (runner, probe):
        runner.start_node(graph.node("smrl_explorer"))
        wait_until(lambda: "recording reach exploration" in runner.log("smrl_explorer"), 30.0, "the explorer up")
        time.sleep(1.0)  # its first reset went unsent: no service yet
        assert written_count(runner.log("smrl_explorer")) == 0
        runner.start_node(graph.node("smrl_sim"))
        assert runner.wait_exit("smrl_explorer", 60.0) == 0, "the explorer exits 0 when done"
    assert check_store(store, 30) == {2: [30]}
