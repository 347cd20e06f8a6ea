"""The fake robot of bench/control_loop.py, as two single-purpose processes.

    python bench/helpers/robot_side.py states  --rate 500 --warmup 3 --seconds 60 --out sent.npy
    python bench/helpers/robot_side.py listen  --out recv.npy          (until SIGINT)

``states`` publishes ``/joint_states`` on absolute deadlines (warm-up first, then the measured
part, whose send times it saves); ``listen`` records the receive time of every command. Two
processes, so neither side's timestamps wait for the other's work on one GIL.
Times are CLOCK_MONOTONIC (``time.monotonic``), comparable across processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from smrl_ros import topics  # noqa: E402
from smrl_ros.conversions import make_joint_state, seconds_to_stamp  # noqa: E402
from smrl_ros.realtime import freeze_heap, set_realtime_priority  # noqa: E402

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll")
HOME = np.array([0.0, 0.3, 1.3, 1.2, 0.0])


def publish_states(rate: float, warmup: float, seconds: float, out: Path) -> None:
    node = rclpy.create_node("bench_robot_states")
    pub = node.create_publisher(JointState, topics.JOINT_STATES, topics.STATE_PUB_QOS)
    msg = make_joint_state(JOINTS, HOME, np.zeros(len(JOINTS)), seconds_to_stamp(0))
    period = 1.0 / rate
    n_warm, n = int(warmup * rate), int(seconds * rate)
    sent = np.empty(n)
    freeze_heap()
    start = time.monotonic() + 0.05
    for k in range(n_warm + n):
        delay = start + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg.header.stamp = seconds_to_stamp(time.time())
        msg.position[0] = float(0.1 * np.sin(k * period))  # a moving arm: every state differs
        t = time.monotonic()
        pub.publish(msg)
        if k >= n_warm:
            sent[k - n_warm] = t
    np.save(out, sent)
    node.destroy_node()


def listen(out: Path) -> None:
    node = rclpy.create_node("bench_robot_commands")
    times: list[float] = []
    node.create_subscription(Float64MultiArray, topics.COMMANDS, lambda _m: times.append(time.monotonic()),
                             topics.COMMAND_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    freeze_heap()
    try:
        while True:
            executor.spin_once(timeout_sec=0.1)  # returns to Python, so SIGINT is seen
    except KeyboardInterrupt:
        pass
    np.save(out, np.array(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("states", "listen"))
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.priority:
        set_realtime_priority(args.priority)
    if args.mode == "states":
        publish_states(args.rate, args.warmup, args.seconds, args.out)
    else:
        listen(args.out)
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
