"""Every node graph of smrl_ros (sim, control, explore, adapt, train) as plain Python data.

Each graph has a builder taking typed arguments (used by the tests and ``make demo``, run
through :class:`smrl_ros.graph_runner.GraphRunner`); the data path's graphs also have a
``*_from_arguments`` twin taking the string launch arguments of its launch file
(``launch/*.launch.py`` are two lines over it, via
:func:`smrl_ros.graph_runner.launch_description`). Node parameters come from the ROS parameter
files ``config/*_nodes.yaml`` (``/**/<node>: ros__parameters:``), then from the builder's
arguments, which override them.

===========  ===============================================  ====================================
graph        nodes                                            launch file
===========  ===============================================  ====================================
sim          smrl_sim (:func:`sim_graph`)                     ``sim.launch.py``
control      smrl_sim (realtime) + smrl_controller            ``control.launch.py``
             (:func:`control_graph`)
explore      smrl_sim (lockstep) + smrl_explorer              ``explore.launch.py``
fleet        N x (smrl_sim (lockstep) + smrl_explorer),       ``fleet.launch.py``
             each pair under /armK, into one store
             (:func:`fleet_graph`)
adapt        smrl_sim (realtime, rewards) + smrl_controller   ``adapt.launch.py``
             (paused until adapted) + smrl_adapter
train        smrl_trainer                                     ``train.launch.py``
===========  ===============================================  ====================================

With ``use_sim: false`` the control, explore and adapt graphs leave the sim bridge out: the
arm's driver already provides ``/joint_states`` and the forward position controller, and the
explorer / adapter switch to real-arm defaults (realtime stepping, homing between episodes, no
sim task).

The arm has one source: with the sim bridge, the nodes that drive it get the URDF and
end-effector link of the bridge's config (:func:`config_arm`); on a real arm they take the
URDF, end-effector link and home pose from the model's metadata (``smrl.urdf``,
``smrl.ee_link``, ``smrl.home``: the training config's arm). The ``urdf_path``, ``ee_link`` and
``home`` arguments only override them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from smrl_ros.graph_runner import GraphSpec, LaunchArgument, NodeSpec, as_bool
from smrl_ros.paths import input_path
from smrl_train.config import package_root
from smrl_train.config_loader import load_config
from smrl_train.config_schema import ConfigError

DEFAULT_CONFIG = "config/reach.yaml"


def params_file(name: str) -> str:
    """Absolute path of ``config/<name>`` (source tree or installed share folder)."""
    return str(package_root() / "config" / name)


def _drop_empty(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters without the launch arguments left empty (the YAML or node default applies)."""
    return {k: v for k, v in values.items() if v not in ("", None)}


def config_arm(config: str) -> dict[str, Any]:
    """The arm the sim bridge of ``config`` simulates, as the ``urdf_path`` and ``ee_link``
    parameters of the nodes driving it; empty when the config does not load (the sim bridge
    then refuses to start and says why)."""
    try:
        cfg = load_config(input_path(config), arm_check=False)
    except ConfigError:
        return {}
    return {"urdf_path": str(cfg.urdf_path()), "ee_link": cfg.arm.ee_link}


def parse_value(text: str) -> Any:
    """A launch-argument string as a parameter value: YAML scalars and lists (``[0.0, 0.3]``)."""
    return yaml.safe_load(text) if text.strip() else ""


# ---------------------------------------------------------------------------------------
# The deployment path: the sim bridge alone, and the controller driving an arm


def sim_node(config: str = "config/reach.yaml", mode: str = "realtime", **parameters: Any) -> NodeSpec:
    """The MuJoCo sim bridge (``smrl_sim``)."""
    return NodeSpec("smrl_sim", "smrl_ros.sim_node", "smrl_sim",
                    parameters={"config": config, "mode": mode, **parameters})


def controller_node(model_path: str, **parameters: Any) -> NodeSpec:
    """The ONNX control node (``smrl_controller``)."""
    return NodeSpec("smrl_controller", "smrl_ros.controller_node", "smrl_controller",
                    parameters={"model_path": model_path, **parameters})


def sim_graph(config: str = "config/reach.yaml", mode: str = "realtime", **sim_parameters: Any) -> GraphSpec:
    """The sim bridge alone (``launch/sim.launch.py``)."""
    return GraphSpec("sim", (sim_node(config, mode, **sim_parameters),))


