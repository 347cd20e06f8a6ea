"""Data-parallel meta-training: K real processes (gloo) follow the one-process run.

The CLI runs under ``torchrun`` itself (2 processes); the resume check starts 2 processes with
``torch.multiprocessing`` and the library's ``train_offline``, stopped and resumed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.numpy import load_file

from smrl_train.config_schema import ConfigError
from smrl_train.data.generate import generate_dataset
from smrl_train.smac.data_parallel import Ranks
from smrl_train.smac.trainer import SmacTrainer

from conftest import REPO, small_config, write_config
from smac_helpers import random_batch, tiny_config

UPDATES = ["--set", "offline.steps=30", "--set", "offline.log_every=10", "--set", "offline.meta_batch=4",
           "--set", "offline.batch_size=32", "--set", "offline.context_size=40"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def reach(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config file, dataset) of a small reach setup."""
    tmp = tmp_path_factory.mktemp("dp")
    cfg = small_config("reach", n_train=6, n_test=2, episode_length=30)
    config = write_config(cfg, tmp / "reach.yaml")
    generate_dataset(cfg, tmp / "data", progress=False)
    return config, tmp / "data"


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _rows(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if not k.startswith("time/")}


def _weights(run: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in load_file(str(run / "checkpoint.safetensors")).items() if k.startswith("/trainer/nets/")}


def _one_and_two_processes(args: list[str], one: Path, two: Path) -> dict[str, np.ndarray]:
    """Run ``smrl ARGS`` in one process (run ``one``) and under torchrun in two (``two``);
    check that the two processes' losses, statistics and weights follow the one; returns the
    two-process run's metrics."""
    subprocess.run([sys.executable, "-m", "smrl_train.cli", *args, "--run", str(one)],
                   cwd=REPO, env=_env(), check=True, timeout=300)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "-m", "smrl_train.cli", *args, "--run-dir", str(two)],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(2 processes)" in out.stdout and out.stdout.count("run written to") == 1  # rank 0 speaks
    rows1, rows2 = _rows(one / "metrics.csv"), _rows(two / "metrics.csv")
    for key in rows1:  # the same loss curve: every logged loss and statistic of the whole meta-batch
        np.testing.assert_allclose(rows2[key], rows1[key], rtol=2e-3, atol=1e-5, err_msg=key)
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys() and w1
    for key in w1:
        np.testing.assert_allclose(w2[key], w1[key], rtol=0, atol=2e-4, err_msg=key)
    return rows2


def test_two_processes_under_torchrun_follow_one(tmp_path: Path, reach: tuple[Path, Path]) -> None:
    config, data = reach
    common = ["--config", str(config), "--data", str(data), "--quiet", "--threads", "1", "--no-eval"]
    rows = _one_and_two_processes(["train", "offline", *common, *UPDATES], tmp_path / "one", tmp_path / "two")
    assert list(rows["step"]) == [10, 20, 30]
    # The self-supervised phase from the same offline run: every rank collects and labels the
    # same episodes and shares the updates.
    online = ["--from", str(tmp_path / "one")]
    for setting in ("iterations=2", "updates_per_iteration=15", "tasks_per_iteration=2", "eval_every=0"):
        online += ["--set", f"online.{setting}"]
    rows = _one_and_two_processes(["train", "online", *common, *online], tmp_path / "on1", tmp_path / "on2")
    assert list(rows["iteration"]) == [1, 2] and min(rows["data/collected"]) > 0  # the same episodes as one


def _rank_main(rank: int, world: int, port: int, config: str, data: str, run: str, stops: list[int | None]) -> None:
    from smrl_train.smac.problem import problem_from_files, resolve_smac
    from smrl_train.smac.runner import train_offline

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        overrides = [u for u in UPDATES if u != "--set"]
        cfg = resolve_smac(config, None, None, None, overrides)
        problem = problem_from_files(config, data)
        ranks = Ranks(rank=rank, world=world)
        for i, stop in enumerate(stops):
            train_offline(problem, cfg, run, resume=i > 0, progress=False, stop_after=stop, ranks=ranks)
    finally:
        dist.destroy_process_group()


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path: Path, reach: tuple[Path, Path]) -> None:
    config, data = reach
    for name, stops in (("whole", [None]), ("resumed", [20, None])):
        mp.start_processes(_rank_main, args=(2, _free_port(), str(config), str(data), str(tmp_path / name), stops),
                           nprocs=2, join=True, start_method="spawn")
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    for key in whole:  # bit for bit: the same ranks, the same reductions, rank 0's checkpoint
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
    assert [r for r in _rows(tmp_path / "resumed" / "metrics.csv")["step"]] == [10, 20, 30]


def test_each_rank_takes_its_share_of_the_tasks() -> None:
    batch = random_batch(T=4, B=3, C=5)
    share = Ranks(rank=1, world=2).share(batch)
    assert share.meta_batch == 2 and share.batch_size == 3
    assert torch.equal(share.context, batch.context[2:4]) and torch.equal(share.obs, batch.obs[6:12])
    assert torch.equal(share.tasks, batch.tasks[2:4])
    assert Ranks().share(batch) is batch
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        Ranks(rank=0, world=3).tasks(4)


def test_only_autograd_runs_in_parallel() -> None:
    for gradients in ("compiled", "manual"):
        cfg = tiny_config("return_tuned")
        cfg = dataclasses.replace(cfg, gradients=gradients)
        with pytest.raises(ConfigError, match=f"smac.gradients: {gradients} runs in one process"):
            SmacTrainer(cfg, 4, 2, ranks=Ranks(rank=0, world=2))
