"""Reward labels for reward-free episodes from a frozen snapshot of the offline encoder+decoder.

Brief section 4 and 9.3: for each trajectory of training task i, draw one z_r from
q(z | h_i) where h_i is a context from the task's *offline* data (the frozen snapshot), then
label every transition with r(s, a, z_r). The snapshot is taken when the offline phase ends,
so labels stay fixed even when our improved recipe keeps training the live encoder/decoder.

With a decoder ensemble the label is pessimistic, ``mean - pessimism x std`` over the members
(our improved recipe): off the offline data the decoder over-predicts, and the members
disagree most where it does.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from smrl_train.smac.networks import Encoder, RewardDecoder, sample_gaussian


class Labeller:
    """Frozen copies of an encoder and a reward decoder that label reward-free transitions."""

    def __init__(self, encoder: Encoder, decoder: RewardDecoder, pessimism: float = 0.0) -> None:
        self.pessimism = float(pessimism)
        # On the CPU whatever device trains: labelling is one trajectory at a time, with the
        # collected episodes.
        self.encoder = copy.deepcopy(encoder).to("cpu").requires_grad_(False).eval()
        self.decoder = copy.deepcopy(decoder).to("cpu").requires_grad_(False).eval()

    @torch.no_grad()
    def label(self, obs: np.ndarray, action: np.ndarray, offline_context: torch.Tensor,
              generator: torch.Generator) -> np.ndarray:
        """Rewards (T,) for one trajectory: obs (T, O), action (T, A); context (C, O + A + 1)
        drawn from the same task's offline data. z_r is drawn once for the trajectory."""
        mu, var = self.encoder(offline_context.unsqueeze(0))
        z = sample_gaussian(mu, var, generator)
        o = torch.as_tensor(obs, dtype=torch.float32)
        a = torch.as_tensor(action, dtype=torch.float32)
        mean, std = self.decoder.mean_std(o, a, z.expand(o.shape[0], -1))
        return (mean - self.pessimism * std).numpy().astype(np.float32)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
