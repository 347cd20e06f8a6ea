"""SMAC update throughput: our fused trainer against a plain eager implementation, same run.

The plain version is the update written the obvious way (rlkit's structure): one module per
network (Q1, Q2, two targets), one forward pass per use (Q(s, a) again for the advantage, a
separate policy pass for the sampled action), one backward per loss, one Adam per network
with the default per-parameter CPU implementation, and a Python loop for the Polyak update.
It computes the same losses from the same parameters (online: all gradients before any step).

    python bench/train_throughput.py [--threads 2] [--repeats 5] [--seconds 3]

Prints updates/s (median over repeats) at the paper's shapes (meta-batch 4 x RL batch 128,
context 64, encoder 200x3, policy/Q 300x3, decoder 64x2, latent 5) and at the demo shapes,
offline and online phase, for the plain float32 version and five ways of running our trainer
(``smac.gradients``): autograd (the default), ``torch.compile`` of the same update
(``compiled``; compiled before timing starts) and the hand-derived gradients of
``smrl_train/smac/manual_grad.py`` (``manual``), autograd and manual also with bfloat16 matmuls
(``network.compute_dtype: bfloat16``), with every ratio to plain. Last, the default recipe's
update trained by 1 and by 2 processes (data-parallel, as under torchrun) at the same global
meta-batch (``--data-parallel-only``: that part alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch.nn.functional as F  # noqa: E402

from smrl_train.smac.buffers import MetaBatch  # noqa: E402
from smrl_train.smac.config import SmacConfig, paper_preset  # noqa: E402
from smrl_train.smac.losses import (  # noqa: E402
    awac_policy_loss,
    awac_temperature,
    awac_weights,
    bellman_target,
    context_loss,
    online_q_term,
)
from smrl_train.smac.networks import atanh_clamped, product_of_gaussians, tanh_gaussian_log_prob  # noqa: E402
from smrl_train.smac.trainer import SmacTrainer  # noqa: E402


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """A plain ReLU MLP (the reference keeps PyTorch's default, out-of-place ReLU)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


class PlainSmacUpdate:
    """The same SMAC update, written plainly (see the module docstring)."""

    def __init__(self, cfg: SmacConfig, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        n, L = cfg.network, cfg.network.latent_dim
        self.cfg, self.L = cfg, L
        self.encoder = mlp(obs_dim + act_dim + 1, n.encoder_hidden, 2 * L)
        self.policy_trunk = mlp(obs_dim + L, n.policy_hidden[:-1], n.policy_hidden[-1])
        self.policy_mean = nn.Linear(n.policy_hidden[-1], act_dim)
        self.policy_log_std = nn.Linear(n.policy_hidden[-1], act_dim)
        qin = obs_dim + act_dim + L
        self.qf1, self.qf2 = mlp(qin, n.q_hidden, 1), mlp(qin, n.q_hidden, 1)
        self.tqf1, self.tqf2 = mlp(qin, n.q_hidden, 1), mlp(qin, n.q_hidden, 1)
        self.tqf1.load_state_dict(self.qf1.state_dict())
        self.tqf2.load_state_dict(self.qf2.state_dict())
        # One module per decoder of the ensemble (our improved recipe has 5; the paper 1).
        self.decoders = [mlp(qin, n.decoder_hidden, 1) for _ in range(int(n.decoder_ensemble or 1))]
        lr = cfg.loss
        policy_params = [*self.policy_trunk.parameters(), *self.policy_mean.parameters(),
                         *self.policy_log_std.parameters()]
        decoder_params = [p for d in self.decoders for p in d.parameters()]
        self.opt_ctx = torch.optim.Adam([*self.encoder.parameters(), *decoder_params], lr=lr.context_lr)
        self.opt_q1 = torch.optim.Adam(self.qf1.parameters(), lr=lr.q_lr)
        self.opt_q2 = torch.optim.Adam(self.qf2.parameters(), lr=lr.q_lr)
        self.policy_params = policy_params
        self.opt_pi = torch.optim.Adam(policy_params, lr=lr.policy_lr)
        self.online = False

    def _policy(self, obs: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.policy_trunk(torch.cat([obs, z.detach()], -1)))
        return self.policy_mean(h), self.policy_log_std(h).clamp(-20, 2)

    def _q(self, net: nn.Module, obs: Tensor, act: Tensor, z: Tensor) -> Tensor:
        return net(torch.cat([obs, act, z], -1)).squeeze(-1)

    def update(self, b: MetaBatch) -> float:
        c = self.cfg.loss
        B = b.batch_size
        trains_ctx = not self.online or bool(self.cfg.online.train_encoder)
        with torch.set_grad_enabled(trains_ctx):
            out = self.encoder(b.context)
        mu, var = product_of_gaussians(out[..., : self.L], F.softplus(out[..., self.L:]))
        z_task = mu + var.sqrt() * torch.randn_like(mu)
        z = z_task.repeat_interleave(B, 0)
        z2 = (mu + var.sqrt() * torch.randn_like(mu)).detach().repeat_interleave(B, 0)
        zd = z.detach()
        if trains_ctx:
            x = torch.cat([b.obs, b.action, z], -1)
            pred = torch.stack([d(x).squeeze(-1) for d in self.decoders])
            l_ctx, _, _ = context_loss(pred, b.reward, mu, var, float(c.kl_weight))
        q1 = self._q(self.qf1, b.obs, b.action, zd)
        q2 = self._q(self.qf2, b.obs, b.action, zd)
        with torch.no_grad():
            m2, s2 = self._policy(b.next_obs, z2)
            a2 = torch.tanh(m2 + s2.exp() * torch.randn_like(m2))
            qn = torch.min(self._q(self.tqf1, b.next_obs, a2, zd), self._q(self.tqf2, b.next_obs, a2, zd))
            y = bellman_target(b.reward, b.terminated, qn, c.reward_scale, c.gamma)
        l_q1 = (q1 - y).square().mean()
        l_q2 = (q2 - y).square().mean()
        mean, log_std = self._policy(b.obs, zd)
        log_prob = tanh_gaussian_log_prob(mean, log_std, atanh_clamped(b.action))
        m_s, s_s = self._policy(b.obs, zd)
        a_pi = torch.tanh(m_s + s_s.exp() * torch.randn_like(m_s))
        with torch.no_grad():
            q_data = torch.min(self._q(self.qf1, b.obs, b.action, zd), self._q(self.qf2, b.obs, b.action, zd))
            v = torch.min(self._q(self.qf1, b.obs, a_pi, zd), self._q(self.qf2, b.obs, a_pi, zd))
            adv = q_data - v
            w = awac_weights(adv, awac_temperature(adv, float(c.awac_beta), bool(c.awac_normalize_advantage)))
        l_pi = awac_policy_loss(log_prob, w)
        if self.online:  # every loss from the same pre-step parameters, as the fused trainer
            q_new = torch.min(self._q(self.qf1, b.obs, a_pi, zd), self._q(self.qf2, b.obs, a_pi, zd))
            l_pi = l_pi + online_q_term(q_new, 1.0, bool(self.cfg.online.normalize_q_term))
        self.opt_ctx.zero_grad()
        self.opt_q1.zero_grad()
        self.opt_q2.zero_grad()
        self.opt_pi.zero_grad()
        l_pi.backward(inputs=self.policy_params)
        if trains_ctx:
            l_ctx.backward()
        l_q1.backward()
        l_q2.backward()
        self.opt_q1.step()
        self.opt_q2.step()
        if trains_ctx:
            self.opt_ctx.step()
        self.opt_pi.step()
        with torch.no_grad():
            for net, target in ((self.qf1, self.tqf1), (self.qf2, self.tqf2)):
                for p, t in zip(net.parameters(), target.parameters()):
                    t.data.mul_(1 - c.tau).add_(p.data, alpha=c.tau)
        return float(l_pi.detach())


def random_batch(T: int, B: int, C: int, obs_dim: int, act_dim: int, seed: int = 0) -> MetaBatch:
    g = torch.Generator().manual_seed(seed)
    N = T * B
    return MetaBatch(obs=torch.randn(N, obs_dim, generator=g), action=torch.rand(N, act_dim, generator=g) * 2 - 1,
                     reward=-torch.rand(N, generator=g), next_obs=torch.randn(N, obs_dim, generator=g),
                     terminated=torch.zeros(N), context=torch.randn(T, C, obs_dim + act_dim + 1, generator=g),
                     tasks=torch.arange(T))


def rate(step: object, batches: list[MetaBatch], seconds: float) -> float:
    """Updates per second of ``step(batch)`` over about ``seconds`` (after a warm-up)."""
    for b in batches[:3]:
        step(b)  # type: ignore[operator]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(batches[n % len(batches)])  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - t0)


IMPLEMENTATIONS = ("plain", "autograd", "autograd_bf16", "compiled", "manual", "manual_bf16")


def bench(name: str, cfg: SmacConfig, obs_dim: int, act_dim: int, online: bool, repeats: int, seconds: float) -> dict:
    shapes = cfg.online if online else cfg.offline
    batches = [random_batch(shapes.meta_batch, shapes.batch_size, shapes.context_size, obs_dim, act_dim, s)
               for s in range(4)]
    bf16 = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, compute_dtype="bfloat16"))
    def path(c: SmacConfig, gradients: str) -> SmacTrainer:
        return SmacTrainer(dataclasses.replace(c, gradients=gradients), obs_dim, act_dim)

    steps = {"plain": PlainSmacUpdate(cfg, obs_dim, act_dim), "autograd": path(cfg, "autograd"),
             "autograd_bf16": path(bf16, "autograd"), "compiled": path(cfg, "compiled"),
             "manual": path(cfg, "manual"), "manual_bf16": path(bf16, "manual")}
    for trainer in steps.values():
        if isinstance(trainer, SmacTrainer) and online:
            trainer.set_phase("online")
        elif online:
            trainer.online = True  # type: ignore[union-attr]
    t0 = time.perf_counter()
    for _ in range(3):  # compile (and warm up) before timing
        steps["compiled"].update(batches[0])
    compile_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in IMPLEMENTATIONS}
    for _ in range(repeats):  # interleaved, so load from other processes hits all alike
        for k in IMPLEMENTATIONS:
            times[k].append(rate(steps[k].update, batches, seconds))
    med = {k: statistics.median(v) for k, v in times.items()}
    phase = "online" if online else "offline"
    cells = "  ".join(f"{k} {med[k]:6.1f}" for k in IMPLEMENTATIONS)
    ratios = "  ".join(f"{k} {med[k] / med['plain']:4.2f}x" for k in IMPLEMENTATIONS[1:])
    print(f"{name:<6} {phase:<7} T={shapes.meta_batch} B={shapes.batch_size} C={shapes.context_size}  upd/s: {cells}\n"
          f"{'':<15}ratio to plain: {ratios}  (compilation {compile_s:.0f} s)", flush=True)
    return {"shapes": name, "phase": phase, **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target machine has 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per repeat")
    parser.add_argument("--obs-dim", type=int, default=13, help="13 = reach on the 5-joint arm")
    parser.add_argument("--act-dim", type=int, default=5)
    parser.add_argument("--variant", default="improved", choices=("paper", "improved"))
    parser.add_argument("--data-parallel-only", action="store_true", help="only the 1 vs 2 processes comparison")
    args = parser.parse_args()
    if args.data_parallel_only:
        data_parallel(args.obs_dim, args.act_dim, args.repeats, args.seconds)
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, obs {args.obs_dim}, act {args.act_dim}, "
          f"variant {args.variant}; median of {args.repeats} x {args.seconds:.0f} s")
    paper = paper_preset().with_variant(args.variant)
    demo = SmacConfig().with_variant(args.variant)
    results = []
    for name, cfg in (("paper", paper), ("demo", demo)):
        for online in (False, True):
            results.append(bench(name, cfg, args.obs_dim, args.act_dim, online, args.repeats, args.seconds))
    for k in IMPLEMENTATIONS[1:]:
        print(f"lowest ratio to plain, {k:<13}: {min(r[k] / r['plain'] for r in results):.2f}x (target >= 2x)")
    data_parallel(args.obs_dim, args.act_dim, args.repeats, args.seconds)


