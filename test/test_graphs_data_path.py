"""The explore / adapt / train graphs: launch files over the shared description, parameter YAMLs
that name only real parameters, and every node starting from its graph with those YAMLs."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.srv import GetParameters

from smrl_ros.graph_runner import GraphSpec
from smrl_ros.graphs import (
    LAUNCH_FILES,
    adapt_from_arguments,
    explore_from_arguments,
    node_yaml_files,
    train_from_arguments,
)

from conftest import REPO

# The parameter schema of each node, by node name (what the YAML files may set).
SCHEMAS = {
    "smrl_explorer": ("smrl_ros.explorer_node", "ExplorerParams"),
    "smrl_adapter": ("smrl_ros.adapter_node", "AdapterParams"),
    "smrl_trainer": ("smrl_ros.trainer_node", "TrainerParams"),
}
EXECUTABLES = {"smrl_sim", "smrl_controller", "smrl_explorer", "smrl_adapter", "smrl_trainer"}


def _launch_module(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defaults(arguments) -> dict[str, str]:
    values = {a.name: a.default for a in arguments}
    values.update({k: f"/abs/{k}" for k in ("bundle", "store", "data") if k in values})
    return values


@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_files_are_thin_wrappers_over_the_graph_description(name: str) -> None:
    module = _launch_module(name)
    arguments, build = LAUNCH_FILES[name]
    assert module.ARGUMENTS is arguments and module.build is build
    graph = module.build(_defaults(module.ARGUMENTS))
    assert isinstance(graph, GraphSpec) and graph.nodes
    assert {n.executable for n in graph.nodes} <= EXECUTABLES
    for node in graph.nodes:
        for f in node.params_files:
            assert Path(f).is_file(), f
    assert len((REPO / "launch" / name).read_text().splitlines()) < 30  # thin


def test_sim_by_default_and_real_arm_defaults_without_it() -> None:
    args = _defaults(dict(LAUNCH_FILES)["adapt.launch.py"][0])
    sim = adapt_from_arguments(args)
    assert [n.name for n in sim.nodes] == ["smrl_sim", "smrl_controller", "smrl_adapter"]
    assert sim.node("smrl_sim").parameters["publish_reward"] is True
    assert sim.node("smrl_sim").parameters["mode"] == "realtime"
    ctrl = sim.node("smrl_controller").parameters
    assert ctrl["enabled"] is False and ctrl["model_path"] == "/abs/bundle/prior_policy.onnx"
    real = adapt_from_arguments({**args, "use_sim": "false", "controller_topic": "/arm/commands",
                                 "home": "[0.0, 0.3, 1.3, 1.2, 0.0]", "rate_hz": "100"})
    assert [n.name for n in real.nodes] == ["smrl_controller", "smrl_adapter"]
    adapter = real.node("smrl_adapter").parameters
    assert adapter["mode"] == "realtime" and adapter["reset_mode"] == "home" and adapter["sim_node"] == ""
    assert adapter["home"] == [0.0, 0.3, 1.3, 1.2, 0.0] and adapter["command_topic"] == "/arm/commands"
    assert real.node("smrl_controller").parameters["command_topic"] == "/arm/commands"
    assert real.node("smrl_controller").parameters["rate_hz"] == 100.0
    explore = explore_from_arguments({**_defaults(dict(LAUNCH_FILES)["explore.launch.py"][0]), "use_sim": "false",
                                      "tasks": "[4]"})
    assert [n.name for n in explore.nodes] == ["smrl_explorer"]
    assert explore.node("smrl_explorer").parameters["tasks"] == [4]
    assert explore.node("smrl_explorer").parameters["reset_mode"] == "home"
    train = train_from_arguments({"data": "/d", "recordings": "[/r1, /r2]", "overrides": "offline.steps=10"})
    assert train.node("smrl_trainer").parameters == {"data": "/d", "recordings": ["/r1", "/r2"],
                                                     "overrides": ["offline.steps=10"]}


def test_parameter_yamls_set_only_parameters_the_nodes_declare() -> None:
    files = node_yaml_files()
    assert {f.name for f in files} >= {"explore_nodes.yaml", "adapt_nodes.yaml", "train_nodes.yaml"}
    for path in files:
        data = yaml.safe_load(path.read_text())
        for key, section in data.items():
            node = key.split("/")[-1]
            module, cls = SCHEMAS[node]
            fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
            unknown = set(section["ros__parameters"]) - fields
            assert not unknown, f"{path.name}: {node} has no parameter(s) {sorted(unknown)}"


def test_family_configs_are_not_confused_with_parameter_files() -> None:
    from smrl_train.config_loader import load_config

    for path in node_yaml_files():
        with pytest.raises(Exception, match="unknown key"):
            load_config(path)  # a parameter file is refused by the strict loader, naming the key


# -- real processes: each node from its launch arguments, with the YAML parameters --------------------


def _parameters(probe, node: str, names: list[str]) -> dict[str, object]:
    from rclpy.parameter import parameter_value_to_python

    request = GetParameters.Request(names=names)
    reply = probe.call(GetParameters, f"/{node}/get_parameters", request, 20.0)
    return {n: parameter_value_to_python(v) for n, v in zip(names, reply.values)}


@pytest.mark.ros
def test_every_node_starts_from_its_graph_with_the_yaml_parameters(tmp_path: Path) -> None:
    from smrl_train.data.generate import generate_dataset

    from bundle_helpers import random_bundle
    from conftest import small_config
    from ros_harness import ros_graph, wait_until

    cfg = small_config("reach", n_train=2, n_test=1, episode_length=20)
    data = tmp_path / "data"
    generate_dataset(cfg, data, progress=False)
    bundle = random_bundle(cfg, tmp_path / "bundle")
    adapt = adapt_from_arguments({**_defaults(dict(LAUNCH_FILES)["adapt.launch.py"][0]), "bundle": str(bundle)})
    train = train_from_arguments({"data": str(data), "run_dir": str(tmp_path / "runs")})
    explore = explore_from_arguments({**_defaults(dict(LAUNCH_FILES)["explore.launch.py"][0]), "bundle": str(bundle),
                                      "store": str(tmp_path / "rec"), "dataset": str(data), "tasks": "[1]",
                                      "episode_length": "10"})
    # One sim bridge (the adapt graph's) serves the explorer too; the adapter waits for a task
    # so that only the explorer commands the arm.
    adapter = adapt.node("smrl_adapter")
    adapter = dataclasses.replace(adapter, parameters={**adapter.parameters, "adapt_on_start": False})
    nodes = [adapter if n.name == "smrl_adapter" else n for n in adapt.nodes]
    graph = GraphSpec("all", (*nodes, *train.nodes, explore.node("smrl_explorer")))
    with ros_graph(graph, tmp_path) as (runner, probe):
        wait_until(lambda: {"smrl_adapter", "smrl_trainer", "smrl_controller"} <= set(probe.node.get_node_names()),
                   30.0, "the nodes")
        assert _parameters(probe, "smrl_adapter", ["exploration_episodes", "evaluate_steps", "mode"]) == {
            "exploration_episodes": 2, "evaluate_steps": -1, "mode": "realtime"}
        assert _parameters(probe, "smrl_trainer", ["threads", "progress_period_s", "offline_run"]) == {
            "threads": 1, "progress_period_s": 2.0, "offline_run": "offline_only"}
        assert _parameters(probe, "smrl_controller", ["enabled"]) == {"enabled": False}
        # The explorer takes episodes_per_task (2) from explore_nodes.yaml.
        assert runner.wait_exit("smrl_explorer", 60.0) == 0
    from smrl_train.data.store import load_task_arrays

    arrays = load_task_arrays(tmp_path / "rec")
    assert list(arrays) == [1] and int(arrays[1].truncated.sum()) == 2


def test_run_graph_refuses_unknown_arguments_and_bad_choices() -> None:
    from smrl_ros.run_graph import load_launch_module, parse_arguments

    module = load_launch_module("explore")
    values = parse_arguments(module.ARGUMENTS, ["bundle:=/b", "store:=/s", "use_sim:=false"])
    assert values["bundle"] == "/b" and values["use_sim"] == "false" and values["config"] == "config/reach.yaml"
    with pytest.raises(SystemExit, match="unknown argument 'bundel'.*known: bundle"):
        parse_arguments(module.ARGUMENTS, ["bundel:=/b"])
    with pytest.raises(SystemExit, match="not one of true, false"):
        parse_arguments(module.ARGUMENTS, ["use_sim:=maybe"])


@pytest.mark.ros
def test_run_graph_runs_a_launch_file_without_launch(tmp_path: Path, monkeypatch, capsys) -> None:
    """``python -m smrl_ros.run_graph explore.launch.py ...``: the pip-only ``ros2 launch``."""
    from smrl_ros.probe import claim_domain_id
    from smrl_ros.run_graph import main
    from smrl_train.data.store import EpisodeStore

    from bundle_helpers import random_bundle
    from conftest import small_config

    bundle = random_bundle(small_config("reach"), tmp_path / "bundle")
    claim = claim_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(claim.domain_id))
    try:
        code = main(["explore.launch.py", f"bundle:={bundle}", f"store:={tmp_path / 'rec'}", "tasks:=[2]",
                     "episode_length:=10", "episodes_per_task:=1"])
    finally:
        claim.release()
    assert code == 0
    out = capsys.readouterr().out
    assert "[smrl_explorer]" in out and "[smrl_sim]" in out and "episode 1 written" in out
    assert len(EpisodeStore.open(tmp_path / "rec").episode_paths()) == 1


def test_docs_tables_are_the_nodes_parameter_declarations() -> None:
    """Every parameter row in the docs is generated from the node's declaration
    (``python -m smrl_ros.params``): a changed default, type or description fails here."""
    from smrl_ros.params import NODE_PARAMS, markdown_rows

    docs = (REPO / "docs" / "ros.md").read_text() + (REPO / "docs" / "deployment.md").read_text()
    for node, (module, cls) in NODE_PARAMS.items():
        for row in markdown_rows(getattr(importlib.import_module(module), cls)):
            assert row in docs, f"docs lack or differ from {node}: {row}"
    for name in LAUNCH_FILES:
        assert f"`{name}`" in docs


def test_fleet_graph_gives_each_arm_its_namespace_topics_and_share_of_tasks(tmp_path: Path) -> None:
    from smrl_ros.graphs import fleet_from_arguments, fleet_graph
    from smrl_train.config_schema import ConfigError

    graph = fleet_graph("/b", "/s", "", 2, tasks=(0, 1, 2, 3, 4))
    assert [n.label for n in graph.nodes] == ["arm1/smrl_sim", "arm1/smrl_explorer", "arm2/smrl_sim",
                                             "arm2/smrl_explorer"]
    assert graph.wait_for == ("arm1/smrl_explorer", "arm2/smrl_explorer")
    sim, explorer = graph.node("arm2/smrl_sim"), graph.node("arm2/smrl_explorer")
    assert sim.namespace == explorer.namespace == "/arm2" and sim.parameters["mode"] == "lockstep"
    for key in ("joint_states_topic", "command_topic"):
        assert sim.parameters[key] == explorer.parameters[key] and sim.parameters[key].startswith("/arm2/")
    assert explorer.parameters["tasks"] == (0, 1, 2, 3, 4) and explorer.parameters["fleet_share"] == (1, 2)
    assert graph.node("arm1/smrl_explorer").parameters["fleet_share"] == (0, 2)
    assert "tasks" not in fleet_graph("/b", "/s", "/d", 2).node("arm1/smrl_explorer").parameters  # the dataset's
    assert explorer.parameters["robot_id"] == "arm2" and explorer.parameters["reset_service"] == "/arm2/smrl_sim/reset"
    # Done only when both explorers are (a failure ends it at once).
    assert not graph.done({"arm1/smrl_explorer": 0}) and graph.done({"arm1/smrl_explorer": 0, "arm2/smrl_explorer": 0})
    assert graph.done({"arm2/smrl_sim": 1})
    with pytest.raises(ConfigError, match="arms: 3 arms need at least as many training tasks"):
        fleet_graph("/b", "/s", "", 3, tasks=(0, 1))
    with pytest.raises(ConfigError, match="arms: expected a whole number"):
        fleet_from_arguments({"bundle": "/b", "store": "/s", "dataset": "", "arms": "two", "tasks": "[0, 1]"})


@pytest.mark.ros
def test_fleet_launch_records_two_simulated_arms_into_one_store(tmp_path: Path, monkeypatch, capsys) -> None:
    """``fleet.launch.py arms:=2`` over DDS: two sim bridges and two explorers, one store."""
    from smrl_ros.probe import claim_domain_id
    from smrl_ros.run_graph import main
    from smrl_train.data.generate import generate_dataset
    from smrl_train.data.store import EpisodeStore

    from bundle_helpers import random_bundle
    from conftest import small_config

    cfg = small_config("reach", n_train=4, n_test=1, episode_length=20)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    bundle = random_bundle(cfg, tmp_path / "bundle")
    claim = claim_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(claim.domain_id))
    try:
        code = main(["fleet.launch.py", "arms:=2", f"bundle:={bundle}", f"store:={tmp_path / 'rec'}",
                     f"dataset:={tmp_path / 'data'}", "episode_length:=10", "episodes_per_task:=2"])
    finally:
        claim.release()
    assert code == 0
    out = capsys.readouterr().out
    assert "[arm1/smrl_explorer]" in out and "[arm2/smrl_explorer]" in out
    store = EpisodeStore.open(tmp_path / "rec")
    episodes = list(store.iter_episodes())
    assert len(episodes) == 8  # 4 tasks x 2 episodes: the graph waited for both explorers
    robots = {(e.task_index, e.meta["robot_id"]) for e in episodes}
    assert robots == {(0, "arm1"), (2, "arm1"), (1, "arm2"), (3, "arm2")}
    urdf_sha256 = EpisodeStore.open(tmp_path / "data").manifest["arm"]["urdf_sha256"]
    assert {e.meta["urdf_sha256"] for e in episodes} == {urdf_sha256}
    assert all(len(e) == 10 for e in episodes)
