"""ONNX export: torch parity (<= 1e-5) for both exports, metadata, and the torch-free bake."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from smrl_train.export.onnx_export import (
    AdaptedPolicyGraph,
    ExportError,
    export_adapted_policy,
    export_bundle,
    spec_from_env,
)
from smrl_train.robot.model_metadata import REQUIRED_METADATA, DeploymentSpec
from smrl_train.robot.runtime import EncoderRuntime, LatentPolicyRuntime, PolicyRuntime, bake_latent
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.smac.networks import SmacNetworks

from conftest import small_config


@pytest.fixture(scope="module", params=["reach", "push"])
def setup(request):
    env = ArmTaskEnv(small_config(request.param))
    spec = spec_from_env(env)
    torch.manual_seed(0)
    nets = SmacNetworks(spec.obs_dim, spec.n_joints, 5, (32, 32), (32, 32), (32, 32), (16, 16))
    # Non-trivial normalisation, so the test covers it being inside the graph.
    obs_mean = torch.linspace(-0.5, 0.5, spec.obs_dim)
    obs_std = torch.linspace(0.5, 2.0, spec.obs_dim)
    nets.set_statistics(obs_mean, obs_std, spec.n_joints, -1.0, 0.5, True, True)
    return env, spec, nets


def _obs(spec: DeploymentSpec, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, spec.obs_dim)).astype(np.float32)
    obs[:, : spec.n_joints] = rng.uniform(spec.lower - 0.2, spec.upper + 0.2, size=(n, spec.n_joints))
    return obs


def test_adapted_policy_matches_torch_and_the_env_target_rule(setup, tmp_path: Path) -> None:
    env, spec, nets = setup
    z = np.array([0.3, -0.2, 0.1, 0.9, -1.1], dtype=np.float32)
    path = tmp_path / "adapted.onnx"
    export_adapted_policy(nets.policy, z, spec, path)
    obs = _obs(spec, 256, 1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    action, targets = sess.run(["action", "joint_targets"], {"obs": obs})
    with torch.no_grad():
        want_action = nets.policy.act_mean(torch.from_numpy(obs), torch.from_numpy(z).expand(256, 5)).numpy()
    assert np.max(np.abs(action - want_action)) <= 1e-5
    # The targets are exactly what the env commands for that action (envs.action_to_targets).
    q = obs[:, : spec.n_joints].astype(np.float64)
    want_targets = np.clip(q + want_action * spec.max_step, spec.lower, spec.upper)
    assert np.max(np.abs(targets - want_targets)) <= 1e-5
    # ... and the runtime gives the same at batch 1.
    runtime = PolicyRuntime(path)
    for i in range(5):
        np.testing.assert_allclose(runtime.act(obs[i]), targets[i], atol=1e-6)


def test_metadata_describes_the_deployment(setup, tmp_path: Path) -> None:
    env, spec, nets = setup
    path = tmp_path / "adapted.onnx"
    export_adapted_policy(nets.policy, np.zeros(5), spec, path)
    info = PolicyRuntime(path).info
    assert set(REQUIRED_METADATA) <= set(info.metadata)
    assert info.joint_names == env.arm.joint_names
    assert info.observation_layout == tuple(env.observation_layout)
    assert info.action_type == "joint_position_absolute" and info.action_output == "joint_targets"
    np.testing.assert_allclose(info.max_step, env.max_step)
    assert info.control_hz == env.cfg.env.control_hz and info.task_family == env.family
    assert info.arm == env.arm.name and info.urdf_sha256 == env.arm.urdf_sha256
    assert info.z == (0.0,) * 5 and info.latent_dim == 5
    assert json.loads(info.metadata["smrl.joint_lower"]) == pytest.approx(env.arm.lower.tolist())


def test_bundle_matches_torch_and_bakes_into_the_same_adapted_policy(setup, tmp_path: Path) -> None:
    env, spec, nets = setup
    errors = export_bundle(nets.encoder, nets.policy, spec, tmp_path / "bundle")
    assert max(errors.values()) <= 1e-5
    rng = np.random.default_rng(2)
    # Encoder: a context of 37 (s, a, r) rows -> posterior, as torch computes it.
    context = rng.normal(size=(37, nets.encoder.context_dim)).astype(np.float32)
    mean, var = EncoderRuntime(tmp_path / "bundle" / "encoder.onnx").posterior(context)
    with torch.no_grad():
        t_mean, t_var = nets.encoder(torch.from_numpy(context)[None])
    assert np.max(np.abs(mean - t_mean[0].numpy())) <= 1e-5
    assert np.max(np.abs(var - t_var[0].numpy())) <= 1e-5
    assert np.all(var > 0)
    # Latent policy with z as input.
    latent = LatentPolicyRuntime(tmp_path / "bundle" / "policy.onnx")
    obs = _obs(spec, 20, 3)
    z = mean.astype(np.float32)
    with torch.no_grad():
        want = AdaptedPolicyGraph(nets.policy, torch.from_numpy(z), spec)(torch.from_numpy(obs))
    for i in range(20):
        action, targets = latent.act(obs[i], z)
        assert np.max(np.abs(action - want[0][i].numpy())) <= 1e-5
        assert np.max(np.abs(targets - want[1][i].numpy())) <= 1e-5
    # With noise: a sample of the tanh-Gaussian policy, tanh(mean + std * noise), as SMAC
    # collects; its targets from the same head (q + action * max_step, within the limits).
    noise = rng.normal(size=(20, spec.n_joints)).astype(np.float32)
    with torch.no_grad():
        m, log_std = nets.policy(torch.from_numpy(obs), torch.from_numpy(np.repeat(z[None], 20, 0)))
        sampled = torch.tanh(m + log_std.exp() * torch.from_numpy(noise)).numpy()
    for i in range(20):
        action, targets = latent.act(obs[i], z, noise[i])
        assert np.max(np.abs(action - sampled[i])) <= 1e-5
        want_targets = np.clip(obs[i, :spec.n_joints] + sampled[i] * spec.max_step, spec.lower, spec.upper)
        assert np.max(np.abs(targets - want_targets)) <= 1e-4
    assert np.max(np.abs(sampled - want[0].numpy())) > 1e-3  # the noise did change the actions
    # Torch-free adaptation: bake the inferred z into an adapted policy.
    baked = PolicyRuntime(bake_latent(tmp_path / "bundle" / "policy.onnx", z, tmp_path / "baked.onnx"))
    assert baked.info.kind == "adapted_policy" and baked.info.z == pytest.approx(tuple(z.tolist()))
    for i in range(20):
        assert np.max(np.abs(baked.act(obs[i]) - want[1][i].numpy())) <= 1e-5


def test_linear_gaussian_encoder_exports_with_torch_parity(setup, tmp_path: Path) -> None:
    """The full-covariance aggregation runs in the ONNX graph (unrolled Cholesky) as in torch."""
    _, spec, _ = setup
    torch.manual_seed(1)
    nets = SmacNetworks(spec.obs_dim, spec.n_joints, 5, (32, 32), (32, 32), (32, 32), (16, 16),
                        encoder_aggregation="linear_gaussian", encoder_rank=2)
    errors = export_bundle(nets.encoder, nets.policy, spec, tmp_path / "bundle")
    assert errors["encoder"] <= 1e-5
    context = np.random.default_rng(4).normal(size=(120, nets.encoder.context_dim)).astype(np.float32)
    mean, var = EncoderRuntime(tmp_path / "bundle" / "encoder.onnx").posterior(context)
    with torch.no_grad():
        t_mean, t_var = nets.encoder(torch.from_numpy(context)[None])
    assert np.max(np.abs(mean - t_mean[0].numpy())) <= 1e-5 and np.max(np.abs(var - t_var[0].numpy())) <= 1e-5


def _ill_conditioned_encoder(spec, scale: float) -> SmacNetworks:
    """Nearly parallel evidence: every context row's factor close to one large vector."""
    torch.manual_seed(1)
    nets = SmacNetworks(spec.obs_dim, spec.n_joints, 5, (32, 32), (32, 32), (32, 32), (16, 16),
                        encoder_aggregation="linear_gaussian", encoder_rank=2)
    with torch.no_grad():
        last = nets.encoder.net[-1]
        last.weight.mul_(0.05)
        last.bias.copy_(torch.linspace(-1, 1, last.bias.numel()) * scale)
    return nets


