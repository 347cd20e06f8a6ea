"""Networks: fused twin critic vs a plain reference, policy details, normalisation buffers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smrl_train.smac.networks import ContextEncoder, EnsembleQ, RewardDecoder, SmacNetworks, TanhGaussianPolicy

torch.set_num_threads(1)


def test_ensemble_q_equals_independent_mlps() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(obs_dim=4, act_dim=2, latent_dim=3, hidden=(16, 8))
    obs, act, z = torch.randn(7, 4), torch.randn(7, 2), torch.randn(7, 3)
    out = q(obs, act, z)
    assert out.shape == (2, 7)
    x = torch.cat([obs, act, z], -1)
    for k in range(2):  # slow, obvious reference: one member at a time with F.linear
        h = x
        for layer in q.layers:
            h = torch.relu(F.linear(h, layer.weight[k].T, layer.bias[k, 0]))
        ref = F.linear(h, q.out.weight[k].T, q.out.bias[k, 0]).squeeze(-1)
        assert torch.allclose(out[k], ref, atol=1e-5)
    assert not torch.allclose(out[0], out[1])  # members initialised independently


def test_ensemble_q_gradients_match_reference() -> None:
    torch.manual_seed(1)
    q = EnsembleQ(3, 1, 2, (8,))
    obs, act, z = torch.randn(5, 3), torch.randn(5, 1), torch.randn(5, 2)
    q(obs, act, z).square().sum().backward()
    w = q.layers[0].weight.detach().clone().requires_grad_(True)
    x = torch.cat([obs, act, z], -1)
    h = torch.relu(torch.einsum("ni,eio->eno", x, w) + q.layers[0].bias.detach())
    out = (torch.einsum("eni,eio->eno", h, q.out.weight.detach()) + q.out.bias.detach()).squeeze(-1)
    out.square().sum().backward()
    assert torch.allclose(q.layers[0].weight.grad, w.grad, atol=1e-5)


def test_policy_detaches_z_and_has_small_last_layer_init() -> None:
    torch.manual_seed(0)
    pi = TanhGaussianPolicy(4, 2, 3, (32, 32))
    assert pi.mean_head.weight.abs().max() <= 1e-3 and pi.log_std_head.bias.abs().max() <= 1e-3
    z = torch.randn(5, 3, requires_grad=True)
    mean, log_std = pi(torch.randn(5, 4), z)
    (mean.sum() + log_std.sum()).backward()
    assert z.grad is None  # z never receives the actor's gradient


def test_policy_log_std_clamped_and_act_mean_deterministic() -> None:
    torch.manual_seed(0)
    pi = TanhGaussianPolicy(2, 2, 1, (8,))
    with torch.no_grad():
        pi.log_std_head.bias.fill_(50.0)
    _, log_std = pi(torch.randn(3, 2), torch.zeros(3, 1))
    assert log_std.max().item() == 2.0
    obs, z = torch.randn(3, 2), torch.randn(3, 1)
    a = pi.act_mean(obs, z)
    assert torch.equal(a, pi.act_mean(obs, z)) and a.abs().max() < 1
    assert torch.allclose(a, torch.tanh(pi(obs, z)[0]))


def test_normalizer_is_a_buffer_applied_inside_the_policy() -> None:
    torch.manual_seed(0)
    pi = TanhGaussianPolicy(3, 1, 2, (8,))
    obs, z = torch.randn(4, 3), torch.randn(4, 2)
    raw = pi(obs, z)[0]
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    pi.normalizer.set(mean, std)
    assert torch.allclose(pi(obs * std + mean, z)[0], raw, atol=1e-5)
    assert "normalizer.mean" in pi.state_dict() and "normalizer.std" in pi.state_dict()


def test_encoder_shapes_and_positive_variance() -> None:
    enc = ContextEncoder(obs_dim=4, act_dim=2, latent_dim=5, hidden=(16,))
    mu, var = enc(torch.randn(3, 10, 7))
    assert mu.shape == (3, 5) and var.shape == (3, 5) and (var > 0).all()
    # More context, more precision: doubling the same context halves the variance.
    ctx = torch.randn(1, 10, 7)
    _, v1 = enc(ctx)
    _, v2 = enc(torch.cat([ctx, ctx], 1))
    assert torch.allclose(v2, v1 / 2, rtol=1e-4)


def test_decoder_maps_standardised_output_back_to_reward_units() -> None:
    dec = RewardDecoder(3, 1, 2, (8,))
    o, a, z = torch.randn(4, 3), torch.randn(4, 1), torch.randn(4, 2)
    s = dec.members(o, a, z)
    assert s.shape == (1, 4)
    dec.reward_mean.fill_(-1.0)
    dec.reward_std.fill_(3.0)
    assert torch.allclose(dec(o, a, z), s[0] * 3.0 - 1.0)
    mean, std = dec.mean_std(o, a, z)
    assert torch.allclose(mean, s[0] * 3.0 - 1.0) and torch.equal(std, torch.zeros(4))


def test_decoder_ensemble_members_are_independent_and_mean_std_hand_checked() -> None:
    torch.manual_seed(0)
    dec = RewardDecoder(3, 1, 2, (8, 8), ensemble=4)
    o, a, z = torch.randn(6, 3), torch.randn(6, 1), torch.randn(6, 2)
    m = dec.members(o, a, z)
    assert m.shape == (4, 6)
    # Each member is its own MLP: member k equals a plain forward pass through layer k's weights.
    h = torch.cat([o, a, z], -1)
    for layer in dec.layers:
        h = torch.relu(h @ layer.weight[2] + layer.bias[2])
    assert torch.allclose(m[2], (h @ dec.out.weight[2] + dec.out.bias[2]).squeeze(-1), atol=1e-6)
    dec.reward_mean.fill_(0.5)
    dec.reward_std.fill_(2.0)
    mean, std = dec.mean_std(o, a, z)
    assert torch.allclose(mean, m.mean(0) * 2.0 + 0.5, atol=1e-6)
    assert torch.allclose(std, (m * 2.0).std(0, correction=0), atol=1e-6)
    assert torch.allclose(dec(o, a, z), mean, atol=1e-6)
    assert (std > 0).all()  # independently initialised members disagree


def test_target_critic_starts_as_a_copy_without_gradients() -> None:
    nets = SmacNetworks(3, 2, 5, (8,), (8,), (8,), (8,))
    for p, t in zip(nets.qf.parameters(), nets.qf_target.parameters()):
        assert torch.equal(p, t) and not t.requires_grad


def test_mean_pool_encoder_is_permutation_invariant() -> None:
    from smrl_train.smac.networks import MeanPoolEncoder

    torch.manual_seed(0)
    enc = MeanPoolEncoder(obs_dim=4, act_dim=2, latent_dim=3, hidden=(16, 16))
    ctx = torch.randn(2, 9, 7)
    mu, var = enc(ctx)
    mu2, var2 = enc(ctx[:, torch.randperm(9)])
    assert mu.shape == (2, 3) and (var > 0).all()
    assert torch.allclose(mu, mu2, atol=1e-6) and torch.allclose(var, var2, atol=1e-6)


def test_linear_gaussian_encoder_is_bayesian_linear_regression() -> None:
    from smrl_train.smac.networks import LinearGaussianEncoder

    torch.manual_seed(3)
    L = 4
    enc = LinearGaussianEncoder(obs_dim=3, act_dim=1, latent_dim=L, hidden=(8,))  # context dim 5 = L + 1
    enc.net = torch.nn.Identity()  # rows are read as (U_n, y_n) directly
    rows = torch.randn(2, 9, L + 1)
    mean, var = enc(rows)
    for t in range(2):
        u, y = rows[t, :, :L], rows[t, :, L]
        precision = torch.eye(L) + u.T @ u
        assert torch.allclose(mean[t], torch.linalg.solve(precision, u.T @ y), atol=1e-5)
        assert torch.allclose(var[t], torch.linalg.inv(precision).diagonal(), atol=1e-5)
    # Permutation-invariant, and more evidence never widens the posterior.
    perm = torch.randperm(9)
    assert torch.allclose(enc(rows[:, perm])[0], mean, atol=1e-5)
    assert (enc(rows[:, :4])[1] >= var - 1e-6).all()


def test_linear_gaussian_encoder_can_express_trilateration() -> None:
    """With each distance reading as one linear equation in (g, |g|^2), the posterior mean is
    least-squares trilateration: what a product of diagonal Gaussians cannot represent."""
    from smrl_train.smac.networks import LinearGaussianEncoder

    g = torch.tensor([0.4, -0.1, 0.3])
    p = torch.rand(50, 3) * 0.6 - 0.3 + torch.tensor([0.45, 0.0, 0.3])  # points around the workspace
    d = (p - g).norm(dim=1)
    scale = 1e3  # readings much sharper than the N(0, I) prior
    enc = LinearGaussianEncoder(obs_dim=3, act_dim=1, latent_dim=4, hidden=(8,))
    enc.net = torch.nn.Identity()
    rows = torch.cat([scale * torch.cat([-2 * p, torch.ones(50, 1)], 1),
                      (scale * (d.square() - p.square().sum(1))).unsqueeze(1)], 1)
    mean, _ = enc(rows.unsqueeze(0))
    assert torch.allclose(mean[0, :3], g, atol=1e-3)
    assert mean[0, 3].item() == pytest.approx(float(g.square().sum()), abs=1e-3)


def test_unrolled_posterior_for_onnx_equals_the_linalg_one() -> None:
    from smrl_train.smac.networks import _unrolled_cholesky_posterior, gaussian_posterior

    a = torch.randn(6, 5, 5, generator=torch.Generator().manual_seed(0))
    precision, information = a @ a.transpose(1, 2) + torch.eye(5), torch.randn(6, 5)
    for x, y in zip(gaussian_posterior(precision, information), _unrolled_cholesky_posterior(precision, information)):
        assert torch.allclose(x, y, atol=1e-5)


def test_policy_ignores_masked_observation_entries_and_keeps_the_mask_in_its_state() -> None:
    # network.policy_ignores: the masked entries (say the joint velocities) cannot move the
    # action; the others still do; the mask travels in the state dict (checkpoints, ONNX).
    torch.manual_seed(0)
    nets = SmacNetworks(6, 2, 3, (16,), (16, 16), (16,), (8,))
    nets.ignore_policy_inputs([2, 3])
    obs, z = torch.randn(5, 6), torch.randn(5, 3)
    moved = obs.clone()
    moved[:, 2:4] += 10.0
    assert torch.equal(nets.policy.act_mean(obs, z), nets.policy.act_mean(moved, z))
    moved[:, 0] += 1.0
    assert not torch.allclose(nets.policy.act_mean(obs, z), nets.policy.act_mean(moved, z))
    copy = SmacNetworks(6, 2, 3, (16,), (16, 16), (16,), (8,))
    copy.load_state_dict(nets.state_dict())
    assert copy.policy.input_mask.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # A checkpoint written before the mask existed loads reading every input.
    old = {k: v for k, v in nets.state_dict().items() if k != "policy.input_mask"}
    copy.load_state_dict(old)
    assert copy.policy.input_mask.tolist() == [1.0] * 6
