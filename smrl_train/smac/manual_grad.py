"""SMAC's update with hand-derived gradients: the opt-in accelerator (``smac.gradients: manual``).

It computes the losses of :func:`smrl_train.smac.step.step_losses`, the definition of the
update, and writes every parameter's gradient layer by layer, with no autograd graph. Tested
against autograd on configs drawn at random from :data:`IMPLEMENTED`
(``test/test_manual_grad.py``).

Why: at the demo shapes (128-wide networks, 512 transitions) an autograd update is bound by
overhead, not arithmetic: about 1,400 aten calls, ``nn.Module`` dispatch and one autograd node
per op, for ~0.2 GMAC of matrix multiplies. Here every network is a list of (weight, bias)
pairs run with ``addmm`` / ``baddbmm``; the backward pass of a layer is three matmul-class
calls and one ReLU mask; the losses' derivatives are closed forms (below, per loss).

Coverage is explicit: :data:`IMPLEMENTED` lists every config field that enters the update and
the values this path implements, :data:`OUTSIDE_THE_UPDATE` the fields that never reach it, and
:data:`MODULES` the module types it knows. :func:`check_implemented` refuses anything else by
name, so a new loss or layer added to ``step_losses`` and the networks can never be silently
ignored here.

Shapes: T tasks, C context transitions per task, B RL transitions per task, N = T B, O obs,
A action, L latent, E ensemble members, H hidden width (``n_obs`` = O in the code).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from smrl_train.config_schema import ConfigError
from smrl_train.smac import networks as N_
from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.config import SmacConfig, resolved
from smrl_train.smac.losses import awac_temperature, awac_weights, bellman_target, kl_to_standard_normal
from smrl_train.smac.networks import (
    ACTION_CLAMP,
    LOG_STD_MAX,
    LOG_STD_MIN,
    VAR_MIN,
    ContextEncoder,
    Normalizer,
    SmacNetworks,
    tanh_gaussian_log_prob,
)
from smrl_train.smac.step import Noise
from smrl_train.smac.step import per_task as _per_task

# ---------------------------------------------------------------------------------------
# What this path implements


def _any(_: Any) -> bool:
    return True


def _nonempty(v: Any) -> bool:
    return len(v) > 0


# Every config field that enters an update, with the values implemented here (a predicate and
# its description for the error message).
IMPLEMENTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "network.encoder_hidden": (_nonempty, "at least one hidden layer"),
    "network.policy_hidden": (_nonempty, "at least one hidden layer"),
    "network.q_hidden": (_nonempty, "at least one hidden layer"),
    "network.decoder_hidden": (_nonempty, "at least one hidden layer"),
    "network.latent_dim": (_any, "any"),
    "network.encoder_aggregation": (lambda v: v == "product", "'product' (the product of Gaussians)"),
    "network.encoder_rank": (_any, "any (the product encoder has none)"),
    "network.context_next_obs": (lambda v: v is False, "False ((s, a, r) rows)"),
    "network.normalize_inputs": (_any, "any"),
    "network.policy_ignores": (lambda v: not v, "() (the policy reads every input)"),
    "network.decoder_ensemble": (_any, "any"),
    "network.compute_dtype": (lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16"),
    "loss.gamma": (_any, "any"),
    "loss.tau": (_any, "any"),
    "loss.reward_scale": (_any, "any"),
    "loss.kl_weight": (_any, "any"),
    "loss.normalize_decoder_targets": (_any, "any"),
    "loss.awac_beta": (_any, "any"),
    "loss.awac_normalize_advantage": (_any, "any"),
    "loss.awac_weights": (lambda v: v == "softmax", "'softmax'"),
    "loss.awac_weight_max": (_any, "any (unused by 'softmax')"),
    "loss.critic_target": (lambda v: v == "policy", "'policy'"),
    "loss.expectile": (_any, "any (unused by 'policy')"),
    "loss.actor_mean": (lambda v: v == "likelihood", "'likelihood'"),
    "loss.actor_regression_weight": (_any, "any (unused by 'likelihood')"),
    "loss.policy_lr": (_any, "any"),
    "loss.q_lr": (_any, "any"),
    "loss.context_lr": (_any, "any"),
    "online.q_term_weight": (_any, "any"),
    "online.normalize_q_term": (_any, "any"),
    "online.train_encoder": (_any, "any"),
    "online.actor_data": (lambda v: v == "all", "'all'"),
    "online.actor_context": (lambda v: v == "all", "'all'"),
}

# Fields that never reach the update: seeds, budgets, batch shapes (they are the batch's),
# collection, labelling and evaluation settings.
OUTSIDE_THE_UPDATE = frozenset({
    "variant", "seed", "gradients",
    "offline.steps", "offline.meta_batch", "offline.batch_size", "offline.context_size", "offline.log_every",
    "offline.checkpoint_every", "offline.context_episodes", "online.context_episodes",
    "online.iterations", "online.tasks_per_iteration", "online.updates_per_iteration", "online.prior_episodes",
    "online.posterior_episodes", "online.explore_episodes", "online.explore_context_fraction", "online.meta_batch",
    "online.batch_size", "online.context_size", "online.label_context_size", "online.label_pessimism",
    "online.resample_latent", "online.eval_every", "online.checkpoint_every",
    "eval.exploration_episodes", "eval.runs_per_task", "eval.curve_tasks", "eval.curve_runs_per_task",
    "eval.diagnostic_tasks", "eval.offline_context_size", "eval.deterministic", "eval.resample_latent",
    "eval.scored_latent", "eval.success",
})

# The module types of the networks this path runs (anything else, a LayerNorm say, is refused).
MODULES = (SmacNetworks, N_.ContextEncoder, N_.Normalizer, N_.TanhGaussianPolicy, N_.EnsembleQ, N_.EnsembleLinear,
           N_.RewardDecoder, nn.Sequential, nn.ModuleList, nn.Linear, nn.ReLU)


def config_fields(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf field of a config dataclass as ("section.name", value)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from config_fields(value, f"{key}.")
        else:
            yield key, value


def check_implemented(cfg: SmacConfig, nets: SmacNetworks | None = None) -> None:
    """Refuse a config or networks this path does not implement, naming the field or module.

    Raises:
        ConfigError: one line, e.g. ``smac.gradients: manual does not implement
        smac.network.encoder_aggregation = 'mean' (it implements 'product' ...)``.
    """
    hint = "; use smac.gradients: autograd or compiled"
    for key, value in config_fields(cfg):
        if key in OUTSIDE_THE_UPDATE:
            continue
        if key not in IMPLEMENTED:
            raise ConfigError(f"smac.gradients: manual does not implement smac.{key}{hint}")
        ok, what = IMPLEMENTED[key]
        if not ok(value):
            raise ConfigError(f"smac.gradients: manual does not implement smac.{key} = {value!r} "
                              f"(it implements {what}){hint}")
    if nets is not None:
        for name, module in nets.named_modules():
            if type(module) not in MODULES:
                raise ConfigError(f"smac.gradients: manual does not implement the module "
                                  f"{name} ({type(module).__name__}){hint}")


def opt_in_process_speedups() -> None:
    """The process-wide side effects that come with this path: glibc keeps freed pages
    (``allocator.retain_freed_memory``). Called by the trainer when ``gradients: manual``."""
    from smrl_train.smac.allocator import retain_freed_memory

    retain_freed_memory()


_relu_grad = torch.ops.aten.threshold_backward  # g * (x > 0), one kernel


def _f32(x: Tensor) -> Tensor:
    # A Python check is cheaper than dispatching a no-op ``.float()`` ~40 times a step.
    return x if x.dtype == torch.float32 else x.float()


# ---------------------------------------------------------------------------------------
# Plain MLPs: [(weight (out, in), bias (out,)), ...], ReLU between layers


Layers = list[tuple[Tensor, Tensor]]


def linear_layers(seq: nn.Sequential) -> Layers:
    """The (weight, bias) pairs of an ``mlp`` (``nn.Linear`` / ``nn.ReLU`` sequence)."""
    return [(m.weight, m.bias) for m in seq if isinstance(m, nn.Linear)]


def mlp_forward(layers: Layers, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """(N, in) -> (N, out) float32, and every layer's input (kept for :func:`mlp_backward`).
    Runs in the layers' dtype."""
    x = x.to(layers[0][0].dtype)
    inputs = []
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        inputs.append(x)
        x = torch.addmm(b, x, w.t())
        if i < last:
            x.relu_()  # the next layer's input doubles as this ReLU's mask
    return _f32(x), inputs


