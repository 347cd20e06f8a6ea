"""SMAC's losses as small pure functions (docs/algorithm.md section 2), each testable by hand.

Shapes: T tasks, N = T x B RL transitions, L latent dims, E critics (2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from smrl_train.smac.networks import atanh_clamped, tanh_gaussian_log_prob


class BatchStats:
    """The statistics a loss takes over the whole meta-batch (the advantage spread, the batch
    softmax, a mean, a count): here over this process's rows. In data-parallel training
    :class:`smrl_train.smac.data_parallel.Ranks` takes them over the rows of every process,
    each holding its share of the meta-batch, so the processes' averaged gradients are the
    one-process gradient."""

    # Processes sharing the meta-batch.
    world: int = 1

    def std(self, x: Tensor) -> Tensor:
        return x.std()

    def mean(self, x: Tensor) -> Tensor:
        return x.mean()

    def total(self, x: Tensor) -> Tensor:
        """A partial sum (of these rows) completed over the processes."""
        return x

    def softmax_times_n(self, x: Tensor) -> Tensor:
        """N x softmax over all N rows."""
        return torch.softmax(x, dim=0) * x.shape[0]


LOCAL = BatchStats()


def kl_to_standard_normal(mu: Tensor, var: Tensor) -> Tensor:
    """KL(N(mu, var) || N(0, I)) summed over latent dims: (T, L) -> (T,)."""
    return 0.5 * (var + mu.square() - 1.0 - var.log()).sum(dim=-1)


def context_loss(pred_std: Tensor, reward: Tensor, mu: Tensor, var: Tensor, kl_weight: float,
                 reward_mean: Tensor | float = 0.0, reward_std: Tensor | float = 1.0
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Encoder + decoder loss: MSE of the decoder on the RL batch + kl_weight x mean_T KL.

    ``pred_std`` (N,) or (E, N) is the decoder's standardised output (per ensemble member,
    each regressing the same targets) and ``reward`` (N,) the raw
    (unscaled) reward; the MSE is taken in standardised units (identity when mean 0, std 1,
    the paper). mu, var (T, L). Returns (total, mse, kl) scalars.
    """
    target = (reward - reward_mean) / reward_std
    mse = (pred_std - target).square().mean()
    kl = kl_to_standard_normal(mu, var).mean()  # mean over tasks (PEARL sums)
    return mse + kl_weight * kl, mse, kl


def bellman_target(reward: Tensor, terminated: Tensor, next_q_min: Tensor, reward_scale: float,
                   gamma: float) -> Tensor:
    """y = reward_scale r + (1 - d) gamma min_k Qbar_k(s', a', z); alpha = 0. All (N,)."""
    return reward_scale * reward + (1.0 - terminated) * gamma * next_q_min


def critic_loss(q_pred: Tensor, target: Tensor) -> Tensor:
    """Sum over the E critics of MSE(Q_k, y): q_pred (E, N), target (N,) -> scalar.

    (rlkit steps each critic on its own MSE; their sum has the same gradients.)
    """
    return (q_pred - target.detach()).square().mean(dim=-1).sum()


def awac_weights(advantage: Tensor, beta: float | Tensor, stats: BatchStats = LOCAL) -> Tensor:
    """Self-normalised exp(A / beta): N x softmax(A / beta) over all N, so the mean is 1. (N,)."""
    return stats.softmax_times_n(advantage / beta)


def awac_temperature(advantage: Tensor, beta: float, normalize: bool, stats: BatchStats = LOCAL) -> float | Tensor:
    """The temperature dividing A: beta, or beta x std(A) over the batch (detached) when
    ``normalize`` (ours: the weights then no longer depend on the reward and Q scale). (N,)."""
    if not normalize:
        return beta
    return beta * stats.std(advantage.detach()).clamp_min(1e-6)


def clipped_exp_weights(advantage: Tensor, beta: float | Tensor, weight_max: float) -> Tensor:
    """Per-sample exp(A / beta), clipped at ``weight_max`` (AWR, IQL): unlike the batch softmax,
    a few samples with large advantages cannot take all the weight. (N,)."""
    return torch.exp(advantage / beta).clamp_max(weight_max)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """IQL's asymmetric L2 on diff = Q(s, a_data) - V(s): |tau - 1(diff < 0)| diff^2, mean. For
    tau > 0.5, V(s) estimates an upper expectile of Q over the data's actions. (N,) -> scalar."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def regression_log_prob(mean: Tensor, log_std: Tensor, action: Tensor, weight: float) -> Tensor:
    """The actor's per-row score with ``loss.actor_mean: regression``, in place of log pi(a | s, z):
    the tanh-Gaussian log-likelihood of the data's action with the mean held fixed (it trains
    the std only) minus ``weight`` x the squared error of the deterministic action tanh(mean)
    (it trains the mean only). mean, log_std, action (N, A) -> (N,)."""
    likelihood = tanh_gaussian_log_prob(mean.detach(), log_std, atanh_clamped(action))
    return likelihood - weight * (torch.tanh(mean) - action).square().sum(dim=-1)


def awac_policy_loss(log_prob_data: Tensor, weights: Tensor, mask: Tensor | None = None,
                     stats: BatchStats = LOCAL) -> Tensor:
    """mean(-w log pi(a_data | s, z)) with the weights treated as constants; with ``mask``
    (N,) of 0/1, the mean over the rows it keeps (0 when it keeps none). (N,) -> scalar."""
    if mask is None:
        return -(weights.detach() * log_prob_data).mean()
    # Over the kept rows of every process: x world, as the processes' gradients are averaged.
    return -(mask * weights.detach() * log_prob_data).sum() * stats.world / stats.total(mask.sum()).clamp_min(1.0)


def online_q_term(q_new_min: Tensor, weight: float, normalize: bool, stats: BatchStats = LOCAL) -> Tensor:
    """Reparameterised actor term weight x mean(-min_k Q(s, a~pi, z)).

    With ``normalize`` the term is divided by the batch mean |Q| (detached), as TD3+BC does,
    so its size no longer grows with the value scale (ours; the paper adds it raw). (N,).
    """
    term = -q_new_min.mean()
    if normalize:
        term = term / stats.mean(q_new_min.detach().abs()).clamp_min(1e-6)
    return weight * term
