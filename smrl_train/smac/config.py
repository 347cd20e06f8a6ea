"""The ``smac:`` section of a config: networks, losses, the two training phases, evaluation.

Three recipes share one code path, selected by ``variant`` (docs/algorithm.md section 6):

* ``paper``: the authors' released code (rlkit's ``torch/smac``): no observation
  normalisation, KL weight 0.1, AWAC temperature 100 over a batch softmax, the critic's target
  at the policy's action, encoder and decoder frozen online, online actor term -Q.
* ``return_tuned``: our first recipe, tuned for return on reach (it was called ``improved``,
  which still loads as it): normalised inputs and decoder targets, AWAC temperature 0.3 in
  advantage spreads, encoder kept training online, exploration episodes as training
  contexts, z once per episode, pessimistic labels from a decoder ensemble, the -Q term
  divided by the batch mean |Q|.
* ``success_tuned`` (the default): tuned for held-out success. On top of ``return_tuned``: the
  linear-Gaussian encoder (evidence about z along any direction, so distance rewards can be
  intersected), in-sample value learning (IQL's expectile critic target) with clipped
  per-sample advantage weights, a policy that does not read the joint velocities and whose
  mean is fitted by weighted regression in action space, the scored episode acting on the
  posterior mean, twice the offline updates; online, no stochastic prior-z episodes and an
  actor that imitates only the offline dataset's actions (the collected data train the critic
  and the encoder).

Each deviation is a field here whose value ``None`` means "the variant's default", so an
ablation overrides a single ingredient (``smac.loss.awac_beta: 100``) and keeps the rest.
After loading, every such field holds its resolved value (``to_dict`` shows the recipe run).

Network sizes and batch shapes are independent of the variant: the dataclass defaults are a
CPU-friendly size; :func:`paper_preset` (and ``config/smac_paper.yaml``) holds the paper's code
defaults. This module imports only :mod:`smrl_train.config_schema` and the latent resample
parser of :mod:`smrl_train.robot.latent_schedule` (numpy); the config loader
(:mod:`smrl_train.config_loader`) builds a family config's ``smac:`` section with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from smrl_train.config_schema import ConfigError, from_dict, yaml_error_line
from smrl_train.robot.latent_schedule import resample_period

VARIANTS = ("paper", "return_tuned", "success_tuned")
DEFAULT_VARIANT = "success_tuned"
# Earlier names of a recipe, still accepted (runs of the time record them).
VARIANT_ALIASES = {"improved": "return_tuned"}
GRADIENTS = ("autograd", "compiled", "manual")
T = TypeVar("T")

# Values each variant gives to the fields left at None. Keys are "<section>.<field>".
_PAPER: dict[str, Any] = {
    "network.encoder_hidden": (128, 128),
    "network.policy_ignores": (),
    "network.context_next_obs": False,
    "offline.context_size": 64,
    "online.context_size": 64,
    "network.normalize_inputs": False,
    "network.encoder_aggregation": "product",
    "network.decoder_ensemble": 1,
    "loss.normalize_decoder_targets": False,
    "loss.kl_weight": 0.1,
    "loss.awac_beta": 100.0,
    "loss.awac_normalize_advantage": False,
    "loss.awac_weights": "softmax",
    "loss.critic_target": "policy",
    "offline.steps": 8000,
    "offline.context_episodes": 0,
    "online.context_episodes": 0,
    "online.train_encoder": False,
    "online.prior_episodes": 2,
    "online.explore_episodes": 0,
    "online.explore_context_fraction": 0.0,
    "online.q_term_weight": 1.0,
    "online.normalize_q_term": False,
    "online.resample_latent": "step",
    "online.label_pessimism": 0.0,
    "online.actor_data": "all",
    "online.actor_context": "all",
    "loss.actor_mean": "likelihood",
    "eval.resample_latent": "step",
    "eval.scored_latent": "sample",
}
_RETURN_TUNED: dict[str, Any] = {
    **_PAPER,
    "network.normalize_inputs": True,
    "network.decoder_ensemble": 5,
    "loss.normalize_decoder_targets": True,
    "loss.kl_weight": 0.01,
    "loss.awac_beta": 0.3,
    "loss.awac_normalize_advantage": True,
    "online.train_encoder": True,
    "online.explore_episodes": 2,
    "online.explore_context_fraction": 0.5,
    "online.normalize_q_term": True,
    "online.resample_latent": "episode",
    "online.label_pessimism": 2.0,
    "eval.resample_latent": "episode",
}
_SUCCESS_TUNED: dict[str, Any] = {
    **_RETURN_TUNED,
    "network.encoder_aggregation": "linear_gaussian",
    "network.encoder_hidden": (256, 256, 256),
    "loss.kl_weight": 0.001,
    "offline.context_size": 200,
    "online.context_size": 200,
    "loss.awac_beta": 1.0,
    "loss.awac_weights": "clipped",
    "loss.critic_target": "expectile",
    "offline.steps": 16000,
    "offline.context_episodes": 2,
    "online.context_episodes": 2,
    "eval.scored_latent": "mean",
    "online.prior_episodes": 0,
    "online.actor_data": "offline",
    "loss.actor_mean": "regression",
    "network.policy_ignores": ("joint_vel",),
}
# Values each variant gives to the fields left at None. Keys are "<section>.<field>".
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {"paper": _PAPER, "return_tuned": _RETURN_TUNED,
                                               "success_tuned": _SUCCESS_TUNED}


def resolved(value: T | None) -> T:
    """A recipe field (declared ``X | None``, None = the variant's default) as the code reads it:
    :class:`SmacConfig` replaces every such None by the recipe's value when it is built, so a
    section of a loaded config never holds one. Raises if it does (a section built on its own)."""
    if value is None:
        raise ValueError("a recipe field is still None: build the section inside a SmacConfig, "
                         "which resolves it to the variant's default")
    return value


@dataclass(frozen=True)
class NetworkConfig:
    # Hidden layer widths (ReLU MLPs). Paper code: encoder 200x3, policy/Q 300x3, decoder 64x2.
    # The encoder's width is the recipe's (None = variant default: 128x2; success_tuned 256x3,
    # which identifies the task more precisely).
    encoder_hidden: tuple[int, ...] | None = None
    policy_hidden: tuple[int, ...] = (128, 128)
    q_hidden: tuple[int, ...] = (128, 128)
    decoder_hidden: tuple[int, ...] = (64, 64)
    # Size of the task latent z; the prior is N(0, I).
    latent_dim: int = 5
    # How the encoder combines context transitions: "product" of per-transition Gaussians (the
    # paper) or "mean" of per-transition features then an MLP (deep sets; can intersect the
    # sphere constraints distance rewards give). Deviation; None = variant default.
    encoder_aggregation: str | None = None
    # Rank k of each transition's evidence about z in the "linear_gaussian" encoder (one
    # distance reading is one linear equation: k = 1). Unused by the other encoders.
    encoder_rank: int = 1
    # Context rows (s, a, r, s') instead of (s, a, r): a reward is measured after the step, at
    # s' (rlkit's use_next_obs_in_context, off in the paper). Deviation; None = variant default.
    context_next_obs: bool | None = None
    # Observation blocks (names of the env's ``observation_layout``) the policy does not read.
    # Under position-delta control a joint velocity is the previous action over the period:
    # a policy that reads it learns to continue the data's last action (the copycat shortcut
    # of behaviour cloning) and, at rest near the goal, barely corrects a position error, so
    # it drifts away. The critic, the value and the encoder still read everything. Deviation;
    # None = variant default (success_tuned: joint_vel; the others: none).
    policy_ignores: tuple[str, ...] | None = None
    # Standardise observations (and context rewards) inside the networks with statistics of
    # the offline data. Deviation; None = variant default (paper: off).
    normalize_inputs: bool | None = None
    # Independently initialised reward decoders trained side by side (one batched module);
    # their spread makes labels uncertainty-aware (online.label_pessimism). Deviation; None =
    # variant default (paper: 1).
    decoder_ensemble: int | None = None
    # Arithmetic of the policy, critic and decoder passes during training: "float32", or
    # "bfloat16" matmuls (1.6-1.8x faster at the paper's sizes on CPUs with AVX512-BF16/AMX,
    # slower without; parameters, optimiser state, the encoder, the losses and the gradients
    # handed to Adam stay float32). Not a recipe choice: both variants default to float32.
    # docs/algorithm.md section 8 has its speed and learning checks.
    compute_dtype: str = "float32"


@dataclass(frozen=True)
class LossConfig:
    # Discount and Polyak rate of the target critics (every update).
    gamma: float = 0.99
    tau: float = 0.005
    # Reward multiplier inside the Bellman target only; the decoder regresses raw rewards.
    reward_scale: float = 5.0
    # Weight of KL(q(z|c) || N(0, I)) (mean over tasks, sum over dims) in the encoder loss.
    kl_weight: float | None = None
    # Regress rewards standardised by the offline reward mean/std (a scale-free KL weight).
    normalize_decoder_targets: bool | None = None
    # AWAC temperature beta: weights = softmax(A / beta) over the whole meta-batch.
    awac_beta: float | None = None
    # Divide A by its batch std before the temperature (beta then counts in advantage spreads,
    # independent of reward and Q scale). Deviation; None = variant default (paper: off).
    awac_normalize_advantage: bool | None = None
    # How the actor's weights come from the advantages: "softmax" over the whole meta-batch
    # (x N, the paper) or per-sample exp(A / beta) "clipped" at awac_weight_max (AWR, IQL).
    # Deviation; None = variant default.
    awac_weights: str | None = None
    awac_weight_max: float = 100.0
    # The value of s' in the critic's target: "policy", min_k Qbar(s', a' ~ pi) (the paper), or
    # "expectile", V(s') with V fitted to an upper expectile of Qbar(s, a_data) over the data's
    # actions (IQL: no action outside the data is ever evaluated). Deviation; None = variant
    # default.
    critic_target: str | None = None
    expectile: float = 0.8
    # How the actor fits the policy's mean: "likelihood", the advantage-weighted log-likelihood
    # of the data's action under the tanh-Gaussian trains mean and std together (the paper),
    # or "regression", the mean by advantage-weighted squared error of tanh(mean) to the data's
    # action and the std by the weighted likelihood with the mean held fixed. Saturated data
    # actions (|a| = 1) sit at atanh(1 - 1e-6) = 7.3 in the likelihood's pre-tanh space, outliers
    # that blur the mean the deterministic policy acts on. Deviation; None = variant default.
    actor_mean: str | None = None
    # Weight of the squared error against the likelihood of the std (they share the trunk).
    actor_regression_weight: float = 100.0
    # Learning rates (Adam, no weight decay).
    policy_lr: float = 3e-4
    q_lr: float = 3e-4
    context_lr: float = 3e-4


@dataclass(frozen=True)
class OfflineConfig:
    # Gradient steps of the offline phase (paper code: 50,000). None = variant default.
    steps: int | None = None
    # Tasks per meta-batch (with replacement), RL transitions and context transitions per task.
    meta_batch: int = 4
    batch_size: int = 128
    context_size: int | None = None  # None = variant default (64; success_tuned 200)
    # Draw each task's context from this many whole episodes of it, as the meta-test's context
    # is (0: from all its transitions, the paper). Deviation; None = variant default.
    context_episodes: int | None = None
    # Steps between metric rows in metrics.csv and between checkpoints.
    log_every: int = 250
    checkpoint_every: int = 2000


@dataclass(frozen=True)
class OnlineConfig:
    # Self-supervised iterations; each collects on `tasks_per_iteration` training tasks, then
    # trains `updates_per_iteration` steps. (Paper code: 501 x 5 tasks x 16,000 updates.)
    iterations: int = 20
    tasks_per_iteration: int = 5
    updates_per_iteration: int = 500
    # Episodes per task and iteration: z ~ prior resampled every step (stochastic policy),
    # then z ~ posterior of the task's context buffer (stochastic policy). Paper: 400 + 600
    # steps = 2 + 3 episodes of 200 steps. The prior ones are a recipe field (None = variant
    # default; success_tuned: 0, docs/algorithm.md section 9.4).
    prior_episodes: int | None = None
    posterior_episodes: int = 3
    # Deterministic prior-z episodes, exactly like test-time exploration, kept in a separate
    # per-task buffer that `explore_context_fraction` of the meta-batch draws its context
    # from. Deviation; None = variant default (paper: 0 episodes, fraction 0).
    explore_episodes: int | None = None
    explore_context_fraction: float | None = None
    # Batch shapes of the online updates (paper: 4 tasks x 256, context 64; 128 halves the
    # cost of an update on CPU).
    meta_batch: int = 4
    batch_size: int = 128
    context_size: int | None = None  # None = variant default (64; success_tuned 200)
    # As offline.context_episodes, for the online phase's contexts. None = variant default.
    context_episodes: int | None = None
    # Offline transitions per labelling context; z_r is drawn once per trajectory.
    label_context_size: int = 256
    # Pessimistic labels: r = mean - label_pessimism x std over the decoder ensemble. Off the
    # offline data the decoder is optimistic (on reach it over-predicts exploration-state
    # rewards by ~4 cm), and the spread grows where it errs. Deviation; None = variant default
    # (paper: 0, one decoder).
    label_pessimism: float | None = None
    # Weight of the reparameterised -Q(s, a~pi) actor term, and whether to divide it by the
    # batch mean |Q| (TD3+BC). Deviation; None = variant default (paper: not normalised).
    q_term_weight: float | None = None
    normalize_q_term: bool | None = None
    # Which RL transitions the actor's advantage-weighted term imitates online: "all" (the
    # paper: offline and collected alike) or "offline" (only the dataset's; the collected ones
    # still train the critic, the encoder and the -Q term). Deviation; None = variant default.
    actor_data: str | None = None
    # Under which z it imitates them: "all" tasks of the meta-batch (the paper), or "offline",
    # only the tasks whose context came from their offline data, not from their exploration
    # episodes (those still train the encoder, the decoder and the critic). Deviation; None =
    # variant default.
    actor_context: str | None = None
    # Keep training encoder + decoder online on the (labelled) buffers. Labels still come from
    # the frozen offline snapshot. Deviation; None = variant default (paper: frozen).
    train_encoder: bool | None = None
    # When the collection policy draws z: every step (authors' code,
    # exploration_resample_latent_period=1), once per episode (PEARL) or every N steps (a whole
    # number). Deviation; None = variant default. Deterministic explore episodes follow
    # eval.resample_latent.
    resample_latent: str | int | None = None
    # Iterations between test-task evaluations (the learning curve); 0 = only at the end.
    eval_every: int = 5
    checkpoint_every: int = 1


@dataclass(frozen=True)
class EvalConfig:
    # Exploration episodes with z ~ prior (resampled every step) before the posterior is used.
    exploration_episodes: int = 2
    # Repetitions of the whole protocol per test task (paper: num_evals = 4); with one run,
    # two evaluations of the same agent on 10 reach tasks differed by ~13 return.
    runs_per_task: int = 4
    # Test tasks and runs per task of the periodic learning-curve evaluation (0 tasks = all).
    curve_tasks: int = 0
    curve_runs_per_task: int = 2
    # Training tasks for the diagnostic "z from offline context vs own exploration" (0 = off).
    diagnostic_tasks: int = 10
    # Offline transitions in the diagnostic's offline context.
    offline_context_size: int = 256
    # Act with tanh(mean) (the paper's evaluation) rather than sampling.
    deterministic: bool = True
    # When z is drawn during evaluation: "step" (authors' code), "episode", or every N steps
    # (a whole number: an exploration episode then visits several prior latents, more distance
    # readings for the posterior; docs/algorithm.md section 9.7). Deviation; None = variant default.
    resample_latent: str | int | None = None
    # The z of the scored episode: a "sample" of the posterior (the paper) or its "mean" (what
    # the deployed adapted policy bakes in). Deviation; None = variant default.
    scored_latent: str | None = None
    # When an episode counts as a success: "last" (info["success"] at its last step, our
    # families' convention) or "any" (at any step, as many suites score); None = the family's
    # own (its env's ``success_metric`` attribute, else "last").
    success: str | None = None


@dataclass(frozen=True)
class SmacConfig:
    """The whole algorithm configuration (the ``smac:`` section)."""

    # "paper" (the authors' code recipe), "return_tuned" or "success_tuned" (ours; module
    # docstring and docs/algorithm.md section 6).
    variant: str = DEFAULT_VARIANT
    seed: int = 0
    # How the update's gradients are taken (the update itself is smac/step.py either way):
    # "autograd" (the default), "compiled" (torch.compile of the same function: 7-20 s of
    # compilation per phase, then updates up to 1.25x faster; a whole run of the default recipe
    # on 2 CPU cores costs about what autograd's does) or "manual" (the opt-in accelerator of
    # smac/manual_grad.py: hand-derived gradients for the config fields and modules it lists,
    # anything else refused by name; it also turns on two process-wide speed-ups, glibc malloc
    # thresholds and torch's private fused Adam kernel). Recorded in every run.
    gradients: str = "autograd"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.variant in VARIANT_ALIASES:
            object.__setattr__(self, "variant", VARIANT_ALIASES[self.variant])
        if self.variant not in VARIANTS:
            raise ConfigError(f"smac.variant: expected one of {', '.join(VARIANTS)}, got {self.variant!r}")
        # Resolve the variant-dependent fields left at None (frozen: rebuild the sections).
        for section in ("network", "loss", "offline", "online", "eval"):
            sub = getattr(self, section)
            updates = {}
            for key, value in VARIANT_DEFAULTS[self.variant].items():
                sec, name = key.split(".")
                if sec == section and getattr(sub, name) is None:
                    updates[name] = value
            if updates:
                object.__setattr__(self, section, dataclasses.replace(sub, **updates))
        _validate(self)

    def with_variant(self, variant: str) -> SmacConfig:
        """This config under another recipe: every field holding this recipe's default takes
        the other recipe's; values set explicitly (a preset's sizes, an override) are kept."""
        variant = VARIANT_ALIASES.get(variant, variant)
        sections: dict[str, Any] = {}
        mine = VARIANT_DEFAULTS[self.variant]
        for key in VARIANT_DEFAULTS[variant]:
            sec, name = key.split(".")
            if key not in mine or getattr(getattr(self, sec), name) == mine[key]:
                sections.setdefault(sec, {})[name] = None
        kwargs = {sec: dataclasses.replace(getattr(self, sec), **vals) for sec, vals in sections.items()}
        return dataclasses.replace(self, variant=variant, **kwargs)


def _numbers(obj: Any, prefix: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every number in the sections of ``obj`` (tuples element-wise)."""
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(value):
            out += _numbers(value, key)
        elif isinstance(value, tuple):
            out += [(f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, (int, float))]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((key, value))
    return out


