"""One SMAC step, defined once: every loss of an update from the networks, a meta-batch and
the step's noise.

This module is the definition of the algorithm's update (docs/algorithm.md section 2). The
trainer takes its gradients with autograd (``smac.gradients: autograd``, the default), through
``torch.compile`` of this same function (``compiled``), or with the hand-derived accelerator of
``manual_grad.py`` (``manual``), which is tested against it. :func:`step_losses` is pure: its
randomness comes in as a :class:`Noise`, drawn by the caller.

Shapes: T tasks x B transitions (N = T B), context (T, C, O + A + 1), L latent, A action,
E ensemble members.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.config import SmacConfig, resolved
from smrl_train.smac.losses import (
    LOCAL,
    BatchStats,
    awac_policy_loss,
    awac_temperature,
    awac_weights,
    bellman_target,
    clipped_exp_weights,
    context_loss,
    critic_loss,
    expectile_loss,
    kl_to_standard_normal,
    online_q_term,
    regression_log_prob,
)
from smrl_train.smac.networks import SmacNetworks, atanh_clamped, tanh_gaussian_log_prob

PHASES = ("offline", "online")


@dataclass
class Noise:
    """The step's standard-normal draws: z (T, L), z' for the target policy's action (T, L),
    the target action (N, A), the actor's sampled action (N, A)."""

    z: Tensor
    z_next: Tensor
    a_next: Tensor
    a_pi: Tensor

    @staticmethod
    def draw(generator: torch.Generator, tasks: int, latent: int, rows: int, act: int) -> Noise:
        return Noise(*(torch.randn(shape, generator=generator) for shape in
                       ((tasks, latent), (tasks, latent), (rows, act), (rows, act))))

    @staticmethod
    def for_batch(generator: torch.Generator, nets: SmacNetworks, batch: MetaBatch) -> Noise:
        return Noise.draw(generator, batch.meta_batch, nets.latent_dim, batch.meta_batch * batch.batch_size,
                          nets.act_dim)

    def to(self, device: torch.device) -> Noise:
        """The same draws on ``device`` (themselves when they are there)."""
        return Noise(*(x.to(device, non_blocking=True) for x in (self.z, self.z_next, self.a_next, self.a_pi)))

    def share(self, tasks: slice, batch_size: int) -> Noise:
        """The draws of tasks ``tasks`` (a rank's share of the meta-batch)."""
        rows = slice(tasks.start * batch_size, tasks.stop * batch_size)
        return Noise(self.z[tasks], self.z_next[tasks], self.a_next[rows], self.a_pi[rows])


@dataclass
class LossTerms:
    """The losses of one step (scalars) and the intermediate tensors tests and metrics read.

    ``total`` is what one backward pass takes: its gradient is each network's gradient (the
    losses' graphs share no parameters; the -Q term reaches the policy only). q_pred (E, N);
    target/advantage/weights/log_prob (N,); a_pi (N, A); q_pi (N,) = min_k Q_k(s, a_pi);
    z (N, L) detached; mu, var (T, L).
    """

    total: Tensor
    context: Tensor
    decoder_mse: Tensor
    kl: Tensor
    critic: Tensor
    value: Tensor
    awr: Tensor
    q_term: Tensor
    q_pred: Tensor
    target: Tensor
    advantage: Tensor
    weights: Tensor
    log_prob: Tensor
    a_pi: Tensor
    q_pi: Tensor
    z: Tensor
    mu: Tensor
    var: Tensor

    @property
    def policy(self) -> Tensor:
        return self.awr + self.q_term


def per_task(x: Tensor, b: int) -> Tensor:
    """Repeat each task's row for its transitions: (T, L) -> (T * b, L)."""
    return x.unsqueeze(1).expand(x.shape[0], b, x.shape[1]).reshape(-1, x.shape[1])


