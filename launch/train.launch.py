"""Offline meta-training, then the self-supervised phase on recorded episodes.

    ros2 launch smrl_ros train.launch.py data:=data/reach recordings:="[rec/lab1]" run_dir:=runs/r

Thin on purpose: the node graph, its launch arguments and its parameters are plain Python in
smrl_ros/graphs.py (smrl_ros.graphs.train_from_arguments), which the pip-only path and the
tests run as processes over DDS without launch.
"""

from smrl_ros.graph_runner import launch_description
from smrl_ros.graphs import TRAIN_ARGUMENTS as ARGUMENTS
from smrl_ros.graphs import train_from_arguments as build


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
