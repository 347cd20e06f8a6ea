"""Lockstep collection rate through the ROS sim bridge against the in-process env.

    .venv/bin/python bench/collect.py [--seconds 20] [--config config/reach.yaml]

In-process: ``env.step`` with random actions (reset every episode). Through ROS: the sim
bridge in ``lockstep`` mode as its own process, and this process as the collector a
reward-free exploration node is: on every joint state it builds the observation robot-side
(map by name, FK), draws a random action, and publishes the target ``q + a * max_step``;
the bridge steps one control period per command and publishes the next state. The ratio
ROS/in-process is the price of the bridge (target: >= 0.3). The floor row replaces the bridge
by a node that answers each command with a state at once (``bench/helpers/state_echo_node.py``):
a lockstep step can be no faster than that round trip plus the in-process step, which bounds the
ratio on this machine. Run once with normal scheduling
and once with SCHED_FIFO (``realtime_priority``) for both processes and the baseline: on a
loaded machine each DDS hop's wake-up waits for a core, and the ping-pong of lockstep pays two.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def env_rate(config: str, seconds: float) -> float:
    from smrl_train.config_loader import load_config
    from smrl_train.sim.envs import make_env

    env = make_env(load_config(REPO / config))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32))
        steps += 1
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def ros_rate(config: str, seconds: float, priority: int, floor: bool = False) -> tuple[float, int]:
    """Lockstep steps/s of this process as the collector against the sim bridge, or (``floor``)
    against ``bench/helpers/state_echo_node.py``, which answers each command with a state at
    once: the same two DDS hops per step without the MuJoCo step."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from smrl_ros import topics
    from smrl_ros.conversions import joint_state_arrays, make_command
    from smrl_ros.graph_runner import GraphRunner, GraphSpec, NodeSpec
    from smrl_ros.graphs import sim_graph
    from smrl_ros.probe import RosProbe, claim_domain_id
    from smrl_ros.realtime import set_realtime_priority
    from smrl_train.config_loader import load_config
    from smrl_train.robot.control import ObservationBuilder
    from smrl_train.robot.safety import JointStateMapper, MappedState
    from smrl_train.sim.envs import ArmTaskEnv

    cfg = load_config(REPO / config)
    env = ArmTaskEnv(cfg)
    arm, max_step = env.arm, env.max_step
    mapper = JointStateMapper(arm.joint_names)
    builder = ObservationBuilder(arm, arm.joint_names, env.observation_layout)
    rng = np.random.default_rng(0)
    claim = claim_domain_id()
    if floor:
        echo = NodeSpec("smrl_state_echo", "bench.helpers.state_echo_node", "",
                        parameters={"realtime_priority": priority, "joints": list(arm.joint_names)})
        graph = GraphSpec("collect_floor", (echo,))
    else:
        graph = sim_graph(config, "lockstep", realtime_priority=priority)
    runner = GraphRunner(graph, domain_id=claim.domain_id, cwd=REPO)
    probe = RosProbe(claim.domain_id, "bench_collector")
    if priority:
        set_realtime_priority(priority)  # the collector too, as the sim bridge
    count = {"steps": 0, "last_stamp": None}
    measuring = threading.Event()
    done = threading.Event()
    pub = probe.publisher(topics.COMMANDS, Float64MultiArray, topics.COMMAND_QOS)

    def on_state(msg: JointState) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp == count["last_stamp"] or done.is_set():
            return  # a republished state we already answered
        count["last_stamp"] = stamp
        state = mapper.map(*joint_state_arrays(msg))
        assert isinstance(state, MappedState), state
        builder.build(state.position, state.velocity, None)  # what an explorer feeds its policy
        action = rng.uniform(-1, 1, size=len(max_step))
        pub.publish(make_command(state.position + action * max_step))
        if measuring.is_set():
            count["steps"] += 1

    try:
        probe.node.create_subscription(JointState, topics.JOINT_STATES, on_state, topics.STATE_SUB_QOS)
        runner.start()
        probe.wait_for_subscribers(pub, 1, timeout=30)
        t_end = time.monotonic() + 30
        while count["last_stamp"] is None and time.monotonic() < t_end:
            time.sleep(0.05)
        if count["last_stamp"] is None:
            name = graph.nodes[0].name
            raise RuntimeError(f"{name} never published a state:\n" + runner.log(name))
        time.sleep(1.0)  # warm up
        measuring.set()
        t0 = time.perf_counter()
        time.sleep(seconds)
        steps = count["steps"]
        elapsed = time.perf_counter() - t0
        done.set()
    finally:
        probe.close()
        runner.close()
        claim.release()
    return steps / elapsed, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--config", default="config/reach.yaml")
    parser.add_argument("--priorities", type=int, nargs="+", default=[0, 50],
                        help="realtime_priority of the sim bridge and the collector (0: normal scheduling)")
    args = parser.parse_args()
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from smrl_ros.realtime import set_normal_priority, set_realtime_priority

    for priority in args.priorities:
        sched = f"SCHED_FIFO {priority}" if priority else "normal scheduling"
        if priority:
            set_realtime_priority(priority)  # same scheduling for the in-process baseline
        in_process = env_rate(args.config, min(args.seconds, 10.0))
        set_normal_priority()
        through_ros, steps = ros_rate(args.config, args.seconds, priority)
        set_normal_priority()
        floor, _ = ros_rate(args.config, args.seconds, priority, floor=True)
        set_normal_priority()
        # Lockstep is serial: a step is at least one DDS round trip plus one MuJoCo step.
        bound = 1.0 / (1.0 / floor + 1.0 / in_process)
        print(f"lockstep collection, {sched} ({args.config}): in-process env {in_process:.0f} steps/s | "
              f"through the ROS sim bridge {through_ros:.0f} steps/s ({steps} steps in {args.seconds:g} s) | "
              f"ratio {through_ros / in_process:.2f} (target >= 0.3) | DDS floor (state echo, no sim) "
              f"{floor:.0f} round trips/s: bound {bound:.0f} steps/s, ratio bound {bound / in_process:.2f}",
              flush=True)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
