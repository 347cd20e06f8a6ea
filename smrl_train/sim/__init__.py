"""The MuJoCo simulation and its task families: what training and the sim bridge run on.

* :mod:`.mjcf`      the MuJoCo model built from the URDF at run time (MjSpec), plus the scene;
* :mod:`.arm_sim`   arm + task physics, shared by the gym env and the ROS sim bridge;
* :mod:`.tasks`     tasks as immutable values and the task protocol every family follows;
* :mod:`.envs`      the gymnasium families ``smrl/Reach-v0`` and ``smrl/Push-v0``;
* :mod:`.experts`   scripted Jacobian experts (the offline dataset's behaviour policies);

Importing this package itself imports nothing heavy. The arm's description (URDF parsing,
kinematics) lives in the robot room, :mod:`smrl_train.robot.urdf`: the simulator is built from it.
"""
