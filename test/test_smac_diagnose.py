"""`smrl diagnose`: the trilateration bound, the linear probe and the table, on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.sim.tasks import split_tasks
from smrl_train.smac.agent import EnvPool
from smrl_train.smac.buffers import TaskBuffers
from smrl_train.smac.diagnose import LinearProbe, diagnose, format_table
from smrl_train.smac.trainer import build_networks

from conftest import small_config
from smac_helpers import tiny_config

torch.set_num_threads(1)


def _rows(env: ArmTaskEnv, steps: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nxt, reward, *_ = env.step(action)
        rows.append((obs, action, reward, nxt))
        obs = nxt
    return tuple(np.asarray(col) for col in zip(*rows))


@pytest.mark.parametrize("family", ["reach", "push"])
def test_trilateration_recovers_the_goal_from_rewards(family: str) -> None:
    env = ArmTaskEnv(small_config(family))
    task = env.sample_tasks(3, 7)[2]
    env.set_task(task)
    obs, action, reward, nxt = _rows(env, 60, 0)
    estimate = env.goal_from_rewards(obs, action, reward, nxt)
    if family == "reach":
        assert np.linalg.norm(estimate - np.asarray(task.goal)) < 1e-6  # exact with s'
        # As the context rows hold it (rewards placed at s): close, not exact.
        approx = env.goal_from_rewards(obs, action, reward, obs)
        assert 0 < np.linalg.norm(approx - np.asarray(task.goal)) < 0.05
    else:  # random actions rarely touch the puck: a still puck says nothing about the goal
        assert estimate.shape == (2,)
        still = np.repeat(nxt[:1], len(nxt), axis=0)
        assert np.isnan(env.goal_from_rewards(obs, action, reward, still)).all()
        # A puck nudged by micrometres: whatever the least squares answers lies on the table.
        n = env.arm.n_joints
        nudged = still.copy()
        nudged[:, 2 * n + 3] += 1e-4 * np.sqrt(np.arange(len(nudged)))
        estimate = env.goal_from_rewards(obs, action, reward, nudged)
        assert np.isnan(estimate).all() or np.linalg.norm(estimate - nudged[0, 2 * n + 3: 2 * n + 5]) <= 1.0


@pytest.mark.parametrize("family", ["reach", "push"])
def test_achieved_is_the_point_the_success_radius_applies_to(family: str) -> None:
    env = ArmTaskEnv(small_config(family))
    env.set_task(env.sample_tasks(2, 3)[1])
    obs, *_ = _rows(env, 5, 1)
    nxt, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    goal = np.asarray(env.task.goal)
    assert env.achieved(nxt).shape == goal.shape and env.achieved(obs).shape == (5,) + goal.shape
    assert np.linalg.norm(env.achieved(nxt) - goal) == pytest.approx(info["goal_distance"], abs=1e-6)


def test_linear_probe_is_ridge_regression() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4))
    w = rng.normal(size=(4, 3))
    goals = z @ w + np.array([0.4, 0.0, 0.3])
    probe = LinearProbe(z, goals)
    assert np.abs(probe(z[:5]) - goals[:5]).max() < 1e-2 and probe(z[0]).shape == (3,)


def test_diagnose_table_reports_the_bound_of_its_own_contexts() -> None:
    """Untrained networks on a short reach family: the probe and success are whatever they are,
    but the bound column is the trilateration of the very context rows: exact with s' on the
    offline rows (random actions move the arm); finite on the untrained policy's own."""
    cfg = small_config("reach", episode_length=20)
    env = ArmTaskEnv(cfg)
    train, test = split_tasks(env, 3, 2, 0)
    arrays = {}
    for t in train:
        env.set_task(t)
        obs, action, reward, nxt = _rows(env, 40, t.index)
        arrays[t.index] = type("A", (), dict(obs=obs, action=action, reward=reward, next_obs=nxt,
                                              terminated=np.zeros(40, bool),
                                              truncated=np.tile([False] * 19 + [True], 2)))()
    smac = tiny_config()
    nets = build_networks(smac, env.observation_space.shape[0], env.action_space.shape[0], seed=0)
    out = diagnose(EnvPool(lambda: ArmTaskEnv(cfg), env), nets.encoder, nets.policy, train, test,
                   TaskBuffers.from_task_arrays(arrays), smac.eval, seed=0, max_steps=20, n_tasks=2, episodes=(1, 2))
    sources = {(r["split"], r["context"]) for r in out["table"]}
    assert sources == {("train", "offline"), ("train", "explore 1"), ("train", "explore 2"),
                       ("test", "explore 1"), ("test", "explore 2")}
    for r in out["table"]:
        assert np.isfinite(r["bound_error"]) and r["probe_error"] is not None and 0.0 <= r["success"] <= 1.0
        assert r["final_distance"] is not None
    # The miss splits by the triangle inequality: |final - goal| <= |final - probe(z)| + |probe(z) - goal|.
    for r in out["rows"]:
        assert r["policy_error"] is not None
        assert abs(r["final_distance"] - r["probe_error"]) - 1e-6 <= r["policy_error"]
        assert r["policy_error"] <= r["final_distance"] + r["probe_error"] + 1e-6
    offline = next(r for r in out["table"] if r["context"] == "offline")
    assert offline["bound_error"] < 1e-6 and offline["bound_error_rows"] > offline["bound_error"]
    text = format_table(out)
    assert "| test (2) | explore 2 |" in text and "| train (2) | offline | " in text


def test_report_puts_the_policy_error_beside_the_probe_error() -> None:
    from smrl_train.smac.report import _diagnose_table

    diag = {"smac": {"train / offline / probe_error": [0.01, 0.03], "train / offline / policy_error": [0.05, 0.07],
                     "test / explore 2 / probe_error": [0.02], "test / explore 2 / policy_error": [0.04],
                     "test / explore 2 / success": [0.5]}}
    lines = _diagnose_table({"diagnose": diag})
    row = next(line for line in lines if line.startswith("| smac |"))
    assert "| 6.0 ± 1.4 / 4.0 ± 0.0 |" in row and "policy error given z" in "\n".join(lines)
