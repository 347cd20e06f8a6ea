"""The export room: from trained torch networks to self-describing ONNX files for the robot.

* :mod:`.onnx_export` the adapted policy and the adaptation bundle's models as ONNX, each
                      checked against torch, with the deployment metadata written in;
* :mod:`.run_bundle`  a training run's whole adaptation bundle (models, prior policy,
                      ``task_latents.json``, ``bundle.json``);
* :mod:`.cli`         ``smrl export policy|bundle|check``.

Needs torch; what reads these files on the robot is :mod:`smrl_train.robot` (no torch).
"""
