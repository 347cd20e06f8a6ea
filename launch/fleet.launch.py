"""A fleet of simulated arms recording reward-free episodes into one store.

    ros2 launch smrl_ros fleet.launch.py arms:=2 bundle:=runs/r/offline_only/bundle \\
        store:=rec/fleet dataset:=data/reach

Arm K runs its own sim bridge (lockstep) and explorer under the namespace /armK
(/armK/joint_states, /armK/forward_position_controller/commands), records the training tasks
dealt to it (K-1, K-1+N, ...) with robot_id armK in every episode's metadata, and the launch
ends when every explorer has recorded its share.

Thin on purpose: the node graph is plain Python in smrl_ros/graphs.py
(smrl_ros.graphs.fleet_from_arguments), which the pip-only path and the tests run as processes
over DDS without launch.
"""

from smrl_ros.graph_runner import launch_description
from smrl_ros.graphs import FLEET_ARGUMENTS as ARGUMENTS
from smrl_ros.graphs import fleet_from_arguments as build


def generate_launch_description():
    return launch_description(ARGUMENTS, build)
