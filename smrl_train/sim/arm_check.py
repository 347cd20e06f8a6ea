"""``smrl check-arm``: what a config's arm section amounts to, before any data is generated.

:func:`arm_report` reads the URDF (joints and limits), puts the home pose's end effector
against the table and the task workspace (the reach goal box, or push's puck and goal area on
the table), measures the scripted expert's success (:mod:`smrl_train.sim.experts`) on a few
training tasks, and, when the home pose is bad (outside the limits, the end effector at or
below the table, or an expert that fails), suggests one: :func:`suggest_home` solves inverse
kinematics towards a point above the workspace's centre from several starts and keeps the
pose inside the limits with the most room to move.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smrl_train.config import SmrlConfig
from smrl_train.config_schema import ConfigError
from smrl_train.robot.urdf import ArmDescription, UrdfError, forward_kinematics, load_urdf, position_jacobian
from smrl_train.sim.arm_sim import home_problems
from smrl_train.sim.mjcf import TABLE_TOP_Z

GOOD_SUCCESS = 0.9  # the expert must solve this fraction of the tasks for a home pose to pass
HOME_CLEARANCE = 0.05  # m: a suggested home keeps the end effector this far above the table


@dataclass
class ArmReport:
    """What :func:`arm_report` found; ``problems`` empty means the arm section is usable."""

    arm: ArmDescription
    family: str
    home: np.ndarray
    home_ee: np.ndarray
    workspace_low: np.ndarray  # (3,) m, base frame: the goal box (push: the goal area on the table)
    workspace_high: np.ndarray
    expert_tasks: int = 0
    expert_successes: int = 0
    problems: list[str] = field(default_factory=list)
    suggested_home: np.ndarray | None = None
    suggested_ee: np.ndarray | None = None
    suggested_success: float | None = None

    @property
    def expert_success(self) -> float | None:
        return self.expert_successes / self.expert_tasks if self.expert_tasks else None

    def as_dict(self) -> dict[str, Any]:
        def floats(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [round(float(x), 6) for x in a]

        return {
            "arm": self.arm.name, "family": self.family,
            "joints": [{"name": n, "lower": float(lo), "upper": float(hi), "velocity": float(v), "effort": float(e)}
                       for n, lo, hi, v, e in zip(self.arm.joint_names, self.arm.lower, self.arm.upper,
                                                  self.arm.velocity, self.arm.effort)],
            "ee_link": self.arm.ee_link, "home": floats(self.home), "home_ee": floats(self.home_ee),
            "table_z": TABLE_TOP_Z, "workspace_low": floats(self.workspace_low),
            "workspace_high": floats(self.workspace_high), "expert_tasks": self.expert_tasks,
            "expert_success": self.expert_success, "problems": list(self.problems),
            "suggested_home": floats(self.suggested_home), "suggested_ee": floats(self.suggested_ee),
            "suggested_success": self.suggested_success,
        }


def workspace(cfg: SmrlConfig) -> tuple[np.ndarray, np.ndarray]:
    """The box (m, base frame) the end effector must reach: reach's goal box; push's goal area
    and puck start on the table, up to the height the expert travels at."""
    env = cfg.env
    if env.family == "reach":
        return np.array(env.reach_goal_low, float), np.array(env.reach_goal_high, float)
    xy = np.array([env.push_goal_low, env.push_goal_high, env.puck_start], float)
    return (np.array([*xy.min(axis=0), TABLE_TOP_Z], float),
            np.array([*xy.max(axis=0), TABLE_TOP_Z + 0.1], float))


def expert_success(cfg: SmrlConfig, n_tasks: int, seed: int | None = None) -> tuple[int, int]:
    """(successes, tasks): the scripted expert aiming at the true goal of ``n_tasks`` training
    tasks (drawn with ``seed``, default ``tasks.seed``), one full episode each, as
    ``smrl data generate``'s expert behaviour runs it (without noise)."""
    from smrl_train.sim.envs import ArmTaskEnv, make_env
    from smrl_train.sim.experts import JacobianExpert

    env = make_env(cfg)
    u = env.unwrapped
    assert isinstance(u, ArmTaskEnv)
    expert = JacobianExpert(u.arm, u.max_step, u.sim.home, u.family)
    successes = 0
    for task in u.sample_tasks(n_tasks, cfg.tasks.seed if seed is None else seed):
        u.set_task(task)
        obs, info = env.reset(seed=task.index)
        for _ in range(cfg.env.episode_length):
            obs, _, _, _, info = env.step(expert.act(obs, np.array(task.goal)))
        successes += bool(info["success"])
    env.close()
    return successes, n_tasks


def _solve_ik(arm: ArmDescription, target: np.ndarray, q: np.ndarray, iters: int = 200) -> np.ndarray:
    """Damped least squares from ``q`` towards ``target``, clipped to the limits each step."""
    for _ in range(iters):
        err = target - forward_kinematics(arm, q)
        if np.linalg.norm(err) < 1e-4:
            break
        jac = position_jacobian(arm, q)
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(3), err)
        q = np.clip(q + np.clip(dq, -0.2, 0.2), arm.lower, arm.upper)
    return q


