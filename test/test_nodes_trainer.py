"""smrl_trainer as a real process: a tiny offline + self-supervised run on recorded episodes with
progress and checkpoint announcements over DDS, and SIGINT that checkpoints for a resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from std_msgs.msg import String

from smrl_ros import topics
from smrl_ros.graphs import train_graph
from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import recording_manifest
from smrl_train.data.store import EpisodeStore
from smrl_train.export.run_bundle import BUNDLE_FILES
from smrl_train.robot.exploration import LatentExplorer, collect_in_process
from smrl_train.robot.runtime import LatentPolicyRuntime, load_model
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.smac.checkpoint import read_meta

from bundle_helpers import random_bundle
from conftest import small_config
from ros_harness import ros_graph

pytestmark = pytest.mark.ros

TINY = ["network.policy_hidden=[32, 32]", "network.q_hidden=[32, 32]", "network.encoder_hidden=[32]",
        "network.decoder_hidden=[16]", "offline.log_every=50", "offline.checkpoint_every=100",
        "online.iterations=2", "online.updates_per_iteration=40", "online.tasks_per_iteration=2",
        "online.eval_every=0", "eval.diagnostic_tasks=0"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny dataset and a reward-free recording of it made in-process (the explorer's format)."""
    tmp = tmp_path_factory.mktemp("train_assets")
    cfg = small_config("reach", n_train=3, n_test=2, episode_length=30)
    data = generate_dataset(cfg, tmp / "data", progress=False)
    policy = LatentPolicyRuntime(random_bundle(cfg, tmp / "bundle") / "policy.onnx")
    store = EpisodeStore.create(tmp / "rec", recording_manifest(policy.info, episode_length=30, generator={
        "name": "test"}, dataset_manifest=data.manifest))
    env = ArmTaskEnv(cfg)
    for task in data.tasks("train"):
        collect_in_process(env, LatentExplorer(policy), EpisodeRecorder(store, task.index), task, 2, 0, 30)
    return {"data": tmp / "data", "rec": tmp / "rec"}


def test_trainer_node_trains_offline_then_on_recordings_and_announces(assets, tmp_path: Path) -> None:
    graph = train_graph(str(assets["data"]), run_dir=str(tmp_path / "runs"), recordings=[str(assets["rec"])],
                        overrides=["offline.steps=300", *TINY], progress_period_s=0.3)
    with ros_graph(graph, tmp_path) as (runner, probe):
        progress = probe.subscribe("/smrl_trainer/progress", String)
        announced = probe.subscribe("/smrl_trainer/checkpoints", String, topics.LATCHED_QOS)
        assert runner.wait_exit("smrl_trainer", 120.0) == 0, runner.log("smrl_trainer")
        log = runner.log("smrl_trainer")
    rows = [json.loads(m.data) for m in progress.snapshot()]
    offline = [r for r in rows if r["phase"] == "offline"]
    assert offline and offline[-1]["done"] == offline[-1]["total"] == 300 and "q_loss" in offline[-1]["losses"]
    assert any(r["eta_s"] is not None for r in offline) and "ETA" in log
    assert [r for r in rows if r["phase"] == "online"][-1]["done"] == 2
    events = [json.loads(m.data) for m in announced.snapshot()]
    bundles = [e for e in events if e["kind"] == "bundle"]
    assert [b["phase"] for b in bundles] == ["offline", "online"]
    assert any(e["kind"] == "checkpoint" and not e["finished"] for e in events)  # announced while training
    for b in bundles:
        for name in BUNDLE_FILES:
            info = load_model(Path(b["path"]) / name).info  # checked ONNX: the robot side can load it
            # The improved recipe explores with z drawn once per episode; the robot must too.
            assert info.metadata["smrl.latent_resample"] == "episode"
    meta = read_meta(tmp_path / "runs" / "smac")
    assert meta["finished"] and meta["source"] == "RecordedEpisodeSource"
    for run in ("offline_only", "smac"):  # the runner's TensorBoard writer, in the node too
        assert list((tmp_path / "runs" / run).glob("events.out.tfevents.*")), run
    assert sum(map(len, meta["source_state"]["served"].values())) > 0  # recorded episodes were used


