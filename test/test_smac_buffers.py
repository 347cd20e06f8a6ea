"""Per-task buffers and the meta-batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smrl_train.smac.buffers import MetaBatchSampler, TaskBuffers


def _fill(buf: TaskBuffers, task: int, n: int, value: float) -> None:
    o, a = buf.obs_dim, buf.act_dim
    buf.add(task, np.full((n, o), value), np.full((n, a), value / 10), np.full(n, -value), np.full((n, o), value + 1),
            np.zeros(n))


def test_sample_shapes_and_fields_line_up() -> None:
    buf = TaskBuffers([3, 7, 9], obs_dim=4, act_dim=2, capacity=4)
    for t in (3, 7, 9):
        _fill(buf, t, 10, float(t))  # grows past the initial capacity
    buf.freeze_offline()
    s = MetaBatchSampler(buf, torch.Generator().manual_seed(0))
    b = s.sample(meta_batch=5, batch_size=6, context_size=4)
    assert b.obs.shape == (30, 4) and b.action.shape == (30, 2) and b.reward.shape == (30,)
    assert b.context.shape == (5, 4, 7) and b.meta_batch == 5 and b.batch_size == 6
    value = b.obs[:, 0]
    assert torch.equal(b.reward, -value) and torch.equal(b.next_obs[:, 0], value + 1)
    # Every RL transition of task slot k comes from that task; the context from the same task.
    task_value = torch.tensor([3.0, 7.0, 9.0])[b.tasks]
    assert torch.equal(value.reshape(5, 6), task_value[:, None].expand(5, 6))
    assert torch.equal(b.context[:, :, 0], task_value[:, None].expand(5, 4))
    assert torch.equal(b.context[..., -1], -b.context[..., 0])  # context reward column is r


def test_offline_only_sampling_never_sees_online_rows() -> None:
    buf = TaskBuffers([0], 2, 1, capacity=8)
    _fill(buf, 0, 5, 1.0)
    buf.freeze_offline()
    _fill(buf, 0, 50, 2.0)
    g = torch.Generator().manual_seed(0)
    ctx = buf.context(torch.tensor([0, 0]), 200, g, offline_only=True)
    assert torch.all(ctx[..., 0] == 1.0)
    assert (buf.context(torch.tensor([0]), 200, g)[..., 0] == 2.0).any()


def test_meta_batches_mark_which_transitions_are_offline_data() -> None:
    buf = TaskBuffers([0, 1], 2, 1, capacity=8)
    for t in (0, 1):
        _fill(buf, t, 5, 1.0)
    buf.freeze_offline()
    _fill(buf, 0, 30, 2.0)  # collected online: task 0 only
    b = MetaBatchSampler(buf, torch.Generator().manual_seed(0)).sample(6, 50, 4)
    assert torch.equal(b.offline, (b.obs[:, 0] == 1.0).float())
    assert 0.0 < float(b.offline.mean()) < 1.0


def test_explore_fraction_takes_contexts_from_the_explore_buffer() -> None:
    rl = TaskBuffers([0, 1], 2, 1)
    ex = TaskBuffers([0, 1], 2, 1)
    for t in (0, 1):
        _fill(rl, t, 20, 1.0)
        _fill(ex, t, 20, 5.0)
    s = MetaBatchSampler(rl, torch.Generator().manual_seed(0), ex, explore_fraction=0.5)
    b = s.sample(4, 3, 6)
    assert torch.all(b.context[:2, :, 0] == 5.0) and torch.all(b.context[2:, :, 0] == 1.0)
    assert torch.all(b.obs[:, 0] == 1.0)  # RL batches always come from the RL buffer
    # Each transition is marked with where its task's context came from (online.actor_context).
    assert torch.equal(b.explored, torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat_interleave(3))
    paper = MetaBatchSampler(rl, torch.Generator().manual_seed(0), ex, explore_fraction=0.0)
    b = paper.sample(4, 3, 6)
    assert torch.all(b.context[..., 0] == 1.0) and not b.explored.any()


def test_non_finite_rewards_are_refused() -> None:
    buf = TaskBuffers([0], 2, 1)
    with pytest.raises(ValueError, match="non-finite"):
        buf.add(0, np.zeros((2, 2)), np.zeros((2, 1)), np.array([0.0, np.nan]), np.zeros((2, 2)), np.zeros(2))


def test_online_part_round_trip() -> None:
    a = TaskBuffers([0, 1], 2, 1)
    for t in (0, 1):
        _fill(a, t, 4, float(t))
    a.freeze_offline()
    _fill(a, 1, 7, 3.0)
    b = TaskBuffers([0, 1], 2, 1)
    for t in (0, 1):
        _fill(b, t, 4, float(t))
    b.freeze_offline()
    b.load_online_part(a.online_part())
    assert torch.equal(a.size, b.size)
    assert torch.equal(a.data[:, :11], b.data[:, :11])


def test_episode_contexts_come_from_that_many_whole_episodes() -> None:
    from smrl_train.smac.buffers import episode_starts

    buf = TaskBuffers([0, 1], obs_dim=2, act_dim=1, capacity=8)
    for task in (0, 1):  # four 5-step episodes per task, each marked by its value
        obs = np.repeat(np.arange(4, dtype=float) + 10 * task, 5)[:, None].repeat(2, 1)
        truncated = np.tile([False] * 4 + [True], 4)
        buf.add(task, obs, np.zeros((20, 1)), -obs[:, 0], obs, np.zeros(20), episode_starts(np.zeros(20), truncated))
    assert buf.starts[0] == [0, 5, 10, 15]
    buf.freeze_offline()
    buf.add(1, np.full((3, 2), 99.0), np.zeros((3, 1)), np.zeros(3), np.full((3, 2), 99.0), np.zeros(3))
    assert buf.starts[1] == [0, 5, 10, 15, 20]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ctx = buf.episode_context(torch.tensor([0, 1]), episodes=2, count=30, generator=g, offline_only=True)
        assert ctx.shape == (2, 30, 4)
        for t in (0, 1):
            seen = set(ctx[t, :, 0].tolist())
            assert len(seen) <= 2 and seen <= {10.0 * t + e for e in range(4)}  # never the online row
    s = MetaBatchSampler(buf, torch.Generator().manual_seed(1), context_episodes=1)
    b = s.sample(meta_batch=6, batch_size=2, context_size=9)
    assert all(len(set(b.context[k, :, 0].tolist())) == 1 for k in range(6))  # one episode each
    # The online part keeps its episode starts through a checkpoint.
    fresh = TaskBuffers([0, 1], obs_dim=2, act_dim=1)
    for task in (0, 1):
        fresh.add(task, *(buf.data[task, :20, sl].numpy() for sl in (buf.slices["obs"], buf.slices["action"])),
                  buf.data[task, :20, buf.slices["reward"]].squeeze(-1).numpy(),
                  buf.data[task, :20, buf.slices["next_obs"]].numpy(), np.zeros(20), [0, 5, 10, 15])
    fresh.freeze_offline()
    fresh.load_online_part(buf.online_part())
    assert fresh.starts == buf.starts