def _validate(cfg: SmacConfig) -> None:
    for key, value in _numbers(cfg, "smac"):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
    for key, sizes in (("network.encoder_hidden", cfg.network.encoder_hidden),
                       ("network.policy_hidden", cfg.network.policy_hidden),
                       ("network.q_hidden", cfg.network.q_hidden),
                       ("network.decoder_hidden", cfg.network.decoder_hidden)):
        if any(width < 1 for width in sizes or ()):
            raise ConfigError(f"smac.{key}: layer widths must be >= 1, got {list(sizes or ())!r}")
    positive = {
        "loss.policy_lr": cfg.loss.policy_lr, "loss.q_lr": cfg.loss.q_lr, "loss.context_lr": cfg.loss.context_lr,
        "loss.reward_scale": cfg.loss.reward_scale,
        "offline.checkpoint_every": cfg.offline.checkpoint_every,
        "online.checkpoint_every": cfg.online.checkpoint_every,
        "network.latent_dim": cfg.network.latent_dim, "network.encoder_rank": cfg.network.encoder_rank,
        "offline.meta_batch": cfg.offline.meta_batch, "offline.batch_size": cfg.offline.batch_size,
        "offline.context_size": cfg.offline.context_size, "offline.log_every": cfg.offline.log_every,
        "online.meta_batch": cfg.online.meta_batch, "online.batch_size": cfg.online.batch_size,
        "online.context_size": cfg.online.context_size,
        "online.label_context_size": cfg.online.label_context_size,
        "online.tasks_per_iteration": cfg.online.tasks_per_iteration,
        "eval.offline_context_size": cfg.eval.offline_context_size,
        "loss.awac_beta": cfg.loss.awac_beta,
        "network.decoder_ensemble": cfg.network.decoder_ensemble,
    }
    for key, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"smac.{key}: must be > 0, got {value!r}")
    for key, value in {"seed": cfg.seed, "loss.kl_weight": cfg.loss.kl_weight,
                       "online.eval_every": cfg.online.eval_every,
                       "offline.steps": cfg.offline.steps, "online.iterations": cfg.online.iterations,
                       "online.updates_per_iteration": cfg.online.updates_per_iteration,
                       "online.prior_episodes": cfg.online.prior_episodes,
                       "online.posterior_episodes": cfg.online.posterior_episodes,
                       "online.explore_episodes": cfg.online.explore_episodes,
                       "online.q_term_weight": cfg.online.q_term_weight,
                       "offline.context_episodes": cfg.offline.context_episodes,
                       "online.context_episodes": cfg.online.context_episodes,
                       "eval.exploration_episodes": cfg.eval.exploration_episodes,
                       "eval.diagnostic_tasks": cfg.eval.diagnostic_tasks,
                       "eval.curve_tasks": cfg.eval.curve_tasks,
                       "online.label_pessimism": cfg.online.label_pessimism}.items():
        if value is None or value < 0:
            raise ConfigError(f"smac.{key}: must be >= 0, got {value!r}")
    if cfg.eval.runs_per_task < 1 or cfg.eval.curve_runs_per_task < 1:
        raise ConfigError("smac.eval.runs_per_task and smac.eval.curve_runs_per_task: must be >= 1")
    fraction = cfg.online.explore_context_fraction
    if fraction is None or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"smac.online.explore_context_fraction: must be in [0, 1], got {fraction!r}")
    if cfg.gradients not in GRADIENTS:
        raise ConfigError(f"smac.gradients: expected one of {', '.join(GRADIENTS)}, got {cfg.gradients!r}")
    if cfg.network.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"smac.network.compute_dtype: expected 'float32' or 'bfloat16', "
                          f"got {cfg.network.compute_dtype!r}")
    if cfg.network.encoder_aggregation not in ("product", "mean", "linear_gaussian"):
        raise ConfigError(f"smac.network.encoder_aggregation: expected 'product', 'mean' or 'linear_gaussian', "
                          f"got {cfg.network.encoder_aggregation!r}")
    for key, setting in (("online.resample_latent", cfg.online.resample_latent),
                         ("eval.resample_latent", cfg.eval.resample_latent)):
        try:
            resample_period(setting)
        except ValueError as exc:
            raise ConfigError(f"smac.{key}: {exc}") from None
    if cfg.loss.awac_weights not in ("softmax", "clipped") or cfg.loss.critic_target not in ("policy", "expectile"):
        raise ConfigError(f"smac.loss: awac_weights must be 'softmax' or 'clipped' (got {cfg.loss.awac_weights!r}), "
                          f"critic_target 'policy' or 'expectile' (got {cfg.loss.critic_target!r})")
    if not 0.0 < cfg.loss.expectile < 1.0 or not cfg.loss.awac_weight_max > 0:
        raise ConfigError("smac.loss: need 0 < expectile < 1 and awac_weight_max > 0")
    if not all(isinstance(name, str) and name for name in cfg.network.policy_ignores or ()):
        raise ConfigError(f"smac.network.policy_ignores: expected observation block names, "
                          f"got {cfg.network.policy_ignores!r}")
    if not 0.0 < cfg.loss.actor_regression_weight < math.inf:
        raise ConfigError(f"smac.loss.actor_regression_weight: must be > 0 and finite, "
                          f"got {cfg.loss.actor_regression_weight!r}")
    for key, allowed in (("loss.actor_mean", ("likelihood", "regression")), ("online.actor_data", ("all", "offline")),
                         ("online.actor_context", ("all", "offline")), ("eval.scored_latent", ("sample", "mean")),
                         ("eval.success", (None, "last", "any"))):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"smac.{key}: expected {' or '.join(repr(a) for a in allowed if a)}, got {value!r}")
    if not 0.0 < cfg.loss.tau <= 1.0 or not 0.0 <= cfg.loss.gamma < 1.0:
        raise ConfigError("smac.loss: need 0 < tau <= 1 and 0 <= gamma < 1")


