"""SMAC's networks (docs/algorithm.md section 1), as plain ``nn.Module``s with export-friendly forwards.

Shapes: T tasks, C context transitions per task, N = T x B RL transitions, L = latent size,
E = ensemble size (2 twin critics). Observations enter every network through a
:class:`Normalizer` whose mean/std are module buffers computed from the offline data, so an
exported graph carries them; in the ``paper`` variant they stay identity (the paper has no
observation normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # rlkit TanhGaussianPolicy clamp
VAR_MIN = 1e-7  # rlkit product_of_gaussians clamp
ACTION_CLAMP = 1.0 - 1e-6  # dataset actions before atanh (rlkit TanhNormal)
LOG2 = math.log(2.0)


class Normalizer(nn.Module):
    """``(x - mean) / std`` with fixed buffers (saved, exported); identity until set.

    Shapes: mean, std (D,); input (..., D).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean: Tensor, std: Tensor) -> None:
        """Use these statistics; std is floored at 1e-3 so constant inputs stay finite."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, last_init: float | None = None) -> nn.Sequential:
    """ReLU MLP; the last layer optionally initialised uniform in ±``last_init`` (rlkit)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        # In place: a linear layer's backward needs its input, not its output.
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
        d = h
    last = nn.Linear(d, out_dim)
    if last_init is not None:
        nn.init.uniform_(last.weight, -last_init, last_init)
        nn.init.uniform_(last.bias, -last_init, last_init)
    layers.append(last)
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------
# Context encoder q(z | c)


def context_width(obs_dim: int, act_dim: int, next_obs: bool) -> int:
    """Width of a context row: (s, a, r), or (s, a, r, s') with the next observation (rlkit's
    ``use_next_obs_in_context``; ``network.context_next_obs``). The replay rows of
    :class:`~smrl_train.smac.buffers.TaskBuffers` start with exactly these columns."""
    return obs_dim + act_dim + 1 + (obs_dim if next_obs else 0)