@overload
def mlp_backward(layers: Layers, inputs: list[Tensor], g: Tensor,
                 input_grad: Literal[False] = False) -> tuple[list[tuple[Tensor, Tensor]], None]: ...
@overload
def mlp_backward(layers: Layers, inputs: list[Tensor], g: Tensor,
                 input_grad: Literal[True]) -> tuple[list[tuple[Tensor, Tensor]], Tensor]: ...
def mlp_backward(layers: Layers, inputs: list[Tensor], g: Tensor,
                 input_grad: bool = False) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    """Gradients of a plain MLP from the output gradient g (N, out).

    Returns the (weight, bias) gradients and, with ``input_grad``, the gradient with respect to
    the input (N, in); all float32.
    """
    grads: list[tuple[Tensor, Tensor]] = []
    g = g.to(layers[0][0].dtype)
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        x = inputs[i]
        grads.append((_f32(g.t().mm(x)), _f32(g.sum(0))))
        if i > 0:
            g = _relu_grad(g.mm(w), x, 0)
        elif input_grad:
            g = g.mm(w)
    grads.reverse()
    return grads, (_f32(g) if input_grad else None)


# ---------------------------------------------------------------------------------------
# Ensembles (twin critic, decoder ensemble): weight (E, in, out), bias (E, 1, out), shared input


