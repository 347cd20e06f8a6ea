"""Checkpoints: pickle-free, atomic, and resuming gives the state of an uninterrupted run
(also after a stop asked for by ``should_stop``); extra loggers see the CSV files' rows."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping

import pytest
import torch

from smrl_train.smac.checkpoint import CheckpointError, flatten_state, read_checkpoint, save_checkpoint, unflatten_state
from smrl_train.smac.logs import read_csv
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


def _true_after(calls: int) -> Callable[[], bool]:
    """A should_stop that says stop from its (calls + 1)-th question on."""
    asked = itertools.count()
    return lambda: next(asked) >= calls


def test_a_stop_asked_for_checkpoints_and_the_resumed_run_ends_as_an_uninterrupted_one(problem, tmp_path) -> None:
    cfg = tiny_config()  # 20 steps, checkpoint every 10
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, iterations=3))
    full = train_offline(problem, cfg, tmp_path / "full", progress=False)
    part = train_offline(problem, cfg, tmp_path / "part", progress=False, should_stop=_true_after(7))
    assert read_checkpoint(part)[1]["step"] == 7 and not read_checkpoint(part)[1]["finished"]
    train_offline(problem, cfg, part, progress=False, resume=True)
    (a, ma), (b, mb) = read_checkpoint(full), read_checkpoint(part)
    assert ma == mb and mb["step"] == 20 and mb["finished"] and _equal_states(a, b)

    online_full = train_online(problem, tmp_path / "on_full", offline_run=full, progress=False)
    online_part = train_online(problem, tmp_path / "on_part", offline_run=full, progress=False,
                               should_stop=_true_after(1))
    assert read_checkpoint(online_part)[1]["iteration"] == 1 and not read_checkpoint(online_part)[1]["finished"]
    train_online(problem, online_part, progress=False, resume=True)
    (a, ma), (b, mb) = read_checkpoint(online_full), read_checkpoint(online_part)
    assert mb["iteration"] == 3 and mb["finished"] and _equal_states(a, b)
    assert (online_full / "eval_curve.csv").read_text() == (online_part / "eval_curve.csv").read_text()


class _Rows:
    """A MetricsLogger that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.closed = False

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.rows.append((step, dict(metrics)))

    def close(self) -> None:
        self.closed = True


def _as_written(rows: list[tuple[int, dict[str, float]]], key: str) -> list[dict[str, float]]:
    """Rows as a CSV with the step in column ``key`` holds them (6 significant digits)."""
    return [{key: float(step), **{k: float(f"{v:.6g}") for k, v in metrics.items()}} for step, metrics in rows]


def test_extra_loggers_get_the_rows_the_csv_files_get(problem, tmp_path) -> None:
    cfg = tiny_config()  # offline: a row every 5 updates; online: 2 iterations, a curve point each
    offline = _Rows()
    parent = train_offline(problem, cfg, tmp_path / "off", progress=False, loggers=[offline])
    assert offline.closed and [step for step, _ in offline.rows] == [5, 10, 15, 20]
    assert _as_written(offline.rows, "step") == read_csv(parent / "metrics.csv")
    online = _Rows()
    run = train_online(problem, tmp_path / "on", offline_run=parent, progress=False, loggers=[online])
    train = [r for r in online.rows if "train/q_loss" in r[1]]
    curve = [r for r in online.rows if "eval/final_return" in r[1]]
    assert online.closed and len(train) + len(curve) == len(online.rows)
    assert [step for step, _ in curve] == [0, 1, 2]
    assert _as_written(train, "iteration") == read_csv(run / "metrics.csv")
    assert _as_written(curve, "iteration") == read_csv(run / "eval_curve.csv")


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