def test_trainer_sigint_checkpoints_and_a_restart_resumes(assets, tmp_path: Path) -> None:
    graph = train_graph(str(assets["data"]), run_dir=str(tmp_path / "runs"), phases=["offline"], export=False,
                        overrides=["offline.steps=1500", *TINY], progress_period_s=0.2)
    run = tmp_path / "runs" / "offline_only"
    with ros_graph(graph, tmp_path) as (runner, probe):
        progress = probe.subscribe("/smrl_trainer/progress", String)
        progress.wait_for(lambda m: any(json.loads(x.data)["done"] >= 100 for x in m), 60.0, "100 updates")
        os.killpg(runner.processes["smrl_trainer"].pid, signal.SIGINT)
        assert runner.wait_exit("smrl_trainer", 20.0) == 0
        stopped = read_meta(run)
        assert not stopped["finished"] and 100 <= stopped["step"] < 1500
        assert "interrupted" in runner.log("smrl_trainer")
        proc = runner.start_node(graph.node("smrl_trainer"))
        assert proc.wait(120.0) == 0
        assert "resuming" in runner.log("smrl_trainer")
    done = read_meta(run)
    assert done["finished"] and done["step"] == 1500


def test_trainer_continues_the_online_phase_round_by_round(assets, tmp_path: Path) -> None:
    """online_until stops after a round (bundle exported, run resumable); the next start with
    the same run continues it to the end: how the demo alternates collection and training."""
    common = dict(run_dir=str(tmp_path / "runs"), recordings=[str(assets["rec"])],
                  overrides=["offline.steps=100", *TINY], progress_period_s=0.3)
    with ros_graph(train_graph(str(assets["data"]), online_until=1, **common), tmp_path / "r1") as (runner, _):
        assert runner.wait_exit("smrl_trainer", 120.0) == 0, runner.log("smrl_trainer")
    first = read_meta(tmp_path / "runs" / "smac")
    assert first["iteration"] == 1 and not first["finished"]
    assert (tmp_path / "runs" / "smac" / "bundle" / "policy.onnx").exists()
    with ros_graph(train_graph(str(assets["data"]), phases=["online"], **common), tmp_path / "r2") as (runner, _):
        assert runner.wait_exit("smrl_trainer", 120.0) == 0, runner.log("smrl_trainer")
        assert "online: resuming" in runner.log("smrl_trainer")
    second = read_meta(tmp_path / "runs" / "smac")
    assert second["iteration"] == 2 and second["finished"] and second["step"] > first["step"]


def test_the_online_phase_trains_with_the_recipe_given_to_the_node(assets, tmp_path: Path) -> None:
    """Overrides given for the online phase are used (the node once reused the offline run's
    config: asked for 1 x 20 updates it ran 2 x 40, logging "online: 2/1 iterations")."""
    common = dict(run_dir=str(tmp_path / "runs"), recordings=[str(assets["rec"])], progress_period_s=0.3)
    offline = train_graph(str(assets["data"]), phases=["offline"], export=False,
                          overrides=["offline.steps=100", *TINY], **common)
    with ros_graph(offline, tmp_path / "r1") as (runner, _):
        assert runner.wait_exit("smrl_trainer", 120.0) == 0, runner.log("smrl_trainer")
    online = train_graph(str(assets["data"]), phases=["online"], export=False,
                         overrides=["offline.steps=100", *TINY, "online.iterations=1",
                                    "online.updates_per_iteration=20"], **common)
    with ros_graph(online, tmp_path / "r2") as (runner, probe):
        progress = probe.subscribe("/smrl_trainer/progress", String)
        assert runner.wait_exit("smrl_trainer", 120.0) == 0, runner.log("smrl_trainer")
        log = runner.log("smrl_trainer")
    meta = read_meta(tmp_path / "runs" / "smac")
    assert meta["finished"] and meta["iteration"] == 1 and meta["smac"]["online"]["updates_per_iteration"] == 20
    assert "online: 1/1 iterations" in log and "2/1" not in log
    assert [json.loads(m.data) for m in progress.snapshot()][-1]["total"] == 1
