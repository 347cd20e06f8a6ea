"""Exploration and adaptation on the robot side, without ROS and without torch.

The exploration node (``smrl_explorer``) and the adapter node (``smrl_adapter``) drive the arm
with the adaptation bundle's latent policy ``pi(a | s, z)`` (``policy.onnx``, deterministic
``tanh(mean)``) and z from :class:`smrl_train.robot.latent_schedule.LatentSchedule`: drawn from the prior
N(0, I) and redrawn every ``resample_period`` steps (SMAC's code default: every step). That
is the meta-test's exploration (docs/algorithm.md section 4) and our recipes'
``explore`` episodes, so what a robot records is the data the trainer expects.

The adapter then infers the posterior q(z | context) with ``encoder.onnx`` from the context
rows (s, a, r) it collected *with* rewards (:class:`smrl_train.robot.reward_context.RewardContext`),
and bakes its mean into an adapted policy (:func:`smrl_train.robot.runtime.bake_latent`).

:func:`collect_in_process` records the same episodes in the in-process gym env; it is the
reference the ROS path is compared against (``bench/ros_vs_inprocess.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from smrl_train.data.recordings import EXPLORE_KIND, POSTERIOR_KIND
from smrl_train.robot.latent_schedule import ONCE_PER_EPISODE, LatentSchedule, resample_period
from smrl_train.robot.task_latents import TaskLatents


class LatentPolicy(Protocol):
    """``act(obs (O,), z (L,), noise (A,) | None) -> (action (A,) in [-1, 1], joint targets (A,))``
    and ``info``; action = tanh(mean + std * noise), tanh(mean) without noise."""

    info: Any

    def act(self, obs: np.ndarray, z: np.ndarray, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        ...


def episode_rng(seed: int, task_index: int, episode_index: int) -> np.random.Generator:
    """The generator of one episode's latents: fixed by (seed, task, episode), so a restarted
    recorder draws the same z sequence for the same episode."""
    return np.random.default_rng([int(seed), int(task_index) & 0x7FFFFFFF, int(episode_index)])


def resample_period_for(info: Any, requested: int = 0) -> int:
    """Steps between z draws for exploring with a model: ``requested`` when > 0, else as the
    model was trained (its ``smrl.latent_resample`` metadata, :func:`resample_period`): every
    step (1) for "step" (the paper's code, and models exported before the key existed),
    :data:`ONCE_PER_EPISODE` for "episode" (our recipes), N for a number of steps."""
    if requested > 0:
        return int(requested)
    mode = getattr(info, "metadata", {}).get("smrl.latent_resample", "step")
    try:
        return resample_period(mode)
    except ValueError as exc:
        raise ValueError(f"model metadata smrl.latent_resample: {exc}") from None


def describe_period(period: int) -> str:
    """``every step`` / ``once per episode`` / ``every N steps``, for logs."""
    return {1: "every step", ONCE_PER_EPISODE: "once per episode"}.get(period, f"every {period} steps")


class LatentExplorer:
    """The latent policy with z from a :class:`LatentSchedule` (prior by default).

    Args:
        policy: the bundle's latent policy runtime.
        resample_period: steps between z draws (1 = every step); 0 = as the model was trained
            (:func:`resample_period_for`).
    """

    def __init__(self, policy: LatentPolicy, resample_period: int = 0) -> None:
        self.policy = policy
        self.resample_period = resample_period_for(policy.info, resample_period)
        self.latent_dim = int(policy.info.latent_dim)
        self.schedule = LatentSchedule(self.latent_dim, self.resample_period, np.random.default_rng(0))
        self.noise_rng: np.random.Generator | None = None

    def begin_episode(self, rng: np.random.Generator, mean: np.ndarray | None = None,
                      var: np.ndarray | None = None, stochastic: bool = False) -> None:
        """Start an episode drawing z from ``rng``: the prior, or N(mean, var) when given.

        ``stochastic``: sample each action from the tanh-Gaussian policy (its own std, noise
        from a generator derived from ``rng``), as SMAC collects; else the deterministic
        tanh(mean), as the meta-test explores.
        """
        self.schedule = LatentSchedule(self.latent_dim, self.resample_period, rng)
        if mean is not None and var is not None:
            self.schedule.set_posterior(mean, var)
        # A child stream (spawning draws nothing from rng): the z draws of an episode are the
        # same whether or not its actions are sampled.
        self.noise_rng = rng.spawn(1)[0] if stochastic else None

    def begin_kind(self, kind: str, rng: np.random.Generator, task_index: int = 0, episode_index: int = 0,
                   latents: TaskLatents | None = None) -> None:
        """Start an episode of a recorded kind (:data:`smrl_train.data.recordings.EPISODE_KINDS`):
        ``explore`` deterministic with prior z, ``prior`` stochastic with prior z, ``posterior``
        stochastic with z from the task's posterior in ``latents`` (a
        :class:`smrl_train.robot.task_latents.TaskLatents`, taken in turn by ``episode_index``)."""
        if kind == POSTERIOR_KIND:
            if latents is None:
                raise ValueError("a posterior episode needs the task latents")
            mean, var = latents.for_episode(task_index, episode_index)
            self.begin_episode(rng, mean, var, stochastic=True)
        else:
            self.begin_episode(rng, stochastic=kind != EXPLORE_KIND)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs (O,) -> normalised action (A,) and absolute joint targets (A,) for this step."""
        z = self.schedule.next()
        if self.noise_rng is None:
            return self.policy.act(obs, z)
        return self.policy.act(obs, z, self.noise_rng.standard_normal(self.policy.info.n_joints).astype(np.float32))


def collect_in_process(env: Any, explorer: LatentExplorer, recorder: Any, task: Any, episodes: int,
                       seed: int, episode_length: int, first_episode: int = 0,
                       meta: dict[str, Any] | None = None, kinds: Sequence[str] | None = None,
                       latents: TaskLatents | None = None) -> int:
    """Record ``episodes`` exploration episodes of ``task`` in the in-process env.

    The reference for the ROS path: same policy, same latent schedule, same recorder, with
    ``env`` an :class:`smrl_train.sim.envs.ArmTaskEnv` stepping the physics itself. ``kinds``
    gives each episode's kind (default all ``explore``): ``prior`` and ``posterior`` episodes
    sample the stochastic policy, ``posterior`` ones with z from ``latents``
    (:class:`smrl_train.robot.task_latents.TaskLatents`), as the explorer node records them.
    Rewards are never read. Returns the number of transitions written.
    """
    env.set_task(task)
    written = 0
    for i, k in enumerate(range(first_episode, first_episode + episodes)):
        kind = kinds[i] if kinds is not None else EXPLORE_KIND
        explorer.begin_kind(kind, episode_rng(seed, task.index, k), task.index, k, latents)
        obs, _ = env.reset(seed=int(episode_rng(seed, task.index, k).integers(2**31)))
        for _ in range(episode_length):
            action, _ = explorer.act(obs)
            next_obs, _, terminated, _, _ = env.step(action)
            recorder.add(obs, action, next_obs, timestamp=float(env.sim.time), terminated=bool(terminated))
            obs = next_obs
            if terminated:
                break
        written += recorder.steps_in_progress
        recorder.finish(truncated=True, meta={**(meta or {}), "kind": kind, "stochastic": kind != EXPLORE_KIND,
                                              "episode_seed": int(k)})
    return written


def summarize_returns(returns: Sequence[float]) -> dict[str, float]:
    """Mean/min/max of episode returns (NaN when empty), for logs and reports."""
    arr = np.asarray(returns, dtype=np.float64)
    if arr.size == 0:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}