def product_of_gaussians(mu: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Permutation-invariant aggregation of per-transition Gaussians (PEARL, rlkit).

    Precisions add: ``1/var = sum_n 1/var_n``, ``mu = var * sum_n mu_n / var_n``.
    Shapes: mu, var (T, C, L) -> (T, L), (T, L).
    """
    var = var.clamp_min(VAR_MIN)
    precision = var.reciprocal()
    post_var = precision.sum(dim=-2).reciprocal()
    post_mu = post_var * (mu * precision).sum(dim=-2)
    return post_mu, post_var


class ContextEncoder(nn.Module):
    """Per-transition MLP on (s, a, r) -> (mu_n, softplus var_n), then product of Gaussians.

    Input context (T, C, obs_dim + act_dim + 1); output posterior mean and variance (T, L).
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 next_obs: bool = False) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.context_dim = context_width(obs_dim, act_dim, next_obs)
        self.normalizer = Normalizer(self.context_dim)
        self.net = mlp(self.context_dim, hidden, 2 * latent_dim)

    def per_transition(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Gaussian factor of each transition: (..., C, D) -> mu, var (..., C, L)."""
        out = self.net(self.normalizer(context))
        mu, pre_var = out.split(self.latent_dim, dim=-1)
        return mu, F.softplus(pre_var)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z | context): (T, C, D) -> mean (T, L), variance (T, L)."""
        return product_of_gaussians(*self.per_transition(context))


class MeanPoolEncoder(nn.Module):
    """Deep-sets alternative to the product of Gaussians (ours, ``encoder_aggregation: mean``).

    A per-transition MLP gives features (T, C, H); their mean over C goes through a head MLP to
    (mu, softplus var) (T, L). Still permutation-invariant, but it can learn nonlinear set
    functions: a distance reward constrains a goal to a sphere per transition, and a product
    of Gaussians cannot intersect spheres, a learned set function can.
    Same interface as :class:`ContextEncoder`.
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 next_obs: bool = False) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.context_dim = context_width(obs_dim, act_dim, next_obs)
        self.normalizer = Normalizer(self.context_dim)
        width = hidden[-1] if hidden else 64
        self.net = mlp(self.context_dim, hidden[:-1], width)
        self.head = mlp(width, (width,), 2 * latent_dim)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z | context): (T, C, D) -> mean (T, L), variance (T, L)."""
        pooled = self.net(self.normalizer(context)).relu_().mean(dim=-2)
        mu, pre_var = self.head(pooled).split(self.latent_dim, dim=-1)
        return mu, F.softplus(pre_var).clamp_min(VAR_MIN)


def _unrolled_cholesky_posterior(precision: Tensor, information: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`gaussian_posterior` written with elementwise ops only, unrolled over the static
    latent size: what the ONNX export traces (ONNX has no Cholesky). Same results (tested)."""
    n = precision.shape[-1]
    low: list[list[Tensor]] = [[precision[..., 0, 0]] * n for _ in range(n)]
    for j in range(n):
        acc = precision[..., j, j]
        for k in range(j):
            acc = acc - low[j][k] * low[j][k]
        low[j][j] = acc.clamp_min(VAR_MIN).sqrt()
        for i in range(j + 1, n):
            acc = precision[..., i, j]
            for k in range(j):
                acc = acc - low[i][k] * low[j][k]
            low[i][j] = acc / low[j][j]
    # inv[i, j] = (L^-1)_ij for j <= i, by forward substitution.
    inv: dict[tuple[int, int], Tensor] = {}
    for j in range(n):
        inv[j, j] = low[j][j].reciprocal()
        for i in range(j + 1, n):
            acc = low[i][j] * inv[j, j]
            for k in range(j + 1, i):
                acc = acc + low[i][k] * inv[k, j]
            inv[i, j] = -acc / low[i][i]
    # mean: L h = info by forward, then L^T mean = h by back substitution (as cholesky_solve;
    # multiplying by the explicit inverse loses digits on a badly conditioned precision).
    half: list[Tensor] = []
    for i in range(n):
        acc = information[..., i]
        for k in range(i):
            acc = acc - low[i][k] * half[k]
        half.append(acc / low[i][i])
    mean_rev: list[Tensor] = []  # mean[n-1], mean[n-2], ...
    for i in reversed(range(n)):
        acc = half[i]
        for k in range(i + 1, n):
            acc = acc - low[k][i] * mean_rev[n - 1 - k]
        mean_rev.append(acc / low[i][i])
    mean = torch.stack(mean_rev[::-1], -1)
    # Sigma = L^-T L^-1: var_i = sum_k (L^-1)_ki^2.
    var_terms: list[Tensor] = []
    for i in range(n):
        acc = inv[i, i] * inv[i, i]
        for k in range(i + 1, n):
            acc = acc + inv[k, i] * inv[k, i]
        var_terms.append(acc)
    var = torch.stack(var_terms, -1)
    return mean, var


def gaussian_posterior(precision: Tensor, information: Tensor) -> tuple[Tensor, Tensor]:
    """The Gaussian with this precision matrix (..., L, L) and information vector (..., L):
    mean = precision^-1 information and the marginal variances diag(precision^-1), (..., L) each.
    """
    if torch.onnx.is_in_onnx_export():
        return _unrolled_cholesky_posterior(precision, information)
    chol = torch.linalg.cholesky(precision)
    mean = torch.cholesky_solve(information.unsqueeze(-1), chol).squeeze(-1)
    eye = torch.eye(precision.shape[-1], dtype=precision.dtype)
    inv_low = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    return mean, inv_low.square().sum(dim=-2)


class LinearGaussianEncoder(nn.Module):
    """Each context transition is a linear-Gaussian observation of z (ours,
    ``encoder_aggregation: linear_gaussian``): a per-transition MLP gives a rank-``rank`` factor
    U_n (L, k) and a reading y_n (k,) with y_n = U_n^T z + N(0, I). With the prior N(0, I), the
    posterior is exact Bayesian linear regression:

        precision = I + sum_n U_n U_n^T,   mean = precision^-1 sum_n U_n y_n.

    It generalises the product of Gaussians (diagonal U_n: evidence along fixed axes) to
    evidence along any direction, which is what a distance reward gives: with z holding
    (g, |g|^2) up to a linear map, ``|p - g|^2 = d^2`` is one linear equation per transition in
    z, and least-squares trilateration is the posterior mean. The encoder returns the mean and
    the marginal variances diag(precision^-1), so everything downstream (sampling, KL, the
    labeller, the ONNX bundle) treats it like the other encoders.
    Same interface as :class:`ContextEncoder`.
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 next_obs: bool = False, rank: int = 1) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim, self.rank = obs_dim, act_dim, latent_dim, rank
        self.context_dim = context_width(obs_dim, act_dim, next_obs)
        self.normalizer = Normalizer(self.context_dim)
        self.net = mlp(self.context_dim, hidden, (latent_dim + 1) * rank)

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior q(z | context): (T, C, D) -> mean (T, L), marginal variance (T, L)."""
        out = self.net(self.normalizer(context))
        n, k = self.latent_dim, self.rank
        factor = out[..., : n * k].reshape(*out.shape[:-1], n, k)  # (T, C, L, k)
        reading = out[..., n * k:]  # (T, C, k)
        # In float64 (L x L: cheap), here and in the ONNX graph: many nearly parallel factors
        # make the precision so badly conditioned that float32 rounding of the sum leaves it
        # not positive definite (Cholesky fails; seen on push exploration contexts).
        factor, reading = factor.double(), reading.double()
        precision = torch.eye(n, dtype=torch.float64) + torch.einsum("tcik,tcjk->tij", factor, factor)
        information = torch.einsum("tcik,tck->ti", factor, reading)
        mean, var = gaussian_posterior(precision, information)
        return mean.to(out.dtype), var.to(out.dtype)


# Any context encoder: context (T, C, O + A + 1) -> posterior mean, variance (T, L).
Encoder = ContextEncoder | MeanPoolEncoder | LinearGaussianEncoder
ENCODERS: dict[str, type[Encoder]] = {"product": ContextEncoder, "mean": MeanPoolEncoder,
                                      "linear_gaussian": LinearGaussianEncoder}


def _standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) draws of ``like``'s shape and dtype, from ``generator`` on its own device, on
    ``like``'s device."""
    device = like.device if generator is None else generator.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def sample_gaussian(mu: Tensor, var: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Reparameterised sample ``mu + sqrt(var) * eps``, same shape as ``mu``; eps is drawn on
    the generator's device (a CPU generator gives every device the same numbers)."""
    eps = _standard_normal(mu, generator)
    return mu + var.sqrt() * eps


# ---------------------------------------------------------------------------------------
# Policy pi(a | s, z)


def tanh_gaussian_log_prob(mean: Tensor, log_std: Tensor, pre_tanh: Tensor) -> Tensor:
    """log pi(tanh(u)) for pre-tanh value u, summed over action dims: (N, A) -> (N,).

    Uses the stable tanh correction ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
    """
    std = log_std.exp()
    gauss = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2.0 * (LOG2 - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (gauss - correction).sum(dim=-1)


def atanh_clamped(action: Tensor) -> Tensor:
    """Pre-tanh value of a dataset action, clamped to ±(1 - 1e-6) first (rlkit's TanhNormal)."""
    return torch.atanh(action.clamp(-ACTION_CLAMP, ACTION_CLAMP))


class TanhGaussianPolicy(nn.Module):
    """pi(a | s, z) = tanh(N(mu(s, z), sigma(s, z))); log-std clamped to [-20, 2].

    z is detached on entry (the actor never trains the encoder) unless ``detach_z`` is off,
    which only the meta-behaviour-cloning baseline uses.
    """

    input_mask: Tensor

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 detach_z: bool = True) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        self.detach_z = detach_z
        self.normalizer = Normalizer(obs_dim)
        # 1 for each observation entry the policy reads, 0 for those it ignores
        # (``network.policy_ignores``); multiplies the normalised observation.
        self.register_buffer("input_mask", torch.ones(obs_dim))
        self.trunk = mlp(obs_dim + latent_dim, hidden[:-1], hidden[-1]) if hidden else nn.Identity()
        width = hidden[-1] if hidden else obs_dim + latent_dim
        self.mean_head = nn.Linear(width, act_dim)
        self.log_std_head = nn.Linear(width, act_dim)
        for head in (self.mean_head, self.log_std_head):  # rlkit: uniform ±1e-3
            nn.init.uniform_(head.weight, -1e-3, 1e-3)
            nn.init.uniform_(head.bias, -1e-3, 1e-3)

    def forward(self, obs: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Gaussian parameters before tanh: obs (N, O), z (N, L) -> mean, log_std (N, A)."""
        if self.detach_z:
            z = z.detach()
        h = self.trunk(torch.cat([self.normalizer(obs) * self.input_mask, z], dim=-1)).relu_()
        return self.mean_head(h), self.log_std_head(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward_rows(self, obs: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` for rows that are separate agents: obs (N, O), z (N, L) -> mean,
        log_std (N, A), each row the same numbers as ``forward`` on that row alone, whatever
        rows stand beside it. A matrix product over N rows rounds differently from a batch of
        one (a matrix-vector product, about 1e-7 apart, which a contact-rich episode grows into
        a different outcome), so every linear layer runs as N products of one row, batched
        (``baddbmm``). Evaluation and collection act through this."""
        def rows(layer: nn.Module, x: Tensor) -> Tensor:
            if not isinstance(layer, nn.Linear):
                return layer(x)
            n = x.shape[0]
            return torch.baddbmm(layer.bias.expand(n, 1, -1), x.unsqueeze(1),
                                 layer.weight.t().expand(n, -1, -1)).squeeze(1)

        h = torch.cat([self.normalizer(obs) * self.input_mask, z], dim=-1)
        for layer in self.trunk if isinstance(self.trunk, nn.Sequential) else ():
            h = rows(layer, h)
        h = h.relu_()
        return rows(self.mean_head, h), rows(self.log_std_head, h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before the input mask existed read every input.
        state_dict.setdefault(prefix + "input_mask", torch.ones(self.obs_dim))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def act_mean(self, obs: Tensor, z: Tensor) -> Tensor:
        """Deterministic action tanh(mean) in [-1, 1]: (N, O), (N, L) -> (N, A). Export path."""
        mean, _ = self.forward(obs, z)
        return torch.tanh(mean)

    @staticmethod
    def sample(mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised sample: returns (action, pre_tanh), each (N, A)."""
        eps = _standard_normal(mean, generator)
        pre = mean + log_std.exp() * eps
        return torch.tanh(pre), pre


# ---------------------------------------------------------------------------------------
# Twin critic, fused


class EnsembleLinear(nn.Module):
    """E independent linear layers applied as one batched matmul.

    weight (E, in, out), bias (E, 1, out); input (E, N, in) or a shared (N, in) -> (E, N, out).
    Initialised like ``nn.Linear`` (uniform ±1/sqrt(in)), independently per member.
    """

    def __init__(self, ensemble: int, in_dim: int, out_dim: int, init: float | None = None) -> None:
        super().__init__()
        bound = init if init is not None else 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor, detach_params: bool = False) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        if x.dim() == 2:  # shared input: (N, in) @ (E, in, out) broadcasts to (E, N, out)
            return torch.matmul(x, w) + b
        return torch.baddbmm(b, x, w)


def ensemble_mlp(ensemble: int, in_dim: int, hidden: tuple[int, ...]) -> tuple[nn.ModuleList, EnsembleLinear]:
    """E ReLU MLPs in_dim -> hidden -> 1 as stacked layers, the last initialised ±3e-3 (rlkit)."""
    dims = (in_dim, *hidden)
    layers = nn.ModuleList(EnsembleLinear(ensemble, i, o) for i, o in zip(dims[:-1], dims[1:]))
    return layers, EnsembleLinear(ensemble, dims[-1], 1, init=3e-3)


def run_ensemble_mlp(layers: nn.ModuleList, out: EnsembleLinear, h: Tensor, detach_params: bool = False) -> Tensor:
    """Shared input (N, in) -> every member's output (E, N). With ``detach_params`` the pass
    gives gradients to its input only, never to the members' parameters."""
    for layer in layers:
        h = layer(h, detach_params).relu_()  # in place: baddbmm's backward needs its inputs only
    return out(h, detach_params).squeeze(-1)


class EnsembleQ(nn.Module):
    """E Q-functions Q_k(s, a, z) in one module (E = 2 for the twin critic).

    forward: obs (N, O), action (N, A), z (N, L) -> (E, N). The first layer is one matmul
    against the stacked weights; deeper layers are ``baddbmm`` over the ensemble dim, so the
    twin costs one kernel per layer instead of two.
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 ensemble: int = 2) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.normalizer = Normalizer(obs_dim)
        self.layers, self.out = ensemble_mlp(ensemble, obs_dim + act_dim + latent_dim, hidden)

    def forward(self, obs: Tensor, action: Tensor, z: Tensor, detach_params: bool = False) -> Tensor:
        """With ``detach_params`` the gradient reaches the action only (the online -Q term)."""
        x = torch.cat([self.normalizer(obs), action, z.detach()], dim=-1)
        return run_ensemble_mlp(self.layers, self.out, x, detach_params)


class StateValue(nn.Module):
    """V(s, z) for in-sample value learning (``loss.critic_target: expectile``, IQL's V):
    obs (N, O), z (N, L) -> (N,). z is detached, as for the critics."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.normalizer = Normalizer(obs_dim)
        self.layers, self.out = ensemble_mlp(1, obs_dim + latent_dim, hidden)

    def forward(self, obs: Tensor, z: Tensor) -> Tensor:
        return run_ensemble_mlp(self.layers, self.out, torch.cat([self.normalizer(obs), z.detach()], dim=-1))[0]


# ---------------------------------------------------------------------------------------
# Reward decoder r(s, a, z)


class RewardDecoder(nn.Module):
    """Predicted reward r(s, a, z): (N, O), (N, A), (N, L) -> (N,) in reward units.

    The network outputs a standardised reward, mapped back with the ``reward_mean`` /
    ``reward_std`` buffers (0 / 1 unless decoder targets are normalised), so the regression
    loss is scale-free while labels come out in the env's units.

    With ``ensemble`` E > 1 it holds E independently initialised decoders (one batched module,
    like the twin critic); the prediction is their mean and their spread measures how far a
    transition lies from the data they were fitted on (our uncertainty-aware labels).
    """

    reward_mean: Tensor
    reward_std: Tensor

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: tuple[int, ...],
                 ensemble: int = 1) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.normalizer = Normalizer(obs_dim)
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))
        if ensemble == 1:  # the paper's single MLP
            self.net = mlp(obs_dim + act_dim + latent_dim, hidden, 1, last_init=3e-3)
        else:
            self.layers, self.out = ensemble_mlp(ensemble, obs_dim + act_dim + latent_dim, hidden)

    def members(self, obs: Tensor, action: Tensor, z: Tensor) -> Tensor:
        """Standardised predictions of every member (E, N): (r - reward_mean) / reward_std."""
        h = torch.cat([self.normalizer(obs), action, z], dim=-1)
        if self.ensemble == 1:
            return self.net(h).squeeze(-1).unsqueeze(0)
        return run_ensemble_mlp(self.layers, self.out, h)

    def forward(self, obs: Tensor, action: Tensor, z: Tensor) -> Tensor:
        return self.members(obs, action, z).mean(dim=0) * self.reward_std + self.reward_mean

    def mean_std(self, obs: Tensor, action: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Ensemble mean and standard deviation (N,) each, in reward units (std 0 when E = 1)."""
        m = self.members(obs, action, z) * self.reward_std
        std = m.std(dim=0, correction=0) if self.ensemble > 1 else torch.zeros_like(m[0])
        return m.mean(dim=0) + self.reward_mean, std


# ---------------------------------------------------------------------------------------
# The set of networks one trainer owns


class SmacNetworks(nn.Module):
    """Encoder, policy, twin Q, target twin Q and reward decoder for given dimensions.

    ``encoder_aggregation``: "product" (the paper's product of Gaussians) or "mean" (deep sets).
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, encoder_hidden: tuple[int, ...],
                 policy_hidden: tuple[int, ...], q_hidden: tuple[int, ...], decoder_hidden: tuple[int, ...],
                 detach_policy_z: bool = True, encoder_aggregation: str = "product",
                 decoder_ensemble: int = 1, encoder_rank: int = 1, state_value: bool = False,
                 context_next_obs: bool = False) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, act_dim, latent_dim
        options = {"rank": encoder_rank} if encoder_aggregation == "linear_gaussian" else {}
        self.encoder: Encoder = ENCODERS[encoder_aggregation](obs_dim, act_dim, latent_dim, encoder_hidden,
                                                              next_obs=context_next_obs, **options)
        self.policy = TanhGaussianPolicy(obs_dim, act_dim, latent_dim, policy_hidden, detach_z=detach_policy_z)
        self.qf = EnsembleQ(obs_dim, act_dim, latent_dim, q_hidden)
        self.qf_target = EnsembleQ(obs_dim, act_dim, latent_dim, q_hidden)
        # Copies at init (rlkit draws fresh targets; Polyak pulls them in either way).
        self.qf_target.load_state_dict(self.qf.state_dict())
        self.qf_target.requires_grad_(False)
        self.decoder = RewardDecoder(obs_dim, act_dim, latent_dim, decoder_hidden, decoder_ensemble)
        # V(s, z) only for in-sample value learning (loss.critic_target: expectile).
        self.vf = StateValue(obs_dim, latent_dim, q_hidden) if state_value else None

    def ignore_policy_inputs(self, entries: Sequence[int]) -> None:
        """The policy ignores these observation entries (``network.policy_ignores``)."""
        self.policy.input_mask.fill_(1.0)
        self.policy.input_mask[list(entries)] = 0.0

    def set_statistics(self, obs_mean: Tensor, obs_std: Tensor, act_dim: int, reward_mean: float,
                       reward_std: float, normalize_inputs: bool, normalize_targets: bool) -> None:
        """Bake data statistics into the normalisers (identity where switched off)."""
        o = obs_mean.numel()
        if normalize_inputs:
            ctx_mean = torch.cat([obs_mean, torch.zeros(act_dim), torch.tensor([reward_mean])])
            ctx_std = torch.cat([obs_std, torch.ones(act_dim), torch.tensor([reward_std])])
            if self.encoder.context_dim > o + act_dim + 1:  # (s, a, r, s') rows
                ctx_mean, ctx_std = torch.cat([ctx_mean, obs_mean]), torch.cat([ctx_std, obs_std])
            for m in (self.policy.normalizer, self.qf.normalizer, self.qf_target.normalizer,
                      self.decoder.normalizer, *([self.vf.normalizer] if self.vf is not None else [])):
                m.set(obs_mean, obs_std)
            self.encoder.normalizer.set(ctx_mean, ctx_std)
        assert self.encoder.normalizer.mean.numel() == self.encoder.context_dim
        if normalize_targets:
            self.decoder.reward_mean.fill_(float(reward_mean))
            self.decoder.reward_std.fill_(max(float(reward_std), 1e-3))
