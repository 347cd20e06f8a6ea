"""The adapting agent: acts with a policy conditioned on z drawn from the prior or a posterior.

The evaluator, the online collector and (through the exported artefacts) the robot-side
exploration node follow the same schedule: z is re-drawn at every step
(``exploration_resample_latent_period=1`` in the authors' code), from N(0, I) while
exploring, then from q(z | context) once context exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from smrl_train.smac.networks import Encoder, TanhGaussianPolicy


class AdaptiveAgent:
    """Policy + encoder with a latent distribution; ``act`` draws a fresh z each call.

    Args:
        encoder, policy: the trained networks (not modified).
        generator: source of z and action noise (seeded by the caller).
        deterministic: act with tanh(mean) (evaluation) instead of sampling.
        resample: "step" (a new z every step, the authors' code) or "episode" (one z per
            episode, drawn in :meth:`begin_episode`, as PEARL's posterior sampling).
    """

    def __init__(self, encoder: Encoder, policy: TanhGaussianPolicy, generator: torch.Generator,
                 deterministic: bool = True, resample: str = "step") -> None:
        if resample not in ("step", "episode"):
            raise ValueError(f"resample must be 'step' or 'episode', got {resample!r}")
        self.encoder, self.policy = encoder, policy
        self.generator = generator
        self.deterministic = deterministic
        self.resample = resample
        self.latent_dim = policy.latent_dim
        self.use_prior()

    def _draw(self) -> torch.Tensor:
        return self.mu + self.var.sqrt() * torch.randn(self.mu.shape, generator=self.generator)

    def begin_episode(self) -> None:
        """Called before each episode: draws the episode's z when resampling per episode."""
        self.z = self._draw()

    def use_prior(self) -> None:
        """Draw z ~ N(0, I) from now on."""
        self.mu = torch.zeros(1, self.latent_dim)
        self.var = torch.ones(1, self.latent_dim)

    @torch.no_grad()
    def use_posterior(self, context: Tensor, latent: str = "sample") -> tuple[Tensor, Tensor]:
        """Act with q(z | context) from now on; context (C, O + A + 1). ``latent``: "sample"
        draws z from the posterior, "mean" uses its mean (what a deployed adapted policy bakes
        in). Returns the posterior mean, var (1, L)."""
        if latent not in ("sample", "mean"):
            raise ValueError(f"latent must be 'sample' or 'mean', got {latent!r}")
        mu, var = self.encoder(context.unsqueeze(0))
        self.mu, self.var = mu, (var if latent == "sample" else torch.zeros_like(var))
        return mu, var

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action in [-1, 1]^A for one observation (O,); z freshly drawn (per-step mode) or the
        episode's (per-episode mode)."""
        z = self._draw() if self.resample == "step" else self.z
        o = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
        mean, log_std = self.policy(o, z)
        if self.deterministic:
            a = torch.tanh(mean)
        else:
            a, _ = TanhGaussianPolicy.sample(mean, log_std, self.generator)
        return a.squeeze(0).numpy()


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


def run_episode(env: object, agent: AdaptiveAgent, seed: int, max_steps: int, with_rewards: bool = True,
                kind: str = "prior") -> Trajectory:
    """Roll one episode of ``agent`` in a gymnasium env on its current task.

    With ``with_rewards=False`` rewards and success flags are dropped as they arrive, so
    nothing downstream can read them.
    """
    obs, _ = env.reset(seed=int(seed))  # type: ignore[attr-defined]
    agent.begin_episode()
    rows_o, rows_a, rows_n, rows_t, rows_tr, rows_r = [], [], [], [], [], []
    success = success_any = False
    distance = None
    for t in range(max_steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)  # type: ignore[attr-defined]
        truncated = bool(truncated) or t == max_steps - 1
        rows_o.append(obs)
        rows_a.append(action)
        rows_n.append(next_obs)
        rows_t.append(bool(terminated))
        rows_tr.append(truncated)
        if with_rewards:
            rows_r.append(float(reward))
            success = bool(info.get("success", False))
            success_any = success_any or success
            distance = info.get("goal_distance")
        obs = next_obs
        if terminated or truncated:
            break
    return Trajectory(
        obs=np.asarray(rows_o, np.float32), action=np.asarray(rows_a, np.float32),
        next_obs=np.asarray(rows_n, np.float32), terminated=np.asarray(rows_t, bool),
        truncated=np.asarray(rows_tr, bool),
        reward=np.asarray(rows_r, np.float32) if with_rewards else None,
        success=success if with_rewards else None, kind=kind,
        success_any=success_any if with_rewards else None,
        final_distance=None if distance is None else float(distance))


def derived_seed(*parts: int) -> int:
    """A 31-bit seed determined by integer parts (run seed, iteration, task, episode, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def seeded_generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))
