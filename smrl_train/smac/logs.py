"""Where a run's metrics go: the :class:`MetricsLogger` interface and its writers.

The runner writes every row to its CSV files (:class:`CsvLog`: ``metrics.csv``,
``eval_curve.csv``), to TensorBoard event files beside them (:class:`TensorBoardLog`, when
tensorboard is installed) and to the extra loggers its caller passes: :class:`LatestMetrics`
keeps the newest row in memory (the training node publishes it as progress). Names are
namespaced (``train/q_loss``, ``eval/final_return``, ``time/updates_per_s``). A CSV's columns
are fixed by its first row; on resume, rows past the checkpoint are dropped (TensorBoard: hidden)
so the files describe exactly the state that continues.
"""

from __future__ import annotations

import csv
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch


class MetricsLogger(Protocol):
    """Receives a run's metric rows. ``step`` is the run's x-axis: updates in the offline
    phase, iterations in the online one; ``metrics`` maps namespaced names to numbers (an
    online row also carries ``step``, the update count). ``close`` ends the run's logging."""

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class CsvLog:
    """One CSV file as a :class:`MetricsLogger`: append-only, a header, the step in column
    ``key``; ``truncate_after`` supports resuming."""

    def __init__(self, path: str | Path, key: str = "step") -> None:
        self.path = Path(path)
        self.key = key
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), None)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {self.key: step, **metrics}
        if self.columns is None:
            self.columns = [self.key] + sorted(k for k in row if k != self.key)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])

    def close(self) -> None:
        """Nothing to do: every row is written and closed at once."""

    def truncate_after(self, value: int) -> None:
        """Drop rows whose key column exceeds ``value``."""
        if self.columns is None or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if r.get(self.key) not in (None, "") and float(r[self.key]) <= value]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(keep)


class TensorBoardLog:
    """A run's TensorBoard event files as a :class:`MetricsLogger`: each entry of a row is one
    scalar under its name. The x-axis is the update count in both phases (an online row's
    ``step`` entry, not the iteration), so an online run's curves continue its offline parent's.
    ``purge_step`` hides what earlier writers in the folder logged from that step on (TensorBoard's
    restart handling): a resumed run passes its checkpoint's step + 1, a fresh one 0. Every row
    is flushed at once, so ``tensorboard --logdir`` follows a run as it trains."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        x = int(metrics.get("step", step))
        for name, value in metrics.items():
            if name != "step":
                self.writer.add_scalar(name, float(value), x)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


TENSORBOARD_HINT = ("tensorboard is not installed: metrics go to the CSV files only "
                    "(pip install tensorboard, or the package's train extra)")
_hint_given = False


def tensorboard_logs(log_dir: str | Path, purge_step: int) -> list[MetricsLogger]:
    """``[TensorBoardLog(log_dir, purge_step)]``, or no logger when tensorboard is not installed
    (said once per process on stderr: training goes on with the CSV files)."""
    global _hint_given
    try:
        return [TensorBoardLog(log_dir, purge_step)]
    except ImportError:
        if not _hint_given:
            print(f"smrl: note: {TENSORBOARD_HINT}", file=sys.stderr, flush=True)
            _hint_given = True
        return []


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats (empty cells become NaN)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(f)]


def _fmt(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class DeviceMean:
    """Averages the metric tensors of the updates between log rows (``names`` in order) where
    they are computed: the sum stays on the training device, read by the host once per row
    (:meth:`pop`), so the update loop never waits for the device. Summed in float64 in update
    order, it gives the numbers averaging each update's host-read metrics gives."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.sum: torch.Tensor | None = None
        self.count = 0

    def add(self, stats: torch.Tensor) -> None:
        value = stats.detach().to(torch.float64)
        self.sum = value if self.sum is None else self.sum + value
        self.count += 1

    def pop(self, prefix: str = "train/") -> dict[str, float]:
        values = [] if self.sum is None else (self.sum / max(1, self.count)).tolist()
        self.sum, self.count = None, 0
        return {f"{prefix}{k}": v for k, v in zip(self.names, values)}


# ---------------------------------------------------------------------------------------
# Progress of a running run (the training node publishes it)


class LatestMetrics:
    """A :class:`MetricsLogger` that keeps the newest value of every metric and the step of
    the newest row, for a reader on another thread. ``done`` starts where a resumed run
    continues from (its checkpoint's step or iteration)."""

    def __init__(self, done: int = 0) -> None:
        self._lock = threading.Lock()
        self._done = int(done)
        self._metrics: dict[str, float] = {}

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        with self._lock:
            self._done = int(step)
            self._metrics.update(metrics)

    def close(self) -> None:
        """Nothing to release: the values stay readable."""

    def progress(self, phase: str, total: int) -> dict[str, Any]:
        """Where the run is: ``phase``, ``done`` and ``total`` (updates offline, iterations
        online), the newest ``losses`` (``train/`` names without the prefix), ``updates_per_s``."""
        with self._lock:
            done, metrics = self._done, dict(self._metrics)
        losses = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("train/")}
        return {"phase": phase, "done": done, "total": int(total), "losses": losses,
                "updates_per_s": metrics.get("time/updates_per_s")}
