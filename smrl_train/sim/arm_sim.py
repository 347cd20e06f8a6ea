"""The one implementation of arm + task physics, shared by the gym env and the ROS sim bridge.

``ArmSim`` speaks in absolute joint-position targets, as a ros2_control
``forward_position_controller`` does; turning policy actions (deltas) into targets is the
env's job (:mod:`smrl_train.sim.envs`), and the controller node's on the robot side.

Observation layout (``observation_layout``), all in the arm's base frame:

=============  ====  =================================================
name           size  meaning
=============  ====  =================================================
joint_pos      n     joint positions (rad), URDF joint order
joint_vel      n     joint velocities (rad/s)
ee_pos         3     end-effector position (m), forward kinematics
puck_pos       3     puck centre (m); push family only
=============  ====  =================================================

The goal is never observed: it is what the agent must infer from rewards.
"""

from __future__ import annotations

import mujoco
import numpy as np

from smrl_train.config import SmrlConfig
from smrl_train.config_schema import ConfigError
from smrl_train.robot.urdf import ArmDescription, UrdfError, forward_kinematics, load_urdf
from smrl_train.sim.mjcf import EE_SITE, GOAL_BODY, PUCK_HALF_HEIGHT, TABLE_TOP_Z, build_model
from smrl_train.sim.tasks import Task


def home_problems(arm: ArmDescription, home: np.ndarray) -> list[str]:
    """Why ``home`` (n_joints,) is no home pose for ``arm``, each naming ``arm.home`` (empty:
    it is one): one value per joint, inside the joint limits, the end effector above the table."""
    if home.shape != (arm.n_joints,):
        return [f"arm.home: expected {arm.n_joints} values (one per joint of {arm.name}: "
                f"{', '.join(arm.joint_names)}), got {len(home)}"]
    problems = []
    outside = [f"{n} {q:.3f} not in [{lo:.3f}, {hi:.3f}]" for n, q, lo, hi in
               zip(arm.joint_names, home, arm.lower, arm.upper) if not lo <= q <= hi]
    if outside:
        problems.append(f"arm.home: outside the URDF's joint limits: {'; '.join(outside)}")
    ee = forward_kinematics(arm, home)
    if ee[2] <= TABLE_TOP_Z:
        problems.append(f"arm.home: puts the end effector at z = {ee[2]:.3f} m, not above the table "
                        f"(z = {TABLE_TOP_Z} m)")
    return problems


def home_pose(cfg: SmrlConfig, arm: ArmDescription) -> np.ndarray:
    """The configured home pose (n_joints,), or the middle of the joint limits. A home pose
    that does not fit the arm raises :class:`ConfigError` (:func:`home_problems`)."""
    if not cfg.arm.home:
        return (arm.lower + arm.upper) / 2
    home = np.asarray(cfg.arm.home, dtype=float)
    problems = home_problems(arm, home)
    if problems:
        raise ConfigError(problems[0])
    return home


def check_arm(cfg: SmrlConfig) -> ArmDescription:
    """The arm section against its URDF, at config load: the file parses with ``ee_link`` on
    its chain, and ``home`` has one value per actuated joint, inside its limits, with the end
    effector above the table. Raises :class:`ConfigError` naming the key."""
    try:
        arm = load_urdf(cfg.urdf_path(), cfg.arm.ee_link)
    except UrdfError as exc:
        raise ConfigError(f"arm.urdf / arm.ee_link: {exc}") from None
    home_pose(cfg, arm)
    return arm


def observation_layout(n_joints: int, family: str) -> list[tuple[str, int]]:
    """(name, size) of each observation block, in order."""
    layout = [("joint_pos", n_joints), ("joint_vel", n_joints), ("ee_pos", 3)]
    if family == "push":
        layout.append(("puck_pos", 3))
    return layout