@pytest.mark.parametrize("scale", [30.0, 300.0])
def test_a_badly_conditioned_posterior_is_computed_and_exported_accurately(setup, tmp_path: Path,
                                                                           scale: float) -> None:
    """A precision so badly conditioned that float32 rounding of its sum is not positive definite
    (Cholesky failed on push exploration contexts), or that a float32 solve errs by 1e-3 (a
    bundle was refused by train.launch.py): the posterior is computed in float64, in torch and
    in the ONNX graph alike."""
    _, spec, _ = setup
    nets = _ill_conditioned_encoder(spec, scale)
    context = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 200, nets.encoder.context_dim))
                               .astype(np.float32))
    with torch.no_grad():
        out = nets.encoder.net(nets.encoder.normalizer(context))
        factor = out[..., :10].reshape(3, 200, 5, 2)
        float32_precision = torch.eye(5) + torch.einsum("tcik,tcjk->tij", factor, factor)
        if scale > 100:
            with pytest.raises(torch.linalg.LinAlgError):
                torch.linalg.cholesky(float32_precision)
        mean, var = nets.encoder(context)
        ref_mean, ref_var = copy.deepcopy(nets.encoder).double()(context.double())
    assert np.allclose(mean.numpy(), ref_mean.numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(var.numpy(), ref_var.numpy(), rtol=1e-5, atol=1e-12) and bool((var > 0).all())
    errors = export_bundle(nets.encoder, nets.policy, spec, tmp_path / "bundle")
    assert errors["encoder"] <= 1e-5
    onnx_mean, onnx_var = EncoderRuntime(tmp_path / "bundle" / "encoder.onnx").posterior(context[0].numpy())
    assert np.allclose(onnx_mean, ref_mean[0].numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(onnx_var, ref_var[0].numpy(), rtol=1e-5, atol=1e-12)


def test_an_export_that_computes_something_else_is_refused(setup, tmp_path: Path, monkeypatch) -> None:
    """The comparison still catches a wrong graph: a posterior whose ONNX mean is off by 1e-3."""
    import smrl_train.smac.networks as networks

    _, spec, _ = setup
    torch.manual_seed(1)
    nets = SmacNetworks(spec.obs_dim, spec.n_joints, 5, (32, 32), (32, 32), (32, 32), (16, 16),
                        encoder_aggregation="linear_gaussian", encoder_rank=2)
    exact = networks._unrolled_cholesky_posterior
    monkeypatch.setattr(networks, "_unrolled_cholesky_posterior",
                        lambda precision, information: (exact(precision, information)[0] + 1e-3,
                                                        exact(precision, information)[1]))
    with pytest.raises(ExportError, match="ONNX errs beyond twice torch's float32 error"):
        export_bundle(nets.encoder, nets.policy, spec, tmp_path / "bundle")


def test_export_refuses_a_spec_that_does_not_fit_the_policy(setup, tmp_path: Path) -> None:
    _, spec, nets = setup
    with pytest.raises(ValueError, match="z has 3 entries"):
        export_adapted_policy(nets.policy, np.zeros(3), spec, tmp_path / "x.onnx")
    import dataclasses

    bad = dataclasses.replace(spec, observation_layout=spec.observation_layout[:-1])
    with pytest.raises(ValueError, match="sums to"):
        export_adapted_policy(nets.policy, np.zeros(5), bad, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_check_prints_the_metadata(setup, tmp_path: Path, capsys) -> None:
    from smrl_train.cli import main

    _, spec, nets = setup
    export_adapted_policy(nets.policy, np.zeros(5), spec, tmp_path / "p.onnx")
    assert main(["export", "check", str(tmp_path / "p.onnx")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "adapted_policy" and out["joint_names"] == list(spec.joint_names)


def test_cli_exports_a_training_run(tmp_path: Path, capsys) -> None:
    from smrl_train.cli import main
    from smrl_train.config_schema import to_dict
    from smrl_train.smac.checkpoint import save_checkpoint
    from smrl_train.smac.config import SmacConfig
    from smrl_train.smac.trainer import SmacTrainer

    from conftest import CONFIGS

    env = ArmTaskEnv(small_config("reach"))
    spec = spec_from_env(env)
    cfg = SmacConfig()
    trainer = SmacTrainer(cfg, spec.obs_dim, spec.n_joints)
    run = tmp_path / "run"
    save_checkpoint(run, {"trainer": trainer.state_dict()},
                    {"smac": to_dict(cfg), "obs_dim": spec.obs_dim, "act_dim": spec.n_joints, "algo": "smac"})
    z = "0.1,0.2,-0.3,0.0,0.5"
    assert main(["export", "policy", "--checkpoint", str(run), "--config", str(CONFIGS["reach"]),
                 "--z", z, "--out", str(tmp_path / "p.onnx")]) == 0
    assert main(["export", "bundle", "--checkpoint", str(run), "--config", str(CONFIGS["reach"]),
                 "--out", str(tmp_path / "bundle")]) == 0
    assert "ONNX error beyond twice torch's float32 error" in capsys.readouterr().out
    info = PolicyRuntime(tmp_path / "p.onnx").info
    assert info.z == pytest.approx((0.1, 0.2, -0.3, 0.0, 0.5))
    assert (tmp_path / "bundle" / "encoder.onnx").is_file() and (tmp_path / "bundle" / "policy.onnx").is_file()
    assert not (tmp_path / "bundle" / "task_latents.json").exists()  # no --data: no offline contexts
    # With the offline data: per-task posteriors for posterior-z exploration, reproducibly.
    from smrl_train.data.generate import generate_dataset
    from smrl_train.robot.task_latents import TaskLatents

    generate_dataset(small_config("reach", n_train=3, n_test=1, episode_length=20), tmp_path / "data", progress=False)
    for out in ("b1", "b2"):
        assert main(["export", "bundle", "--checkpoint", str(run), "--config", str(CONFIGS["reach"]),
                     "--data", str(tmp_path / "data"), "--out", str(tmp_path / out)]) == 0
    assert "task_latents.json" in capsys.readouterr().out
    latents = TaskLatents.load(tmp_path / "b1" / "task_latents.json")
    assert sorted(latents.mean) == [0, 1, 2] and latents.latent_dim == cfg.network.latent_dim
    assert all(m.shape == (4, latents.latent_dim) and np.all(latents.var[t] > 0) for t, m in latents.mean.items())
    assert not np.allclose(latents.mean[0], latents.mean[1])  # each task's own context
    assert (tmp_path / "b1" / "task_latents.json").read_text() == (tmp_path / "b2" / "task_latents.json").read_text()


def test_the_policys_ignored_inputs_stay_ignored_on_the_robot(setup, tmp_path: Path) -> None:
    # network.policy_ignores travels inside policy.onnx: the robot side feeds the whole
    # observation, and the joint velocities move neither the action nor the joint targets.
    env, spec, nets = setup
    masked = copy.deepcopy(nets)
    n = spec.n_joints
    masked.ignore_policy_inputs(range(n, 2 * n))  # joint_vel, as observation_layout places it
    export_bundle(masked.encoder, masked.policy, spec, tmp_path / "bundle")
    latent = LatentPolicyRuntime(tmp_path / "bundle" / "policy.onnx")
    obs = _obs(spec, 10, 4)
    z = np.random.default_rng(5).normal(size=5).astype(np.float32)
    for i in range(10):
        moved = obs[i].copy()
        moved[n: 2 * n] += 3.0
        assert np.array_equal(latent.act(obs[i], z)[0], latent.act(moved, z)[0])
        moved[0] += 0.3
        assert not np.allclose(latent.act(obs[i], z)[0], latent.act(moved, z)[0])
