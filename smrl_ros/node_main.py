"""The ``main()`` every smrl node shares: init, construct, spin, clean shutdown.

rclpy's own signal handlers shut the context down at once, before the node could publish a
last hold command; here SIGINT and SIGTERM set :data:`STOP`, the one flag every smrl node
stops by: the spin loop checks it (within its 0.1 s timeout), so the node's ``stop()`` still
runs with a live context, and the trainer's runner checks it between updates. A flag, not an
exception: a Python exception raised by the handler while rclpy's executor is converting a
callback's arguments surfaces as pybind11's ``RuntimeError: Unable to convert call argument``
(seen with the EventsExecutor), which would skip the clean exit. A :class:`StartupError` (bad
parameter, model refused) is logged as fatal and the process exits with status 2.

The controller and the explorer are lifecycle nodes (:class:`ManagedNode`, ``rclpy.lifecycle``,
as ros2_control's controllers): *configure* loads and checks what they need, *activate* starts
commanding or recording, *deactivate* holds the arm (and ends the episode in progress),
*cleanup* releases it all. With ``autostart`` (the default) :func:`run_node` takes them to
active itself, and a refused configure exits with status 2 like any refused start; with
``autostart:=false`` they wait, unconfigured, for a lifecycle manager or ``ros2 lifecycle set``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from smrl_ros.executors import make_executor
from smrl_ros.params import ParameterError, convert

EXIT_STARTUP_REFUSED = 2


class StartupError(RuntimeError):
    """The node refuses to start (the message names the problem)."""


STOP = threading.Event()  # set by SIGINT and SIGTERM once stop_on_signals() is called


def _interrupt(signum: int, frame: Any) -> None:
    if not STOP.is_set():  # Event.set takes a lock: a second signal finds the flag set and leaves it
        STOP.set()


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM set :data:`STOP` (and raise nothing)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def request_exit(node: Any) -> None:
    """End the node's process cleanly from inside a callback: :func:`run_node` leaves its spin
    loop after the current callback, calls the node's ``stop()`` (a :class:`ManagedNode`: the
    shutdown transition) and exits 0. (A flag, not an
    exception: the EventsExecutor logs and swallows exceptions raised in callbacks.)"""
    node.smrl_exit_requested = True


AUTOSTART_HELP = ("configure and activate at start-up; false: stay unconfigured until a lifecycle manager "
                  "or `ros2 lifecycle set <node> configure` / `activate` brings the node up")


class ManagedNode(LifecycleNode):
    """A lifecycle node whose transitions are four plain methods: :meth:`configure` (raise
    :class:`StartupError` to refuse, the reason is logged), :meth:`activate`, :meth:`deactivate`
    and :meth:`cleanup`. Shutting down from any state runs what is needed of the last two. The
    node declares a bool parameter ``autostart`` (help: :data:`AUTOSTART_HELP`), which
    :func:`run_node` reads.
    (rclpy turns an exception escaping a transition into a silent ERROR; here it is logged.)"""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.configured = False
        self.active = False
        self.refusal = ""

    # -- what a node implements ------------------------------------------------------------------
    def configure(self) -> None:
        raise NotImplementedError

    def activate(self) -> None:
        raise NotImplementedError

    def deactivate(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    # -- rclpy's transition callbacks --------------------------------------------------------------
    def _transition(self, what: str, fn: Callable[[], None]) -> TransitionCallbackReturn:
        try:
            fn()
        except (StartupError, ParameterError) as exc:
            self.refusal = str(exc)
            self.get_logger().error(f"{what} refused: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - rclpy would swallow it without a word
            self.refusal = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"{what} failed: {self.refusal}")
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run() -> None:
            self.configure()
            self.configured = True
        return self._transition("configure", run)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run() -> None:
            self.activate()
            self.active = True
        return self._transition("activate", run)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run() -> None:
            self.active = False
            self.deactivate()
        return self._transition("deactivate", run)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        def run() -> None:
            self.configured = False
            self.cleanup()
        return self._transition("cleanup", run)

    def _release(self) -> None:
        """Deactivate and clean up, as far as the node got."""
        if self.active:
            self.active = False
            self.deactivate()
        if self.configured:
            self.configured = False
            self.cleanup()

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._release)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A transition raised: release what it left (back to unconfigured).
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @property
    def lifecycle_state(self) -> str:
        return str(self._state_machine.current_state[1])


def _autostart(node: ManagedNode) -> bool:
    """Configure and activate the node when its ``autostart`` parameter asks for it; False, with
    ``node.refusal`` saying why, when a transition (or the parameter itself) is refused."""
    try:
        wanted = convert("autostart", node.get_parameter("autostart").value, bool)
    except ParameterError as exc:
        node.refusal = str(exc)
        return False
    for trigger in (node.trigger_configure, node.trigger_activate) if wanted else ():
        if trigger() != TransitionCallbackReturn.SUCCESS:
            return False
    return True


def run_node(make_node: Callable[[], Any], name: str, args: list[str] | None = None) -> int:
    """Construct the node, call its ``start()`` if any (a :class:`ManagedNode` with
    ``autostart``: configure and activate it), spin until SIGINT/SIGTERM, then its ``stop()``
    if any (a :class:`ManagedNode`: the shutdown transition). Returns the process exit status."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_on_signals()
    try:
        node = make_node()
    except (StartupError, ParameterError) as exc:
        rclpy.logging.get_logger(name).fatal(f"refusing to start: {exc}")
        rclpy.try_shutdown()
        return EXIT_STARTUP_REFUSED
    if isinstance(node, ManagedNode) and not _autostart(node):
        rclpy.logging.get_logger(name).fatal(f"refusing to start: {node.refusal}")
        node.destroy_node()
        rclpy.try_shutdown()
        return EXIT_STARTUP_REFUSED
    executor = make_executor()
    executor.add_node(node)
    try:
        if isinstance(node, ManagedNode):
            if not node.configured:
                node.get_logger().info(f"unconfigured (autostart: false): waiting for `ros2 lifecycle set "
                                       f"{node.get_fully_qualified_name()} configure`")
        elif hasattr(node, "start"):
            node.start()
        # spin_once with a timeout, not spin(): a blocking wait inside rcl would keep Python's
        # signal handler (and so the clean shutdown) from running until the next message.
        while rclpy.ok() and not STOP.is_set() and not getattr(node, "smrl_exit_requested", False):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ignore further signals during the clean-up; a second Ctrl-C must not skip it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if isinstance(node, ManagedNode):
            if node.lifecycle_state in ("unconfigured", "inactive", "active"):
                node.trigger_shutdown()
        elif hasattr(node, "stop"):
            node.stop()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
