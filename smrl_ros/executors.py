"""Which rclpy executor the smrl nodes (and the test probe) spin.

rclpy's ``EventsExecutor`` (``rclpy.experimental``, ROS 2 Kilted and later) dispatches
callbacks from C++ instead of rebuilding a wait set in Python on every wake-up. Measured here
(``bench/collect.py``, interleaved A/B runs, docs/results/deployment_bench.md) lockstep
collection through the sim bridge runs 26-35% faster with it (1206 / 1029 -> 1518 / 1394
steps/s); the controller's state-to-command latency showed no consistent difference. It is used
wherever the installed rclpy has it; on Jazzy (no ``rclpy.experimental``) the nodes fall back
to the ``SingleThreadedExecutor``. ``SMRL_EXECUTOR=single`` forces the fallback, e.g. to rule
the experimental executor out when chasing a bug. (It does not support guard conditions, and it
logs exceptions raised in callbacks instead of propagating them: the nodes use neither.)
"""

from __future__ import annotations

import os
import sys

from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor

ENV_VAR = "SMRL_EXECUTOR"
CHOICES = ("events", "single")


def executor_kind() -> str:
    """``events`` or ``single``: the environment's choice, else the best this rclpy has."""
    chosen = os.environ.get(ENV_VAR, "").strip().lower()
    if chosen and chosen not in CHOICES:
        raise ValueError(f"{ENV_VAR}={chosen!r}: expected one of {', '.join(CHOICES)}")
    if chosen == "single":
        return "single"
    try:
        from rclpy.experimental import EventsExecutor  # noqa: F401
    except ImportError:
        if chosen == "events":
            raise ValueError(f"{ENV_VAR}=events, but this rclpy has no rclpy.experimental.EventsExecutor "
                             "(it arrived in ROS 2 Kilted)") from None
        return "single"
    return "events"


def make_executor(context: Context | None = None) -> Executor:
    """A new executor of :func:`executor_kind` on ``context`` (default: the global one)."""
    if executor_kind() == "events":
        from rclpy.experimental import EventsExecutor

        # EventsExecutor() calls faulthandler.enable(), which needs sys.stderr to have a file
        # descriptor; under pytest's capture (or any redirected stderr object) it has none,
        # so hand it the process's real stderr for the call.
        stderr = sys.stderr
        try:
            stderr.fileno()
        except (AttributeError, OSError, ValueError):
            sys.stderr = sys.__stderr__
        try:
            return EventsExecutor(context=context)
        finally:
            sys.stderr = stderr
    return SingleThreadedExecutor(context=context)
