"""Scaling out (issue 17): the training device (--device) and the online phase's collection
workers (--workers).

CUDA cannot run here: the device tests train on torch's ``meta`` device instead, where a tensor
made on the CPU inside the update (or a host read of one: .item(), .tolist(), .numpy()) raises,
as it would fail or stall on a GPU.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from smrl_train.config_schema import ConfigError
from smrl_train.data.generate import generate_dataset
from smrl_train.smac.logs import DeviceMean
from smrl_train.smac.trainer import METRICS, MetaBCTrainer, SmacTrainer, training_device

from conftest import REPO, small_config, write_config
from smac_helpers import ACT, OBS, random_batch, tiny_config

torch.set_num_threads(1)


def _tensors_of(trainer: SmacTrainer | MetaBCTrainer) -> dict[str, torch.Tensor]:
    """Every parameter, buffer and optimiser state tensor of a trainer, by name. Adam's
    non-fused ``step`` counter is left out: torch keeps it on the CPU by design."""
    out = {f"nets.{k}": v for k, v in trainer.nets.state_dict(keep_vars=True).items()}
    opts = {"opt": trainer.opt} if isinstance(trainer, MetaBCTrainer) else \
        {"opt_context": trainer.opt_context, "opt_q": trainer.opt_q, "opt_policy": trainer.opt_policy}
    for name, opt in opts.items():
        for i, state in enumerate(opt.state.values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    out[f"{name}.{i}.{key}"] = value
    return out


@pytest.mark.parametrize("phases", [("offline",), ("offline", "online")])
def test_every_tensor_an_update_touches_lives_on_the_training_device(phases: tuple[str, ...]) -> None:
    trainer = SmacTrainer(tiny_config(), OBS, ACT, device="meta")
    for phase in phases:
        trainer.set_phase(phase)
        for seed in range(3):
            stats = trainer.step_stats(random_batch(seed=seed))  # the batch is sampled on the CPU
            assert stats.device.type == "meta" and stats.shape == (len(METRICS),)  # never read by the host
    tensors = _tensors_of(trainer)
    assert sum(k.startswith("opt_") for k in tensors) > 10  # Adam's moments exist, and were checked
    assert {k: v.device.type for k, v in tensors.items() if v.device.type != "meta"} == {}


def test_meta_bc_updates_on_the_training_device() -> None:
    trainer = MetaBCTrainer(tiny_config(), OBS, ACT, device="meta")
    assert trainer.step_stats(random_batch()).device.type == "meta"
    assert {k: v.device.type for k, v in _tensors_of(trainer).items() if v.device.type != "meta"} == {}


def test_metrics_read_at_log_rows_equal_per_update_reads() -> None:
    """The device-side running mean logs the numbers the per-update host reads gave."""
    a, b = SmacTrainer(tiny_config(), OBS, ACT), SmacTrainer(tiny_config(), OBS, ACT)
    host, device = [], DeviceMean(METRICS)
    for seed in range(4):
        host.append(a.update(random_batch(seed=seed)))
        device.add(b.step_stats(random_batch(seed=seed)))
    sums = {k: 0.0 for k in METRICS}
    for row in host:  # summed in update order, as the CSV rows once were
        for k in METRICS:
            sums[k] += row[k]
    assert device.pop() == {f"train/{k}": v / len(host) for k, v in sums.items()}
    assert device.pop() == {} and device.count == 0


def test_manual_gradients_refuse_a_device_other_than_the_cpu() -> None:
    import dataclasses

    cfg = dataclasses.replace(tiny_config(), gradients="manual")
    with pytest.raises(ConfigError, match="manual is a CPU accelerator"):
        SmacTrainer(cfg, OBS, ACT, device="meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        training_device("cuda")
    for args in (["train", "offline", "--run", str(tmp_path / "r")],
                 ["train", "online", "--from", str(tmp_path / "o"), "--run", str(tmp_path / "r")],
                 ["experiment", "--out", str(tmp_path / "x")],
                 ["eval", "--run", str(tmp_path / "r")],
                 ["diagnose", str(tmp_path / "r")]):
        out = subprocess.run([sys.executable, "-m", "smrl_train.cli", *args, "--config", "config/reach.yaml",
                              "--data", str(tmp_path / "none"), "--device", "cuda"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("smrl: error: --device cuda: CUDA is not available")
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert not (tmp_path / "r").exists()


def test_an_acting_agent_keeps_z_on_its_networks_device() -> None:
    """Acting on a device: z (prior and posterior) lives where the networks are, contexts and
    observations from the host are moved there, the draws come from the CPU generator. On
    torch's meta device every step up to the host copy of the actions runs; that copy fails
    (meta tensors hold no numbers), and nothing before it."""
    from smrl_train.smac.agent import AdaptiveAgent, act
    from smrl_train.smac.trainer import build_networks

    cfg = tiny_config()
    nets = build_networks(cfg, OBS, ACT).requires_grad_(False).to("meta")
    agent = AdaptiveAgent(nets.encoder, nets.policy, torch.Generator().manual_seed(0), deterministic=False)
    assert agent.mu.device.type == "meta" and agent.latent().device.type == "meta"
    mu, var = agent.use_posterior(torch.zeros(7, nets.encoder.context_dim))  # a host context
    assert mu.device.type == var.device.type == agent.latent().device.type == "meta"
    with pytest.raises(NotImplementedError, match="meta"):
        act([agent], np.zeros((1, OBS), np.float32))


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        training_device("gpu0")


# ---------------------------------------------------------------------------------------
# Collection workers


@pytest.fixture(scope="module")
def reach_offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(config file, dataset, finished offline run) of a small reach setup."""
    from smrl_train.smac.problem import problem_from_files, resolve_smac
    from smrl_train.smac.runner import train_offline

    tmp = tmp_path_factory.mktemp("workers")
    cfg = small_config("reach", n_train=4, n_test=2, episode_length=20)
    config = write_config(cfg, tmp / "reach.yaml")
    generate_dataset(cfg, tmp / "data", progress=False)
    smac = resolve_smac(config, overrides=[f"offline.{k}" for k in (
        "steps=20", "log_every=10", "meta_batch=2", "batch_size=16", "context_size=10")])
    train_offline(problem_from_files(config, tmp / "data"), smac, tmp / "offline", progress=False)
    return config, tmp / "data", tmp / "offline"