def control_graph(model_path: str, use_sim: bool = True, config: str = "config/reach.yaml",
                  sim_parameters: Mapping[str, Any] | None = None,
                  controller_parameters: Mapping[str, Any] | None = None) -> GraphSpec:
    """The adapted policy driving an arm: the controller, plus the sim bridge when ``use_sim``
    (on a real arm its driver already provides the topics). ``launch/control.launch.py``."""
    ctrl = dict(controller_parameters or {})
    nodes = [controller_node(model_path, **({**config_arm(config), **ctrl} if use_sim else ctrl))]
    if use_sim:
        nodes.insert(0, sim_node(config, "realtime", **dict(sim_parameters or {})))
    return GraphSpec("control", tuple(nodes))


# ---------------------------------------------------------------------------------------
# Real-arm defaults: what changes when there is no sim bridge.

REAL_ARM_DRIVER = {"mode": "realtime", "reset_mode": "home", "sim_node": ""}
# The sim bridge answers a reset at once: a reset (or task) request unanswered after 5 s is sent
# again (a DDS match still under way can lose an answer), not after a real arm's 30 s.
SIM_DRIVER = {"reset_timeout_s": 5.0}


# ---------------------------------------------------------------------------------------
# Explore


def explorer_node(bundle: str, store: str, **parameters: Any) -> NodeSpec:
    """The exploration recorder (``smrl_explorer``) with ``config/explore_nodes.yaml``."""
    return NodeSpec("smrl_explorer", "smrl_ros.explorer_node", "smrl_explorer",
                    parameters={"bundle": bundle, "store": store, **parameters},
                    params_files=(params_file("explore_nodes.yaml"),))


def explore_graph(bundle: str, store: str, *, use_sim: bool = True, config: str = DEFAULT_CONFIG,
                  sim_parameters: Mapping[str, Any] | None = None,
                  explorer_parameters: Mapping[str, Any] | None = None) -> GraphSpec:
    """Reward-free collection: the explorer, plus the sim bridge in lockstep mode when
    ``use_sim`` (on a real arm the explorer steps in realtime and homes between episodes)."""
    extra = dict(explorer_parameters or {})
    if use_sim:
        return GraphSpec("explore", (sim_node(config, "lockstep", **dict(sim_parameters or {})),
                                     explorer_node(bundle, store, **{**config_arm(config), **SIM_DRIVER, **extra})))
    return GraphSpec("explore", (explorer_node(bundle, store, **{**REAL_ARM_DRIVER, **extra}),))


EXPLORE_ARGUMENTS = (
    LaunchArgument("bundle", "", "adaptation bundle folder (policy.onnx) the explorer acts with"),
    LaunchArgument("store", "", "episode store to record into"),
    LaunchArgument("dataset", "", "offline dataset the bundle was trained on (its manifest is copied)"),
    LaunchArgument("use_sim", "true", "start the MuJoCo sim bridge (false: a real arm's driver is running)",
                   ("true", "false")),
    LaunchArgument("config", DEFAULT_CONFIG, "smrl config of the sim bridge (arm, task family)"),
    LaunchArgument("tasks", "", "training task indices to record, e.g. [0, 1, 2] (empty: all of the dataset)"),
    LaunchArgument("episodes_per_task", "", "episodes each task should have in the store"),
    LaunchArgument("prior_episodes", "", "of those, stochastic prior-z episodes (SMAC's collection)"),
    LaunchArgument("posterior_episodes", "", "of those, stochastic posterior-z episodes (the bundle's "
                   "task_latents.json)"),
    LaunchArgument("episode_length", "", "control steps per episode"),
    LaunchArgument("home", "", "real arm: home pose (rad, URDF order) between episodes (default: the bundle's, "
                   "from the training config)"),
    LaunchArgument("joint_states_topic", "", "joint state input (default /joint_states)"),
    LaunchArgument("command_topic", "", "position command output (default /forward_position_controller/commands)"),
    LaunchArgument("urdf_path", "", "the robot's URDF (default: the sim config's arm, or the bundle's)"),
    LaunchArgument("ee_link", "", "its end-effector link (default: the sim config's, or the bundle's)"),
    LaunchArgument("autostart", "true", "false: the explorer waits unconfigured for lifecycle transitions "
                   "(ros2 lifecycle set /smrl_explorer configure, activate)", ("true", "false")),
)


def explore_from_arguments(values: Mapping[str, str]) -> GraphSpec:
    """``launch/explore.launch.py``'s graph from its (string) launch arguments."""
    keys = ("dataset", "tasks", "episodes_per_task", "prior_episodes", "posterior_episodes", "episode_length",
            "home", "joint_states_topic", "command_topic", "urdf_path", "ee_link")
    extra = _drop_empty({k: parse_value(values.get(k, "")) for k in keys})
    extra["autostart"] = as_bool(values.get("autostart", "true"))
    return explore_graph(values["bundle"], values["store"], use_sim=as_bool(values.get("use_sim", "true")),
                         config=values.get("config") or DEFAULT_CONFIG, explorer_parameters=extra)


