"""Control-loop benchmark: inference speed, and state-to-command latency over DDS.

    .venv/bin/python bench/control_loop.py [--seconds 60] [--rates 100 500] [--calls 5000]

1. **Inference.** The adapted policy (SMAC's ``TanhGaussianPolicy`` at the config's network
   size, z baked in, target head included) at batch 1: onnxruntime (1 intra-op + 1 inter-op
   thread, as the node runs it) against torch eager on the same module (1 thread, no_grad).
   Per-call p50/p99 in microseconds and the ratio of medians.
2. **Over DDS.** ``smrl_controller`` runs as its own process (its own ROS domain); this
   process plays the robot: a thread publishes ``/joint_states`` on absolute deadlines at each
   rate, and every command received is matched to the newest state published before it.
   Latency = command received - that state published (both CLOCK_MONOTONIC on this machine,
   so the figure includes both DDS hops, the node's executor, the observation, inference and
   the safety layer). A period is *missed* when no command arrived before the next state.

Targets (issue 4): onnxruntime >= 3x torch eager; p99 latency <= 2 ms at 100 Hz; fewer than
0.1% missed periods at 500 Hz. This machine has 2 shared cores: note the load next to the
figures (printed at the end).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def export_policy(out: Path, config: str) -> tuple[object, object, Path]:
    """A randomly initialised SMAC policy of the config's size, exported; (spec, torch graph, path)."""
    import torch

    from smrl_train.config_loader import load_config
    from smrl_train.export.onnx_export import AdaptedPolicyGraph, export_adapted_policy, spec_from_config
    from smrl_train.smac.config import SmacConfig
    from smrl_train.smac.networks import TanhGaussianPolicy

    cfg = load_config(REPO / config)
    spec = spec_from_config(cfg)
    net = SmacConfig().network
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(spec.obs_dim, spec.n_joints, net.latent_dim, net.policy_hidden).eval()
    z = np.zeros(net.latent_dim, dtype=np.float32)
    path = out / "policy.onnx"
    export_adapted_policy(policy, z, spec, path)
    graph = AdaptedPolicyGraph(policy, torch.as_tensor(z), spec).eval()
    return spec, graph, path


def percentiles_us(samples_ns: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(samples_ns, 50)) / 1e3, float(np.percentile(samples_ns, 99)) / 1e3


def bench_inference(graph: object, path: Path, obs_dim: int, calls: int) -> dict[str, float]:
    """Per-call latency of the same graph: onnxruntime's ``session.run`` and torch eager, the
    calls interleaved so both see the same machine; plus ``PolicyRuntime.act`` (the node's call:
    session.run plus the copy into the input buffer and the float64 result)."""
    import torch

    from smrl_train.robot.runtime import PolicyRuntime

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(calls, 1, obs_dim)).astype(np.float32)
    runtime = PolicyRuntime(path, warmup=200)
    session = runtime.model.session
    ort_ns, torch_ns, act_ns = np.empty(calls), np.empty(calls), np.empty(calls)
    clock = time.perf_counter_ns
    with torch.inference_mode():
        for i in range(200):
            graph(torch.from_numpy(obs[i]))
        for i in range(calls):
            t = clock()
            session.run(["action", "joint_targets"], {"obs": obs[i]})
            ort_ns[i] = clock() - t
            t = clock()
            graph(torch.from_numpy(obs[i]))[1].numpy()
            torch_ns[i] = clock() - t
            t = clock()
            runtime.act(obs[i, 0])
            act_ns[i] = clock() - t
    o50, o99 = percentiles_us(ort_ns)
    t50, t99 = percentiles_us(torch_ns)
    a50, a99 = percentiles_us(act_ns)
    return {"ort_p50_us": o50, "ort_p99_us": o99, "torch_p50_us": t50, "torch_p99_us": t99,
            "act_p50_us": a50, "act_p99_us": a99, "ratio": t50 / o50}


