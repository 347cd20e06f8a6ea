"""Meta-RL tasks as immutable values, and the small task protocol every family follows.

A task family is any gymnasium env that also has

* ``sample_tasks(n, seed) -> list[Task]``: ``n`` tasks drawn from the family with ``seed``;
* ``set_task(task)``: later resets and steps act on that task (the goal stays hidden);
* ``info["success"]`` (bool) in the dict ``step`` returns.

The trainer and evaluator depend on nothing else, so an external suite plugs in by adding
those two methods (see docs/guide.md, "The task protocol").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Task:
    """All that describes one MDP of a family: the family name, an index and the hidden goal."""

    family: str
    index: int
    goal: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "index": self.index, "goal": list(self.goal)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Task:
        return Task(str(data["family"]), int(data["index"]), tuple(float(g) for g in data["goal"]))


@runtime_checkable
class TaskFamily(Protocol):
    """What the trainer and the evaluator need of an env (besides reset/step)."""

    def sample_tasks(self, n: int, seed: int) -> list[Any]: ...

    def set_task(self, task: Any) -> None: ...


def split_tasks(family: TaskFamily, n_train: int, n_test: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded train/test split: train tasks drawn with ``seed``, test tasks with ``seed + 1``.

    (Meta-World's ML1 convention.) Works for any object following :class:`TaskFamily`.
    """
    return family.sample_tasks(n_train, seed), family.sample_tasks(n_test, seed + 1)


def sample_box(low: np.ndarray, high: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` points uniform in the box [low, high]; shape (n, len(low)). Seeded, no global RNG."""
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=(n, len(low)))
