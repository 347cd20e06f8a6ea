"""TensorBoard event files: every run writes its CSV rows beside them (x: the update count in
both phases), a resumed run shows each step once, and without tensorboard runs write CSV only."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from smrl_train.smac import logs
from smrl_train.smac.logs import read_csv
from smrl_train.smac.runner import train_offline, train_online

from smac_helpers import tiny_config
from toy_family import toy_problem

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def problem():
    return toy_problem(n_train=4, n_test=2, max_steps=10, episodes=3)


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the folder's event files, as TensorBoard shows it (purges applied)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(*csv_files: Path) -> dict[str, list[tuple[int, float]]]:
    """The CSV rows as TensorBoard series: one per column, x = the row's update count."""
    series: dict[str, list[tuple[int, float]]] = {}
    for path in csv_files:
        for row in read_csv(path):
            for name, value in row.items():
                if name not in ("step", "iteration"):
                    series.setdefault(name, []).append((int(row["step"]), value))
    return series


def _assert_same(got: Mapping[str, list[tuple[int, float]]], want: Mapping[str, list[tuple[int, float]]]) -> None:
    assert sorted(got) == sorted(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag  # each step once, in order
        for (_, a), (_, b) in zip(got[tag], points):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-7) or (math.isnan(a) and math.isnan(b)), tag


def test_offline_and_online_runs_write_their_rows_as_tensorboard_scalars(problem, tmp_path) -> None:
    cfg = tiny_config()  # offline: a row every 5 of 20 updates; online: 2 iterations of 5, a curve point each
    offline = train_offline(problem, cfg, tmp_path / "offline", progress=False)
    online = train_online(problem, tmp_path / "smac", offline_run=offline, progress=False)
    assert list(offline.glob("events.out.tfevents.*")) and list(online.glob("events.out.tfevents.*"))

    got = _scalars(offline)
    _assert_same(got, _expected(offline / "metrics.csv"))
    assert {"train/q_loss", "train/policy_loss", "time/updates_per_s"} <= got.keys()
    assert [s for s, _ in got["train/q_loss"]] == [5, 10, 15, 20]

    got = _scalars(online)
    _assert_same(got, _expected(online / "metrics.csv", online / "eval_curve.csv"))
    # The update count continues the offline run's: the curve starts at the offline agent (20).
    assert [s for s, _ in got["eval/success_rate"]] == [20, 25, 30]
    assert [s for s, _ in got["train/q_loss"]] == [25, 30]


def _next_second() -> None:
    """Wait for the next wall-clock second. Readers take a folder's event files in name order,
    and a name starts with its creation second (then a per-process counter, which sorts 10
    before 9): a resume within the same second of the same process could be read first."""
    time.sleep(1.01 - time.time() % 1)


class _CrashAt:
    """A logger that fails on the row of ``step``: a run that dies after logging past its checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if step == self.step:
            raise RuntimeError("crash")

    def close(self) -> None:
        pass


def test_a_resumed_run_shows_each_step_once(problem, tmp_path) -> None:
    cfg = tiny_config()  # offline checkpoints every 10 updates
    cfg = dataclasses.replace(cfg, online=dataclasses.replace(cfg.online, iterations=3))
    offline = tmp_path / "offline"
    with pytest.raises(RuntimeError, match="crash"):
        train_offline(problem, cfg, offline, progress=False, loggers=[_CrashAt(15)])
    assert [s for s, _ in _scalars(offline)["train/q_loss"]] == [5, 10, 15]  # 15 is past the checkpoint (10)
    _next_second()
    train_offline(problem, cfg, offline, progress=False, resume=True)
    _assert_same(_scalars(offline), _expected(offline / "metrics.csv"))
    assert len(list(offline.glob("events.out.tfevents.*"))) == 2

    online = tmp_path / "smac"
    with pytest.raises(RuntimeError, match="crash"):  # dies on iteration 2's row, checkpointed at 1
        train_online(problem, online, offline_run=offline, progress=False, loggers=[_CrashAt(2)])
    _next_second()
    train_online(problem, online, progress=False, resume=True)
    got = _scalars(online)
    _assert_same(got, _expected(online / "metrics.csv", online / "eval_curve.csv"))
    assert [s for s, _ in got["train/q_loss"]] == [25, 30, 35]


def test_without_tensorboard_runs_write_csv_only_and_say_so_once(problem, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(logs, "_hint_given", False)
    cfg = tiny_config()
    for name in ("a", "b"):
        run = train_offline(problem, cfg, tmp_path / name, progress=False)
        assert len(read_csv(run / "metrics.csv")) == 4 and not list(run.glob("events.out.tfevents.*"))
    assert capsys.readouterr().err.count(logs.TENSORBOARD_HINT) == 1
