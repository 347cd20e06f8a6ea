"""A tiny task family for fast SMAC tests, and a demonstration of the pluggable task protocol.

``PointDirectionEnv`` is a 2-D point mass rewarded for moving in a hidden direction (a tiny
analogue of the paper's Ant-Dir): every transition's reward is linear in the task, so even
random exploration reveals it. All an env needs to plug into the trainer and evaluator is
``sample_tasks(n, seed)``, ``set_task(task)`` and ``info["success"]``, beside reset/step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from smrl_train.data.store import TaskArrays as Arrays
from smrl_train.sim.tasks import Task


class PointDirectionEnv(gym.Env[np.ndarray, np.ndarray]):
    """Point mass on the plane; a = velocity command in [-1, 1]^2, moved 0.1 a per step.

    Task: a unit direction d (``Task.goal``). Observation (2,): position. Reward: a . d
    (the velocity along d, at most sqrt(2)). Success: at the end the point has moved at least
    half the best possible distance along d. Episodes truncate after ``max_steps``.
    """

    def __init__(self, max_steps: int = 20) -> None:
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.max_steps = max_steps
        self.goal = np.array([1.0, 0.0])
        self.pos = np.zeros(2)
        self.t = 0

    def sample_tasks(self, n: int, seed: int) -> list[Task]:
        angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
        return [Task("point", i, (float(np.cos(a)), float(np.sin(a)))) for i, a in enumerate(angles)]

    def set_task(self, task: Task) -> None:
        self.goal = np.asarray(task.goal, dtype=float)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.05, 0.05, 2)
        self.t = 0
        return self.pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(action, -1, 1)
        self.pos = self.pos + 0.1 * a
        self.t += 1
        progress = float(self.pos @ self.goal)
        return (self.pos.astype(np.float32), float(a @ self.goal), False, self.t >= self.max_steps,
                {"success": progress > 0.5 * 0.1 * self.t})


def toy_dataset(env: PointDirectionEnv, tasks: list[Task], episodes: int = 6, seed: int = 0) -> dict[int, Arrays]:
    """Mixed-competence offline data: noisy experts, wrong-goal experts and random actions."""
    out = {}
    for task in tasks:
        env.set_task(task)
        rng = np.random.default_rng([seed, task.index])
        rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        for ep in range(episodes):
            kind = ("expert", "expert", "wrong", "wrong", "random", "expert")[ep % 6]
            target = np.asarray(task.goal) if kind == "expert" else rng.normal(size=2)
            target = target / max(np.linalg.norm(target), 1e-6)
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            done = False
            while not done:
                if kind == "random":
                    a = rng.uniform(-1, 1, 2)
                else:
                    a = target / np.abs(target).max() + 0.3 * rng.normal(size=2)
                a = np.clip(a, -1, 1).astype(np.float32)
                nxt, r, term, trunc, _ = env.step(a)
                for k, v in (("obs", obs), ("action", a), ("reward", r), ("next_obs", nxt), ("terminated", term),
                             ("truncated", trunc)):
                    rows[k].append(v)
                obs, done = nxt, term or trunc
        out[task.index] = Arrays(np.asarray(rows["obs"], np.float32), np.asarray(rows["action"], np.float32),
                                 np.asarray(rows["reward"], np.float32), np.asarray(rows["next_obs"], np.float32),
                                 np.asarray(rows["terminated"], bool), np.asarray(rows["truncated"], bool))
    return out


def toy_problem(n_train: int = 12, n_test: int = 6, max_steps: int = 20, episodes: int = 6, seed: int = 0):
    """A :class:`smrl_train.smac.runner.Problem` on the point family."""
    from smrl_train.sim.tasks import split_tasks
    from smrl_train.smac.runner import Problem

    env = PointDirectionEnv(max_steps)
    train, test = split_tasks(env, n_train, n_test, seed)
    data = toy_dataset(env, train, episodes, seed)
    return Problem(env_factory=lambda: PointDirectionEnv(max_steps), train_tasks=train, test_tasks=test, offline=data,
                   max_steps=max_steps, description={"family": "toy point direction"})
