"""ONNX export of the deployable policy and of the torch-free adaptation bundle.

Two artifacts, both self-describing: joint order, observation layout, action scale, control
rate, arm and task family, a :class:`~smrl_train.robot.model_metadata.DeploymentSpec` taken
from the training env (:func:`spec_from_env`), live in the ONNX ``metadata_props``, written by
the schema module the robot side reads them with (:mod:`smrl_train.robot.model_metadata`):

* the **adapted policy** (``kind = adapted_policy``): one task's posterior mean z baked in,
  deterministic action ``tanh(mean)``, observation normalisation inside the graph (the
  networks' own normaliser buffers), and the delta-to-target conversion of
  :meth:`smrl_train.sim.envs.ArmTaskEnv.action_to_targets` too:

  ====================  =============  ===================================================
  name                  shape          meaning
  ====================  =============  ===================================================
  in  ``obs``           (B, obs_dim)   float32, layout in ``smrl.observation_layout``
  out ``joint_targets`` (B, n)         absolute joint-position targets (rad), joint order
                                       ``smrl.joint_names``: ``clip(q + action * max_step,
                                       lower, upper)``, what a forward_position_controller
                                       takes (``smrl.action_type = joint_position_absolute``)
  out ``action``        (B, n)         the normalised delta in [-1, 1] it came from (what
                                       the episode store records)
  ====================  =============  ===================================================

* the **adaptation bundle** (a folder): ``encoder.onnx`` (``kind = encoder``: context
  (B, C, obs_dim + act_dim + 1) of (s, a, r) rows -> posterior ``mean``, ``var`` (B, L),
  C dynamic) and ``policy.onnx`` (``kind = latent_policy``: the adapted policy with ``z``
  (B, L) and ``noise`` (B, n) as inputs; action = tanh(mean + std * noise), so noise 0 is the
  deterministic policy and standard-normal noise samples the stochastic one). With these the
  robot infers z from its own context and writes its own adapted policy without torch
  (:func:`smrl_train.robot.runtime.bake_latent`), and explores as SMAC collects.

Every export is checked against torch on random inputs before it is kept: the ONNX outputs'
largest error against a float64 evaluation of the same module may exceed twice torch's own
float32 error by at most 1e-5 (a plain float32-vs-float32 bound fails correct exports of a badly
conditioned posterior, whose float32 solve errs by more than 1e-5 in torch too), and
``smrl.model_hash`` (SHA-256 of the serialised graph) lets the loader detect a corrupted or
edited file.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from torch import Tensor, nn

import smrl_train
from smrl_train.config import SmrlConfig, package_root
from smrl_train.robot.model_metadata import (
    KIND_ADAPTED,
    KIND_ENCODER,
    KIND_LATENT,
    REQUIRED_METADATA,
    DeploymentSpec,
    kind_metadata,
)
from smrl_train.robot.runtime import set_metadata

OPSET = 17
PARITY_ATOL = 1e-5


class ExportablePolicy(Protocol):
    """What :func:`export_adapted_policy` needs of a policy module (:class:`TanhGaussianPolicy`,
    or a scripted stand-in): its sizes and the deterministic action, obs (N, O), z (N, L) ->
    (N, A) in [-1, 1]."""

    obs_dim: int
    act_dim: int
    latent_dim: int

    def act_mean(self, obs: Tensor, z: Tensor) -> Tensor: ...


class ExportableLatentPolicy(ExportablePolicy, Protocol):
    """What :func:`export_bundle` needs besides: the Gaussian before tanh, obs (N, O), z (N, L)
    -> mean, log_std (N, A)."""

    def __call__(self, obs: Tensor, z: Tensor) -> tuple[Tensor, Tensor]: ...


class ExportableEncoder(Protocol):
    """A context encoder module: context (T, C, D) -> posterior mean, variance (T, L)."""

    context_dim: int
    latent_dim: int

    def __call__(self, context: Tensor) -> tuple[Tensor, Tensor]: ...


def spec_from_env(env: Any) -> DeploymentSpec:
    """The deployment contract of an :class:`smrl_train.sim.envs.ArmTaskEnv` (or a wrapper of one)."""
    u = getattr(env, "unwrapped", env)
    arm = u.arm
    return DeploymentSpec(
        joint_names=tuple(arm.joint_names),
        observation_layout=tuple((str(n), int(k)) for n, k in u.observation_layout),
        max_step=np.asarray(u.max_step, dtype=np.float64),
        lower=np.asarray(arm.lower, dtype=np.float64),
        upper=np.asarray(arm.upper, dtype=np.float64),
        velocity=np.asarray(arm.velocity, dtype=np.float64),
        control_hz=float(u.cfg.env.control_hz),
        arm=str(arm.name),
        urdf_sha256=str(arm.urdf_sha256),
        task_family=str(u.family),
        episode_length=int(u.cfg.env.episode_length),
        urdf=urdf_reference(u.cfg),
        ee_link=str(u.cfg.arm.ee_link),
        home=tuple(float(q) for q in u.sim.home),
    )


def urdf_reference(cfg: SmrlConfig) -> str:
    """The config's URDF as a model's ``smrl.urdf`` names it: relative to the package root when
    it ships with the package (the robot side finds it in its own share folder), else absolute."""
    path = cfg.urdf_path()
    try:
        return path.relative_to(package_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def spec_from_config(cfg: SmrlConfig) -> DeploymentSpec:
    """Builds the env of ``cfg`` once to read its layout and scales."""
    from smrl_train.sim.envs import ArmTaskEnv

    return spec_from_env(ArmTaskEnv(cfg))


# ---------------------------------------------------------------------------------------
# Graphs


class _TargetHead(nn.Module):
    """Normalised delta (B, n) + observation (B, obs_dim) -> absolute targets (B, n)."""

    max_step: Tensor
    lower: Tensor
    upper: Tensor

    def __init__(self, spec: DeploymentSpec) -> None:
        super().__init__()
        self.n = spec.n_joints
        # joint_pos is the first block of the layout (checked in _check_spec).
        self.register_buffer("max_step", torch.as_tensor(spec.max_step, dtype=torch.float32))
        self.register_buffer("lower", torch.as_tensor(spec.lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(spec.upper, dtype=torch.float32))

    def forward(self, action: Tensor, obs: Tensor) -> Tensor:
        q = obs[:, : self.n]
        return torch.minimum(torch.maximum(q + action * self.max_step, self.lower), self.upper)


class AdaptedPolicyGraph(nn.Module):
    """obs (B, obs_dim) -> action (B, n) in [-1, 1], joint_targets (B, n); z fixed (1, L)."""

    z: Tensor

    def __init__(self, policy: ExportablePolicy, z: Tensor, spec: DeploymentSpec) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("z", torch.as_tensor(z, dtype=torch.float32).reshape(1, -1))
        self.head = _TargetHead(spec)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        action = self.policy.act_mean(obs, self.z.expand(obs.shape[0], -1))
        return action, self.head(action, obs)


class LatentPolicyGraph(nn.Module):
    """obs (B, obs_dim), z (B, L), noise (B, n) -> action (B, n) in [-1, 1], joint_targets (B, n).

    action = tanh(mean + std * noise): noise = 0 is the deterministic policy tanh(mean) (the
    meta-test's and the adapter's), a standard-normal noise samples the tanh-Gaussian policy
    as SMAC's data collection does (the explorer's stochastic episodes). The sampled action's
    targets come from the same head, so a robot never computes them by hand.
    """

    def __init__(self, policy: ExportableLatentPolicy, spec: DeploymentSpec) -> None:
        super().__init__()
        self.policy = policy
        self.head = _TargetHead(spec)

    def forward(self, obs: Tensor, z: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.policy(obs, z)
        action = torch.tanh(mean + log_std.exp() * noise)
        return action, self.head(action, obs)


class EncoderGraph(nn.Module):
    """context (B, C, D) -> posterior mean (B, L), var (B, L)."""

    def __init__(self, encoder: ExportableEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(context)


# ---------------------------------------------------------------------------------------
# Export


def _check_spec(spec: DeploymentSpec, obs_dim: int, act_dim: int) -> None:
    if spec.obs_dim != obs_dim:
        raise ValueError(f"observation layout {spec.observation_layout} sums to {spec.obs_dim}, "
                         f"the policy takes {obs_dim}")
    if act_dim != spec.n_joints:
        raise ValueError(f"the policy outputs {act_dim} actions for {spec.n_joints} joints")
    if spec.observation_layout[0] != ("joint_pos", spec.n_joints):
        raise ValueError("the observation must start with joint_pos (targets are q + delta)")


def _to_onnx(module: nn.Module, args: tuple[Tensor, ...], input_names: list[str],
             output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
             output_sizes: list[list[int | str]]) -> onnx.ModelProto:
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript (not a dependency); for these static MLPs both give the same graph.
        warnings.simplefilter("ignore")
        # f: torch annotates a path, but this (TorchScript, dynamo=False) exporter writes to any
        # binary file object, as torch.onnx.export itself passes it on.
        torch.onnx.export(module, args, buf,  # type: ignore[arg-type]
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    # The exporter leaves some output axes symbolic (e.g. after slicing obs); the contract the
    # loader checks is concrete, so state it: dynamic axes keep their names, others get sizes.
    for value, sizes in zip(model.graph.output, output_sizes, strict=True):
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, sizes, strict=True):
            if isinstance(size, int):
                dim.Clear()
                dim.dim_value = size
    return model


def _finish(model: onnx.ModelProto, metadata: dict[str, str], path: Path) -> onnx.ModelProto:
    set_metadata(model, metadata)
    missing = [k for k in REQUIRED_METADATA if k not in {p.key for p in model.metadata_props}]
    assert not missing, f"export bug: metadata lacks {missing}"
    model.producer_name = "smrl"
    model.producer_version = smrl_train.__version__
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)  # atomic: a controller hot-reloading this path never reads half a file
    return model


class ExportError(ValueError):
    """An export that does not fit its spec or does not match torch (the message says how)."""


def _parity(path: Path, module: nn.Module, feeds: dict[str, np.ndarray]) -> float:
    """How much less accurate onnxruntime is than torch's own float32: over outputs, the max of
    ``max|onnx - ref64| - 2 max|torch32 - ref64|`` (<= 0 when ONNX errs at most twice as much),
    where ``ref64`` is the module evaluated in float64 on the same inputs. (Elementwise the two
    roundings differ by as much as each errs, and two float32 orders of the same operations on
    a badly conditioned solve err alike only in size.)"""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    with torch.no_grad():
        want = module(*(torch.from_numpy(v) for v in feeds.values()))
        ref = copy.deepcopy(module).double()(*(torch.from_numpy(v).double() for v in feeds.values()))
    worst = 0.0
    for g, w, r in zip(got, want, ref, strict=True):
        w, r = w.numpy(), r.numpy()
        if not np.array_equal(np.isnan(g), np.isnan(w)):
            return float("inf")  # NaN on one side only is a mismatch (np.max would hide it)
        finite = ~np.isnan(r)
        excess = np.max(np.abs(g - r)[finite], initial=0.0) - 2 * np.max(np.abs(w - r)[finite], initial=0.0)
        worst = max(worst, float(excess))
    return worst


def _random_obs(spec: DeploymentSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Observations spread over the joint range (so the target clip is exercised too)."""
    obs = rng.normal(0.0, 1.0, size=(batch, spec.obs_dim)).astype(np.float32)
    n = spec.n_joints
    obs[:, :n] = rng.uniform(spec.lower - 0.1, spec.upper + 0.1, size=(batch, n))
    return obs