class ArmSim:
    """MuJoCo arm on a table, with a hidden-goal task. Not thread-safe."""

    def __init__(self, cfg: SmrlConfig, arm: ArmDescription | None = None) -> None:
        self.cfg = cfg
        self.arm = arm if arm is not None else load_urdf(cfg.urdf_path(), cfg.arm.ee_link)
        self.family = cfg.env.family
        self.home = home_pose(cfg, self.arm)
        self.model = build_model(self.arm, cfg.arm, cfg.env.timestep, self.family == "push", self.home)
        self.data = mujoco.MjData(self.model)
        self.joint_names = self.arm.joint_names
        self.control_period = 1.0 / cfg.env.control_hz
        self.substeps = cfg.env.substeps
        self._qadr = np.array([self.model.jnt_qposadr[self.model.joint(n).id] for n in self.joint_names])
        self._dadr = np.array([self.model.jnt_dofadr[self.model.joint(n).id] for n in self.joint_names])
        self._act = np.array([self.model.actuator(n).id for n in self.joint_names])
        self._ee_site = self.model.site(EE_SITE).id
        self._goal_mocap = self.model.body_mocapid[self.model.body(GOAL_BODY).id]
        self._puck_qadr = (
            self.model.jnt_qposadr[self.model.joint("puck_free").id] if self.family == "push" else None
        )
        self.layout = observation_layout(self.arm.n_joints, self.family)
        self.obs_dim = sum(size for _, size in self.layout)
        self.task: Task | None = None
        self.reset()

    # -- task ------------------------------------------------------------------------------
    def set_task(self, task: Task) -> None:
        """Set the hidden goal; takes effect at once (the marker moves, rewards change)."""
        want = 3 if self.family == "reach" else 2
        if task.family != self.family or len(task.goal) != want:
            raise ValueError(f"task {task} does not fit the {self.family} family ({want}-D goal)")
        self.task = task
        goal = np.array(task.goal if want == 3 else (*task.goal, TABLE_TOP_Z + PUCK_HALF_HEIGHT))
        self.data.mocap_pos[self._goal_mocap] = goal

    @property
    def goal(self) -> np.ndarray:
        if self.task is None:
            raise RuntimeError("no task set: call set_task first")
        return np.asarray(self.task.goal)

    # -- state -----------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator | None = None) -> None:
        """Home pose plus uniform noise (``env.reset_noise``), at rest; puck at its start."""
        mujoco.mj_resetData(self.model, self.data)
        noise = self.cfg.env.reset_noise
        q = self.home.copy()
        if rng is not None and noise > 0:
            q = q + rng.uniform(-noise, noise, size=q.shape)
        q = np.clip(q, self.arm.lower, self.arm.upper)
        self.data.qpos[self._qadr] = q
        self.data.ctrl[self._act] = q
        if self._puck_qadr is not None:
            start = np.array(self.cfg.env.puck_start, dtype=float)
            if rng is not None:
                start = start + rng.uniform(-0.005, 0.005, size=2)
            a = self._puck_qadr
            self.data.qpos[a:a + 7] = [*start, TABLE_TOP_Z + PUCK_HALF_HEIGHT, 1, 0, 0, 0]
        if self.task is not None:
            self.set_task(self.task)
        mujoco.mj_forward(self.model, self.data)

    def set_pose(self, obs: np.ndarray) -> None:
        """Pose the model as observation ``obs`` records it (joint positions; the puck's centre,
        upright), at rest and without stepping: replays and pictures of recorded episodes."""
        obs = np.asarray(obs, dtype=float)
        n = self.arm.n_joints
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._qadr] = obs[:n]
        self.data.ctrl[self._act] = obs[:n]
        if self._puck_qadr is not None:
            a = self._puck_qadr
            self.data.qpos[a:a + 7] = [*obs[2 * n + 3:2 * n + 6], 1, 0, 0, 0]
        if self.task is not None:
            self.set_task(self.task)
        mujoco.mj_forward(self.model, self.data)

    def set_position_targets(self, q_target: np.ndarray) -> None:
        """Absolute joint targets (n_joints,), clipped to the URDF limits."""
        q_target = np.asarray(q_target, dtype=float)
        if q_target.shape != (self.arm.n_joints,) or not np.all(np.isfinite(q_target)):
            raise ValueError(f"position targets must be {self.arm.n_joints} finite values, got {q_target}")
        self.data.ctrl[self._act] = np.clip(q_target, self.arm.lower, self.arm.upper)

    def step_period(self) -> None:
        """Advance one control period (``substeps`` MuJoCo steps)."""
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        # mj_step leaves positions-derived quantities (site_xpos) from before its last
        # integration; refresh them so the observed ee_pos is FK of the current joints,
        # exactly what the robot side computes.
        mujoco.mj_kinematics(self.model, self.data)

    @property
    def time(self) -> float:
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dadr].copy()

    def position_targets(self) -> np.ndarray:
        return self.data.ctrl[self._act].copy()

    def ee_position(self) -> np.ndarray:
        # MuJoCo's site position; equal to smrl_train.robot.urdf.forward_kinematics (tested), which
        # the robot side uses.
        return self.data.site_xpos[self._ee_site].copy()

    def puck_position(self) -> np.ndarray | None:
        if self._puck_qadr is None:
            return None
        return self.data.qpos[self._puck_qadr:self._puck_qadr + 3].copy()

    def _puck_qpos(self, n: int) -> np.ndarray:
        """The first ``n`` position entries of the puck's free joint (a view); push only."""
        if self._puck_qadr is None:
            raise RuntimeError(f"the {self.family} family has no puck")
        return self.data.qpos[self._puck_qadr:self._puck_qadr + n]

    def observation(self) -> np.ndarray:
        """The policy's observation (obs_dim,) float32; see the module docstring."""
        parts = [self.data.qpos[self._qadr], self.data.qvel[self._dadr], self.data.site_xpos[self._ee_site]]
        if self._puck_qadr is not None:
            parts.append(self.data.qpos[self._puck_qadr:self._puck_qadr + 3])
        return np.concatenate(parts).astype(np.float32)

    # -- task physics ----------------------------------------------------------------------
    def goal_distance(self) -> float:
        """Reach: |ee - goal|; push: |puck_xy - goal| (m)."""
        if self.family == "reach":
            return float(np.linalg.norm(self.data.site_xpos[self._ee_site] - self.goal))
        puck = self._puck_qpos(2)
        return float(np.linalg.norm(puck - self.goal))

    def reward_terms(self, action: np.ndarray) -> dict[str, float]:
        """Named reward terms; the reward is their sum."""
        terms = {
            "reward_dist": -self.goal_distance(),
            "reward_ctrl": -self.cfg.env.action_cost * float(np.sum(np.square(action))),
        }
        if self.family == "push":
            ee = self.data.site_xpos[self._ee_site]
            puck = self._puck_qpos(3)
            terms["reward_near"] = -self.cfg.env.push_reach_weight * float(np.linalg.norm(ee - puck))
        return terms

    def reward(self, action: np.ndarray) -> float:
        return float(sum(self.reward_terms(action).values()))

    def success(self) -> bool:
        return self.goal_distance() < self.cfg.env.success_radius

    def warning_counts(self) -> dict[str, int]:
        """MuJoCo's warning counters (bad qacc, bad ctrl, contact overflow, ...), by name."""
        return {
            mujoco.mjtWarning(i).name: int(self.data.warning[i].number)
            for i in range(len(self.data.warning))
            if self.data.warning[i].number
        }
