"""The adapter's context: the (s, a, r) rows it collects *with* rewards, episode by episode.

The adapter node (``smrl_adapter``) explores a new task for a few episodes with a reward
topic, adds every transition here, and infers the posterior q(z | context) from
:meth:`RewardContext.array` with the bundle's ``encoder.onnx``
(:class:`smrl_train.robot.runtime.EncoderRuntime`). Rows are (s, a, r), or (s, a, r, s') when
the encoder reads the next observation. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RewardContext:
    """Context rows (s, a, r), or (s, a, r, s') when the encoder reads the next observation,
    that an adapter collects with rewards, episode by episode."""

    obs_dim: int
    act_dim: int
    next_obs: bool = False
    rows: list[np.ndarray] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    _episode_return: float = 0.0
    _episode_steps: int = 0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray | None = None) -> None:
        """One transition: obs (O,), action (A,), a finite reward, and next_obs (O,) when the
        rows hold it."""
        if not np.isfinite(reward):
            raise ValueError(f"non-finite reward {reward}")
        parts = [np.asarray(obs, np.float32).reshape(self.obs_dim),
                 np.asarray(action, np.float32).reshape(self.act_dim), np.array([reward], np.float32)]
        if self.next_obs:
            if next_obs is None:
                raise ValueError("this context holds (s, a, r, s') rows: next_obs is needed")
            parts.append(np.asarray(next_obs, np.float32).reshape(self.obs_dim))
        self.rows.append(np.concatenate(parts))
        self._episode_return += float(reward)
        self._episode_steps += 1

    def end_episode(self) -> float:
        """Close the episode in progress; returns its return."""
        ret = self._episode_return
        if self._episode_steps:
            self.returns.append(ret)
        self._episode_return, self._episode_steps = 0.0, 0
        return ret

    def drop_episode(self) -> None:
        """Forget the rows of the episode in progress (it was aborted)."""
        if self._episode_steps:
            del self.rows[-self._episode_steps:]
        self._episode_return, self._episode_steps = 0.0, 0

    def array(self) -> np.ndarray:
        """All rows (C, O + A + 1 [+ O]) float32."""
        if not self.rows:
            return np.zeros((0, self.obs_dim + self.act_dim + 1 + (self.obs_dim if self.next_obs else 0)), np.float32)
        return np.stack(self.rows)
