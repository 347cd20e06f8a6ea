"""Each SMAC loss against a tiny example computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from smrl_train.smac.losses import (
    awac_policy_loss,
    awac_temperature,
    awac_weights,
    bellman_target,
    context_loss,
    critic_loss,
    kl_to_standard_normal,
    online_q_term,
    regression_log_prob,
)
from smrl_train.smac.networks import atanh_clamped, product_of_gaussians, tanh_gaussian_log_prob

torch.set_num_threads(1)


def test_kl_to_standard_normal_by_hand() -> None:
    # KL(N(mu, var) || N(0, 1)) = 0.5 (var + mu^2 - 1 - log var), summed over dims.
    mu = torch.tensor([[1.0, 0.0]])
    var = torch.tensor([[1.0, math.e]])
    expected = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (math.e + 0 - 1 - 1)
    assert kl_to_standard_normal(mu, var).item() == pytest.approx(expected)
    assert kl_to_standard_normal(torch.zeros(3, 5), torch.ones(3, 5)).abs().max().item() == 0.0


def test_context_loss_mse_plus_weighted_mean_kl() -> None:
    pred = torch.tensor([1.0, 2.0])
    reward = torch.tensor([0.0, 0.0])
    mu = torch.tensor([[1.0], [0.0]])  # KLs 0.5 and 0 -> mean over tasks 0.25
    var = torch.ones(2, 1)
    total, mse, kl = context_loss(pred, reward, mu, var, kl_weight=0.1)
    assert mse.item() == pytest.approx(2.5)
    assert kl.item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(2.5 + 0.025)
    # Standardised targets: r = 4 with mean 2, std 2 is target 1; prediction 1 -> zero error.
    _, mse_std, _ = context_loss(torch.tensor([1.0]), torch.tensor([4.0]), mu[:1], var[:1], 0.1, 2.0, 2.0)
    assert mse_std.item() == pytest.approx(0.0)


def test_bellman_target_scales_reward_and_masks_terminals() -> None:
    y = bellman_target(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 10.0]),
                       reward_scale=5.0, gamma=0.9)
    assert y.tolist() == pytest.approx([5 + 9, 10])


def test_critic_loss_sums_member_mses() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert critic_loss(q, torch.tensor([1.0, 1.0])).item() == pytest.approx(0.5 + 6.5)


def test_awac_weights_are_n_times_softmax() -> None:
    w = awac_weights(torch.tensor([0.0, math.log(3.0)]), beta=1.0)
    assert w.tolist() == pytest.approx([0.5, 1.5])
    assert awac_weights(torch.randn(64), 100.0).mean().item() == pytest.approx(1.0)
    # A large temperature flattens the weights towards behaviour cloning.
    assert awac_weights(torch.tensor([0.0, 1.0]), 1e6).tolist() == pytest.approx([1.0, 1.0])


def test_awac_temperature_normalised_by_advantage_spread() -> None:
    adv = torch.tensor([0.0, 2.0])
    assert awac_temperature(adv, 1.0, normalize=False) == 1.0
    assert float(awac_temperature(adv, 1.0, normalize=True)) == pytest.approx(adv.std().item())
    # Scale invariance: multiplying A by 10 leaves the normalised weights unchanged.
    a = torch.randn(32)
    w1 = awac_weights(a, awac_temperature(a, 1.0, True))
    w2 = awac_weights(10 * a, awac_temperature(10 * a, 1.0, True))
    assert torch.allclose(w1, w2, atol=1e-5)


def test_awac_policy_loss_weights_are_constants() -> None:
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    w = torch.tensor([0.5, 1.5], requires_grad=True)
    loss = awac_policy_loss(logp, w)
    assert loss.item() == pytest.approx(1.75)
    loss.backward()
    assert w.grad is None
    assert logp.grad.tolist() == pytest.approx([-0.25, -0.75])


def test_awac_policy_loss_with_a_mask_averages_the_kept_rows_only() -> None:
    logp = torch.tensor([-1.0, -2.0, -4.0], requires_grad=True)
    w = torch.tensor([0.5, 1.5, 2.0])
    loss = awac_policy_loss(logp, w, torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx((0.5 * 1.0 + 2.0 * 4.0) / 2)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.25, 0.0, -1.0])
    assert awac_policy_loss(logp, w, torch.zeros(3)).item() == 0.0


def test_online_q_term_raw_and_normalised() -> None:
    q = torch.tensor([-2.0, -4.0])
    assert online_q_term(q, 1.0, normalize=False).item() == pytest.approx(3.0)
    assert online_q_term(q, 1.0, normalize=True).item() == pytest.approx(1.0)
    assert online_q_term(100 * q, 2.0, normalize=True).item() == pytest.approx(2.0)


def test_product_of_gaussians_precisions_add_and_permutation_invariant() -> None:
    mu = torch.tensor([[[0.0], [2.0]]])
    var = torch.tensor([[[1.0], [1.0]]])
    m, v = product_of_gaussians(mu, var)
    assert v.item() == pytest.approx(0.5) and m.item() == pytest.approx(1.0)
    mu2, var2 = torch.tensor([[[1.0], [4.0]]]), torch.tensor([[[1.0], [3.0]]])
    m2, v2 = product_of_gaussians(mu2, var2)
    assert 1 / v2.item() == pytest.approx(1 / 1 + 1 / 3)
    assert m2.item() == pytest.approx(v2.item() * (1 / 1 + 4 / 3))
    g = torch.Generator().manual_seed(0)
    mu3, var3 = torch.randn(3, 10, 5, generator=g), torch.rand(3, 10, 5, generator=g) + 0.1
    perm = torch.randperm(10, generator=g)
    a, b = product_of_gaussians(mu3, var3), product_of_gaussians(mu3[:, perm], var3[:, perm])
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


def test_product_of_gaussians_clamps_tiny_variances() -> None:
    m, v = product_of_gaussians(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))
    assert torch.isfinite(m).all() and v.item() == pytest.approx(0.5e-7)


def test_tanh_gaussian_log_prob_matches_torch_distributions() -> None:
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    g = torch.Generator().manual_seed(1)
    mean, log_std = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g) * 0.3
    action = torch.rand(8, 3, generator=g) * 1.6 - 0.8
    ref = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform()).log_prob(action).sum(-1)
    ours = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(action))
    assert torch.allclose(ours, ref, atol=1e-4)
    # Saturated dataset actions stay finite thanks to the clamp.
    assert torch.isfinite(tanh_gaussian_log_prob(mean, log_std, atanh_clamped(torch.ones(8, 3)))).all()


def test_clipped_exp_weights_by_hand() -> None:
    from smrl_train.smac.losses import clipped_exp_weights

    adv = torch.tensor([0.0, 1.0, 10.0])
    w = clipped_exp_weights(adv, beta=0.5, weight_max=20.0)
    assert w.tolist() == pytest.approx([1.0, math.exp(2.0), 20.0])  # exp(A / beta), capped


def test_expectile_loss_weights_the_two_sides_by_hand() -> None:
    from smrl_train.smac.losses import expectile_loss

    diff = torch.tensor([2.0, -1.0])  # Q - V: one above, one below
    assert expectile_loss(diff, 0.8).item() == pytest.approx((0.8 * 4 + 0.2 * 1) / 2)
    # For tau > 0.5 the minimiser lies above the mean: an upper expectile of the data.
    q = torch.tensor([0.0, 0.0, 0.0, 1.0])
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    for _ in range(400):
        opt.zero_grad()
        expectile_loss(q - v, 0.9).backward()
        opt.step()
    assert 0.25 < v.item() < 1.0 and v.item() == pytest.approx(0.75, abs=1e-3)  # 0.9 * 1 (1-v) = 0.1 * 3 v


def test_regression_log_prob_trains_the_mean_by_squared_error_and_the_std_by_likelihood() -> None:
    # loss.actor_mean: regression. The mean's gradient is that of -w |tanh(mean) - a|^2 alone,
    # the log-std's that of the likelihood alone; saturated data actions (|a| = 1) pull the mean
    # no harder than any other error of the same size.
    mean = torch.tensor([[0.3, -0.2], [0.0, 1.0]], requires_grad=True)
    log_std = torch.tensor([[-1.0, -0.5], [0.0, -2.0]], requires_grad=True)
    action = torch.tensor([[0.5, -1.0], [0.1, 1.0]])
    score = regression_log_prob(mean, log_std, action, weight=10.0)
    score.sum().backward()
    expected_mean_grad = -10.0 * 2.0 * (torch.tanh(mean) - action) * (1 - torch.tanh(mean) ** 2)
    assert torch.allclose(mean.grad, expected_mean_grad.detach(), atol=1e-6)
    log_std2 = log_std.detach().clone().requires_grad_(True)
    tanh_gaussian_log_prob(mean.detach(), log_std2, atanh_clamped(action)).sum().backward()
    assert torch.allclose(log_std.grad, log_std2.grad)
    # The value: the likelihood minus the weighted squared error.
    expected = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(action)) \
        - 10.0 * (torch.tanh(mean) - action).square().sum(-1)
    assert torch.allclose(score, expected.detach())
