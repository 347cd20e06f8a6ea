"""Adaptation bundles for the node tests, exported through the real export path from SMAC
networks with random weights (no training): the nodes only need models of the right shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smrl_train.config import SmrlConfig


def random_bundle(cfg: SmrlConfig, out: Path, seed: int = 0, hidden: tuple[int, ...] = (32, 32)) -> Path:
    """encoder.onnx, policy.onnx and prior_policy.onnx of untrained networks for ``cfg``'s arm."""
    import torch

    from smrl_train.export.onnx_export import export_bundle, spec_from_env
    from smrl_train.robot.runtime import bake_latent
    from smrl_train.sim.envs import ArmTaskEnv
    from smrl_train.smac.config import NetworkConfig, SmacConfig
    from smrl_train.smac.trainer import build_networks

    env = ArmTaskEnv(cfg)
    spec = spec_from_env(env)
    smac = SmacConfig(seed=seed, network=NetworkConfig(encoder_hidden=hidden, policy_hidden=hidden, q_hidden=hidden,
                                                       decoder_hidden=hidden))
    nets = build_networks(smac, spec.obs_dim, spec.n_joints)
    with torch.no_grad():
        # Untrained heads give actions of ~1e-3 (rlkit's init): rescale so the arm visibly moves.
        head = nets.policy.mean_head
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
    export_bundle(nets.encoder, nets.policy, spec, out)
    bake_latent(out / "policy.onnx", np.zeros(nets.policy.latent_dim, np.float32), out / "prior_policy.onnx")
    return out
