"""An exported adapted policy driving an arm through smrl_controller.

    ros2 launch smrl_ros control.launch.py model_path:=/path/adapted.onnx
        [use_sim:=true] [config:=config/reach.yaml] [task_split:=test] [task_index:=0]
        [rate_hz:=0.0] [allow_rate_mismatch:=false] [command_topic:=/forward_position_controller/commands]
        [autostart:=true]

With ``use_sim:=false`` only the controller starts: the real arm's driver already provides
``/joint_states`` and a forward position controller. The controller's URDF and end-effector link
are the sim config's arm, or on a real arm the model's (its metadata names the training
config's); ``urdf_path`` and ``ee_link`` override them.
A thin wrapper over :func:`smrl_ros.graphs.control_graph`.
"""

from smrl_ros.graph_runner import LaunchArgument, as_bool, launch_description
from smrl_ros.graphs import control_graph

ARGUMENTS = [
    LaunchArgument("model_path", "", "the adapted policy (.onnx) to run"),
    LaunchArgument("use_sim", "true", "start the MuJoCo sim bridge; false for a real arm", ("true", "false")),
    LaunchArgument("config", "config/reach.yaml", "sim: smrl config YAML"),
    LaunchArgument("task_split", "test", "sim: task list", ("train", "test")),
    LaunchArgument("task_index", "0", "sim: task index"),
    LaunchArgument("urdf_path", "", "the robot's URDF (limits and FK; default: the sim config's arm, or the model's)"),
    LaunchArgument("ee_link", "", "its end-effector link (default: the sim config's, or the model's)"),
    LaunchArgument("rate_hz", "0.0", "control rate in Hz (0: the model's)"),
    LaunchArgument("allow_rate_mismatch", "false", "run at a rate_hz other than the model's", ("true", "false")),
    LaunchArgument("command_topic", "/forward_position_controller/commands", "position command topic"),
    LaunchArgument("joint_states_topic", "/joint_states", "joint state topic"),
    LaunchArgument("autostart", "true", "false: the controller waits unconfigured for lifecycle transitions "
                   "(ros2 lifecycle set /smrl_controller configure, activate)", ("true", "false")),
]


def build(args):
    return control_graph(
        args["model_path"], use_sim=as_bool(args["use_sim"]), config=args["config"],
        sim_parameters={"task_split": args["task_split"], "task_index": int(args["task_index"]),
                        "publish_reward": True},
        controller_parameters={**{k: args[k] for k in ("urdf_path", "ee_link") if args[k]},
                               "rate_hz": float(args["rate_hz"]),
                               "allow_rate_mismatch": as_bool(args["allow_rate_mismatch"]),
                               "command_topic": args["command_topic"],
                               "joint_states_topic": args["joint_states_topic"],
                               "autostart": as_bool(args["autostart"])})


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
