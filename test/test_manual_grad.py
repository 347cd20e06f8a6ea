"""Hand-derived gradients (smrl_train/smac/manual_grad.py) against autograd.

The manual path is the trainer's default; the autograd path (``compute_losses`` + backward) is
the readable reference. Same seed, same batch: the gradients of every parameter must agree to
float32 round-off, in both variants and both phases, and so must the parameters after several
updates.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smac_helpers import ACT, OBS, random_batch, tiny_config
from smrl_train.smac import manual_grad
from smrl_train.smac.trainer import SmacTrainer

torch.set_num_threads(1)


def _pair(variant: str, phase: str, **network: object) -> tuple[SmacTrainer, SmacTrainer]:
    cfg = tiny_config(variant)
    if network:
        cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, **network))
    manual = SmacTrainer(cfg, OBS, ACT, seed=5, manual_gradients=True)
    auto = SmacTrainer(cfg, OBS, ACT, seed=5, manual_gradients=False)
    for tr in (manual, auto):
        tr.set_phase(phase)
    return manual, auto


@pytest.mark.parametrize("variant", ["paper", "improved"])
@pytest.mark.parametrize("phase", ["offline", "online"])
def test_manual_gradients_equal_autograd(variant: str, phase: str) -> None:
    manual, auto = _pair(variant, phase)
    for step in range(3):
        batch = random_batch(seed=step)
        m, a = manual.update(batch), auto.update(batch)
        assert m.keys() == a.keys()
        for k in m:
            assert m[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
        for (name, p), (_, q) in zip(manual.nets.named_parameters(), auto.nets.named_parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if q.grad is not None:
                assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), (step, name)
    trained = [n for n, p in auto.nets.named_parameters() if p.grad is not None]
    # Every network the phase trains got a gradient (paper online: not encoder and decoder).
    for prefix in ("policy.", "qf."):
        assert any(n.startswith(prefix) for n in trained)
    assert any(n.startswith("encoder.") for n in trained) == (variant == "improved" or phase == "offline")
    for (name, p), (_, q) in zip(manual.nets.state_dict().items(), auto.nets.state_dict().items()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), name


def test_manual_gradients_cover_a_single_decoder_and_a_deeper_encoder() -> None:
    manual, auto = _pair("improved", "offline", decoder_ensemble=1, encoder_hidden=(16, 8), q_hidden=(8, 8, 8))
    batch = random_batch(seed=3)
    manual.update(batch)
    auto.update(batch)
    compared = 0
    for (name, p), (_, q) in zip(manual.nets.named_parameters(), auto.nets.named_parameters()):
        assert (p.grad is None) == (q.grad is None) == name.startswith("qf_target."), name
        if q.grad is not None:
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
            compared += 1
    assert compared == sum(1 for n, _ in auto.nets.named_parameters() if not n.startswith("qf_target."))


def test_layer_backward_matches_autograd_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    dims = (4, 6, 5, 3)
    plain = [(torch.randn(o, i, dtype=torch.float64, generator=g, requires_grad=True),
              torch.randn(o, dtype=torch.float64, generator=g, requires_grad=True)) for i, o in zip(dims, dims[1:])]
    ens = [(torch.randn(2, i, o, dtype=torch.float64, generator=g, requires_grad=True),
            torch.randn(2, 1, o, dtype=torch.float64, generator=g, requires_grad=True))
           for i, o in zip((4, 6, 5), (6, 5, 1))]
    seed_grad = torch.randn(7, 3, dtype=torch.float64, generator=g)
    out, inputs = manual_grad.mlp_forward([(w.detach(), b.detach()) for w, b in plain], x.detach())
    grads, gx = manual_grad.mlp_backward([(w.detach(), b.detach()) for w, b in plain], inputs, seed_grad,
                                         input_grad=True)
    h = x
    for i, (w, b) in enumerate(plain):
        h = h @ w.t() + b
        h = h.relu() if i < len(plain) - 1 else h
    ref = torch.autograd.grad(h, [x, *[t for pair in plain for t in pair]], seed_grad)
    assert torch.allclose(out.double(), h.detach(), atol=1e-5)  # mlp_forward hands back float32
    for got, want in zip([gx, *[t for pair in grads for t in pair]], ref):
        assert torch.allclose(got.double(), want, atol=1e-5)

    seed_e = torch.randn(2, 7, dtype=torch.float64, generator=g)
    q, e_inputs = manual_grad.ensemble_forward([(w.detach(), b.detach()) for w, b in ens], x.detach())
    e_grads, e_gx = manual_grad.ensemble_backward([(w.detach(), b.detach()) for w, b in ens], e_inputs, seed_e,
                                                  input_cols=slice(1, 3))
    h = x.unsqueeze(0).expand(2, 7, 4)
    for i, (w, b) in enumerate(ens):
        h = torch.baddbmm(b, h, w)
        h = h.relu() if i < len(ens) - 1 else h
    ref = torch.autograd.grad(h.squeeze(-1), [x, *[t for pair in ens for t in pair]], seed_e)
    assert torch.allclose(q.double(), h.squeeze(-1).detach(), atol=1e-5)
    assert torch.allclose(e_gx.double(), ref[0][:, 1:3], atol=1e-5)
    for got, want in zip([t for pair in e_grads for t in pair], ref[1:]):
        assert torch.allclose(got.double(), want, atol=1e-5)


@pytest.mark.parametrize("phase", ["offline", "online"])
def test_manual_bfloat16_gradients_follow_float32(phase: str) -> None:
    cfg = tiny_config()
    half = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, compute_dtype="bfloat16"))
    full_tr, half_tr = SmacTrainer(cfg, OBS, ACT, seed=4), SmacTrainer(half, OBS, ACT, seed=4)
    assert full_tr.manual_gradients and half_tr.manual_gradients
    for tr in (full_tr, half_tr):
        tr.set_phase(phase)
        tr.update(random_batch(seed=9))

    def flat(tr: SmacTrainer) -> torch.Tensor:
        return torch.cat([p.grad.flatten() for p in tr.nets.parameters() if p.grad is not None])

    a, b = flat(full_tr), flat(half_tr)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert not torch.equal(a, b)  # bfloat16 really ran
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
               for p in half_tr.nets.parameters())


def test_mean_pool_encoder_falls_back_to_autograd() -> None:
    cfg = tiny_config()
    mean_cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, encoder_aggregation="mean"))
    assert manual_grad.supports(cfg) and not manual_grad.supports(mean_cfg)
    assert not SmacTrainer(mean_cfg, OBS, ACT).manual_gradients
    with pytest.raises(ValueError, match="product-of-Gaussians"):
        SmacTrainer(mean_cfg, OBS, ACT, manual_gradients=True)


def test_lean_fused_adam_steps_exactly_like_torch_adam() -> None:
    from smrl_train.smac.trainer import _LeanFusedAdam

    g = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(4, 3, generator=g)) for _ in range(3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = _LeanFusedAdam(ours, 1e-2), torch.optim.Adam(ref, lr=1e-2, fused=True)
    for step in range(5):
        for p, q in zip(ours, ref):
            grad = torch.randn(4, 3, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        if step == 2:  # a parameter without a gradient is skipped (its step count stays)
            ours[1].grad = ref[1].grad = None
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))
    assert [a.state[p]["step"].item() for p in ours] == [b.state[q]["step"].item() for q in ref] == [5, 4, 5]
    assert a.state_dict()["param_groups"] == b.state_dict()["param_groups"]


def test_allocator_thresholds_are_accepted_once() -> None:
    from smrl_train.smac import allocator

    assert allocator.retain_freed_memory()  # glibc accepted both thresholds
    assert allocator._done and allocator.retain_freed_memory()  # and a second call is a no-op
