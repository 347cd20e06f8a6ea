"""Data-parallel meta-training: K processes (``torchrun --nproc-per-node K``) share each update.

Every rank samples the same global meta-batch and the same noise (same seeds, same generator
states), keeps its share of the tasks (rank r of K: tasks r T/K .. (r+1) T/K - 1), computes the
losses of its share, and the gradients are averaged over the ranks before each Adam step, so
the parameters stay identical on every rank. The statistics an update takes over the whole
meta-batch (the advantage spread of the actor's temperature, the batch softmax of the paper's
weights, the count of imitated rows, the online term's mean |Q|, the logged metrics) are
reduced over the ranks, so K processes follow the one-process run within float round-off.

Only rank 0 writes (checkpoints, metrics, event files, evaluation); a resumed run continues
from rank 0's checkpoint on every rank. Backend: gloo on the CPU, nccl with ``--device cuda``
(each rank on ``cuda:LOCAL_RANK``).

The gradients are averaged by one all-reduce of the flattened gradients per update, which is
what ``DistributedDataParallel`` does: DDP wraps one module's forward pass, and an update here
is several networks' losses from one function (``step.step_losses``), frozen in part online.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from smrl_train.smac.buffers import MetaBatch
from smrl_train.smac.losses import BatchStats


@dataclass(frozen=True)
class Ranks(BatchStats):
    """This process's place among the training processes (one process: rank 0 of 1), and the
    meta-batch statistics the losses take (:class:`~smrl_train.smac.losses.BatchStats`) over
    every rank's rows; in one process exactly those of :class:`BatchStats`."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The rank that writes (checkpoints, logs, evaluation)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        """Wait until every rank is here (one process: return)."""
        if self.parallel:
            dist.barrier()

    # -- the share of a meta-batch -------------------------------------------------------------
    def tasks(self, meta_batch: int) -> slice:
        """This rank's tasks of a meta-batch of ``meta_batch`` tasks."""
        if meta_batch % self.world:
            raise ValueError(f"a meta-batch of {meta_batch} tasks does not split over {self.world} ranks "
                             "(meta_batch must be a multiple of the number of processes)")
        n = meta_batch // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    def share(self, batch: MetaBatch) -> MetaBatch:
        """This rank's tasks of ``batch`` (all of it in one process)."""
        if not self.parallel:
            return batch
        t, b = self.tasks(batch.meta_batch), batch.batch_size
        rows = slice(t.start * b, t.stop * b)

        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[rows]

        return MetaBatch(obs=batch.obs[rows], action=batch.action[rows], reward=batch.reward[rows],
                         next_obs=batch.next_obs[rows], terminated=batch.terminated[rows],
                         context=batch.context[t], tasks=batch.tasks[t], offline=cut(batch.offline),
                         explored=cut(batch.explored))

    # -- reductions over the ranks (no-ops in one process) ---------------------------------------
    def sum(self, x: Tensor) -> Tensor:
        """``x`` summed over the ranks (a new tensor; no gradient)."""
        x = x.detach().clone()
        if self.parallel:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def max(self, x: Tensor) -> Tensor:
        x = x.detach().clone()
        if self.parallel:
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def _rows(self, x: Tensor) -> Tensor:
        return self.sum(torch.tensor(float(x.numel()), dtype=x.dtype, device=x.device))

    def std(self, x: Tensor) -> Tensor:
        """The (unbiased) standard deviation of the rows of every rank together (no gradient)."""
        if not self.parallel:
            return super().std(x)
        n = self._rows(x)
        mean = self.sum(x.detach().sum()) / n
        return (self.sum((x.detach() - mean).square().sum()) / (n - 1)).sqrt()

    def mean(self, x: Tensor) -> Tensor:
        """The mean of the rows of every rank together (no gradient)."""
        return super().mean(x) if not self.parallel else self.sum(x.detach().sum()) / self._rows(x)

    def total(self, x: Tensor) -> Tensor:
        return super().total(x) if not self.parallel else self.sum(x)

    def softmax_times_n(self, x: Tensor) -> Tensor:
        """N x softmax over the rows of every rank together (N of them), this rank's rows."""
        if not self.parallel:
            return super().softmax_times_n(x)
        top = self.max(x.detach().max())
        total = self.sum((x.detach() - top).exp().sum())
        return (x - top).exp() / total * self._rows(x)

    def average_gradients(self, params: Sequence[Tensor]) -> None:
        """Replace each gradient by its mean over the ranks (one all-reduce)."""
        if not self.parallel:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()


def from_environment(device: str | torch.device = "cpu") -> Ranks:
    """The ranks torchrun describes (``WORLD_SIZE``, ``RANK``), with the process group started
    for the training device (gloo on the CPU, nccl with CUDA); one process without them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size())


def rank_device(device: torch.device) -> torch.device:
    """The device this process trains on: ``cuda`` under torchrun is ``cuda:LOCAL_RANK`` (one
    GPU per process, made the current one); any other device as given."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device