def node_yaml_files() -> list[Path]:
    """The ROS parameter files the graphs use (``config/*_nodes.yaml``)."""
    return sorted((package_root() / "config").glob("*_nodes.yaml"))


# ---------------------------------------------------------------------------------------
# Fleet: several arms recording into one store


def fleet_graph(bundle: str, store: str, dataset: str, arms: int, *, config: str = DEFAULT_CONFIG,
                tasks: tuple[int, ...] = (), explorer_parameters: Mapping[str, Any] | None = None) -> GraphSpec:
    """``arms`` simulated arms recording into one store, each a sim bridge (lockstep) and an
    explorer under its own namespace ``/armK`` (``/armK/joint_states``,
    ``/armK/forward_position_controller/commands``, ``/armK/smrl_sim/reset``), its robot id
    ``armK`` in every episode. The training tasks (``tasks``, default: the dataset's) are dealt
    round robin (the explorers' ``fleet_share``), so arm K records the (K-1)-th, (K-1+N)-th, ...;
    the graph is done when every explorer has recorded its share."""
    if arms < 1:
        raise ConfigError(f"arms: must be >= 1, got {arms}")
    if tasks and len(set(tasks)) < arms:
        raise ConfigError(f"arms: {arms} arms need at least as many training tasks, got {len(set(tasks))}")
    nodes: list[NodeSpec] = []
    for k in range(1, arms + 1):
        ns = f"/arm{k}"
        topics = {"joint_states_topic": f"{ns}/joint_states",
                  "command_topic": f"{ns}/forward_position_controller/commands",
                  "object_pose_topic": f"{ns}/puck_pose"}
        sim = sim_node(config, "lockstep", **topics, reward_topic=f"{ns}/reward")
        # An empty list is left out: launch_ros cannot type an empty list parameter.
        explorer = explorer_node(bundle, store, **_drop_empty({
            **config_arm(config), **SIM_DRIVER, **topics, "dataset": dataset, "tasks": tuple(tasks) or None,
            "fleet_share": (k - 1, arms), "robot_id": f"arm{k}", "reset_service": f"{ns}/smrl_sim/reset",
            "sim_node": f"arm{k}/smrl_sim", **dict(explorer_parameters or {})}))
        nodes += [dataclasses.replace(sim, namespace=ns), dataclasses.replace(explorer, namespace=ns)]
    return GraphSpec("fleet", tuple(nodes), wait_for=tuple(n.label for n in nodes if n.name == "smrl_explorer"))


_RECORDING = ("episodes_per_task", "prior_episodes", "posterior_episodes", "episode_length")
FLEET_ARGUMENTS = (
    LaunchArgument("bundle", "", "adaptation bundle folder (policy.onnx) every explorer acts with"),
    LaunchArgument("store", "", "the one episode store every arm records into"),
    LaunchArgument("dataset", "", "offline dataset the bundle was trained on (its training tasks are dealt "
                   "to the arms)"),
    LaunchArgument("arms", "2", "number of simulated arms (/arm1 ... /armN)"),
    LaunchArgument("config", DEFAULT_CONFIG, "smrl config of the sim bridges (arm, task family)"),
    LaunchArgument("tasks", "", "training task indices to deal to the arms (empty: all of the dataset)"),
    # What each explorer records, as explore.launch.py says it.
    *(a for a in EXPLORE_ARGUMENTS if a.name in _RECORDING),
)


def fleet_from_arguments(values: Mapping[str, str]) -> GraphSpec:
    """``launch/fleet.launch.py``'s graph from its (string) launch arguments."""
    extra = _drop_empty({k: parse_value(values.get(k, "")) for k in _RECORDING})
    arms = parse_value(values.get("arms") or "2")
    tasks = parse_value(values.get("tasks", "")) or ()
    if not isinstance(arms, int):
        raise ConfigError(f"arms: expected a whole number, got {values.get('arms')!r}")
    return fleet_graph(values["bundle"], values["store"], values["dataset"], arms,
                       config=values.get("config") or DEFAULT_CONFIG,
                       tasks=tuple(tasks) if isinstance(tasks, list | tuple) else (int(tasks),),
                       explorer_parameters=extra)


# ---------------------------------------------------------------------------------------
# Adapt


