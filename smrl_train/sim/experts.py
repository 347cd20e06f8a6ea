"""Scripted Jacobian-based experts for the reach and push families.

They read only the observation (joint positions, end-effector and puck positions) and the
goal, compute a Cartesian velocity for the end effector, and map it to joint deltas with
damped least squares on the URDF's position Jacobian (:func:`smrl_train.robot.urdf.position_jacobian`),
with a null-space pull toward the home pose so redundant arms keep a sane posture. Noise and
wrong goals turn them into the behaviour policies of mixed competence the offline dataset needs.
"""

from __future__ import annotations

import numpy as np

from smrl_train.robot.urdf import ArmDescription, position_jacobian
from smrl_train.sim.mjcf import PUCK_RADIUS, TABLE_TOP_Z

EE_RADIUS = 0.02  # the pusher sphere of both shipped URDFs
CART_SPEED = 0.04  # m per control step the expert asks of the end effector
DAMPING = 0.05  # damped-least-squares lambda (m): keeps steps bounded near singularities
NULL_GAIN = 0.1  # fraction of the home-pose error removed per step in the null space


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v if norm <= limit else v * (limit / norm)


class JacobianExpert:
    """Moves the end effector toward task-dependent Cartesian targets.

    Args:
        arm: the arm's kinematics; ``max_step`` (n,) rad per unit action; ``home`` (n,) rad.
        family: "reach" or "push".
    """

    def __init__(self, arm: ArmDescription, max_step: np.ndarray, home: np.ndarray, family: str) -> None:
        self.arm, self.max_step, self.home, self.family = arm, max_step, home, family
        self.n = arm.n_joints

    def act(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Action (n,) in [-1, 1] for observation (obs_dim,) and the (true or wrong) goal."""
        q = obs[: self.n].astype(float)
        ee = obs[2 * self.n: 2 * self.n + 3].astype(float)
        if self.family == "reach":
            target = np.asarray(goal, dtype=float)
        else:
            puck = obs[2 * self.n + 3: 2 * self.n + 6].astype(float)
            target = self._push_target(ee, puck, np.asarray(goal, dtype=float))
        velocity = _clip_norm(target - ee, CART_SPEED)
        return self._joint_action(q, velocity)

    def _push_target(self, ee: np.ndarray, puck: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Where the end effector should head: behind the puck, then through it to the goal."""
        z_push = TABLE_TOP_Z + EE_RADIUS + 0.005
        z_high = TABLE_TOP_Z + 0.09
        to_goal = goal - puck[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.02:
            return np.array([*ee[:2], z_high])  # close enough: lift off and wait
        u = to_goal / dist
        contact = PUCK_RADIUS + EE_RADIUS
        behind = puck[:2] - u * (contact + 0.015)
        rel = ee[:2] - puck[:2]
        along = float(rel @ u)
        lateral = rel - along * u
        aligned = along < -0.6 * contact and np.linalg.norm(lateral) < 0.02 and ee[2] < z_push + 0.02
        if aligned:
            # Push along u, steering the hand back onto the puck-goal line.
            # Slow down near the goal so the puck does not overshoot it.
            xy = ee[:2] + u * float(np.clip(0.5 * dist, 0.01, 0.03)) - 0.5 * lateral
            return np.array([*xy, z_push])
        far = np.linalg.norm(ee[:2] - behind) > 0.02
        if far and ee[2] < z_high - 0.03:
            return np.array([*ee[:2], z_high])  # rise before travelling, never sweep the puck
        return np.array([*behind, z_high if far else z_push])

    def _joint_action(self, q: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        jac = position_jacobian(self.arm, q)  # (3, n)
        jjt = jac @ jac.T + DAMPING**2 * np.eye(3)
        jac_pinv = jac.T @ np.linalg.inv(jjt)
        dq = jac_pinv @ velocity
        null = np.eye(self.n) - jac_pinv @ jac
        dq = dq + null @ (NULL_GAIN * (self.home - q))
        return np.clip(dq / self.max_step, -1.0, 1.0).astype(np.float32)