def _mixed(cfg: SmacConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 matmuls for the policy, critic and decoder passes (``network.compute_dtype``)
    on ``device``'s type; in float32 a no-op context."""
    if cfg.network.compute_dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trains_context(cfg: SmacConfig, phase: str) -> bool:
    """Whether ``phase`` trains the encoder and decoder (paper: offline only)."""
    return phase == "offline" or bool(cfg.online.train_encoder)


def step_losses(nets: SmacNetworks, cfg: SmacConfig, batch: MetaBatch, noise: Noise, phase: str,
                stats: BatchStats = LOCAL) -> LossTerms:
    """Every loss of one SMAC step, before any parameter changes (docs/algorithm.md section 2).

    1. Task inference: one posterior per task; z (reparameterised) for the decoder, critic and
       actor; an independent z' for the target policy's action (rlkit).
    2. Encoder + decoder: reward regression on the RL batch with z carrying gradient, + KL.
       The only loss that reaches the encoder.
    3. Critic: y = scale r + (1 - d) gamma min Qbar(s', a' ~ pi(s', z'), z); alpha = 0. With
       ``loss.critic_target: expectile`` (IQL) the value of s' is V(s'), and V is fitted to an
       upper expectile of min Qbar(s, a_data).
    4. Actor (AWAC): A = min Q(s, a) - min Q(s, a~pi) (expectile: Qbar(s, a) - V(s)), weights
       N softmax(A / beta) or per-sample exp(A / beta) clipped (``loss.awac_weights``).
    5. Online: + the reparameterised -Q(s, a~pi) term, whose gradient reaches the policy and
       never the critic (Q's parameters enter that pass detached).

    ``stats`` takes the statistics over the whole meta-batch: in data-parallel training
    (:mod:`smrl_train.smac.data_parallel`) ``batch`` and ``noise`` are this rank's share and
    ``stats`` reduces over the ranks, so the mean of the ranks' gradients is the one-process
    gradient.
    """
    c = cfg.loss
    train_ctx = trains_context(cfg, phase)
    online = phase == "online"
    b = batch.batch_size
    dev = batch.obs.device

    # 1. Task inference.
    with torch.set_grad_enabled(train_ctx and torch.is_grad_enabled()):
        mu, var = nets.encoder(batch.context)
        z = per_task(mu + var.sqrt() * noise.z, b)
    z_next = per_task(mu.detach() + var.detach().sqrt() * noise.z_next, b)
    zd = z.detach()

    # 2. Encoder + decoder.
    if train_ctx:
        with _mixed(cfg, dev):
            pred = nets.decoder.members(batch.obs, batch.action, z).float()  # (E, N): each member regresses
        l_ctx, mse, kl = context_loss(pred, batch.reward, mu, var, float(resolved(c.kl_weight)),
                                      nets.decoder.reward_mean, nets.decoder.reward_std)
    else:
        kl = kl_to_standard_normal(mu, var).mean().detach()
        l_ctx, mse = kl.new_zeros(()), kl.new_zeros(())

    # 3. Critic: the value of s' from the target critics at the policy's action (the paper), or
    #    from V(s') fitted in-sample to an upper expectile of Qbar(s, a_data) (IQL).
    # V(s, z) under the expectile target (the networks hold one exactly then), else None.
    vf = nets.vf if c.critic_target == "expectile" else None
    if c.critic_target == "expectile" and vf is None:
        raise ValueError("loss.critic_target: expectile needs networks with V(s, z) (build_networks of this config)")
    with torch.no_grad(), _mixed(cfg, dev):
        if vf is not None:
            v_next = vf(batch.next_obs, zd).float()
        else:
            mean_n, log_std_n = nets.policy(batch.next_obs, z_next)
            a_next = torch.tanh(mean_n.float() + log_std_n.float().exp() * noise.a_next)
            v_next = nets.qf_target(batch.next_obs, a_next, zd).float().min(dim=0).values
    y = bellman_target(batch.reward, batch.terminated, v_next, c.reward_scale, c.gamma)
    with _mixed(cfg, dev):
        q_pred = nets.qf(batch.obs, batch.action, zd).float()
    l_q = critic_loss(q_pred, y)

    # 4. Actor (AWAC): the policy's one pass on s gives log pi(a_data) and the sampled action.
    with _mixed(cfg, dev):
        mean, log_std = nets.policy(batch.obs, zd)
    mean, log_std = mean.float(), log_std.float()
    if c.actor_mean == "regression":
        log_prob = regression_log_prob(mean, log_std, batch.action, float(c.actor_regression_weight))
    else:
        log_prob = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(batch.action))
    a_pi = torch.tanh(mean + log_std.exp() * noise.a_pi)  # reparameterised (used online)
    # Q(s, a~pi): the V(s) baseline, and online also the -Q term (5.), one pass for both (rlkit).
    # Q's parameters enter detached: this pass trains nothing but the policy, through a~pi.
    with torch.set_grad_enabled(online and torch.is_grad_enabled()), _mixed(cfg, dev):
        q_pi = nets.qf(batch.obs, a_pi if online else a_pi.detach(), zd, detach_params=True).float().min(dim=0).values
    if vf is not None:  # expectile: A = Qbar(s, a) - V(s); V learns the expectile of the same Qbar
        with torch.no_grad(), _mixed(cfg, dev):
            q_data = nets.qf_target(batch.obs, batch.action, zd).float().min(dim=0).values
        with _mixed(cfg, dev):
            v = vf(batch.obs, zd).float()
        l_v = expectile_loss(q_data - v, float(c.expectile))
        adv = q_data - v.detach()
    else:  # A = min Q(s, a) - min Q(s, a~pi), Q(s, a) reused from the critic pass
        l_v = q_pred.new_zeros(())
        adv = q_pred.detach().min(dim=0).values - q_pi.detach()
    with torch.no_grad():
        temperature = awac_temperature(adv, float(resolved(c.awac_beta)), bool(c.awac_normalize_advantage), stats)
        w = awac_weights(adv, temperature, stats) if c.awac_weights == "softmax" else \
            clipped_exp_weights(adv, temperature, float(c.awac_weight_max))
    # Online with ``online.actor_data: offline``: imitate only the dataset's actions.
    imitated = None
    if online and cfg.online.actor_data == "offline":
        if batch.offline is None:
            raise ValueError("online.actor_data: offline needs a meta-batch that marks its offline rows")
        imitated = batch.offline
    # ... and with ``online.actor_context: offline``, only under z inferred from offline context.
    if online and cfg.online.actor_context == "offline" and batch.explored is not None:
        kept = 1.0 - batch.explored
        imitated = kept if imitated is None else imitated * kept
    l_awr = awac_policy_loss(log_prob, w, imitated, stats)

    # 5. The online actor term.
    q_term = online_q_term(q_pi, resolved(cfg.online.q_term_weight), bool(cfg.online.normalize_q_term), stats) \
        if online else q_pi.new_zeros(())
    total = l_ctx + l_q + l_v + l_awr + q_term
    return LossTerms(total=total, context=l_ctx, decoder_mse=mse, kl=kl, critic=l_q, value=l_v, awr=l_awr,
                     q_term=q_term,
                     q_pred=q_pred, target=y, advantage=adv, weights=w, log_prob=log_prob, a_pi=a_pi, q_pi=q_pi,
                     z=zd, mu=mu, var=var)