def paused_controller_node(model_path: str, **parameters: Any) -> NodeSpec:
    """The controller (``smrl_controller``) started with ``enabled: false``: the adapter enables
    it once the adapted policy is loaded (``enabled=True`` starts it publishing)."""
    return NodeSpec("smrl_controller", "smrl_ros.controller_node", "smrl_controller",
                    parameters={"model_path": model_path, "enabled": False, **parameters})


def adapter_node(bundle: str, **parameters: Any) -> NodeSpec:
    """The adapter (``smrl_adapter``) with ``config/adapt_nodes.yaml``."""
    return NodeSpec("smrl_adapter", "smrl_ros.adapter_node", "smrl_adapter",
                    parameters={"bundle": bundle, **parameters}, params_files=(params_file("adapt_nodes.yaml"),))


def adapt_graph(bundle: str, *, use_sim: bool = True, config: str = DEFAULT_CONFIG, model_path: str = "",
                sim_parameters: Mapping[str, Any] | None = None,
                controller_parameters: Mapping[str, Any] | None = None,
                adapter_parameters: Mapping[str, Any] | None = None) -> GraphSpec:
    """Adapt and deploy: the adapter explores the task with rewards, writes the adapted policy and
    hot-loads it into the controller, which starts disabled on ``model_path`` (default: the
    bundle's ``prior_policy.onnx``). With ``use_sim`` the sim bridge runs in realtime mode and
    publishes rewards; on a real arm the lab's reward topic feeds the adapter."""
    initial = model_path or str(Path(bundle) / "prior_policy.onnx")
    adapter = dict(adapter_parameters or {})
    if use_sim:
        adapter = {**config_arm(config), **SIM_DRIVER, **adapter}
    ctrl = dict(controller_parameters or {})
    for shared in ("command_topic", "joint_states_topic", "urdf_path", "ee_link", "joints"):
        if shared in adapter and shared not in ctrl:
            ctrl[shared] = adapter[shared]  # both command the same arm
    if use_sim:
        sim = sim_node(config, "realtime", **{"publish_reward": True, **dict(sim_parameters or {})})
        return GraphSpec("adapt", (sim, paused_controller_node(initial, **ctrl),
                                   adapter_node(bundle, **{"mode": "realtime", **adapter})))
    real = {**REAL_ARM_DRIVER, "success_topic": "", "evaluate_steps": 0}
    return GraphSpec("adapt", (paused_controller_node(initial, **ctrl), adapter_node(bundle, **{**real, **adapter})))


ADAPT_ARGUMENTS = (
    LaunchArgument("bundle", "", "adaptation bundle folder (encoder.onnx, policy.onnx, prior_policy.onnx)"),
    LaunchArgument("use_sim", "true", "start the MuJoCo sim bridge (false: a real arm's driver is running)",
                   ("true", "false")),
    LaunchArgument("config", DEFAULT_CONFIG, "smrl config of the sim bridge (arm, task family)"),
    LaunchArgument("task_split", "test", "train or test: the task list task_index indexes (sim)", ("train", "test")),
    LaunchArgument("task_index", "0", "the task to adapt to (-1: as set up)"),
    LaunchArgument("task_goal", "", "explicit hidden goal for the sim, e.g. [0.45, 0.1, 0.3]"),
    LaunchArgument("model_path", "", "the controller's model before adaptation (default <bundle>/prior_policy.onnx)"),
    LaunchArgument("output_dir", "", "where adapted policies are written (default <bundle>/adapted)"),
    LaunchArgument("controller_topic", "", "position command topic (default /forward_position_controller/commands)"),
    LaunchArgument("joint_states_topic", "", "joint state topic (default /joint_states)"),
    LaunchArgument("reward_topic", "", "reward topic during adaptation (default /reward)"),
    LaunchArgument("rate_hz", "", "controller rate (Hz; default the model's control rate)"),
    LaunchArgument("allow_rate_mismatch", "", "true: let the controller run at a rate_hz other than the model's"),
    LaunchArgument("exploration_episodes", "", "episodes with rewards before the posterior is inferred"),
    LaunchArgument("episode_length", "", "control steps per episode (default the model's, from its metadata)"),
    LaunchArgument("exit_when_done", "", "true: end the launch after the first adaptation (its result on "
                   "~/result, the adapted policy in output_dir)"),
    LaunchArgument("evaluate_steps", "", "steps of the deployed return (default one episode; 0: skip)"),
    LaunchArgument("home", "", "real arm: home pose (rad, URDF order) between episodes (default: the bundle's, "
                   "from the training config)"),
    LaunchArgument("urdf_path", "", "the robot's URDF (default: the sim config's arm, or the bundle's)"),
    LaunchArgument("ee_link", "", "its end-effector link (default: the sim config's, or the bundle's)"),
)


