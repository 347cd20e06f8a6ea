"""Test helpers for real nodes over DDS: a domain id per test, a probe, graphs that always stop.

Every ROS test gets its own ``ROS_DOMAIN_ID`` (claimed machine-wide, see
:func:`smrl_ros.probe.claim_domain_id`), starts its nodes as subprocesses through
:class:`smrl_ros.graph_runner.GraphRunner` and stops them in the fixture's teardown, whatever happens.
The domain must be empty when claimed: one that already holds DDS participants (a stray node
no test accounts for) is skipped, and :func:`claim_clean_domain` says so with a
:class:`ForeignParticipantWarning` naming the processes and their nodes.
"""

from __future__ import annotations

import importlib.util
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray

from smrl_ros.conversions import status_values
from smrl_ros.graph_runner import GraphRunner, GraphSpec
from smrl_ros.probe import DomainClaim, Inbox, RosProbe, claim_domain_id, stray_nodes, wait_until

REPO = Path(__file__).resolve().parent.parent

__all__ = ["DomainClaim", "FakeRobot", "ForeignParticipantWarning", "Inbox", "RosProbe", "claim_clean_domain",
           "claim_domain_id", "command_arrays", "latest_status", "load_launch", "ros_graph", "wait_until"]


class ForeignParticipantWarning(UserWarning):
    """A domain a test was about to use held participants no test started; the test went elsewhere."""


def claim_clean_domain(first: int | None = None) -> DomainClaim:
    """A claimed, empty domain (:func:`smrl_ros.probe.claim_domain_id`); for each domain skipped
    on the way because it held foreign participants, a :class:`ForeignParticipantWarning` names
    them and the nodes they run (a discovery wait of up to a few seconds, only then)."""
    claim = claim_domain_id(first)
    for domain_id, found in claim.skipped.items():
        nodes = stray_nodes(domain_id)
        warnings.warn(ForeignParticipantWarning(
            f"ROS_DOMAIN_ID {domain_id} already has participants no test started, so this test uses "
            f"{claim.domain_id}: {'; '.join(map(str, found))}; nodes: {', '.join(nodes) or 'none discovered'}"),
            stacklevel=2)
    return claim


def load_launch(name: str) -> Any:
    """The module of ``launch/<name>`` (its ``ARGUMENTS`` and ``build``), without the launch stack."""
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def ros_graph(graph: GraphSpec, tmp_path: Path, start: bool = True,
              cwd: Path = REPO) -> Iterator[tuple[GraphRunner, RosProbe]]:
    """Run ``graph`` in a fresh domain with a probe node; stop everything on exit.

    On failure the node logs are attached to the exception, so a red test shows why.
    """
    claim = claim_clean_domain()
    runner = GraphRunner(graph, domain_id=claim.domain_id, log_dir=tmp_path / "logs", cwd=cwd)
    probe = RosProbe(claim.domain_id)
    try:
        if start:
            runner.start()
        yield runner, probe
    except BaseException as exc:
        logs = "\n".join(f"--- {name} ---\n{runner.log(name)[-4000:]}" for name in runner.processes)
        exc.add_note(f"node logs:\n{logs}")
        raise
    finally:
        probe.close()
        runner.close()
        claim.release()


def latest_status(inbox: Inbox[DiagnosticArray], name_prefix: str) -> dict[str, str] | None:
    """Key/values of the newest diagnostic status whose name starts with ``name_prefix``."""
    for msg in reversed(inbox.snapshot()):
        for status in msg.status:
            if status.name.startswith(name_prefix):
                return {"level": str(int.from_bytes(status.level, "little")) if isinstance(status.level, bytes)
                        else str(status.level), "message": status.message, **status_values(status)}
    return None


class FakeRobot:
    """A position-controlled arm played by the test: it publishes ``/joint_states`` at ``rate``
    (in a thread, absolute deadlines) and, when ``track``, jumps to each received command (a
    perfect servo). ``pause()`` stops the stream; ``send`` publishes one hand-made message."""

    def __init__(self, probe: RosProbe, joint_names: Sequence[str], q0: Sequence[float], rate: float = 20.0,
                 track: bool = True) -> None:
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from smrl_ros import topics

        self.names = list(joint_names)
        self.q = np.array(q0, dtype=float)
        self.track = track
        self.period = 1.0 / rate
        self.commands: Inbox[Float64MultiArray] = probe.subscribe(topics.COMMANDS, Float64MultiArray,
                                                                  topics.COMMAND_QOS)
        self._pub = probe.publisher(topics.JOINT_STATES, JointState, topics.STATE_PUB_QOS)
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._alive = True
        self._probe = probe
        probe.node.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, topics.COMMAND_QOS)
        self._thread = threading.Thread(target=self._stream, daemon=True)
        self._thread.start()

    def _on_command(self, msg: Any) -> None:
        if self.track:
            with self._lock:
                self.q = np.array(msg.data, dtype=float)

    def _stream(self) -> None:
        deadline = time.monotonic()
        while self._alive:
            deadline += self.period
            time.sleep(max(0.0, deadline - time.monotonic()))
            if self._running.is_set():
                with self._lock:
                    q = self.q.copy()
                self.send(self.names, q, np.zeros(len(q)))
            else:
                deadline = time.monotonic()

    def send(self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float]) -> None:
        from smrl_ros.conversions import make_joint_state, seconds_to_stamp

        msg = make_joint_state([], [], None, seconds_to_stamp(time.time()))
        msg.name, msg.position, msg.velocity = list(names), [float(v) for v in position], \
            [float(v) for v in velocity]
        self._pub.publish(msg)

    def set_q(self, q: Sequence[float]) -> None:
        with self._lock:
            self.q = np.array(q, dtype=float)

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def wait_connected(self, timeout: float = 20.0) -> None:
        self._probe.wait_for_subscribers(self._pub, 1, timeout)

    def close(self) -> None:
        self._alive = False
        self._running.clear()
        self._thread.join(timeout=2)


def command_arrays(inbox: Inbox[Any], start: int = 0) -> list[np.ndarray]:
    """The commands of an inbox from index ``start`` on, as arrays."""
    return [np.array(m.data) for m in inbox.snapshot()[start:]]


def lifecycle_state(probe: RosProbe, node: str) -> str:
    """The lifecycle state label of ``node`` through its ``get_state`` service."""
    from lifecycle_msgs.srv import GetState

    return str(probe.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.label)


def change_lifecycle(probe: RosProbe, node: str, transition: str) -> bool:
    """Trigger ``transition`` (configure, activate, deactivate, cleanup, shutdown) on ``node``
    through its ``change_state`` service; True when the node accepted it."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
           "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
    request = ChangeState.Request()
    request.transition.id = ids[transition]
    return bool(probe.call(ChangeState, f"/{node}/change_state", request, timeout=20.0).success)
