"""A test detects, not suffers, a foreign participant in its domain (issue 15, defect 10): a
stray node that no claim accounts for makes the claim skip its domain, naming the process and
its node."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from smrl_ros.graph_runner import ros_environment
from smrl_ros.probe import claim_domain_id, domain_participants
from smrl_train.child_processes import die_with_parent

from ros_harness import ForeignParticipantWarning, claim_clean_domain, wait_until

pytestmark = pytest.mark.ros

STRAY = ("import rclpy; from rclpy.node import Node; from std_msgs.msg import String; rclpy.init(); "
         "node = Node('stray_talker'); node.create_publisher(String, '/chatter', 10); rclpy.spin(node)")


def test_a_stray_node_in_a_domain_is_detected_and_the_domain_skipped() -> None:
    held = claim_domain_id()
    domain = held.domain_id
    stray = subprocess.Popen([sys.executable, "-c", STRAY], env=ros_environment(domain), preexec_fn=die_with_parent(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bool(domain_participants(domain)), 30.0, "the stray node's participant")
        (found,) = domain_participants(domain)
        assert found.pid == stray.pid and "stray_talker" in found.command and found.ports
        held.release()  # free to claim again, but the stray still runs in it
        with pytest.warns(ForeignParticipantWarning) as caught:
            claim = claim_clean_domain(first=domain)
        try:
            assert claim.domain_id != domain and list(claim.skipped) == [domain]
            assert domain_participants(claim.domain_id) == []
            (message,) = [str(w.message) for w in caught if w.category is ForeignParticipantWarning]
            assert f"ROS_DOMAIN_ID {domain} already has participants" in message
            assert f"pid {stray.pid}" in message and "/stray_talker" in message, message
        finally:
            claim.release()
    finally:
        stray.terminate()
        stray.wait(10.0)
    wait_until(lambda: not domain_participants(domain), 10.0, "the stray's ports to close")


def test_an_empty_domain_is_claimed_at_once() -> None:
    """The check costs one read of /proc/net/udp, not a discovery wait."""
    start = time.perf_counter()
    claim = claim_clean_domain()
    elapsed = time.perf_counter() - start
    try:
        assert claim.skipped == {} and domain_participants(claim.domain_id) == []
    finally:
        claim.release()
    assert elapsed < 1.0, f"claiming an empty domain took {elapsed:.3f} s"
