"""What runs on the robot side: numpy + onnx + onnxruntime, never torch, MuJoCo or gymnasium.

* :mod:`.urdf`             the arm from its URDF: joints, limits, forward kinematics, Jacobian;
* :mod:`.model_metadata`   the ``smrl.*`` ONNX metadata: keys, types, version, writer, reader;
* :mod:`.runtime`          load and check exported ONNX models, run them, bake a latent in;
* :mod:`.safety`           the safety layer the controller checks on every tick;
* :mod:`.control`          the policy step every loop shares; the control node's tick, hold, loop timing;
* :mod:`.episode_driver`   the explorer's and adapter's episodes: resets, stepping, transitions, aborts;
* :mod:`.latent_schedule`  z for each control step (prior or posterior);
* :mod:`.exploration`      the latent policy's explorer and the in-process reference episodes;
* :mod:`.reward_context`   the adapter's context rows (s, a, r), collected with rewards;
* :mod:`.homing`           joint targets back to the home pose between episodes on a real arm;
* :mod:`.task_latents`     ``task_latents.json``: per-task posteriors a bundle hands the robot.

``test/test_architecture.py`` imports every module of this package in a fresh interpreter and
checks that torch, MuJoCo and gymnasium stay out.
"""
