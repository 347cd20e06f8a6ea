"""The SMAC trainer: one update on a meta-batch, with the gradient path the config names.

Contract (shared by both trainers): ``update(batch) -> dict[str, float]``, ``state_dict()``,
``load_state_dict()``, and ``nets`` whose ``encoder`` and ``policy`` make the adapting agent.

The update is defined once, by :func:`smrl_train.smac.step.step_losses`. ``smac.gradients``
chooses how its gradients are taken:

* ``autograd`` (default): one backward pass of ``LossTerms.total``;
* ``compiled``: the same function through ``torch.compile`` (one-off compilation per phase,
  then faster updates; see docs/algorithm.md section 8);
* ``manual``: the opt-in accelerator of ``manual_grad.py``, hand-derived gradients of the same
  losses for the config fields and modules it lists (anything else is refused by name). It
  also opts into two process-wide speed-ups: torch's private fused Adam kernel called without
  ``Adam.step``'s bookkeeping, and glibc malloc thresholds that keep freed pages.

Adam steps after every gradient is taken, so every loss sees the same parameters; the Polyak
update is one ``_foreach_lerp_``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from smrl_train.config_schema import ConfigError
from smrl_train.smac import manual_grad
from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.config import SmacConfig, resolved
from smrl_train.smac.data_parallel import Ranks
from smrl_train.smac.losses import kl_to_standard_normal
from smrl_train.smac.networks import SmacNetworks, atanh_clamped, sample_gaussian, tanh_gaussian_log_prob
from smrl_train.smac.step import PHASES, LossTerms, Noise, per_task, step_losses, trains_context

METRICS = ("q_loss", "q_mean", "q_target_mean", "policy_loss", "awr_loss", "q_term", "adv_std", "weight_max",
           "log_prob_data", "context_loss", "decoder_mse", "kl", "posterior_var", "v_loss")


def build_networks(cfg: SmacConfig, obs_dim: int, act_dim: int, detach_policy_z: bool = True,
                   seed: int | None = None) -> SmacNetworks:
    """The networks of ``cfg``; initialised from ``seed`` without touching the global RNG."""
    n = cfg.network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if seed is None else seed)
        return SmacNetworks(obs_dim, act_dim, n.latent_dim, resolved(n.encoder_hidden), n.policy_hidden, n.q_hidden,
                            n.decoder_hidden, detach_policy_z=detach_policy_z,
                            encoder_aggregation=str(n.encoder_aggregation), encoder_rank=int(n.encoder_rank),
                            state_value=cfg.loss.critic_target == "expectile",
                            context_next_obs=bool(n.context_next_obs),
                            decoder_ensemble=int(n.decoder_ensemble or 1))


class _LeanFusedAdam(torch.optim.Adam):
    """torch's fused CPU Adam (one kernel per parameter group), called without the per-step
    Python bookkeeping of ``Adam.step`` (~0.15 ms per call, a few percent of a demo-size update).
    Part of the ``manual`` accelerator only: it calls the private ``torch._fused_adam_``.

    Same state, same ``state_dict``, same arithmetic (``Adam.step`` itself calls that kernel);
    the first step of a parameter (state not yet created) goes through ``Adam.step``.
    Parameters without a gradient are skipped, as ``Adam.step`` does.
    """

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        super().__init__(params, lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            states: list[dict[str, Any]] = [self.state.get(p, {}) for p in params]  # {}: no state yet
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


def _adam(params: Iterable[Tensor], lr: float, lean: bool = False,
          device: torch.device | None = None) -> torch.optim.Adam:
    """Adam with torch's fused kernel (CPU and CUDA); ``lean`` skips its bookkeeping (manual
    path only). A device without a fused kernel (``meta``, used by the tests to find tensors
    made on the wrong device) takes torch's default implementation."""
    if lean:
        return _LeanFusedAdam(params, lr)
    fused = device is None or device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def training_device(name: str | torch.device) -> torch.device:
    """The device ``--device`` names (cpu, cuda, cuda:K), checked before any work.

    Raises:
        ConfigError: an unknown device, or CUDA asked for where torch sees none.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device: unknown device {name!r} (expected cpu or cuda)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                              f"built with CUDA {torch.version.cuda or 'none'}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type not in ("cpu", "meta"):
        raise ConfigError(f"--device: {name!r} is not supported (expected cpu or cuda)")
    return device


def _metrics(critic: Tensor, q_pred: Tensor, target: Tensor, policy: Tensor, awr: Tensor, q_term: Tensor,
             advantage: Tensor, weights: Tensor, log_prob: Tensor, context: Tensor, decoder_mse: Tensor,
             kl: Tensor, var: Tensor, value: Tensor, ranks: Ranks | None = None) -> Tensor:
    """The step's metrics (``METRICS`` order) as one tensor on the training device, read by
    the host only when a log row is written (:class:`smrl_train.smac.logs.DeviceMean`); in
    data-parallel training, of the whole meta-batch (means over the ranks' equal shares, the
    spread and the maximum over all their rows)."""
    stats = torch.stack([critic, q_pred.mean(), target.mean(), policy, awr, q_term, advantage.std(), weights.max(),
                         log_prob.mean(), context, decoder_mse, kl, var.mean(), value]).detach()
    if ranks is not None and ranks.parallel:
        stats = ranks.sum(stats) / ranks.world
        stats[METRICS.index("adv_std")] = ranks.std(advantage)
        stats[METRICS.index("weight_max")] = ranks.max(weights.detach().max())
    return stats


class SmacTrainer:
    """SMAC's update: encoder + decoder by reward MSE + KL, twin critic, AWAC actor.

    Phases: ``offline`` (all three losses, no -Q actor term) and ``online`` (encoder and decoder
    frozen unless ``online.train_encoder``; the actor adds the reparameterised -Q term). The
    gradient path is ``cfg.gradients`` (module docstring).

    Raises:
        ConfigError: ``gradients: manual`` with a config field or module it does not implement.
    """

    def __init__(self, cfg: SmacConfig, obs_dim: int, act_dim: int, seed: int = 0,
                 ranks: Ranks | None = None, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.gradients = cfg.gradients
        self.device = torch.device(device)
        if self.gradients == "manual" and self.device.type != "cpu":
            raise ConfigError(f"smac.gradients: manual is a CPU accelerator; training on {self.device} takes "
                              "autograd or compiled")
        self.ranks = ranks if ranks is not None else Ranks()
        if self.ranks.parallel and self.gradients != "autograd":
            raise ConfigError(f"smac.gradients: {self.gradients} runs in one process; data-parallel training "
                              f"({self.ranks.world} processes) takes autograd")
        for key, meta_batch in (("offline", cfg.offline.meta_batch), ("online", cfg.online.meta_batch)):
            if meta_batch % self.ranks.world:  # refused before any update, not at the first one
                raise ConfigError(f"smac.{key}.meta_batch: {meta_batch} tasks do not split over {self.ranks.world} "
                                  "processes (a multiple of the number of processes is needed)")
        self.nets = build_networks(cfg, obs_dim, act_dim, seed=seed).to(self.device)
        manual = self.gradients == "manual"
        if manual:
            manual_grad.check_implemented(cfg, self.nets)
            manual_grad.opt_in_process_speedups()
        self.generator = torch.Generator().manual_seed(int(seed))
        loss = cfg.loss
        self.context_params = list(self.nets.encoder.parameters()) + list(self.nets.decoder.parameters())
        # The critics' optimiser also steps V(s, z) where there is one (expectile targets).
        self.q_params: list[Tensor] = list(self.nets.qf.parameters())
        self.v_params: list[Tensor] = list(self.nets.vf.parameters()) if self.nets.vf is not None else []
        self.q_target_params: list[Tensor] = list(self.nets.qf_target.parameters())
        self.policy_params = list(self.nets.policy.parameters())
        self.opt_context = _adam(self.context_params, loss.context_lr, lean=manual, device=self.device)
        self.opt_q = _adam(self.q_params + self.v_params, loss.q_lr, lean=manual, device=self.device)
        self.opt_policy = _adam(self.policy_params, loss.policy_lr, lean=manual, device=self.device)
        self._losses = torch.compile(step_losses, dynamic=False) if self.gradients == "compiled" else step_losses
        self.phase = "offline"
        self.steps = 0

    # -- phase -------------------------------------------------------------------------------
    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase

    @property
    def trains_context(self) -> bool:
        """Whether this phase trains the encoder and decoder (paper: offline only)."""
        return trains_context(self.cfg, self.phase)

    # -- one gradient step ---------------------------------------------------------------------
    def draw_noise(self, batch: MetaBatch) -> Noise:
        """The next step's noise from the trainer's generator (on the CPU, so every device
        draws the same numbers), on the training device."""
        return Noise.for_batch(self.generator, self.nets, batch).to(self.device)

    def compute_losses(self, batch: MetaBatch, noise: Noise | None = None) -> LossTerms:
        """Every loss of one step (``step_losses``), with the trainer's next noise by default."""
        return step_losses(self.nets, self.cfg, batch, self.draw_noise(batch) if noise is None else noise,
                           self.phase)

    def update(self, batch: MetaBatch) -> dict[str, float]:
        """One step on a meta-batch (T tasks x B transitions, context T x C). Returns metrics
        (read from the device: a host sync; the training loops call :meth:`step_stats`)."""
        return dict(zip(METRICS, self.step_stats(batch).tolist()))

    def step_stats(self, batch: MetaBatch) -> Tensor:
        """One step; its metrics (``METRICS`` order) stay a tensor on the training device.

        The meta-batch (sampled on the CPU) is moved to the training device here. In
        data-parallel training every rank passes the same global meta-batch and keeps its
        share of the tasks here (:mod:`smrl_train.smac.data_parallel`)."""
        batch = batch.to(self.device)
        noise = self.draw_noise(batch)
        train_ctx = self.trains_context
        if self.gradients == "manual":
            return self._manual_update(batch, noise, train_ctx)
        ranks = self.ranks
        if ranks.parallel:
            noise, batch = noise.share(ranks.tasks(batch.meta_batch), batch.batch_size), ranks.share(batch)
        t = self._losses(self.nets, self.cfg, batch, noise, self.phase, ranks)
        for opt in (self.opt_context, self.opt_q, self.opt_policy):
            opt.zero_grad(set_to_none=True)
        t.total.backward()
        ranks.average_gradients([*self.context_params, *self.q_params, *self.v_params, *self.policy_params])
        self._step(train_ctx)
        return _metrics(t.critic, t.q_pred, t.target, t.policy, t.awr, t.q_term, t.advantage, t.weights,
                        t.log_prob, t.context, t.decoder_mse, t.kl, t.var, t.value, ranks)

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
    def _manual_update(self, batch: MetaBatch, noise: Noise, train_ctx: bool) -> Tensor:
        """The same step with hand-derived gradients (manual_grad.py); no autograd graph."""
        if not train_ctx:  # every other gradient is overwritten; frozen ones must be None
            for p in self.context_params:
                p.grad = None
        t = manual_grad.losses_and_grads(self.nets, self.cfg, batch, noise, self.phase, train_ctx)
        self._step(train_ctx)
        return _metrics(t["critic"], t["q_pred"], t["target"], t["awr"] + t["q_term"], t["awr"], t["q_term"],
                        t["advantage"], t["weights"], t["log_prob"], t["context"], t["decoder_mse"], t["kl"], t["var"],
                        t["critic"].new_zeros(()))

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

    METRICS = ("policy_loss", "log_prob_data", "kl")

    def __init__(self, cfg: SmacConfig, obs_dim: int, act_dim: int, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.nets = build_networks(cfg, obs_dim, act_dim, detach_policy_z=False, seed=seed).to(self.device)
        self.generator = torch.Generator().manual_seed(int(seed))
        params = list(self.nets.encoder.parameters()) + list(self.nets.policy.parameters())
        self.opt = _adam(params, cfg.loss.policy_lr, device=self.device)
        self.phase = "offline"
        self.steps = 0

    def set_phase(self, phase: str) -> None:
        if phase != "offline":
            raise ValueError("meta-BC has no online phase")

    def update(self, batch: MetaBatch) -> dict[str, float]:
        return dict(zip(self.METRICS, self.step_stats(batch).tolist()))

    def step_stats(self, batch: MetaBatch) -> Tensor:
        """One step; its metrics (``METRICS`` order) as a tensor on the training device."""
        batch = batch.to(self.device)
        mu, var = self.nets.encoder(batch.context)
        z = per_task(sample_gaussian(mu, var, self.generator), batch.batch_size)
        mean, log_std = self.nets.policy(batch.obs, z)
        log_prob = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(batch.action))
        kl = kl_to_standard_normal(mu, var).mean()
        loss = -log_prob.mean() + float(resolved(self.cfg.loss.kl_weight)) * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return torch.stack([loss.detach(), log_prob.detach().mean(), kl.detach()])

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "steps": self.steps, "phase": self.phase}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])
