"""Metrics as CSV files under the run directory (TensorBoard is optional and not installed).

Column names are namespaced (``train/q_loss``, ``eval/final_return``, ``time/updates_per_s``)
and fixed by the first row written. On resume, rows past the checkpoint are dropped so the
file describes exactly the state that continues. :func:`run_progress` reads where a running
run is from its ``metrics.csv`` (the training node publishes it).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class CsvLog:
    """Append-only CSV with a header; ``truncate_after`` supports resuming."""

    def __init__(self, path: str | Path, key: str = "step") -> None:
        self.path = Path(path)
        self.key = key
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), None)

    def write(self, row: Mapping[str, float | int | str]) -> None:
        if self.columns is None:
            self.columns = [self.key] + sorted(k for k in row if k != self.key)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])

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


class RunningMean:
    """Averages metric dicts between log rows."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def pop(self, prefix: str = "train/") -> dict[str, float]:
        out = {f"{prefix}{k}": v / max(1, self.count) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


# ---------------------------------------------------------------------------------------
# Progress of a run, read from its files (the training node publishes it)


def last_csv_row(path: str | Path) -> dict[str, float] | None:
    """The last complete row of a metrics CSV as floats (None when there is none yet).

    Safe while the trainer appends: a last line without its newline is ignored.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        return None
    lines = text.split("\n")
    if len(lines) < 3:  # header, one row, and the empty string after the final newline
        return None
    header, row = lines[0].split(","), lines[-2].split(",")
    if len(row) != len(header):
        return None
    out = {}
    for key, value in zip(header, row):
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = float("nan")
    return out


def run_progress(run_dir: str | Path, phase: str, total: int) -> dict[str, Any]:
    """Where a run is: ``done`` (steps or iterations), ``total``, and the newest losses.

    Offline runs count updates (metrics.csv key ``step``); online runs count iterations
    (key ``iteration``).
    """
    row = last_csv_row(Path(run_dir) / "metrics.csv") or {}
    key = "step" if phase == "offline" else "iteration"
    done = int(row.get(key, 0) or 0)
    losses = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("train/")}
    return {"phase": phase, "done": done, "total": int(total), "losses": losses,
            "updates_per_s": row.get("time/updates_per_s")}
