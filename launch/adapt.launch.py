"""Adapt to a task from a few episodes with rewards, then run the adapted policy.

    ros2 launch smrl_ros adapt.launch.py bundle:=runs/r/smac/bundle task_index:=3    # sim (default)
    ros2 launch smrl_ros adapt.launch.py bundle:=... use_sim:=false reward_topic:=/lab/reward \\
        controller_topic:=/forward_position_controller/commands

The arm (URDF, end-effector link, and on a real arm the home pose between episodes) is the sim
config's, or the bundle's (its metadata names the training config's); ``urdf_path``,
``ee_link`` and ``home`` override it.

Thin on purpose: the node graph, its launch arguments and its parameters are plain Python in
smrl_ros/graphs.py (smrl_ros.graphs.adapt_from_arguments), which the pip-only path and the
tests run as processes over DDS without launch.
"""

from smrl_ros.graph_runner import launch_description
from smrl_ros.graphs import ADAPT_ARGUMENTS as ARGUMENTS
from smrl_ros.graphs import adapt_from_arguments as build


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