def bench_dds(model: Path | None, rate_hz: float, seconds: float, log_dir: Path, priority: int = 0) -> dict[str, float]:
    """Run the controller (or, with ``model`` None, the echo node: the floor) at ``rate_hz``
    against the fake robot of ``bench/helpers/robot_side.py``; with ``priority``, every process runs
    SCHED_FIFO at that priority."""
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray

    from smrl_ros import topics
    from smrl_ros.conversions import status_values
    from smrl_ros.graph_runner import GraphRunner, GraphSpec, NodeSpec, ros_environment
    from smrl_ros.graphs import controller_node
    from smrl_ros.probe import RosProbe, claim_domain_id
    from smrl_train.child_processes import die_with_parent

    log_dir.mkdir(parents=True, exist_ok=True)
    claim = claim_domain_id()
    if model is None:
        node = NodeSpec("smrl_echo", "bench.helpers.echo_node", "", parameters={"realtime_priority": priority})
    else:
        node = controller_node(str(model), rate_hz=float(rate_hz), allow_rate_mismatch=True, trigger="state",
                               diagnostics_period_s=0.5, realtime_priority=priority)
    runner = GraphRunner(GraphSpec("bench", (node,)), domain_id=claim.domain_id, log_dir=log_dir, cwd=REPO)
    env = ros_environment(claim.domain_id)
    robot = [sys.executable, str(REPO / "bench" / "helpers" / "robot_side.py")]
    sent_path, recv_path = log_dir / "sent.npy", log_dir / "recv.npy"
    probe = RosProbe(claim.domain_id, "bench_diagnostics")
    listener = states = None
    warmup = 4.0
    try:
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        listener = subprocess.Popen([*robot, "listen", "--out", str(recv_path), "--priority", str(priority)],
                                    env=env, cwd=REPO, preexec_fn=die_with_parent())
        runner.start()
        time.sleep(1.0)  # the node loads its model before the states start
        states = subprocess.Popen([*robot, "states", "--rate", str(rate_hz), "--warmup", str(warmup),
                                   "--seconds", str(seconds), "--out", str(sent_path), "--priority", str(priority)],
                                  env=env, cwd=REPO, preexec_fn=die_with_parent())
        if states.wait(timeout=seconds + warmup + 60) != 0:
            raise RuntimeError("the state publisher failed")
        time.sleep(0.5)
        listener.send_signal(2)
        listener.wait(timeout=10)
        controller = None
        for m in reversed(diag.snapshot()):
            hits = [status_values(s) for s in m.status if s.name.startswith("smrl_controller")]
            if hits and hits[0].get("compute_p50_ms", "nan") != "nan":
                controller = hits[0]  # the last window with steps in it
                break
    finally:
        for proc in (states, listener):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        probe.close()
        runner.close()
        claim.release()
    sent, got = np.load(sent_path), np.load(recv_path)
    n = len(sent)
    period = 1.0 / rate_hz
    # The measured stream: commands after the first state and before one period past the last
    # (later ones are the hold the watchdog publishes when the states stop, not answers).
    got = got[(got >= sent[0]) & (got <= sent[-1] + period)]
    if len(got) == 0:
        raise RuntimeError(f"no command received during the measurement (logs in {log_dir})")
    # Match each command to the newest state sent before it.
    idx = np.searchsorted(sent, got, side="right") - 1
    latency = (got - sent[idx]) * 1e3
    answered = np.zeros(n, dtype=bool)
    answered[idx] = True
    missed = int(n - answered.sum())
    out = {"rate_hz": rate_hz, "states": n, "commands": len(got),
           "lat_p50_ms": float(np.percentile(latency, 50)), "lat_p99_ms": float(np.percentile(latency, 99)),
           "lat_max_ms": float(latency.max()), "missed": missed, "missed_pct": 100.0 * missed / n,
           "send_jitter_p99_ms": float(np.percentile(np.abs(np.diff(sent) - period), 99) * 1e3)}
    if controller:
        out.update({f"node_{k}": float(controller[k]) for k in ("compute_p50_ms", "compute_p99_ms", "compute_max_ms")
                    if k in controller})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement time per rate")
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--calls", type=int, default=5000, help="inference calls per runtime")
    parser.add_argument("--config", default="config/reach.yaml")
    parser.add_argument("--logs", default="", help="keep the model and node logs in this folder")
    parser.add_argument("--priorities", type=int, nargs="+", default=[0, 50],
                        help="realtime_priority values to run (0: normal scheduling)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the echo-node floor runs")
    parser.add_argument("--cpu-dma-latency", type=int, default=-1, metavar="US",
                        help="hold /dev/cpu_dma_latency at US microseconds for the whole run (machine-wide, so "
                             "controller and echo floor alike; the controller's cpu_dma_latency_us does this for "
                             "a deployed node); -1: leave it")
    args = parser.parse_args()
    if args.cpu_dma_latency >= 0:
        from smrl_ros.realtime import hold_cpu_dma_latency

        _fd, why = hold_cpu_dma_latency(args.cpu_dma_latency)  # held until this process exits
        print(f"/dev/cpu_dma_latency: {why or f'held at {args.cpu_dma_latency} us'}", flush=True)
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory(prefix="smrl_bench_") as tmp:
        if args.logs:
            tmp = args.logs
            Path(tmp).mkdir(parents=True, exist_ok=True)
        spec, graph, path = export_policy(Path(tmp), args.config)
        inf = bench_inference(graph, path, spec.obs_dim, args.calls)  # type: ignore[attr-defined]
        print(f"inference (batch 1, {args.calls} calls, interleaved): onnxruntime p50 {inf['ort_p50_us']:.1f} us "
              f"p99 {inf['ort_p99_us']:.1f} us | torch eager p50 {inf['torch_p50_us']:.1f} us "
              f"p99 {inf['torch_p99_us']:.1f} us | ratio {inf['ratio']:.1f}x (target >= 3x) | "
              f"PolicyRuntime.act p50 {inf['act_p50_us']:.1f} us p99 {inf['act_p99_us']:.1f} us", flush=True)
        for priority in args.priorities:
            sched = f"SCHED_FIFO {priority}" if priority else "normal scheduling"
            for rate in args.rates:
                for name, model in (("controller", path), ("echo floor", None)):
                    if model is None and not args.floor:
                        continue
                    logs = Path(tmp) / f"logs_{name[:4]}_{priority}_{rate:g}"
                    r = bench_dds(model, rate, args.seconds, logs, priority)
                    node = (f" | node compute p50 {r['node_compute_p50_ms']:.3f} p99 {r['node_compute_p99_ms']:.3f} ms"
                            if "node_compute_p50_ms" in r else "")
                    print(f"{name:>10} {rate:>4g} Hz, {sched}, {args.seconds:g} s: state->command p50 "
                          f"{r['lat_p50_ms']:.3f} p99 {r['lat_p99_ms']:.3f} max {r['lat_max_ms']:.3f} ms | missed "
                          f"{r['missed']}/{r['states']} ({r['missed_pct']:.3f}%){node}", flush=True)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
