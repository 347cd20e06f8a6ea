"""smrl_train: the ROS-free core of smrl (envs, data, algorithm, export, CLI).

Nothing in this package imports rclpy or ROS messages; ``test/test_architecture.py`` checks it.
"""

__version__ = "0.1.0"