def suggest_home(arm: ArmDescription, low: np.ndarray, high: np.ndarray, seed: int = 0,
                 starts: int = 64) -> np.ndarray | None:
    """A home pose inside the limits with the end effector above the workspace's centre (at
    its top, at least :data:`HOME_CLEARANCE` above the table), or None when no start reaches
    it. Of the poses that reach it, the one whose joints are furthest from their limits
    (in fractions of each range) and whose Jacobian is best conditioned wins."""
    centre = (low + high) / 2
    target = np.array([centre[0], centre[1], max(high[2], TABLE_TOP_Z + HOME_CLEARANCE)])
    rng = np.random.default_rng(seed)
    span = arm.upper - arm.lower
    best, best_score = None, -np.inf
    for k in range(starts):
        start = (arm.lower + arm.upper) / 2 if k == 0 else rng.uniform(arm.lower + 0.1 * span,
                                                                       arm.upper - 0.1 * span)
        q = _solve_ik(arm, target, start)
        if np.linalg.norm(forward_kinematics(arm, q) - target) > 0.005:
            continue
        margin = float(np.min(np.minimum(q - arm.lower, arm.upper - q) / span))
        singular = np.linalg.svd(position_jacobian(arm, q), compute_uv=False)
        score = margin + float(singular[-1])
        if score > best_score:
            best, best_score = q, score
    return None if best is None else np.round(best, 3)


def arm_report(cfg: SmrlConfig, n_tasks: int = 10, suggest: bool | None = None) -> ArmReport:
    """Check ``cfg``'s arm section; see the module docstring. ``suggest`` None: suggest a home
    pose only when the given one is bad; True: always. Raises :class:`ConfigError` (one line)
    when the URDF cannot be read or ``ee_link`` is not in it."""
    try:
        arm = load_urdf(cfg.urdf_path(), cfg.arm.ee_link)
    except UrdfError as exc:
        raise ConfigError(f"arm.urdf / arm.ee_link: {exc}") from None
    home = np.asarray(cfg.arm.home, float) if cfg.arm.home else (arm.lower + arm.upper) / 2
    low, high = workspace(cfg)
    problems = home_problems(arm, home)
    ee = forward_kinematics(arm, home) if home.shape == (arm.n_joints,) else np.full(3, np.nan)
    report = ArmReport(arm, cfg.env.family, home, ee, low, high, problems=problems)
    if not problems and n_tasks > 0:
        report.expert_successes, report.expert_tasks = expert_success(cfg, n_tasks)
        if report.expert_successes < GOOD_SUCCESS * n_tasks:
            problems.append(f"the scripted expert solves {report.expert_successes} of {n_tasks} tasks from this "
                            f"home (at least {GOOD_SUCCESS:.0%} needed)")
    if suggest or (suggest is None and problems):
        report.suggested_home = suggest_home(arm, low, high, seed=cfg.tasks.seed)
        if report.suggested_home is not None:
            report.suggested_ee = forward_kinematics(arm, report.suggested_home)
            if n_tasks > 0:
                other = dataclasses.replace(cfg, arm=dataclasses.replace(
                    cfg.arm, home=tuple(float(x) for x in report.suggested_home)))
                s, n = expert_success(other, n_tasks)
                report.suggested_success = s / n
    return report


def format_report(report: ArmReport) -> str:
    """The report as ``smrl check-arm`` prints it."""
    arm = report.arm
    lines = [f"arm          {arm.name}: {arm.n_joints} actuated joints, base {arm.base_link}, end effector "
             f"{arm.ee_link}", "joints       name              lower     upper   (rad)  velocity (rad/s)  effort (Nm)"]
    for n, lo, hi, v, e in zip(arm.joint_names, arm.lower, arm.upper, arm.velocity, arm.effort):
        lines.append(f"             {n:<16} {lo:>7.3f}   {hi:>7.3f}          {v:>8.2f}  {e:>11.1f}")
    fixed = [j.name for j in arm.chain if j.kind == "fixed"]
    if fixed:
        lines.append(f"fixed        {', '.join(fixed)}")

    def xyz(p: np.ndarray) -> str:
        return "(" + ", ".join(f"{v:.3f}" for v in p) + ") m"

    lines.append(f"home         [{', '.join(f'{q:.3f}' for q in report.home)}]")
    if np.all(np.isfinite(report.home_ee)):
        ee = report.home_ee
        inside = bool(np.all(ee >= report.workspace_low) and np.all(ee <= report.workspace_high))
        centre = (report.workspace_low + report.workspace_high) / 2
        lines.append(f"home ee      {xyz(report.home_ee)}: {report.home_ee[2] - TABLE_TOP_Z:+.3f} m above the table "
                     f"(z = {TABLE_TOP_Z} m), {np.linalg.norm(report.home_ee - centre):.3f} m from the workspace's "
                     f"centre, {'inside' if inside else 'outside'} it")
    what = "goal box" if report.family == "reach" else "puck and goal area"
    lines.append(f"workspace    {what} {xyz(report.workspace_low)} to {xyz(report.workspace_high)}")
    if report.expert_tasks:
        lines.append(f"expert       {report.expert_successes}/{report.expert_tasks} tasks solved "
                     f"({report.expert_success:.0%})")
    for p in report.problems:
        lines.append(f"problem      {p}")
    if report.suggested_home is not None:
        assert report.suggested_ee is not None
        home = ", ".join(f"{q:.3f}" for q in report.suggested_home)
        text = f"suggested    home: [{home}] (ee {xyz(report.suggested_ee)}"
        if report.suggested_success is not None:
            text += f"; expert {report.suggested_success:.0%}"
        lines.append(text + ")")
    elif report.problems:
        lines.append("suggested    none: inverse kinematics found no pose above the workspace inside the limits")
    lines.append("verdict      " + ("ok" if not report.problems else f"{len(report.problems)} problem(s)"))
    return "\n".join(lines)