def export_adapted_policy(policy: ExportablePolicy, z: np.ndarray | Tensor, spec: DeploymentSpec,
                          path: str | Path, extra_metadata: dict[str, str] | None = None,
                          check_batch: int = 64, seed: int = 0, check_obs: np.ndarray | None = None) -> float:
    """Write the adapted policy (z baked in) to ``path``; returns the parity error.

    Args:
        policy: a module with ``act_mean(obs (N, O), z (N, L)) -> (N, A)`` in [-1, 1] and
            ``obs_dim``, ``act_dim``, ``latent_dim`` attributes (:class:`TanhGaussianPolicy`).
        z: the task latent (L,), e.g. the posterior mean after adaptation.
        check_obs: observations (B, obs_dim) for the parity check (default: random ones over
            the joint range).
    Raises:
        ValueError: the spec does not fit the policy; ExportError (a ValueError): ONNX errs
            by more than 1e-5 beyond twice torch's own float32 error.
    """
    path = Path(path)
    _check_spec(spec, policy.obs_dim, policy.act_dim)
    z_t = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(1, -1)
    if z_t.shape[1] != policy.latent_dim:
        raise ValueError(f"z has {z_t.shape[1]} entries, the policy's latent has {policy.latent_dim}")
    graph = AdaptedPolicyGraph(policy, z_t, spec).eval()
    obs = torch.zeros(1, spec.obs_dim)
    model = _to_onnx(graph, (obs,), ["obs"], ["action", "joint_targets"],
                     {"obs": {0: "batch"}, "action": {0: "batch"}, "joint_targets": {0: "batch"}},
                     [["batch", spec.n_joints]] * 2)
    meta = {**spec.as_metadata(), **kind_metadata(KIND_ADAPTED, policy.latent_dim, z=z_t[0]), **(extra_metadata or {})}
    _finish(model, meta, path)
    obs_check = check_obs if check_obs is not None else _random_obs(spec, check_batch, np.random.default_rng(seed))
    err = _parity(path, graph, {"obs": np.asarray(obs_check, dtype=np.float32)})
    if err > PARITY_ATOL:
        path.unlink()
        raise ExportError(f"{path.name}: ONNX errs {err:.2e} beyond twice torch's float32 error "
                          f"(> {PARITY_ATOL}): not written")
    return err


