"""Robot-side exploration logic in numpy: the latent z for each control step.

The exploration node conditions the exported policy on z drawn here: from the prior
N(0, I), resampled every ``resample_period`` steps (1 in SMAC's code,
``exploration_resample_latent_period=1``; once per episode in our recipes); or from a
posterior N(mean, var) inferred from context.
"""

from __future__ import annotations

import numpy as np

# A resample period no episode reaches: z is drawn when the episode starts and kept.
ONCE_PER_EPISODE = 2**31 - 1


def resample_period(setting: object) -> int:
    """Steps between z draws for a resample setting: "step" (1, the authors' code), "episode"
    (:data:`ONCE_PER_EPISODE`, PEARL's posterior sampling) or a whole number N >= 1 of steps
    (an int or its digits; e.g. 50: an exploration episode of 200 steps visits 4 latents).
    Anything else (a config's or a model's metadata) raises ValueError naming the accepted values."""
    if setting == "step":
        return 1
    if setting == "episode":
        return ONCE_PER_EPISODE
    text = str(setting)
    if isinstance(setting, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected 'step', 'episode' or a whole number of steps >= 1, got {setting!r}")
    return int(text)


class LatentSchedule:
    """z for each control step, resampled every ``resample_period`` steps.

    Args:
        latent_dim: size of z.
        resample_period: steps between draws (1 = every step, SMAC's default).
        rng: the generator all draws come from (seeded by the caller).
    """

    def __init__(self, latent_dim: int, resample_period: int, rng: np.random.Generator) -> None:
        if resample_period < 1:
            raise ValueError("resample_period must be >= 1")
        self.latent_dim = latent_dim
        self.resample_period = resample_period
        self.rng = rng
        self.mean = np.zeros(latent_dim)
        self.var = np.ones(latent_dim)
        self._step = 0
        self._z = np.zeros(latent_dim, dtype=np.float32)

    def use_prior(self) -> None:
        self.set_posterior(np.zeros(self.latent_dim), np.ones(self.latent_dim))

    def set_posterior(self, mean: np.ndarray, var: np.ndarray) -> None:
        """Draw from N(mean, var) from now on; mean, var (latent_dim,)."""
        mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
        if mean.shape != (self.latent_dim,) or var.shape != (self.latent_dim,) or np.any(var < 0):
            raise ValueError(f"posterior must be two ({self.latent_dim},) arrays with var >= 0")
        self.mean, self.var = mean, var
        self._step = 0

    def next(self) -> np.ndarray:
        """z for this step (latent_dim,) float32."""
        if self._step % self.resample_period == 0:
            self._z = (self.mean + np.sqrt(self.var) * self.rng.standard_normal(self.latent_dim)).astype(np.float32)
        self._step += 1
        return self._z
