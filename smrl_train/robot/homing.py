"""Homing between episodes on a real arm: joint targets on the way home, and when it is there.

With no sim bridge to reset the arm, the exploration and adapter nodes drive it back to the
home pose between episodes (``reset_mode: home``, :mod:`smrl_train.robot.episode_driver`), a
bounded step per control period. numpy only.
"""

from __future__ import annotations

import numpy as np


def homing_step(q: np.ndarray, home: np.ndarray, max_step: np.ndarray) -> np.ndarray:
    """Next joint target on the way from ``q`` to ``home``, no joint moving more than ``max_step``.

    All joints arrive together (the step is scaled by the slowest joint), so the arm moves on a
    straight line in joint space. Shapes (n,).
    """
    delta = np.asarray(home, dtype=float) - np.asarray(q, dtype=float)
    scale = np.max(np.abs(delta) / np.asarray(max_step, dtype=float))
    if scale <= 1.0:
        return np.asarray(home, dtype=float).copy()
    return q + delta / scale


def at_home(q: np.ndarray, home: np.ndarray, tolerance: float = 0.01) -> bool:
    """Whether every joint is within ``tolerance`` rad of the home pose."""
    return bool(np.all(np.abs(np.asarray(q) - np.asarray(home)) <= tolerance))
