"""Gymnasium task families on the simulated arm: ``smrl/Reach-v0`` and ``smrl/Push-v0``.

Action: joint-position deltas in [-1, 1]^n, scaled per joint by ``max_step`` (rad per control
step = ``arm.max_step_fraction`` x velocity limit x control period) and applied as absolute
targets ``q + a * max_step`` clipped to the URDF limits: exactly what a ros2_control
``forward_position_controller`` receives. Observation: see :mod:`smrl_train.sim.arm_sim`.

Rewards (``info`` carries each term under ``reward_<term>``, the success flag under ``success``
and the distance the success radius applies to under ``goal_distance``):

* reach: ``-|ee - goal| - action_cost |a|^2``; success when ``|ee - goal| < 5 cm``;
* push: ``-|puck_xy - goal| - push_reach_weight |ee - puck| - action_cost |a|^2``; success
  when the puck is within 5 cm of the goal.

Episodes never terminate; the ``TimeLimit`` wrapper truncates them at ``env.episode_length``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from smrl_train.config import SmrlConfig
from smrl_train.sim.arm_sim import ArmSim
from smrl_train.sim.experts import JacobianExpert
from smrl_train.sim.tasks import Task, sample_box

ENV_IDS = {"reach": "smrl/Reach-v0", "push": "smrl/Push-v0"}


class ArmTaskEnv(gym.Env[np.ndarray, np.ndarray]):
    """A hidden-goal task family on a URDF arm, following the task protocol of
    :mod:`smrl_train.sim.tasks` (``sample_tasks``, ``set_task``, ``info["success"]``)."""

    metadata = {"render_modes": []}
    # Boxes (gym.Env declares any Space): their shape is always known.
    action_space: gym.spaces.Box
    observation_space: gym.spaces.Box

    def __init__(self, config: SmrlConfig | None = None, family: str | None = None) -> None:
        cfg = config if config is not None else SmrlConfig()
        if family is not None and family != cfg.env.family:
            cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, family=family))
        self.cfg = cfg
        self.family = cfg.env.family
        self.sim = ArmSim(cfg)
        self.arm = self.sim.arm
        self.joint_names = self.arm.joint_names
        period = self.sim.control_period
        self.max_step = cfg.arm.max_step_fraction * self.arm.velocity * period
        self.observation_layout = self.sim.layout
        n = self.arm.n_joints
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.sim.obs_dim,), dtype=np.float32)
        self.sim.set_task(self.sample_tasks(1, 0)[0])

    # -- task protocol ---------------------------------------------------------------------
    def sample_tasks(self, n: int, seed: int) -> list[Task]:
        """``n`` goals of this family, seeded (index 0..n-1)."""
        env = self.cfg.env
        if self.family == "reach":
            goals = sample_box(np.array(env.reach_goal_low), np.array(env.reach_goal_high), n, seed)
        else:
            # Redraw goals too close to the puck's start: they would be solved before acting.
            rng = np.random.default_rng(seed)
            start = np.array(env.puck_start)
            picked: list[np.ndarray] = []
            while len(picked) < n:
                g = rng.uniform(env.push_goal_low, env.push_goal_high)
                if np.linalg.norm(g - start) >= env.push_min_distance:
                    picked.append(g)
            goals = np.array(picked).reshape(n, 2)
        return [Task(self.family, i, tuple(round(float(x), 6) for x in g)) for i, g in enumerate(goals)]

    def set_task(self, task: Task) -> None:
        self.sim.set_task(task)

    def achieved(self, obs: np.ndarray) -> np.ndarray:
        """The point the success radius applies to, read from observations: the end effector
        (reach) or the puck's xy (push). obs (..., O) -> (..., 3) reach, (..., 2) push."""
        n = self.arm.n_joints
        obs = np.asarray(obs, float)
        return obs[..., 2 * n: 2 * n + 3] if self.family == "reach" else obs[..., 2 * n + 3: 2 * n + 5]

    def goal_from_rewards(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
                          next_obs: np.ndarray) -> np.ndarray:
        """The hidden goal as trilateration recovers it from transitions with true rewards: the
        information limit of a context, for ``smrl diagnose``. obs/next_obs (T, O), action
        (T, A), reward (T,) -> goal (3,) reach, (2,) push.

        Each reward, with its known terms removed, is the distance d from the point p it is
        measured at (after the step: the end effector, or the puck's xy) to the goal g:
        |p|^2 - 2 p.g + |g|^2 = d^2 is linear in (g, |g|^2), so least squares gives g, refined by
        a few Gauss-Newton steps on |p - g| = d. Collinear points leave g undetermined along
        the line's normal; the estimate is then as poor as the data. Points that do not move
        (spread under 10 um: push's puck when nothing touched it) do not determine g at all, and
        an estimate more than 1 m from every point (the workspace is under 1 m across) says the
        same of points that barely moved: NaN, no estimate.
        """
        n = self.arm.n_joints
        action = np.asarray(action, float)
        d = -(np.asarray(reward, float) + self.cfg.env.action_cost * np.sum(np.square(action), axis=1))
        next_obs = np.asarray(next_obs, float)
        p = self.achieved(next_obs)
        if self.family == "push":
            ee, puck = next_obs[:, 2 * n: 2 * n + 3], next_obs[:, 2 * n + 3: 2 * n + 6]
            d = d - self.cfg.env.push_reach_weight * np.linalg.norm(ee - puck, axis=1)
        d = np.maximum(d, 0.0)
        if len(p) == 0 or np.max(np.ptp(p, axis=0)) < 1e-5:
            return np.full(p.shape[1], np.nan)
        a = np.concatenate([-2.0 * p, np.ones((len(p), 1))], axis=1)
        g = np.linalg.lstsq(a, d**2 - np.sum(p**2, axis=1), rcond=None)[0][:-1]
        for _ in range(5):
            diff = g - p
            dist = np.maximum(np.linalg.norm(diff, axis=1), 1e-9)
            jac = diff / dist[:, None]
            step = np.linalg.lstsq(jac, d - dist, rcond=None)[0]
            g = g + step
        if np.min(np.linalg.norm(p - g, axis=1)) > 1.0:
            return np.full(p.shape[1], np.nan)
        return g

    def expert_policy(self, task: Task, noise: float,
                      rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """The behaviour hook of ``smrl data generate`` (smrl_train.families): the scripted
        Jacobian expert heading for ``task``'s goal, plus Gaussian noise of std ``noise``
        drawn from ``rng`` at every step."""
        expert = JacobianExpert(self.arm, self.max_step, self.sim.home, self.family)
        goal = np.asarray(task.goal)
        shape = self.action_space.shape
        return lambda obs: expert.act(obs, goal) + noise * rng.standard_normal(shape)

    @property
    def task(self) -> Task:
        assert self.sim.task is not None
        return self.sim.task

    # -- gym API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self.sim.reset(self.np_random)
        return self.sim.observation(), {"success": self.sim.success()}

    def action_to_targets(self, action: np.ndarray) -> np.ndarray:
        """Absolute joint targets (n,) for a delta action (n,) in [-1, 1]."""
        return self.sim.joint_positions() + np.clip(action, -1.0, 1.0) * self.max_step

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {self.action_space.shape} finite values, got {action}")
        action = np.clip(action, -1.0, 1.0)
        self.sim.set_position_targets(self.action_to_targets(action))
        self.sim.step_period()
        terms = self.sim.reward_terms(action)
        info: dict[str, Any] = dict(terms)
        info["success"] = self.sim.success()
        info["goal_distance"] = self.sim.goal_distance()
        return self.sim.observation(), float(sum(terms.values())), False, False, info


def make_env(cfg: SmrlConfig) -> gym.Env[np.ndarray, np.ndarray]:
    """The registered env of ``cfg.env.family`` with ``cfg``, truncated at the episode length."""
    return gym.make(ENV_IDS[cfg.env.family], config=cfg, max_episode_steps=cfg.env.episode_length)


for _family, _env_id in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(
            id=_env_id,
            entry_point="smrl_train.sim.envs:ArmTaskEnv",
            kwargs={"family": _family},
            max_episode_steps=200,
            disable_env_checker=True,
        )