def adapt_from_arguments(values: Mapping[str, str]) -> GraphSpec:
    """``launch/adapt.launch.py``'s graph from its (string) launch arguments."""
    get = {a.name: parse_value(values.get(a.name, "")) for a in ADAPT_ARGUMENTS}
    adapter = _drop_empty({"task_split": values.get("task_split") or "test", "task_index": get["task_index"],
                           "task_goal": get["task_goal"], "output_dir": get["output_dir"],
                           "command_topic": get["controller_topic"], "joint_states_topic": get["joint_states_topic"],
                           "reward_topic": get["reward_topic"], "exploration_episodes": get["exploration_episodes"],
                           "episode_length": get["episode_length"], "evaluate_steps": get["evaluate_steps"],
                           "exit_when_done": as_bool(str(get["exit_when_done"])) if get["exit_when_done"] != "" else "",
                           "home": get["home"], "urdf_path": get["urdf_path"], "ee_link": get["ee_link"]})
    ctrl = _drop_empty({"rate_hz": float(get["rate_hz"]) if get["rate_hz"] != "" else "",
                        "allow_rate_mismatch": as_bool(str(get["allow_rate_mismatch"]))
                        if get["allow_rate_mismatch"] != "" else ""})
    sim = {"task_split": adapter["task_split"]}
    if isinstance(get["task_index"], int) and get["task_index"] >= 0:
        sim["task_index"] = get["task_index"]
    return adapt_graph(values["bundle"], use_sim=as_bool(values.get("use_sim", "true")),
                       config=values.get("config") or DEFAULT_CONFIG, model_path=str(get["model_path"] or ""),
                       sim_parameters=sim, controller_parameters=ctrl, adapter_parameters=adapter)


# ---------------------------------------------------------------------------------------
# Train


def trainer_node(data: str, **parameters: Any) -> NodeSpec:
    """The training node (``smrl_trainer``) with ``config/train_nodes.yaml``."""
    return NodeSpec("smrl_trainer", "smrl_ros.trainer_node", "smrl_trainer",
                    parameters={"data": data, **parameters}, params_files=(params_file("train_nodes.yaml"),))


def train_graph(data: str, **trainer_parameters: Any) -> GraphSpec:
    """Meta-training as a node: offline phase, then the self-supervised phase (on recordings
    when ``recordings`` is given), exporting an adaptation bundle after each."""
    return GraphSpec("train", (trainer_node(data, **trainer_parameters),))


TRAIN_ARGUMENTS = (
    LaunchArgument("data", "", "reward-labelled offline dataset (episode store)"),
    LaunchArgument("config", DEFAULT_CONFIG, "task family config (its smac: section is the recipe)"),
    LaunchArgument("run_dir", "", "folder of the runs (default runs/ros)"),
    LaunchArgument("phases", "", "phases to run, e.g. [offline] or [offline, online] (default both)"),
    LaunchArgument("recordings", "", "reward-free stores from smrl_explorer for the online phase, e.g. [rec/a]"),
    LaunchArgument("smac_file", "", "YAML whose smac: section replaces the config's"),
    LaunchArgument("variant", "", "recipe: success_tuned, return_tuned or paper (default: the config's)"),
    LaunchArgument("overrides", "", "smac overrides, e.g. ['offline.steps=2000']"),
    LaunchArgument("evaluate", "", "meta-test each phase in-process (true/false)"),
    LaunchArgument("online_until", "", "stop the online phase after this many iterations in all (a round)"),
)


def train_from_arguments(values: Mapping[str, str]) -> GraphSpec:
    """``launch/train.launch.py``'s graph from its (string) launch arguments."""
    extra = _drop_empty({a.name: parse_value(values.get(a.name, "")) for a in TRAIN_ARGUMENTS if a.name != "data"})
    for key in ("phases", "recordings", "overrides"):
        if key in extra and isinstance(extra[key], str):
            extra[key] = [extra[key]]
    return train_graph(values["data"], **extra)


# The launch files of the data path, their argument lists and graph builders (``sim.launch.py``
# and ``control.launch.py``, the deployment path's, declare theirs over sim_graph and control_graph).
LAUNCH_FILES = {
    "explore.launch.py": (EXPLORE_ARGUMENTS, explore_from_arguments),
    "fleet.launch.py": (FLEET_ARGUMENTS, fleet_from_arguments),
    "adapt.launch.py": (ADAPT_ARGUMENTS, adapt_from_arguments),
    "train.launch.py": (TRAIN_ARGUMENTS, train_from_arguments),
}
