"""smrl_adapter over DDS: it explores a task with rewards from the sim bridge, writes the adapted
policy, the controller hot-loads it, and a new task (a parameter change) adapts again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from smrl_ros import topics
from smrl_ros.graphs import adapt_graph
from smrl_train.robot.model_metadata import KIND_ADAPTED
from smrl_train.robot.runtime import load_model

from bundle_helpers import random_bundle
from conftest import small_config
from ros_harness import latest_status, ros_graph, wait_until

pytestmark = pytest.mark.ros

STEPS = 20  # per episode: 1 s at the model's 20 Hz (the sim runs in realtime, as for the controller)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Trained on STEPS-step episodes: its metadata says so, and the adapter follows it.
    return random_bundle(small_config("reach", episode_length=STEPS), tmp_path_factory.mktemp("adapt") / "bundle")


def results(inbox) -> list[dict]:
    return [json.loads(m.data) for m in inbox.snapshot()]


def controller_on(diag, model: str) -> dict[str, str]:
    """The controller's diagnostics once it runs ``model``."""
    def running(_msgs) -> bool:
        return (latest_status(diag, "smrl_controller") or {}).get("model_path") == model

    diag.wait_for(running, 10.0, f"the controller on {model}")
    return latest_status(diag, "smrl_controller")


def test_adapter_writes_a_policy_the_controller_hot_loads(bundle: Path, tmp_path: Path) -> None:
    graph = adapt_graph(str(bundle), sim_parameters={"task_split": "test", "task_index": 1},
                        controller_parameters={"diagnostics_period_s": 0.2},
                        adapter_parameters={"task_index": 1, "output_dir": str(tmp_path / "adapted")})
    with ros_graph(graph, tmp_path) as (runner, probe):
        inbox = probe.subscribe("/smrl_adapter/result", String, topics.LATCHED_QOS)
        diag = probe.subscribe(topics.DIAGNOSTICS, DiagnosticArray)
        first = json.loads(inbox.wait_count(1, 40.0)[0].data)
        assert first["error"] == "" and first["task"] == "test1"
        # Two exploration episodes (config/adapt_nodes.yaml) of the model's length (its metadata:
        # no parameter said it), each with a finite return; the deployed return over one more.
        assert len(first["exploration_returns"]) == 2 and np.all(np.isfinite(first["exploration_returns"]))
        assert first["context_size"] == 2 * STEPS and first["deployed"]["steps"] == STEPS
        model = load_model(first["model"])
        assert model.info.kind == KIND_ADAPTED and np.allclose(model.info.z, first["z_mean"], atol=1e-6)
        status = controller_on(diag, first["model"])
        assert int(status["reloads"]) == 1 and status["enabled"] == "True" and int(status["reload_failures"]) == 0

        # A new task through the adapter's parameters: adapt again, hot-load again.
        assert all(r.successful for r in probe.set_parameters("smrl_adapter", {"task_index": 0}))
        inbox.wait_count(2, 40.0)
        second = results(inbox)[-1]
        assert second["error"] == "" and second["task"] == "test0" and second["model"] != first["model"]
        status = controller_on(diag, second["model"])
        assert int(status["reloads"]) == 2
        assert "task set to" in runner.log("smrl_sim")  # the adapter switched the sim's task
        assert runner.exited() == {}


def test_adapter_refuses_to_explore_while_another_node_commands_the_arm(bundle: Path, tmp_path: Path) -> None:
    graph = adapt_graph(str(bundle), adapter_parameters={"controller_node": "", "pause_controller": False,
                                                         "episode_length": STEPS, "adapt_on_start": False})
    graph = type(graph)(graph.name, tuple(n for n in graph.nodes if n.name != "smrl_controller"))
    with ros_graph(graph, tmp_path) as (runner, probe):
        intruder = probe.publisher(topics.COMMANDS, Float64MultiArray, topics.COMMAND_QOS)
        probe.wait_for_subscribers(intruder, 1, 20.0)  # the sim bridge listens
        inbox = probe.subscribe("/smrl_adapter/result", String, topics.LATCHED_QOS)
        wait_until(lambda: "smrl_adapter" in probe.node.get_node_names(), 20.0, "the adapter")
        time.sleep(0.5)  # and the adapter has seen the intruder's publisher
        reply = probe.call(Trigger, "/smrl_adapter/adapt", Trigger.Request(), 20.0)
        assert reply.success
        result = json.loads(inbox.wait_count(1, 20.0)[0].data)
        assert "other node(s) publish" in result["error"], result
        assert "model" not in result
