"""Checkpoints: pickle-free, atomic, and resuming gives the state of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from smrl_train.smac.checkpoint import CheckpointError, flatten_state, read_checkpoint, save_checkpoint, unflatten_state
from smrl_train.smac.runner import RunError, train_offline, train_online
from smrl_train.smac.trainer import SmacTrainer

from smac_helpers import ACT, OBS, random_batch, tiny_config
from toy_family import toy_problem

torch.set_num_threads(1)


def _equal_states(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_states(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal_states(x, y) for x, y in zip(a, b))
    return a == b


def test_flatten_round_trip_keeps_optimizer_state() -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    tr.update(random_batch())
    state = tr.state_dict()
    tensors, skeleton = flatten_state(state)
    json.dumps(skeleton)  # plain JSON: nothing pickled
    back = unflatten_state(tensors, json.loads(json.dumps(skeleton)))
    assert _equal_states(state, back)
    assert isinstance(next(iter(back["opt_q"]["state"])), int)  # int keys survive


def test_checkpoint_file_is_safetensors_and_written_atomically(tmp_path) -> None:
    tr = SmacTrainer(tiny_config(), OBS, ACT)
    path = save_checkpoint(tmp_path, {"trainer": tr.state_dict()}, {"step": 0})
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert "__metadata__" in header and "smrl" in header["__metadata__"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    state, meta = read_checkpoint(tmp_path)
    assert meta == {"step": 0} and _equal_states(state["trainer"]["nets"], tr.state_dict()["nets"])
    (tmp_path / "checkpoint.safetensors").write_bytes(raw[:100])
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def problem():
    return toy_problem(n_train=4, n_test=2, max_steps=10, episodes=3)


def test_offline_resume_equals_uninterrupted(problem, tmp_path) -> None:
    cfg = tiny_config()  # 20 steps, checkpoint every 10
    full = train_offline(problem, cfg, tmp_path / "full", progress=False)
    part = train_offline(problem, cfg, tmp_path / "part", progress=False, stop_after=13)
    assert read_checkpoint(part)[1]["step"] == 13 and not read_checkpoint(part)[1]["finished"]
    train_offline(problem, cfg, part, progress=False, resume=True)
    a, ma = read_checkpoint(full)
    b, mb = read_checkpoint(part)
    assert ma == mb and _equal_states(a, b)
    assert (full / "metrics.csv").read_text() .splitlines()[0] == (part / "metrics.csv").read_text().splitlines()[0]
    assert len((full / "metrics.csv").read_text().splitlines()) == len((part / "metrics.csv").read_text().splitlines())


def test_online_resume_equals_uninterrupted(problem, tmp_path) -> None:
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, iterations=3))
    parent = train_offline(problem, cfg, tmp_path / "offline", progress=False)
    full = train_online(problem, tmp_path / "full", offline_run=parent, labels="decoder", progress=False)
    part = train_online(problem, tmp_path / "part", offline_run=parent, labels="decoder", progress=False,
                        stop_after_iterations=1)
    assert read_checkpoint(part)[1]["iteration"] == 1
    train_online(problem, part, labels="decoder", progress=False, resume=True)
    a, ma = read_checkpoint(full)
    b, mb = read_checkpoint(part)
    assert ma["iteration"] == mb["iteration"] == 3 and _equal_states(a, b)
    assert (full / "eval_curve.csv").read_text() == (part / "eval_curve.csv").read_text()


def test_runs_refuse_to_be_overwritten_or_resumed_wrongly(problem, tmp_path) -> None:
    cfg = tiny_config()
    run = train_offline(problem, cfg, tmp_path / "r", progress=False, stop_after=5)
    with pytest.raises(RunError, match="--resume"):
        train_offline(problem, cfg, run, progress=False)
    with pytest.raises(RunError, match="config differs"):
        train_offline(problem, dataclasses.replace(cfg, seed=5), run, progress=False, resume=True)
    with pytest.raises(RunError, match="nothing to resume"):
        train_offline(problem, cfg, tmp_path / "empty", progress=False, resume=True)
    with pytest.raises(RunError, match="not finished"):
        train_online(problem, tmp_path / "on", offline_run=run, progress=False)
