"""Reward-free exploration: record episodes with the bundle's policy and z ~ prior.

    ros2 launch smrl_ros explore.launch.py bundle:=runs/r/offline_only/bundle store:=rec/lab1 \\
        dataset:=data/reach                      # sim bridge (lockstep) by default
    ros2 launch smrl_ros explore.launch.py bundle:=... store:=rec/arm1 use_sim:=false tasks:="[0]" \\
        joint_states_topic:=/my_arm/joint_states command_topic:=/my_arm/forward_position_controller/commands

The arm (URDF, end-effector link, and on a real arm the home pose between episodes) is the sim
config's, or the bundle's (its metadata names the training config's); ``urdf_path``,
``ee_link`` and ``home`` override it.

Thin on purpose: the node graph, its launch arguments and its parameters are plain Python in
smrl_ros/graphs.py (smrl_ros.graphs.explore_from_arguments), which the pip-only path and the
tests run as processes over DDS without launch.
"""

from smrl_ros.graph_runner import launch_description
from smrl_ros.graphs import EXPLORE_ARGUMENTS as ARGUMENTS
from smrl_ros.graphs import explore_from_arguments as build


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