ONLINE = [f"online.{k}" for k in ("iterations=2", "tasks_per_iteration=3", "updates_per_iteration=5",
                                  "meta_batch=2", "batch_size=16", "context_size=10", "label_context_size=20",
                                  "posterior_episodes=2", "eval_every=0")]


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def test_collection_workers_give_the_episodes_of_one_process(tmp_path: Path,
                                                             reach_offline: tuple[Path, Path, Path]) -> None:
    from smrl_train.smac.problem import problem_from_files, resolve_smac
    from smrl_train.smac.runner import train_online

    config, data, offline = reach_offline
    problem = problem_from_files(config, data)
    smac = resolve_smac(config, overrides=[f"offline.{k}" for k in (
        "steps=20", "log_every=10", "meta_batch=2", "batch_size=16", "context_size=10")] + ONLINE)
    for workers in (1, 2):
        train_online(problem, tmp_path / f"w{workers}", offline_run=offline, cfg=smac, progress=False,
                     workers=workers)
    one, two = (load_file(str(tmp_path / f"w{w}" / "checkpoint.safetensors")) for w in (1, 2))
    assert one.keys() == two.keys() and any(k.startswith("/rl/") for k in one)  # the online buffers are in it
    for key in one:  # bit for bit: weights, Adam, generators, the collected and labelled transitions
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)
    rows = _metrics(tmp_path / "w1")
    assert rows == _metrics(tmp_path / "w2") and [float(r["data/collected"]) > 0 for r in rows] == [True, True]


def test_workers_are_refused_with_a_recorded_source(tmp_path: Path, reach_offline: tuple[Path, Path, Path]) -> None:
    config, data, offline = reach_offline
    out = subprocess.run([sys.executable, "-m", "smrl_train.cli", "train", "online", "--config", str(config),
                          "--data", str(data), "--from", str(offline), "--run", str(tmp_path / "r"),
                          "--source", str(data), "--workers", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == \
        "smrl: error: --workers 2: workers collect in the sim; --source replays recordings"
