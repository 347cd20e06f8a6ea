"""Stand-in policies for the deployment tests, exported through the real export path.

:class:`JointGoalPolicy` has the call shape of SMAC's ``TanhGaussianPolicy.act_mean``
((obs (N, O), z (N, L)) -> action (N, A) in [-1, 1]) but is scripted: z is a joint-space goal
and the action a saturating P-step toward it. A reach goal's joint configuration comes from
rolling out the scripted Jacobian expert in the in-process env (:func:`reach_goal_joints`), so
the control-node tests reach a real task goal without training anything.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from smrl_train.config import SmrlConfig
from smrl_train.sim.envs import ArmTaskEnv
from smrl_train.sim.experts import JacobianExpert
from smrl_train.sim.tasks import Task


class JointGoalPolicy(nn.Module):
    """action = tanh(gain * (z - q)): heads for the joint configuration z (latent = n joints)."""

    def __init__(self, obs_dim: int, n_joints: int, gain: float = 8.0) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, n_joints, n_joints
        self.gain = gain

    def act_mean(self, obs: Tensor, z: Tensor) -> Tensor:
        return torch.tanh(self.gain * (z - obs[:, : self.act_dim]))


class FaultyPolicy(nn.Module):
    """Like :class:`JointGoalPolicy`, with faults keyed on the first joint's position q0:

    * q0 in (1.0, 1.5): the action is NaN (a non-finite action);
    * q0 > 2.0: an out-of-range Gather index, so onnxruntime raises during inference.
    """

    def __init__(self, obs_dim: int, n_joints: int) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.latent_dim = obs_dim, n_joints, n_joints
        self.register_buffer("table", torch.zeros(2, n_joints))

    def act_mean(self, obs: Tensor, z: Tensor) -> Tensor:
        q0 = obs[:, 0:1]
        action = torch.tanh(8.0 * (z - obs[:, : self.act_dim]))
        nan_band = (q0 > 1.0) & (q0 < 1.5)
        action = torch.where(nan_band, torch.full_like(action, float("nan")), action)
        index = (q0 > 2.0).long().squeeze(1) * 1000  # row 1000 of a 2-row table: ORT raises
        return action + self.table[index]


def reach_goal_joints(cfg: SmrlConfig, task: Task, steps: int = 150) -> np.ndarray:
    """A joint configuration (n,) whose end effector is at the reach ``task``'s goal."""
    env = ArmTaskEnv(cfg)
    expert = JacobianExpert(env.arm, env.max_step, env.sim.home, env.family)
    env.set_task(task)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        obs, _, _, _, info = env.step(expert.act(obs, np.asarray(task.goal)))
    if not info["success"]:
        raise RuntimeError(f"the expert did not reach {task}")
    return env.sim.joint_positions()