def export_bundle(encoder: ExportableEncoder, policy: ExportableLatentPolicy, spec: DeploymentSpec, folder: str | Path,
                  extra_metadata: dict[str, str] | None = None, check_batch: int = 16,
                  seed: int = 0) -> dict[str, float]:
    """Write ``folder/encoder.onnx`` and ``folder/policy.onnx``; returns their parity errors.

    Args:
        encoder: ``forward(context (T, C, D)) -> mean, var (T, L)`` with ``context_dim`` and
            ``latent_dim`` attributes (:class:`ContextEncoder`); D = obs + act + 1 (s, a, r).
        policy: as for :func:`export_adapted_policy`.
    """
    folder = Path(folder)
    _check_spec(spec, policy.obs_dim, policy.act_dim)
    if encoder.latent_dim != policy.latent_dim:
        raise ValueError("encoder and policy disagree on the latent size")
    rng = np.random.default_rng(seed)
    latent = int(policy.latent_dim)
    base = {**spec.as_metadata(), **kind_metadata(latent_dim=latent), **(extra_metadata or {})}
    errors: dict[str, float] = {}

    enc_graph = EncoderGraph(encoder).eval()
    ctx = torch.zeros(1, 4, encoder.context_dim)
    model = _to_onnx(enc_graph, (ctx,), ["context"], ["mean", "var"],
                     {"context": {0: "batch", 1: "context"}, "mean": {0: "batch"}, "var": {0: "batch"}},
                     [["batch", latent]] * 2)
    enc_path = folder / "encoder.onnx"
    _finish(model, {**base, **kind_metadata(KIND_ENCODER, context_layout=[("obs", spec.obs_dim),
                                                                          ("action", spec.n_joints), ("reward", 1)])},
            enc_path)
    feeds = {"context": rng.normal(size=(3, 11, encoder.context_dim)).astype(np.float32)}
    errors["encoder"] = _parity(enc_path, enc_graph, feeds)

    pol_graph = LatentPolicyGraph(policy, spec).eval()
    model = _to_onnx(pol_graph, (torch.zeros(1, spec.obs_dim), torch.zeros(1, latent), torch.zeros(1, spec.n_joints)),
                     ["obs", "z", "noise"], ["action", "joint_targets"],
                     {"obs": {0: "batch"}, "z": {0: "batch"}, "noise": {0: "batch"}, "action": {0: "batch"},
                      "joint_targets": {0: "batch"}},
                     [["batch", spec.n_joints]] * 2)
    pol_path = folder / "policy.onnx"
    _finish(model, {**base, **kind_metadata(KIND_LATENT)}, pol_path)
    noise = rng.normal(size=(check_batch, spec.n_joints)).astype(np.float32)
    noise[: check_batch // 2] = 0.0  # half deterministic rows, half sampled
    feeds = {"obs": _random_obs(spec, check_batch, rng),
             "z": rng.normal(size=(check_batch, latent)).astype(np.float32), "noise": noise}
    errors["policy"] = _parity(pol_path, pol_graph, feeds)

    bad = {k: v for k, v in errors.items() if v > PARITY_ATOL}
    if bad:
        raise ExportError(f"{folder}: ONNX errs beyond twice torch's float32 error by more than "
                          f"{PARITY_ATOL}: {bad}")
    return errors