def paper_preset() -> SmacConfig:
    """The paper's code defaults (rlkit's ``torch/smac`` and its examples; docs/algorithm.md
    section 6): sizes, batch shapes and budgets."""
    return SmacConfig(
        variant="paper",
        network=NetworkConfig(encoder_hidden=(200, 200, 200), policy_hidden=(300, 300, 300),
                              q_hidden=(300, 300, 300), decoder_hidden=(64, 64), latent_dim=5),
        offline=OfflineConfig(steps=50_000, meta_batch=4, batch_size=128, context_size=64,
                              log_every=1000, checkpoint_every=5000),
        online=OnlineConfig(iterations=501, tasks_per_iteration=5, updates_per_iteration=16_000,
                            prior_episodes=2, posterior_episodes=3, meta_batch=4, batch_size=256,
                            context_size=64, label_context_size=256, eval_every=10),
        eval=EvalConfig(exploration_episodes=2, runs_per_task=4),
    )


def smac_from_yaml_dict(data: dict[str, Any] | None) -> SmacConfig:
    """:class:`SmacConfig` from the ``smac:`` mapping of a parsed YAML file (missing = defaults)."""
    return from_dict(SmacConfig, data or {}, "smac")


def load_smac_config(path: str | Path) -> SmacConfig:
    """The ``smac:`` section of the YAML file at ``path`` (defaults where absent).

    Raises:
        ConfigError: unreadable file, or an unknown key / bad type in the section.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return smac_from_yaml_dict(data.get("smac"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
