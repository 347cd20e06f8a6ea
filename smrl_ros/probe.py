"""Talk to a running node graph from Python: domain ids, a probe node, bounded waits.

Used by the tests (``test/ros_harness.py``), the benchmarks and the demo.

* :func:`claim_domain_id` hands out a ``ROS_DOMAIN_ID`` in 1..101 that no other process on
  this machine holds, by binding a loopback TCP port per id (the trick of
  ``ros-domain-coordinator``); graphs running concurrently (tests, benchmarks) never see each other's topics.
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


class DomainClaim:
    """A claimed domain id; released with :meth:`release` (or on process exit)."""

    def __init__(self, domain_id: int, sock: socket.socket) -> None:
        self.domain_id = domain_id
        self._sock = sock

    def release(self) -> None:
        self._sock.close()


def claim_domain_id() -> DomainClaim:
    """A ``ROS_DOMAIN_ID`` (1..101) unique on this machine while the claim is held."""
    start = os.getpid() % 101
    for k in range(101):
        domain_id = (start + k) % 101 + 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", _PORT_BASE + domain_id))
        except OSError:
            sock.close()
            continue
        return DomainClaim(domain_id, sock)
    raise RuntimeError("all ROS domain ids 1..101 are taken on this machine")


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
