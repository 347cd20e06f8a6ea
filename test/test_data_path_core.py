"""The ROS-free pieces of the data path: recording manifests and schema checks, the episode
writer thread, executed actions, reward context, latent draws, recorded sources, run progress."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import EpisodeWriter, recording_manifest, schema_from_model, schema_mismatches
from smrl_train.data.store import EpisodeStore, StoreError
from smrl_train.robot.control import executed_action
from smrl_train.robot.exploration import LatentExplorer, episode_rng
from smrl_train.robot.reward_context import RewardContext
from smrl_train.robot.runtime import LatentPolicyRuntime
from smrl_train.smac.logs import LatestMetrics
from smrl_train.smac.sources import load_recordings

from bundle_helpers import random_bundle
from conftest import small_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("core")
    cfg = small_config("reach", n_train=2, n_test=1, episode_length=10)
    data = generate_dataset(cfg, tmp / "data", progress=False)
    policy = LatentPolicyRuntime(random_bundle(cfg, tmp / "bundle") / "policy.onnx")
    return {"tmp": tmp, "data": data, "policy": policy}


def test_a_recording_from_the_model_alone_has_the_dataset_schema(setup) -> None:
    info, dataset = setup["policy"].info, setup["data"].manifest
    assert schema_mismatches(schema_from_model(info), dataset) == []
    alone = recording_manifest(info, episode_length=10, generator={"name": "t"})
    copied = recording_manifest(info, episode_length=10, generator={"name": "t"}, dataset_manifest=dataset)
    assert alone["reward_labelled"] is copied["reward_labelled"] is False
    assert schema_mismatches(alone, dataset) == [] and copied["tasks"] == dataset["tasks"]
    other = {**dataset, "joint_names": list(reversed(dataset["joint_names"])), "control_hz": 10.0}
    problems = schema_mismatches(alone, other)
    assert len(problems) == 2 and problems[0].startswith("joint_names") and "control_hz" in problems[1]
    with pytest.raises(ValueError, match="does not fit the dataset: joint_names"):
        recording_manifest(info, episode_length=10, generator={}, dataset_manifest=other)


def test_load_recordings_merges_stores_and_refuses_a_foreign_schema(setup) -> None:
    tmp, info, dataset = setup["tmp"], setup["policy"].info, setup["data"].manifest
    stores = []
    for k in range(2):
        s = EpisodeStore.create(tmp / f"rec{k}", recording_manifest(info, episode_length=10, generator={}))
        rec = EpisodeRecorder(s, 1)
        for t in range(4 + k):
            rec.add(np.full(s.manifest["obs_dim"], t, np.float32), np.zeros(5, np.float32),
                    np.full(s.manifest["obs_dim"], t + 1, np.float32), timestamp=float(t))
        rec.finish()
        stores.append(s.path)
    merged = load_recordings(stores, dataset)
    assert list(merged) == [1] and len(merged[1]) == 9 and merged[1].reward is None
    assert merged[1].truncated.tolist() == [False] * 3 + [True] + [False] * 4 + [True]
    with pytest.raises(StoreError, match="rec0: does not fit the training dataset: control_hz"):
        load_recordings(stores[:1], {**dataset, "control_hz": 50.0})
    with pytest.raises(StoreError, match="must be reward-free"):
        load_recordings([setup["data"].path], dataset)


def test_the_writer_thread_writes_in_order_and_reports_failures(setup, tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", recording_manifest(setup["policy"].info, episode_length=3,
                                                                  generator={}))
    done, lock = [], threading.Lock()

    def on_done(result) -> None:
        with lock:
            done.append(result)

    writer = EpisodeWriter(on_done)
    obs = np.zeros(store.manifest["obs_dim"], np.float32)
    for k in range(3):
        rec = EpisodeRecorder(store, 0)
        for _ in range(3):
            rec.add(obs + k, np.zeros(5, np.float32), obs, timestamp=0.0)
        writer.submit(rec, truncated=True, meta={"k": k})
    bad = EpisodeRecorder(store, 0)
    bad.add(obs, np.zeros(5, np.float32), obs * np.nan, timestamp=0.0)  # non-finite: the store refuses it
    writer.submit(bad, truncated=True, meta={})
    assert writer.wait_idle(10.0) and writer.pending == 0 and writer.close()
    assert [r.path.name for r in done[:3]] == [f"task0000_ep00000{k}.safetensors" for k in range(3)]
    assert done[3].path is None and "non-finite" in done[3].error
    assert [store.read_episode(p).meta["k"] for p in store.episode_paths()] == [0, 1, 2]


def test_executed_action_is_the_models_unless_the_safety_layer_changed_the_target() -> None:
    q, max_step = np.zeros(3), np.full(3, 0.1)
    action, target = np.array([0.5, -1.0, 0.2], np.float32), np.array([0.05, -0.1, 0.02])
    assert np.array_equal(executed_action(action, target, target.copy(), q, max_step), action)
    clipped = np.array([0.05, -0.05, 0.02])  # the limiter halved joint 1's step
    np.testing.assert_allclose(executed_action(action, target, clipped, q, max_step), [0.5, -0.5, 0.2], atol=1e-6)


def test_reward_context_rows_returns_and_dropped_episodes() -> None:
    ctx = RewardContext(obs_dim=2, act_dim=1)
    for r in (-1.0, -2.0):
        ctx.add(np.ones(2), np.zeros(1), r)
    assert ctx.end_episode() == -3.0
    ctx.add(np.ones(2), np.zeros(1), -5.0)
    ctx.drop_episode()
    assert ctx.array().shape == (2, 4) and ctx.returns == [-3.0]
    with pytest.raises(ValueError, match="non-finite"):
        ctx.add(np.ones(2), np.zeros(1), float("nan"))


def test_latent_draws_are_fixed_by_seed_task_and_episode(setup) -> None:
    explorer = LatentExplorer(setup["policy"])
    obs = np.zeros(setup["policy"].info.obs_dim, np.float32)

    def actions(seed: int, task: int, ep: int) -> np.ndarray:
        explorer.begin_episode(episode_rng(seed, task, ep))
        return np.stack([explorer.act(obs)[0] for _ in range(5)])

    assert np.array_equal(actions(0, 1, 2), actions(0, 1, 2))
    assert not np.array_equal(actions(0, 1, 2), actions(0, 1, 3))
    assert not np.array_equal(actions(0, 1, 2)[0], actions(0, 1, 2)[1])  # z redrawn every step


def test_progress_is_the_newest_row_a_run_logged() -> None:
    log = LatestMetrics(done=250)  # a resumed run starts where its checkpoint is
    assert log.progress("offline", 6000) == {"phase": "offline", "done": 250, "total": 6000, "losses": {},
                                             "updates_per_s": None}
    log.log(500, {"train/q_loss": 1.5, "time/updates_per_s": 80.0})
    log.log(500, {"step": 20, "eval/final_return": -3.0})  # an eval row keeps the newest losses
    prog = log.progress("offline", 6000)
    assert prog["done"] == 500 and prog["losses"] == {"q_loss": 1.5} and prog["updates_per_s"] == 80.0


def test_exploration_follows_the_models_latent_schedule(setup) -> None:
    import dataclasses

    from smrl_train.robot.exploration import ONCE_PER_EPISODE, resample_period_for

    policy = setup["policy"]
    obs = np.zeros(policy.info.obs_dim, np.float32)
    # A model exported by a run of the improved recipe says "episode": z is drawn once per episode.
    per_episode = dataclasses.replace(policy.info, metadata={**policy.info.metadata, "smrl.latent_resample": "episode"})
    assert resample_period_for(per_episode) == ONCE_PER_EPISODE
    assert resample_period_for(per_episode, requested=1) == 1  # a parameter overrides the model
    assert resample_period_for(policy.info) == 1  # no key (older models, paper recipe): every step
    every_50 = dataclasses.replace(policy.info, metadata={"smrl.latent_resample": "50"})  # eval.resample_latent: 50
    assert resample_period_for(every_50) == 50
    for bad in ("sometimes", "0", "2.5"):
        with pytest.raises(ValueError, match="smrl.latent_resample: expected 'step', 'episode' or a whole number"):
            resample_period_for(dataclasses.replace(policy.info, metadata={"smrl.latent_resample": bad}))

    class EpisodeModel:
        info = per_episode

        def act(self, o: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return policy.act(o, z)

    explorer = LatentExplorer(EpisodeModel())
    explorer.begin_episode(episode_rng(0, 1, 2))
    steps = np.stack([explorer.act(obs)[0] for _ in range(300)])
    assert np.all(steps == steps[0])  # one z for the whole episode
    explorer.begin_episode(episode_rng(0, 1, 3))
    assert not np.array_equal(explorer.act(obs)[0], steps[0])  # a new episode draws a new z


def test_task_latents_round_trip_and_bad_files_name_the_problem(tmp_path: Path) -> None:
    from smrl_train.robot.task_latents import TaskLatents, TaskLatentsError

    mean = {3: np.arange(10, dtype=np.float32).reshape(2, 5), 7: -np.ones((2, 5), np.float32)}
    var = {t: np.full((2, 5), 0.25, np.float32) for t in mean}
    path = tmp_path / "task_latents.json"
    TaskLatents(5, mean, var, {"per_task": 2}).save(path)
    back = TaskLatents.load(path)
    m, v = back.for_episode(3, 5)  # episode 5 of task 3 takes its posterior 5 % 2 = 1
    assert np.array_equal(m, mean[3][1]) and np.array_equal(v, var[3][1]) and back.info == {"per_task": 2}
    with pytest.raises(TaskLatentsError, match="no posterior for task 4"):
        back.for_episode(4, 0)
    with pytest.raises(TaskLatentsError, match="not found"):
        TaskLatents.load(tmp_path / "missing.json")
    good = json.loads(path.read_text())
    for breakage, message in ((lambda d: d.update(latent_dim="5"), "'latent_dim' must be a positive integer"),
                              (lambda d: d["tasks"]["3"].update(var=[[0.0] * 5] * 2), r"tasks\.3: .*variances > 0"),
                              (lambda d: d["tasks"]["7"].update(mean=[[1.0] * 4] * 2), r"tasks\.7: mean and var"),
                              (lambda d: d.update(kind="other"), "not a task-latents file")):
        data = json.loads(json.dumps(good))
        breakage(data)
        path.write_text(json.dumps(data))
        with pytest.raises(TaskLatentsError, match=message):
            TaskLatents.load(path)
