"""The adapting agent: acts with a policy conditioned on z drawn from the prior or a posterior.

The evaluator, the online collector and (through the exported artefacts) the robot-side
exploration node follow the same schedule (``resample_latent``, parsed by
:func:`smrl_train.robot.latent_schedule.resample_period`): z is re-drawn at every step
(``exploration_resample_latent_period=1`` in the authors' code), once per episode, or every N
steps, from N(0, I) while exploring, then from q(z | context) once context exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smrl_train.robot.latent_schedule import resample_period
from smrl_train.smac.networks import Encoder, TanhGaussianPolicy, sample_gaussian


class AdaptiveAgent:
    """Policy + encoder with a latent distribution; ``act`` draws a fresh z each call.

    Args:
        encoder, policy: the trained networks (not modified), on one device; z lives there,
            observations and contexts are moved there, actions come back to the host.
        generator: source of z and action noise (seeded by the caller; a CPU generator gives
            every device the same draws).
        deterministic: act with tanh(mean) (evaluation) instead of sampling.
        resample: "step" (a new z every step, the authors' code), "episode" (one z per
            episode, drawn in :meth:`begin_episode`, as PEARL's posterior sampling) or a number
            of steps N (a new z every N steps: an exploration episode visits several latents).
    """

    def __init__(self, encoder: Encoder, policy: TanhGaussianPolicy, generator: torch.Generator,
                 deterministic: bool = True, resample: str | int = "step") -> None:
        self.encoder, self.policy = encoder, policy
        self.generator = generator
        self.deterministic = deterministic
        self.resample = resample
        self._steps = 0
        self.latent_dim = policy.latent_dim
        self.device = next(policy.parameters()).device
        self.use_prior()

    @property
    def resample(self) -> str | int:
        return self._resample

    @resample.setter
    def resample(self, setting: str | int) -> None:
        try:
            self._period = resample_period(setting)
        except ValueError as exc:
            raise ValueError(f"resample: {exc}") from None
        self._resample = setting

    def _draw(self) -> torch.Tensor:
        return sample_gaussian(self.mu, self.var, self.generator)

    def begin_episode(self) -> None:
        """Called before each episode: draws the episode's first z."""
        self.z = self._draw()
        self._steps = 0

    def use_prior(self) -> None:
        """Draw z ~ N(0, I) from now on."""
        self.mu = torch.zeros(1, self.latent_dim, device=self.device)
        self.var = torch.ones(1, self.latent_dim, device=self.device)

    @torch.no_grad()
    def use_posterior(self, context: Tensor, latent: str = "sample") -> tuple[Tensor, Tensor]:
        """Act with q(z | context) from now on; context (C, O + A + 1). ``latent``: "sample"
        draws z from the posterior, "mean" uses its mean (what a deployed adapted policy bakes
        in). Returns the posterior mean, var (1, L)."""
        if latent not in ("sample", "mean"):
            raise ValueError(f"latent must be 'sample' or 'mean', got {latent!r}")
        mu, var = self.encoder(context.to(self.device).unsqueeze(0))
        self.mu, self.var = mu, (var if latent == "sample" else torch.zeros_like(var))
        return mu, var

    def latent(self) -> torch.Tensor:
        """The z (1, L) of the next step: freshly drawn (per-step mode), else the one drawn at
        the episode's start or at the last multiple of the resample period."""
        if self._period == 1:
            return self._draw()
        if self._steps and self._steps % self._period == 0:
            self.z = self._draw()
        self._steps += 1
        return self.z


@dataclass
class Trajectory:
    """One episode of T steps. obs/next_obs (T, O), action (T, A), terminated/truncated (T,).

    ``reward`` (T,) and ``success`` are None when the episode was collected reward-free:
    the decoder-labelled phase never holds the true reward at all. ``success`` is the env's
    ``info["success"]`` at the last step, ``success_any`` whether it was true at any step.
    """

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    reward: np.ndarray | None = None
    success: bool | None = None
    kind: str = "prior"
    success_any: bool | None = None
    # The env's ``info["goal_distance"]`` at the last step, where the family reports one.
    final_distance: float | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def episode_return(self) -> float | None:
        return None if self.reward is None else float(np.sum(self.reward))

    def context(self, reward: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
        """(T, O + A + 1) context rows (s, a, r), with ``reward`` or the stored one; with
        ``width`` 2 O + A + 1, rows (s, a, r, s')."""
        r = self.reward if reward is None else reward
        if r is None:
            raise ValueError("a reward-free trajectory needs labels to become context")
        cols = [self.obs, self.action, np.asarray(r, np.float32)[:, None]]
        if width is not None and width > self.obs.shape[1] + self.action.shape[1] + 1:
            cols.append(self.next_obs)
        return np.concatenate(cols, axis=1).astype(np.float32)


@torch.no_grad()
def act(agents: Sequence[AdaptiveAgent], obs: np.ndarray) -> np.ndarray:
    """One action in [-1, 1]^A per agent for its observation (n, O) -> (n, A), in one policy
    forward whose rows are each the numbers of that agent alone
    (:meth:`~smrl_train.smac.networks.TanhGaussianPolicy.forward_rows`). Each agent draws its z
    and action noise from its own generator, in the order one agent alone does (z, then noise),
    so its actions do not depend on the agents beside it."""
    policy = agents[0].policy
    if any(a.policy is not policy for a in agents):
        raise ValueError("agents stepped together must share one policy")
    z = torch.cat([a.latent() for a in agents])
    mean, log_std = policy.forward_rows(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=z.device), z)
    actions = torch.tanh(mean)
    for i, a in enumerate(agents):
        if not a.deterministic:
            actions[i] = TanhGaussianPolicy.sample(mean[i: i + 1], log_std[i: i + 1], a.generator)[0][0]
    return actions.cpu().numpy()


def run_episodes(envs: Sequence[Any], agents: Sequence[AdaptiveAgent], seeds: Sequence[int], max_steps: int,
                 with_rewards: bool = True, kinds: str | Sequence[str] = "prior") -> list[Trajectory]:
    """Roll one episode per (env, agent, seed) side by side: every env on its own current task,
    one batched policy forward per step for the runs still going (:func:`act`). The episodes
    are those each agent rolls alone in its env, to the bit (:func:`act`).

    With ``with_rewards=False`` rewards and success flags are dropped as they arrive, so
    nothing downstream can read them.
    """
    if not len(envs) == len(agents) == len(seeds):
        raise ValueError(f"{len(envs)} envs, {len(agents)} agents and {len(seeds)} seeds: one of each per episode")
    kinds = [kinds] * len(envs) if isinstance(kinds, str) else list(kinds)
    obs = [env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds)]
    for agent in agents:
        agent.begin_episode()
    rows: list[dict[str, list[Any]]] = [{k: [] for k in ("o", "a", "n", "t", "tr", "r")} for _ in envs]
    success, success_any = [False] * len(envs), [False] * len(envs)
    distance: list[Any] = [None] * len(envs)
    running = list(range(len(envs)))
    for t in range(max_steps):
        if not running:
            break
        actions = act([agents[i] for i in running], np.stack([obs[i] for i in running]))
        still = []
        for i, action in zip(running, actions):
            next_obs, reward, terminated, truncated, info = envs[i].step(action)
            truncated = bool(truncated) or t == max_steps - 1
            row = rows[i]
            row["o"].append(obs[i])
            row["a"].append(action)
            row["n"].append(next_obs)
            row["t"].append(bool(terminated))
            row["tr"].append(truncated)
            if with_rewards:
                row["r"].append(float(reward))
                success[i] = bool(info.get("success", False))
                success_any[i] = success_any[i] or success[i]
                distance[i] = info.get("goal_distance")
            obs[i] = next_obs
            if not (terminated or truncated):
                still.append(i)
        running = still
    return [Trajectory(
        obs=np.asarray(row["o"], np.float32), action=np.asarray(row["a"], np.float32),
        next_obs=np.asarray(row["n"], np.float32), terminated=np.asarray(row["t"], bool),
        truncated=np.asarray(row["tr"], bool),
        reward=np.asarray(row["r"], np.float32) if with_rewards else None,
        success=success[i] if with_rewards else None, kind=kinds[i],
        success_any=success_any[i] if with_rewards else None,
        final_distance=None if distance[i] is None else float(distance[i])) for i, row in enumerate(rows)]


class EnvPool:
    """Envs of one task family for episodes run side by side: ``take(n)`` gives n of them,
    made on first need and reused (each keeps the task it was last set to)."""

    def __init__(self, make: Callable[[], Any], first: Any = None) -> None:
        self.make = make
        self.envs: list[Any] = [] if first is None else [first]

    def take(self, n: int) -> list[Any]:
        while len(self.envs) < n:
            self.envs.append(self.make())
        return self.envs[:n]


def derived_seed(*parts: int) -> int:
    """A 31-bit seed determined by integer parts (run seed, iteration, task, episode, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def seeded_generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))
