"""The example point family (installed: ``smrl_train.families.example``) as fast SMAC
problems for the tests, built in process without an episode store.

``PointDirectionEnv`` is re-exported, so ``toy_family:PointDirectionEnv`` names it as an
external family would be named: by an import path outside smrl.
"""

from __future__ import annotations

import numpy as np

from smrl_train.data.store import TaskArrays as Arrays
from smrl_train.families.example import PointDirectionEnv
from smrl_train.sim.tasks import Task

__all__ = ["PointDirectionEnv", "toy_dataset", "toy_problem"]


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
