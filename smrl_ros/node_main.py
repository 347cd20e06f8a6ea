"""The ``main()`` every smrl node shares: init, construct, spin, clean shutdown.

rclpy's own signal handlers shut the context down at once, before the node could publish a
last hold command; here SIGINT and SIGTERM set a flag that the spin loop checks (within its
0.1 s timeout), so the node's ``stop()`` still runs with a live context. A flag, not an
exception: a Python exception raised by the handler while rclpy's executor is converting a
callback's arguments surfaces as pybind11's ``RuntimeError: Unable to convert call argument``
(seen with the EventsExecutor), which would skip the clean exit. A :class:`StartupError` (bad
parameter, model refused) is logged as fatal and the process exits with status 2.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

from smrl_ros.executors import make_executor
from smrl_ros.params import ParameterError

EXIT_STARTUP_REFUSED = 2


class StartupError(RuntimeError):
    """The node refuses to start (the message names the problem)."""


_signalled = False


def _interrupt(signum: int, frame: Any) -> None:
    global _signalled
    _signalled = True


def request_exit(node: Any) -> None:
    """End the node's process cleanly from inside a callback: :func:`run_node` leaves its spin
    loop after the current callback, calls the node's ``stop()`` and exits 0. (A flag, not an
    exception: the EventsExecutor logs and swallows exceptions raised in callbacks.)"""
    node.smrl_exit_requested = True


def run_node(make_node: Callable[[], Any], name: str, args: list[str] | None = None) -> int:
    """Construct the node, call its ``start()`` if any, spin until SIGINT/SIGTERM, then its
    ``stop()`` if any. Returns the process exit status."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        node = make_node()
    except (StartupError, ParameterError) as exc:
        rclpy.logging.get_logger(name).fatal(f"refusing to start: {exc}")
        rclpy.try_shutdown()
        return EXIT_STARTUP_REFUSED
    executor = make_executor()
    executor.add_node(node)
    try:
        if hasattr(node, "start"):
            node.start()
        # spin_once with a timeout, not spin(): a blocking wait inside rcl would keep Python's
        # signal handler (and so the clean shutdown) from running until the next message.
        while rclpy.ok() and not _signalled and not getattr(node, "smrl_exit_requested", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ignore further signals during the clean-up; a second Ctrl-C must not skip it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if hasattr(node, "stop"):
            node.stop()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
