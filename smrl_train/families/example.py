"""An example external task family: a point mass rewarded for moving in a hidden direction.

Everything a family needs to go through ``smrl data generate``, ``smrl train``, ``smrl eval``
and ``smrl report`` is here, in one small gymnasium env (a 2-D analogue of the paper's
Ant-Dir). A config names it by import path, exactly as it would name a class of your package::

    env:
      family: smrl_train.families.example:PointDirectionEnv
      options: {max_steps: 20}      # passed to the class: PointDirectionEnv(max_steps=20)
      episode_length: 20

(config/example_family.yaml is a complete config.) The pieces:

* the gymnasium API (``reset``, ``step``, Box spaces; actions inside [-1, 1]);
* the task protocol: ``sample_tasks(n, seed)`` returns seeded :class:`~smrl_train.sim.tasks.Task`
  values, ``set_task(task)`` makes later episodes act on it, ``step`` reports
  ``info["success"]``;
* optional: ``success_metric`` ("last" or "any": at which steps ``info["success"]`` counts),
  and ``expert_policy(task, noise, rng)``, the scripted behaviour ``smrl data generate`` builds
  its expert, wrong-goal and corrected episodes from (without it only ``random`` data can be
  generated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from smrl_train.sim.tasks import Task


class PointDirectionEnv(gym.Env[np.ndarray, np.ndarray]):
    """Point mass on the plane; a = velocity command in [-1, 1]^2, moved 0.1 a per step.

    Task: a unit direction d (``Task.goal``). Observation (2,): position. Reward: a . d
    (the velocity along d, at most sqrt(2)): linear in the task, so even random exploration
    reveals it. Success: the point has moved at least half the best possible distance along d
    so far. Episodes truncate after ``max_steps``.
    """

    # info["success"] is scored at the episode's last step (the config's smac.eval.success
    # overrides this; "any" would count a success at any step).
    success_metric = "last"

    def __init__(self, max_steps: int = 20) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.max_steps = max_steps
        self.goal = np.array([1.0, 0.0])
        self.pos = np.zeros(2)
        self.t = 0

    # -- task protocol ---------------------------------------------------------------------
    def sample_tasks(self, n: int, seed: int) -> list[Task]:
        angles = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
        return [Task("point", i, (float(np.cos(a)), float(np.sin(a)))) for i, a in enumerate(angles)]

    def set_task(self, task: Task) -> None:
        self.goal = np.asarray(task.goal, dtype=float)

    # -- behaviour hook (smrl data generate) -----------------------------------------------
    def expert_policy(self, task: Task, noise: float, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """Full speed along ``task``'s direction, plus Gaussian noise of std ``noise`` (from
        ``rng``, the episode's seeded generator); the generator clips to the action space."""
        direction = np.asarray(task.goal, dtype=float)
        command = direction / max(float(np.abs(direction).max()), 1e-6)
        return lambda obs: command + noise * rng.standard_normal(2)

    # -- gym API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.05, 0.05, 2)
        self.t = 0
        return self.pos.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(action, -1, 1)
        self.pos = self.pos + 0.1 * a
        self.t += 1
        progress = float(self.pos @ self.goal)
        return (self.pos.astype(np.float32), float(a @ self.goal), False, self.t >= self.max_steps,
                {"success": progress > 0.5 * 0.1 * self.t})
