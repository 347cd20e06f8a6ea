"""Small factories shared by the SMAC tests."""

from __future__ import annotations

import torch

from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.config import EvalConfig, NetworkConfig, OfflineConfig, OnlineConfig, SmacConfig

OBS, ACT = 4, 2


def tiny_config(variant: str = "return_tuned", **sections: object) -> SmacConfig:
    """A SmacConfig with tiny networks and budgets; ``sections`` replace whole sections."""
    base = dict(
        variant=variant,
        # The toy family declares no observation layout: the policy reads every input.
        network=NetworkConfig(encoder_hidden=(16,), policy_hidden=(16, 16), q_hidden=(16, 16), decoder_hidden=(8,),
                              policy_ignores=()),
        offline=OfflineConfig(steps=20, meta_batch=3, batch_size=8, context_size=5, log_every=5, checkpoint_every=10),
        online=OnlineConfig(iterations=2, tasks_per_iteration=2, updates_per_iteration=5, prior_episodes=1,
                            posterior_episodes=1, meta_batch=3, batch_size=8, context_size=5, label_context_size=10,
                            eval_every=1),
        eval=EvalConfig(diagnostic_tasks=2),
    )
    base.update(sections)
    return SmacConfig(**base)  # type: ignore[arg-type]


def random_batch(T: int = 3, B: int = 8, C: int = 5, seed: int = 0, obs: int = OBS, act: int = ACT) -> MetaBatch:
    g = torch.Generator().manual_seed(seed)
    n = T * B
    return MetaBatch(obs=torch.randn(n, obs, generator=g), action=torch.rand(n, act, generator=g) * 2 - 1,
                     reward=-torch.rand(n, generator=g), next_obs=torch.randn(n, obs, generator=g),
                     terminated=(torch.rand(n, generator=g) < 0.1).float(),
                     context=torch.randn(T, C, obs + act + 1, generator=g), tasks=torch.arange(T))