def ensemble_layers(layers: nn.ModuleList, out: nn.Module) -> Layers:
    return [(m.weight, m.bias) for m in (*layers, out)]


def ensemble_forward(layers: Layers, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Shared input (N, in) -> every member's scalar output (E, N) float32, and the layer
    inputs. Runs in the layers' dtype."""
    e = layers[0][0].shape[0]
    h = x.to(layers[0][0].dtype).unsqueeze(0).expand(e, *x.shape)
    inputs = []
    last = len(layers) - 1
    for w, b in layers[:last]:
        inputs.append(h)
        h = torch.baddbmm(b, h, w).relu_()
    inputs.append(h)
    # The scalar output layer as multiply-and-sum: a (H, 1) matmul per member is a
    # matrix-vector product that bmm runs 3-4x slower than this on CPU. In bfloat16 the
    # products would each be rounded before the sum, so there it stays a matmul (float32
    # accumulation, as under autocast).
    w, b = layers[last]
    if w.dtype != torch.float32:
        return torch.baddbmm(b, h, w).squeeze(-1).float(), inputs
    return (h * w.transpose(1, 2)).sum(-1) + b.view(e, 1), inputs


@overload
def ensemble_backward(layers: Layers, inputs: list[Tensor], g: Tensor, weight_rows: int | None = None,
                      input_cols: None = None) -> tuple[list[tuple[Tensor, Tensor]], None]: ...
@overload
def ensemble_backward(layers: Layers, inputs: list[Tensor], g: Tensor, weight_rows: int | None = None, *,
                      input_cols: slice) -> tuple[list[tuple[Tensor, Tensor]], Tensor]: ...
def ensemble_backward(layers: Layers, inputs: list[Tensor], g: Tensor, weight_rows: int | None = None,
                      input_cols: slice | None = None) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
    """Gradients from g (E, N) = dLoss/d output.

    The weight gradients take the first ``weight_rows`` rows only (all by default):
    one pass can carry the critic's rows and the -Q term's rows, whose gradient must reach the
    action but not Q. With ``input_cols``, also the gradient with respect to those columns of
    the shared input, summed over members (N, cols).
    """
    grads: list[tuple[Tensor, Tensor]] = []
    r = g.shape[1] if weight_rows is None else weight_rows
    last = len(layers) - 1
    w, _ = layers[last]
    x = inputs[last]
    g = g.to(w.dtype).unsqueeze(-1)  # (E, N, 1); the scalar layer by broadcasting, as forward
    grads.append((_f32((x[:, :r] * g[:, :r]).sum(1)).unsqueeze(-1), _f32(g[:, :r].sum(1, keepdim=True))))
    g = _relu_grad(g * w.transpose(1, 2), x, 0)
    gx = None
    for i in range(last - 1, -1, -1):
        w, _ = layers[i]
        x = inputs[i]
        grads.append((_f32(torch.bmm(x[:, :r].transpose(1, 2), g[:, :r])), _f32(g[:, :r].sum(1, keepdim=True))))
        if i > 0:
            g = _relu_grad(torch.bmm(g, w.transpose(1, 2)), x, 0)
        elif input_cols is not None:
            gx = _f32(torch.bmm(g, w[:, input_cols].transpose(1, 2)).sum(0))
    grads.reverse()
    return grads, gx


# ---------------------------------------------------------------------------------------
# The update


@dataclass
class _Nets:
    """The parameter lists of one :class:`SmacNetworks`, in the order of its modules."""

    encoder: Layers
    policy: Layers  # trunk layers, then the two heads fused into one (2A, H) layer
    qf: Layers
    qf_target: Layers
    decoder: Layers
    decoder_ensemble: bool


def _policy_layers(nets: SmacNetworks) -> Layers:
    p = nets.policy
    assert isinstance(p.trunk, nn.Sequential)  # hidden layers: check_implemented refuses an empty policy_hidden
    head = (torch.cat([p.mean_head.weight, p.log_std_head.weight]), torch.cat([p.mean_head.bias, p.log_std_head.bias]))
    return [*linear_layers(p.trunk), head]


def _cast(layers: Layers, dtype: torch.dtype) -> Layers:
    return layers if dtype == torch.float32 else [(w.to(dtype), b.to(dtype)) for w, b in layers]


def _collect(nets: SmacNetworks, dtype: torch.dtype) -> _Nets:
    """Every network's layers; policy, critics and decoder in the compute dtype (the encoder
    stays float32, as on the autograd path)."""
    enc = nets.encoder
    assert isinstance(enc, ContextEncoder)
    dec = nets.decoder
    ens = dec.ensemble > 1
    return _Nets(encoder=linear_layers(enc.net), policy=_cast(_policy_layers(nets), dtype),
                 qf=_cast(ensemble_layers(nets.qf.layers, nets.qf.out), dtype),
                 qf_target=_cast(ensemble_layers(nets.qf_target.layers, nets.qf_target.out), dtype),
                 decoder=_cast(ensemble_layers(dec.layers, dec.out) if ens else linear_layers(dec.net), dtype),
                 decoder_ensemble=ens)


def _normalise(x: Tensor, normalizer: Normalizer) -> Tensor:
    return (x - normalizer.mean) / normalizer.std


def _assign(params: list[nn.Parameter], grads: list[Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g


def losses_and_grads(nets: SmacNetworks, cfg: SmacConfig, batch: MetaBatch, noise: Noise,
                     phase: str, train_context: bool) -> dict[str, Tensor]:
    """Every loss of one step and, stored in each parameter's ``.grad``, the gradients the
    trainer's autograd path would compute (offline: context + critic + AWR; online: AWR + -Q
    term for the policy only, context + critic for the rest). Returns the tensors the trainer's
    metrics read (names as in ``LossTerms``)."""
    grads, out = step_core(nets, cfg, batch, noise, phase, train_context)
    _assign(list(nets.policy.parameters()), grads["policy"])
    _assign(list(nets.qf.parameters()), grads["qf"])
    if train_context:
        _assign(list(nets.decoder.parameters()), grads["decoder"])
        _assign(list(nets.encoder.net.parameters()), grads["encoder"])
    return out


def step_core(nets: SmacNetworks, cfg: SmacConfig, batch: MetaBatch, noise: Noise, phase: str,
              train_context: bool) -> tuple[dict[str, list[Tensor]], dict[str, Tensor]]:
    """Losses and gradients of one step from given noise, without side effects: the gradients
    of each trained network's parameters in ``parameters()`` order, and the metrics' tensors."""
    c = cfg.loss
    P = _collect(nets, torch.bfloat16 if cfg.network.compute_dtype == "bfloat16" else torch.float32)
    T, B = batch.meta_batch, batch.batch_size
    N = T * B
    n_obs, A, L = nets.obs_dim, nets.act_dim, nets.latent_dim
    online = phase == "online"

    # ---- forward ---------------------------------------------------------------------------
    # Encoder: per-transition Gaussians, product over the context (networks.product_of_gaussians).
    ctx = _normalise(batch.context, nets.encoder.normalizer).reshape(-1, batch.context.shape[-1])
    out, enc_in = mlp_forward(P.encoder, ctx)
    out = out.view(T, -1, 2 * L)
    mu_n, pre_var = out[..., :L], out[..., L:]
    var_raw = torch.nn.functional.softplus(pre_var)
    var_n = var_raw.clamp_min(VAR_MIN)
    prec = var_n.reciprocal()
    var = prec.sum(1).reciprocal()  # (T, L)
    mu = var * (mu_n * prec).sum(1)
    eps_z = noise.z
    std_z = var.sqrt()
    z_task = mu + std_z * eps_z
    z = _per_task(z_task, B)
    z_next = _per_task(mu + std_z * noise.z_next, B)
    kl = kl_to_standard_normal(mu, var).mean()

    obs, act = batch.obs, batch.action
    zero = torch.zeros(())
    if train_context:
        dec_x = torch.cat([_normalise(obs, nets.decoder.normalizer), act, z], -1)
        if P.decoder_ensemble:
            pred, dec_in = ensemble_forward(P.decoder, dec_x)  # (E, N)
        else:
            pred1, dec_in = mlp_forward(P.decoder, dec_x)
            pred = pred1.t()  # (1, N)
        target_r = (batch.reward - nets.decoder.reward_mean) / nets.decoder.reward_std
        err = pred - target_r
        mse = err.square().mean()
        l_ctx = mse + float(resolved(c.kl_weight)) * kl
    else:
        mse, l_ctx = zero, zero

    # One policy pass on [s'; s]: the target's action (with z_next) and the actor's (with z).
    pol_obs = _normalise(torch.cat([batch.next_obs, obs]), nets.policy.normalizer)
    pol, pol_in = mlp_forward(P.policy, torch.cat([pol_obs, torch.cat([z_next, z])], -1))  # (2N, 2A)
    mean_n, log_std_n = pol[:N, :A], pol[:N, A:].clamp(LOG_STD_MIN, LOG_STD_MAX)
    a_next = torch.tanh(mean_n + log_std_n.exp() * noise.a_next)
    mean, raw_log_std = pol[N:, :A], pol[N:, A:]
    log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    std = log_std.exp()
    eps_a = noise.a_pi
    a_pi = torch.tanh(mean + std * eps_a)

    # Critic: y = scale r + (1 - d) gamma min Qbar(s', a', z); one pass of the twin on
    # [(s, a_data); (s, a~pi)] gives Q(s, a) for the critic loss and the advantage, and
    # Q(s, a~pi) for the V(s) baseline and the online -Q term.
    q_next, _ = ensemble_forward(P.qf_target, torch.cat([_normalise(batch.next_obs, nets.qf_target.normalizer),
                                                          a_next, z], -1))
    y = bellman_target(batch.reward, batch.terminated, q_next.min(0).values, c.reward_scale, c.gamma)
    q_obs = _normalise(obs, nets.qf.normalizer)
    q_x = torch.cat([torch.cat([q_obs, act, z], -1), torch.cat([q_obs, a_pi, z], -1)])
    q_all, q_in = ensemble_forward(P.qf, q_x)  # (E, 2N)
    q_pred, q_pi_all = q_all[:, :N], q_all[:, N:]
    q_err = q_pred - y
    l_q = q_err.square().mean(-1).sum()

    # Actor (AWAC) on the same pass.
    u = torch.atanh(act.clamp(-ACTION_CLAMP, ACTION_CLAMP))
    log_prob = tanh_gaussian_log_prob(mean, log_std, u)
    q_pi_min, q_pi_idx = q_pi_all.min(0)
    adv = q_pred.min(0).values - q_pi_min
    w = awac_weights(adv, awac_temperature(adv, float(resolved(c.awac_beta)), bool(c.awac_normalize_advantage)))
    l_awr = -(w * log_prob).mean()

    # ---- backward --------------------------------------------------------------------------
    # Critic: d/dQ_k sum_k mean_N (Q_k - y)^2 = 2 (Q_k - y) / N.
    g_q = q_err * (2.0 / N)

    # AWR: d(-mean w log pi)/d log pi = -w / N; log pi = sum_A [-(u - m)^2 / 2 s^2 - log s] + const:
    # d/dm = (u - m) / s^2, d/dlog s = ((u - m) / s)^2 - 1.
    g_lp = (w * (-1.0 / N)).unsqueeze(-1)
    zs = (u - mean) / std
    g_mean = g_lp * zs / std
    g_log_std = g_lp * (zs.square() - 1.0)
    q_term = zero
    if online:
        # -Q term through the reparameterised a~pi = tanh(m + s eps) to the policy, not to Q's
        # weights (the a~pi rows join the critic's backward pass for the input gradient only).
        # min_k routes the gradient to the member that attained it (as torch.min).
        weight = float(resolved(cfg.online.q_term_weight))
        norm = q_pi_min.abs().mean().clamp_min(1e-6) if cfg.online.normalize_q_term else torch.ones(())
        q_term = -weight * q_pi_min.mean() / norm
        g_qmin = (-weight / N) / norm
        g_qpi = torch.zeros_like(q_pi_all).scatter_(0, q_pi_idx.unsqueeze(0), g_qmin.expand(1, N).contiguous())
        q_grads, g_a = ensemble_backward(P.qf, q_in, torch.cat([g_q, g_qpi], 1), weight_rows=N,
                                         input_cols=slice(n_obs, n_obs + A))
        g_pre = g_a[N:] * (1.0 - a_pi.square())
        g_mean = g_mean + g_pre
        g_log_std = g_log_std + g_pre * eps_a * std
    else:
        q_grads, _ = ensemble_backward(P.qf, [x[:, :N] for x in q_in], g_q)
    # clamp(-20, 2) passes the gradient where min <= x <= max (torch.clamp's rule).
    g_log_std = g_log_std * ((raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX))
    pol_grads, _ = mlp_backward(P.policy, [x[N:] for x in pol_in], torch.cat([g_mean, g_log_std], -1))

    head_w, head_b = pol_grads[-1]  # policy parameters: trunk layers, mean head, log-std head
    grads = {"policy": [g for pair in pol_grads[:-1] for g in pair] + [head_w[:A], head_b[:A], head_w[A:], head_b[A:]],
             "qf": [g for pair in q_grads for g in pair]}

    if train_context:
        # Decoder MSE over E x N members and transitions; KL mean over tasks.
        g_pred = err * (2.0 / err.numel())
        if P.decoder_ensemble:
            dec_grads, g_z = ensemble_backward(P.decoder, dec_in, g_pred, input_cols=slice(n_obs + A, n_obs + A + L))
        else:
            dec_grads, g_x = mlp_backward(P.decoder, dec_in, g_pred.t(), input_grad=True)
            g_z = g_x[:, n_obs + A:]
        grads["decoder"] = [g for pair in dec_grads for g in pair]
        # z = mu + sqrt(var) eps per task; KL = 0.5 sum (var + mu^2 - 1 - log var), mean over T.
        g_zt = g_z.view(T, B, L).sum(1)
        kw = float(resolved(c.kl_weight)) / T
        g_mu = g_zt + kw * mu
        g_var = g_zt * eps_z / (2.0 * std_z) + kw * 0.5 * (1.0 - var.reciprocal())
        # Product of Gaussians: var = 1 / S, mu = var M with S = sum prec_n, M = sum mu_n prec_n.
        # d/dmu_n = g_mu prec_n var; d/dprec_n = -g_var var^2 + g_mu var (mu_n - mu).
        g_mu_n = (g_mu * var).unsqueeze(1) * prec
        g_prec = (-g_var * var.square()).unsqueeze(1) + (g_mu * var).unsqueeze(1) * (mu_n - mu.unsqueeze(1))
        # prec = 1 / clamp_min(softplus(p), VAR_MIN): d/dp = -prec^2 [var_raw >= VAR_MIN] sigmoid(p).
        g_pre_var = -g_prec * prec.square() * (var_raw >= VAR_MIN) * torch.sigmoid(pre_var)
        enc_grads, _ = mlp_backward(P.encoder, enc_in, torch.cat([g_mu_n, g_pre_var], -1).reshape(-1, 2 * L))
        grads["encoder"] = [g for pair in enc_grads for g in pair]

    return grads, {"context": l_ctx, "decoder_mse": mse, "kl": kl, "critic": l_q, "awr": l_awr, "q_term": q_term,
            "q_pred": q_pred, "target": y, "advantage": adv, "weights": w, "log_prob": log_prob, "var": var}
