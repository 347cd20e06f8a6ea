"""Talk to a running node graph from Python: domain ids, a probe node, bounded waits.

Used by the tests (``test/ros_harness.py``), the benchmarks and the demo.

* :func:`claim_domain_id` hands out a ``ROS_DOMAIN_ID`` in 1..101 that no other process on
  this machine holds, by binding a loopback TCP port per id (the trick of
  ``ros-domain-coordinator``); graphs running concurrently (tests, benchmarks) never see each other's topics.
  A claim also has to find the domain empty: a process that never claimed it (a node left over
  from an earlier run, someone's ``ros2 run``) shows as a DDS participant
  (:func:`domain_participants`), and the claim moves on to another id and records what it
  skipped (:attr:`DomainClaim.skipped`), so a graph detects a foreign participant instead of
  suffering its cross-talk.
* :class:`RosProbe` is the test's own node in a private ``rclpy.Context``, spun by a
  background thread (the launch_testing_ros ``WaitForTopics`` pattern); every wait has a
  timeout and returns or raises, never hangs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from smrl_ros.executors import make_executor

M = TypeVar("M")
_PORT_BASE = 47800  # ports 47801..47901 mark domain ids 1..101 as taken
# RTPS well-known ports (DDS-RTPS 2.2, section 9.6.1.1, every DDS vendor): participant i of
# domain d binds the unicast ports PB + DG d + 10 + 2 i (discovery) and + 11 + 2 i (user data).
_RTPS_PB, _RTPS_DG = 7400, 250


@dataclass(frozen=True)
class Participant:
    """A process with DDS participants in a domain: its pid (None: not visible to this user),
    its command line and the RTPS ports it binds there."""

    pid: int | None
    command: str
    ports: tuple[int, ...]

    def __str__(self) -> str:
        who = f"pid {self.pid} ({self.command})" if self.pid is not None else "a process of another user"
        return f"{who} on UDP port(s) {', '.join(map(str, self.ports))}"


def _udp_sockets(low: int, high: int) -> dict[int, int]:
    """Socket inode -> local UDP port, for the ports in [low, high) bound on this machine."""
    found: dict[int, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if low <= port < high:
                found[int(fields[9])] = port
    return found


def _socket_owners(inodes: set[int]) -> dict[int, int]:
    """Socket inode -> pid of a process holding it (processes this user may inspect)."""
    owners: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    owners[int(target[8:-1])] = int(proc.name)
        except OSError:
            continue
    return owners


def _command(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in args if a)
    return text if len(text) <= 160 else text[:157] + "..."


def domain_participants(domain_id: int) -> list[Participant]:
    """The processes with DDS participants in ``domain_id`` on this machine, found by the RTPS
    ports they bind (read from ``/proc/net/udp``: instant, no discovery wait; empty where there is
    no ``/proc``). Participants on other machines are not seen; with
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` they do not reach this machine's graphs either."""
    low = _RTPS_PB + _RTPS_DG * domain_id
    sockets = _udp_sockets(low, low + _RTPS_DG)
    if not sockets:
        return []
    owners = _socket_owners(set(sockets))
    by_pid: dict[int | None, list[int]] = {}
    for inode, port in sockets.items():
        by_pid.setdefault(owners.get(inode), []).append(port)
    return [Participant(pid, _command(pid) if pid is not None else "", tuple(sorted(ports)))
            for pid, ports in sorted(by_pid.items(), key=lambda item: min(item[1]))]


def stray_nodes(domain_id: int, timeout: float = 5.0, name: str = "stray_check") -> list[str]:
    """The ROS nodes of ``domain_id`` (``/namespace/name``) a probe discovers within ``timeout`` s
    (Fast DDS may take one 3 s announcement period), the probe itself excluded; returns as soon
    as any is seen. Slow by nature: for naming the nodes of a domain already known to hold
    participants (:func:`domain_participants`), not for checking every domain."""
    probe = RosProbe(domain_id, name)
    try:
        deadline = time.monotonic() + timeout
        while True:
            nodes = sorted(f"{ns.rstrip('/')}/{n}" for n, ns in probe.node.get_node_names_and_namespaces()
                           if (n, ns) != (name, "/"))
            if nodes or time.monotonic() > deadline:
                return nodes
            time.sleep(0.05)
    finally:
        probe.close()


class DomainClaim:
    """A claimed domain id; released with :meth:`release` (or on process exit).

    ``skipped`` maps each domain id the claim passed over because it held participants no claim
    accounts for to those participants; those ids stay claimed (so no one else lands in them)
    until this claim is released.
    """

    def __init__(self, domain_id: int, sock: socket.socket,
                 skipped: dict[int, tuple[DomainClaim, list[Participant]]] | None = None) -> None:
        self.domain_id = domain_id
        self._sock = sock
        self._skipped = dict(skipped or {})

    @property
    def skipped(self) -> dict[int, list[Participant]]:
        return {d: found for d, (_claim, found) in self._skipped.items()}

    def report(self) -> str:
        """One line per skipped domain naming its foreign participants ('' when none)."""
        return "\n".join(f"ROS_DOMAIN_ID {d} skipped for {self.domain_id}: participants no claim accounts for: "
                         f"{'; '.join(map(str, found))}" for d, found in self.skipped.items())

    def release(self) -> None:
        self._sock.close()
        for claim, _found in self._skipped.values():
            claim.release()


def claim_domain_id(first: int | None = None) -> DomainClaim:
    """A ``ROS_DOMAIN_ID`` (1..101) unique on this machine while the claim is held, and empty
    when claimed: an id whose domain already has DDS participants (:func:`domain_participants`)
    is skipped, recorded in :attr:`DomainClaim.skipped`. The search starts at ``first``
    (default: an id derived from the process id, so concurrent processes rarely contend)."""
    start = (first - 1) if first is not None else os.getpid() % 101
    skipped: dict[int, tuple[DomainClaim, list[Participant]]] = {}
    for k in range(101):
        domain_id = (start + k) % 101 + 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", _PORT_BASE + domain_id))
        except OSError:
            sock.close()
            continue
        found = domain_participants(domain_id)
        if found:
            skipped[domain_id] = (DomainClaim(domain_id, sock), found)
            continue
        return DomainClaim(domain_id, sock, skipped)
    for claim, _found in skipped.values():
        claim.release()
    raise RuntimeError("all ROS domain ids 1..101 are taken on this machine"
                       + (f" or hold foreign participants ({len(skipped)})" if skipped else ""))


@dataclass
class Inbox(Generic[M]):
    """Messages received on one topic, with their monotonic receive times."""

    messages: list[M] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _put(self, msg: M) -> None:
        with self._cond:
            self.messages.append(msg)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def latest(self) -> M | None:
        with self._cond:
            return self.messages[-1] if self.messages else None

    def snapshot(self) -> list[M]:
        with self._cond:
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.times.clear()

    def wait_for(self, predicate: Callable[[list[M]], bool], timeout: float, what: str = "") -> list[M]:
        """Block until ``predicate(messages)`` holds; raise TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout} s waiting for {what or 'messages'} "
                                       f"({len(self.messages)} received)")
                self._cond.wait(left)
            return list(self.messages)

    def wait_count(self, n: int, timeout: float) -> list[M]:
        return self.wait_for(lambda m: len(m) >= n, timeout, f"{n} messages")


class RosProbe:
    """A test-side node in its own context and domain, spun in a background thread."""

    def __init__(self, domain_id: int, name: str = "test_probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while not self._stop.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - shutdown races end the thread quietly
            pass

    def subscribe(self, topic: str, msg_type: type[M], qos: QoSProfile | int = 10) -> Inbox[M]:
        inbox: Inbox[M] = Inbox()
        self.node.create_subscription(msg_type, topic, inbox._put, qos)
        return inbox

    def publisher(self, topic: str, msg_type: type, qos: QoSProfile | int = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher: Any, n: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {publisher.topic_name} after {timeout} s")
            time.sleep(0.02)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call a service; raise TimeoutError if it is not there or does not answer in time."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"service {name} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, values: dict[str, Any],
                       timeout: float = 10.0) -> list[SetParametersResult]:
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return list(self.call(SetParameters, f"/{node_name}/set_parameters", request, timeout).results)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; raise TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
