"""Episode recorder and robot-side exploration helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smrl_train.data.episode_recorder import EpisodeRecorder
from smrl_train.data.generate import generate_dataset
from smrl_train.data.store import EpisodeStore, load_task_arrays
from smrl_train.robot.homing import at_home, homing_step
from smrl_train.robot.latent_schedule import LatentSchedule

from conftest import small_config


@pytest.fixture
def free_store(tmp_path: Path) -> EpisodeStore:
    labelled = generate_dataset(small_config("reach", n_train=1), tmp_path / "l", progress=False)
    manifest = {k: v for k, v in labelled.manifest.items() if k not in ("format", "version")}
    return EpisodeStore.create(tmp_path / "free", {**manifest, "reward_labelled": False,
                                                   "generator": {"name": "test"}})


def test_recorder_writes_whole_episodes_only_when_finished(free_store: EpisodeStore) -> None:
    rec = EpisodeRecorder(free_store, task_index=4)
    obs = np.zeros(free_store.manifest["obs_dim"], dtype=np.float32)
    act = np.zeros(free_store.manifest["act_dim"], dtype=np.float32)
    for t in range(10):
        rec.add(obs + t, act, obs + t + 1, timestamp=0.05 * t)
    assert free_store.episode_paths() == []  # nothing on disk mid-episode
    rec.finish(truncated=True)
    for t in range(3):
        rec.add(obs, act, obs, timestamp=t, terminated=(t == 2))
    rec.finish()
    rec.add(obs, act, obs, timestamp=0.0)
    rec.abort()
    assert rec.finish() is None
    arrays = load_task_arrays(free_store.path)[4]
    assert arrays.reward is None and len(arrays) == 13
    assert arrays.truncated.tolist() == [False] * 9 + [True] + [False] * 3
    assert arrays.terminated.tolist() == [False] * 12 + [True]
    assert rec.episodes_written == 2 and rec.steps_written == 13
    with pytest.raises(ValueError, match="reward-free"):
        rec.add(obs, act, obs, timestamp=0.0, reward=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        rec.add(obs[:2], act, obs, timestamp=0.0)


def test_latent_schedule_resamples_on_period_and_follows_posterior() -> None:
    s = LatentSchedule(5, resample_period=3, rng=np.random.default_rng(0))
    zs = [s.next().copy() for _ in range(6)]
    assert np.array_equal(zs[0], zs[2]) and not np.array_equal(zs[2], zs[3])
    s.set_posterior(np.full(5, 2.0), np.zeros(5))
    assert np.allclose(s.next(), 2.0)
    s.use_prior()
    draws = np.array([LatentSchedule(5, 1, np.random.default_rng(i)).next() for i in range(2000)])
    assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1) < 0.05


def test_homing_moves_within_step_limits_and_arrives() -> None:
    q, home, max_step = np.array([1.0, -0.5, 0.0]), np.zeros(3), np.array([0.1, 0.1, 0.05])
    steps = 0
    while not at_home(q, home):
        nxt = homing_step(q, home, max_step)
        assert np.all(np.abs(nxt - q) <= max_step + 1e-12)
        q = nxt
        steps += 1
    assert steps == 10 and np.allclose(q, home, atol=1e-12)
