"""The gymnasium task families: API, task protocol, determinism, hidden goals, clean physics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from smrl_train.config_loader import load_config
from smrl_train.sim.envs import ENV_IDS, ArmTaskEnv, make_env
from smrl_train.sim.tasks import TaskFamily, split_tasks

from conftest import CONFIGS, small_config


@pytest.mark.parametrize("family", ["reach", "push"])
def test_registered_ids_follow_the_gym_api(family: str) -> None:
    env = gym.make(ENV_IDS[family])
    assert env.spec is not None and env.spec.max_episode_steps == 200
    check_env(env.unwrapped, skip_render_check=True)
    assert isinstance(env.unwrapped, TaskFamily)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_observation_layout_and_action_scaling(name: str) -> None:
    cfg = load_config(CONFIGS[name])
    env = make_env(cfg)
    u = env.unwrapped
    n = u.arm.n_joints
    assert [k for k, _ in u.observation_layout][:3] == ["joint_pos", "joint_vel", "ee_pos"]
    assert env.observation_space.shape == (sum(s for _, s in u.observation_layout),)
    assert env.action_space.shape == (n,)
    # max_step = fraction x velocity limit x control period, per joint
    np.testing.assert_allclose(u.max_step, cfg.arm.max_step_fraction * u.arm.velocity / cfg.env.control_hz)
    obs, _ = env.reset(seed=0)
    action = np.zeros(n, dtype=np.float32)
    action[1] = 1.0
    np.testing.assert_allclose(u.action_to_targets(action) - obs[:n], action * u.max_step, atol=1e-6)


def test_same_seed_same_rollout_and_goal_is_hidden() -> None:
    cfg = small_config("push")
    rollouts = []
    for _ in range(2):
        env = make_env(cfg)
        u = env.unwrapped
        u.set_task(u.sample_tasks(1, 7)[0])
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        traj = [obs]
        for _ in range(30):
            obs, *_ = env.step(rng.uniform(-1, 1, size=env.action_space.shape))
            traj.append(obs)
        rollouts.append(np.array(traj))
    np.testing.assert_array_equal(rollouts[0], rollouts[1])
    # Two tasks, same seed and actions: identical observations (the goal is not observed),
    # different rewards (the goal is in the reward).
    env = make_env(cfg)
    u = env.unwrapped
    a, b = u.sample_tasks(2, 11)
    results = []
    for task in (a, b):
        u.set_task(task)
        obs, _ = env.reset(seed=5)
        _, r, *_ = env.step(np.zeros(env.action_space.shape))
        results.append((obs, r))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] != results[1][1]


def test_tasks_are_seeded_values_with_disjoint_seeds_for_test() -> None:
    env = ArmTaskEnv(load_config(CONFIGS["reach"]))
    train, test = split_tasks(env, 40, 10, seed=0)
    assert train == env.sample_tasks(40, 0) and test == env.sample_tasks(10, 1)
    assert len({t.goal for t in train} & {t.goal for t in test}) == 0
    with pytest.raises(AttributeError):  # frozen dataclass
        train[0].goal = (0, 0, 0)  # type: ignore[misc]
    push = ArmTaskEnv(load_config(CONFIGS["push"]))
    start = np.array(push.cfg.env.puck_start)
    for task in push.sample_tasks(50, 0):
        assert np.linalg.norm(np.array(task.goal) - start) >= push.cfg.env.push_min_distance


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_actions_keep_mujoco_warning_counters_at_zero(name: str) -> None:
    env = make_env(small_config(name, episode_length=200))
    rng = np.random.default_rng(1)
    env.reset(seed=1)
    for _ in range(200):
        env.step(rng.uniform(-1, 1, size=env.action_space.shape))
    sim = env.unwrapped.sim
    assert sim.warning_counts() == {}
    q = sim.joint_positions()
    assert np.all(q >= sim.arm.lower - 1e-2) and np.all(q <= sim.arm.upper + 1e-2)


def test_non_finite_action_is_refused() -> None:
    env = make_env(small_config("reach"))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(env.action_space.shape, np.nan))
