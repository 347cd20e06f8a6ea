"""The MuJoCo sim bridge alone: it looks like a ros2_control arm.

    ros2 launch smrl_ros sim.launch.py [config:=config/reach.yaml] [mode:=realtime|lockstep]
        [task_split:=train] [task_index:=0] [publish_reward:=false]

A thin wrapper over :func:`smrl_ros.graphs.sim_graph`.
"""

from smrl_ros.graph_runner import LaunchArgument, as_bool, launch_description
from smrl_ros.graphs import sim_graph

ARGUMENTS = [
    LaunchArgument("config", "config/reach.yaml", "smrl config YAML (arm, task family, control rate)"),
    LaunchArgument("mode", "realtime", "realtime (wall-clock rate, like hardware) or lockstep (one period per "
                   "command, for fast data collection)", ("realtime", "lockstep")),
    LaunchArgument("task_split", "train", "task list task_index indexes", ("train", "test")),
    LaunchArgument("task_index", "0", "task (hidden goal) index"),
    LaunchArgument("publish_reward", "false", "publish /reward and ~/success (adaptation only)", ("true", "false")),
]


def build(args):
    return sim_graph(args["config"], args["mode"], task_split=args["task_split"], task_index=int(args["task_index"]),
                     publish_reward=as_bool(args["publish_reward"]))


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
