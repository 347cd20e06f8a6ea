"""One SMAC gradient step (brief section 3), plus the meta-behaviour-cloning baseline.

Contract (shared by both trainers): ``update(batch) -> dict[str, float]``, ``state_dict()``,
``load_state_dict()``, and ``nets`` whose ``encoder`` and ``policy`` make the adapting agent.

Speed: by default the update's gradients are derived by hand (``manual_grad.py``, equal to
autograd's on ``compute_losses`` to float32 round-off); ``compute_losses`` + autograd is the
readable reference and the path for configs the manual one does not cover. Both share passes:
the twin critic is one fused module, the policy's forward pass on s serves both the AWR
log-likelihood and the sampled action, Q(s, a) from the critic loss is reused for the advantage
(as rlkit does), one Q(s, a~pi) pass gives both the V(s) baseline and the online -Q term. Adam
is the fused CPU kernel (``_LeanFusedAdam``), and the Polyak update is one ``_foreach_lerp_``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from smrl_train.smac import manual_grad
from smrl_train.smac.allocator import retain_freed_memory
from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.config import SmacConfig
from smrl_train.smac.losses import (awac_policy_loss, awac_temperature, awac_weights, bellman_target, context_loss,
                                    critic_loss, kl_to_standard_normal, online_q_term)
from smrl_train.smac.networks import SmacNetworks, atanh_clamped, sample_gaussian, tanh_gaussian_log_prob

PHASES = ("offline", "online")
METRICS = ("q_loss", "q_mean", "q_target_mean", "policy_loss", "awr_loss", "q_term", "adv_std", "weight_max",
           "log_prob_data", "context_loss", "decoder_mse", "kl", "posterior_var")


@dataclass
class LossTerms:
    """The losses of one step (scalars) and the intermediate tensors tests and metrics read.

    q_pred (E, N); target/advantage/weights/log_prob (N,); a_pi (N, A); q_pi (N,) = min_k
    Q_k(s, a_pi) (with a graph to a_pi in the online phase); z (N, L) detached; mu, var (T, L).
    """

    context: Tensor
    decoder_mse: Tensor
    kl: Tensor
    critic: Tensor
    awr: Tensor
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


def build_networks(cfg: SmacConfig, obs_dim: int, act_dim: int, detach_policy_z: bool = True,
                   seed: int | None = None) -> SmacNetworks:
    """The networks of ``cfg``; initialised from ``seed`` without touching the global RNG."""
    n = cfg.network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        return SmacNetworks(obs_dim, act_dim, n.latent_dim, n.encoder_hidden, n.policy_hidden, n.q_hidden,
                            n.decoder_hidden, detach_policy_z=detach_policy_z,
                            encoder_aggregation=str(n.encoder_aggregation),
                            decoder_ensemble=int(n.decoder_ensemble or 1))


class _LeanFusedAdam(torch.optim.Adam):
    """torch's fused CPU Adam (one kernel per parameter group), called without the per-step
    Python bookkeeping of ``Adam.step`` (~0.15 ms per call, a few percent of a demo-size update).

    Same state, same ``state_dict``, same arithmetic (``torch._fused_adam_``, which ``Adam.step``
    itself calls); the first step of a parameter (state not yet created) goes through
    ``Adam.step``. Parameters without a gradient are skipped, as ``Adam.step`` does.
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state.get(p) for p in params]
            if closure is not None or any(not st for st in states) or group["amsgrad"] or group["maximize"]:
                return super().step(closure)
            work.append((group, params, states))
        for group, params, states in work:
            if not params:
                continue
            steps = [st["step"] for st in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adam_(params, [p.grad for p in params], [st["exp_avg"] for st in states],
                               [st["exp_avg_sq"] for st in states], [], steps, amsgrad=False, lr=group["lr"],
                               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=None)
        return None


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    return _LeanFusedAdam(params, lr)


def _metrics(critic: Tensor, q_pred: Tensor, target: Tensor, policy: Tensor, awr: Tensor, q_term: Tensor,
             advantage: Tensor, weights: Tensor, log_prob: Tensor, context: Tensor, decoder_mse: Tensor,
             kl: Tensor, var: Tensor) -> dict[str, float]:
    """The step's metrics (names in ``METRICS`` order) with one host transfer."""
    stats = torch.stack([critic, q_pred.mean(), target.mean(), policy, awr, q_term, advantage.std(), weights.max(),
                         log_prob.mean(), context, decoder_mse, kl, var.mean()]).detach().tolist()
    return dict(zip(METRICS, stats))


def _expand_tasks(x: Tensor, per_task: int) -> Tensor:
    """Repeat each task's row for its transitions: (T, L) -> (T * per_task, L)."""
    return x.unsqueeze(1).expand(x.shape[0], per_task, x.shape[1]).reshape(-1, x.shape[1])


class SmacTrainer:
    """SMAC's update: encoder + decoder by reward MSE + KL, twin critic, AWAC actor.

    Phases: ``offline`` (all three losses, no -Q actor term) and ``online`` (encoder and decoder
    frozen unless ``online.train_encoder``; the actor adds the reparameterised -Q term). All
    gradients are taken before any optimiser step, so every loss sees the same parameters.
    """

    def __init__(self, cfg: SmacConfig, obs_dim: int, act_dim: int, seed: int = 0,
                 manual_gradients: bool | None = None) -> None:
        self.cfg = cfg
        retain_freed_memory()
        self.nets = build_networks(cfg, obs_dim, act_dim, seed=seed)
        # Hand-derived gradients (manual_grad.py) wherever they cover the config: the same
        # update at a fraction of autograd's overhead. False forces the autograd path.
        self.manual_gradients = manual_grad.supports(cfg) if manual_gradients is None else bool(manual_gradients)
        if self.manual_gradients and not manual_grad.supports(cfg):
            raise ValueError("manual gradients cover the product-of-Gaussians encoder only")
        self.generator = torch.Generator().manual_seed(int(seed))
        loss = cfg.loss
        self.context_params = list(self.nets.encoder.parameters()) + list(self.nets.decoder.parameters())
        self.q_params = list(self.nets.qf.parameters())
        self.q_target_params = list(self.nets.qf_target.parameters())
        self.policy_params = list(self.nets.policy.parameters())
        self.opt_context = _adam(self.context_params, loss.context_lr)
        self.opt_q = _adam(self.q_params, loss.q_lr)
        self.opt_policy = _adam(self.policy_params, loss.policy_lr)
        self.phase = "offline"
        self.steps = 0
        # bfloat16 matmuls (autocast) for the policy, critics and decoder; parameters, optimiser
        # state, the encoder and every loss stay float32. See network.compute_dtype.
        self.bf16 = cfg.network.compute_dtype == "bfloat16"

    def _mixed(self) -> contextlib.AbstractContextManager[Any]:
        # float32: a no-op context, so the default update pays nothing for the option.
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    # -- phase -------------------------------------------------------------------------------
    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase

    @property
    def trains_context(self) -> bool:
        """Whether this phase trains the encoder and decoder (paper: offline only)."""
        return self.phase == "offline" or bool(self.cfg.online.train_encoder)

    # -- one gradient step ---------------------------------------------------------------------
    def compute_losses(self, batch: MetaBatch) -> LossTerms:
        """Every loss of one step on a meta-batch, before any parameter changes.

        Shapes: T tasks x B transitions (N = T B), context (T, C, O + A + 1).
        """
        cfg, nets, g = self.cfg.loss, self.nets, self.generator
        train_ctx = self.trains_context
        b = batch.batch_size

        # Task inference: one posterior per task; z for decoder/critic/actor, a second,
        # independent sample for the target policy's action (rlkit).
        with torch.set_grad_enabled(train_ctx):
            mu, var = nets.encoder(batch.context)
            z = _expand_tasks(sample_gaussian(mu, var, g), b)
        z_next = _expand_tasks(sample_gaussian(mu.detach(), var.detach(), g), b)
        zd = z.detach()

        # Encoder + decoder: reward regression on the RL batch with z carrying gradient, + KL.
        if train_ctx:
            with self._mixed():
                pred = nets.decoder.members(batch.obs, batch.action, z).float()  # (E, N): each member regresses
            l_ctx, mse, kl = context_loss(pred, batch.reward, mu, var, float(cfg.kl_weight),
                                          nets.decoder.reward_mean, nets.decoder.reward_std)
        else:
            with torch.no_grad():
                kl = kl_to_standard_normal(mu, var).mean()
            l_ctx, mse = torch.zeros(()), torch.zeros(())

        # Critic: y = scale r + (1 - d) gamma min Qbar(s', a' ~ pi(s', z_next), z); alpha = 0.
        with torch.no_grad(), self._mixed():
            mean_n, log_std_n = nets.policy(batch.next_obs, z_next)
            a_next, _ = nets.policy.sample(mean_n.float(), log_std_n.float(), g)
            q_next = nets.qf_target(batch.next_obs, a_next, zd).float().min(dim=0).values
        y = bellman_target(batch.reward, batch.terminated, q_next, cfg.reward_scale, cfg.gamma)
        with self._mixed():
            q_pred = nets.qf(batch.obs, batch.action, zd).float()
        l_q = critic_loss(q_pred, y)

        # Actor (AWAC): A = min Q(s, a) - min Q(s, a~pi), weights softmax(A / beta) x N. The
        # policy's one forward pass on s gives both log pi(a_data) and the sampled action.
        with self._mixed():
            mean, log_std = nets.policy(batch.obs, zd)
        mean, log_std = mean.float(), log_std.float()
        log_prob = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(batch.action))
        a_pi, _ = nets.policy.sample(mean, log_std, g)  # reparameterised (used online)
        # Q(s, a~pi): the V(s) baseline, and online also the -Q term (then with a graph to
        # a~pi), one pass for both, as in rlkit.
        with torch.set_grad_enabled(self.phase == "online"), self._mixed():
            q_pi = nets.qf(batch.obs, a_pi if self.phase == "online" else a_pi.detach(), zd).float().min(dim=0).values
        with torch.no_grad():
            adv = q_pred.detach().min(dim=0).values - q_pi.detach()  # Q(s, a) reused from the critic pass
            w = awac_weights(adv, awac_temperature(adv, float(cfg.awac_beta), bool(cfg.awac_normalize_advantage)))
        l_awr = awac_policy_loss(log_prob, w)
        return LossTerms(context=l_ctx, decoder_mse=mse, kl=kl, critic=l_q, awr=l_awr, q_pred=q_pred, target=y,
                         advantage=adv, weights=w, log_prob=log_prob, a_pi=a_pi, q_pi=q_pi, z=zd, mu=mu, var=var)

    def update(self, batch: MetaBatch) -> dict[str, float]:
        """One step on a meta-batch (T tasks x B transitions, context T x C). Returns metrics."""
        if self.manual_gradients:
            return self._manual_update(batch)
        t = self.compute_losses(batch)
        train_ctx = self.trains_context
        self.opt_context.zero_grad(set_to_none=True)
        self.opt_q.zero_grad(set_to_none=True)
        self.opt_policy.zero_grad(set_to_none=True)
        if self.phase == "offline":
            # Disjoint graphs: one backward gives the gradients of three separate ones.
            (t.context + t.critic + t.awr).backward()
            l_pi, q_term = t.awr, torch.zeros(())
        else:
            # All losses from the same pre-step parameters (rlkit's math). The brief's in-place
            # pitfall is avoided by taking every gradient before any optimiser step ("update
            # the policy first"), and the -Q term's gradient is restricted to the policy: it
            # must not train the critic.
            q_term = online_q_term(t.q_pi, self.cfg.online.q_term_weight, bool(self.cfg.online.normalize_q_term))
            l_pi = t.awr + q_term
            l_pi.backward(inputs=self.policy_params)
            (t.context + t.critic).backward() if train_ctx else t.critic.backward()
        self._step(train_ctx)
        return _metrics(t.critic, t.q_pred, t.target, l_pi, t.awr, q_term, t.advantage, t.weights, t.log_prob,
                        t.context, t.decoder_mse, t.kl, t.var)

    def _step(self, train_ctx: bool) -> None:
        """Adam on the gradients taken, then the Polyak update of the target critics."""
        self.opt_q.step()
        if train_ctx:
            self.opt_context.step()
        self.opt_policy.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.q_target_params, self.q_params, self.cfg.loss.tau)
        self.steps += 1

    @torch.no_grad()
    def _manual_update(self, batch: MetaBatch) -> dict[str, float]:
        """The same step with hand-derived gradients (manual_grad.py); no autograd graph."""
        train_ctx = self.trains_context
        if not train_ctx:  # every other gradient is overwritten; frozen ones must be None
            for p in self.context_params:
                p.grad = None
        t = manual_grad.losses_and_grads(self.nets, self.cfg, batch, self.generator, self.phase, train_ctx)
        self._step(train_ctx)
        return _metrics(t["critic"], t["q_pred"], t["target"], t["awr"] + t["q_term"], t["awr"], t["q_term"],
                        t["advantage"], t["weights"], t["log_prob"], t["context"], t["decoder_mse"], t["kl"], t["var"])

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "opt_context": self.opt_context.state_dict(),
                "opt_q": self.opt_q.state_dict(), "opt_policy": self.opt_policy.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps, "phase": self.phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt_context.load_state_dict(state["opt_context"])
        self.opt_q.load_state_dict(state["opt_q"])
        self.opt_policy.load_state_dict(state["opt_policy"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
        self.set_phase(str(state["phase"]))


class MetaBCTrainer:
    """Meta behaviour cloning: encoder + policy trained end to end by log pi(a | s, z) + KL.

    The same context encoder and policy as SMAC, but z keeps its gradient into the policy so
    the encoder learns whatever helps imitation; no reward decoder or critic is trained.
    """

    def __init__(self, cfg: SmacConfig, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self.cfg = cfg
        self.nets = build_networks(cfg, obs_dim, act_dim, detach_policy_z=False, seed=seed)
        self.generator = torch.Generator().manual_seed(int(seed))
        params = list(self.nets.encoder.parameters()) + list(self.nets.policy.parameters())
        self.opt = _adam(params, cfg.loss.policy_lr)
        self.phase = "offline"
        self.steps = 0

    def set_phase(self, phase: str) -> None:
        if phase != "offline":
            raise ValueError("meta-BC has no online phase")

    def update(self, batch: MetaBatch) -> dict[str, float]:
        mu, var = self.nets.encoder(batch.context)
        z = _expand_tasks(sample_gaussian(mu, var, self.generator), batch.batch_size)
        mean, log_std = self.nets.policy(batch.obs, z)
        log_prob = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(batch.action))
        kl = kl_to_standard_normal(mu, var).mean()
        loss = -log_prob.mean() + float(self.cfg.loss.kl_weight) * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        stats = torch.stack([loss.detach(), log_prob.detach().mean(), kl.detach()]).tolist()
        return dict(zip(("policy_loss", "log_prob_data", "kl"), stats))

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps, "phase": self.phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