def data_parallel(obs_dim: int, act_dim: int, repeats: int, seconds: float) -> None:
    """Updates/s of the default recipe's offline update (shapes of config/reach.yaml) at one
    global meta-batch, trained by 1 process and by 2 (torchrun's data-parallel path, gloo), one
    thread each; the 2-process figure as a ratio to the 1-process one of the same repeat."""
    import torch.multiprocessing as mp

    cfg = SmacConfig()
    steps = max(20, int(seconds * 40))
    print(f"\ndata-parallel, default recipe offline, T=4 B=128 C=200, {steps} updates, 1 thread per process")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for world in (1, 2):
            queue = mp.get_context("spawn").SimpleQueue()
            mp.start_processes(_rank_rate, args=(world, _free_port(), cfg, obs_dim, act_dim, steps, queue),
                               nprocs=world, join=True, start_method="spawn")
            rates[world].append(queue.get())
    ratios = [b / a for a, b in zip(rates[1], rates[2])]
    print(f"  1 process {statistics.median(rates[1]):.1f} upd/s, 2 processes {statistics.median(rates[2]):.1f} upd/s: "
          f"{statistics.median(ratios):.2f}x (median of {repeats})")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_rate(rank: int, world: int, port: int, cfg: SmacConfig, obs_dim: int, act_dim: int, steps: int,
               queue: object) -> None:
    import torch.distributed as dist

    from smrl_train.smac.data_parallel import Ranks

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        trainer = SmacTrainer(cfg, obs_dim, act_dim, ranks=Ranks(rank, world))
        batches = [random_batch(4, 128, 200, obs_dim, act_dim, seed=i) for i in range(8)]
        for i in range(10):
            trainer.update(batches[i % 8])
        dist.barrier()
        t = time.perf_counter()
        for i in range(steps):
            trainer.update(batches[i % 8])
        dist.barrier()
        if rank == 0:
            queue.put(steps / (time.perf_counter() - t))  # type: ignore[attr-defined]
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
