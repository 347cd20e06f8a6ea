"""URDF and MuJoCo agree: the model is built from the URDF at run time, for every shipped arm."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from smrl_train.config_loader import load_config
from smrl_train.robot.urdf import UrdfError, forward_kinematics, load_urdf, parse_urdf, position_jacobian
from smrl_train.sim.arm_sim import ArmSim

from conftest import CONFIGS

ARMS = {"smrl_arm": "reach", "panda_like": "reach_panda", "six_axis": "reach_six_axis"}


@pytest.fixture(params=sorted(ARMS), scope="module")
def sim(request: pytest.FixtureRequest) -> ArmSim:
    return ArmSim(load_config(CONFIGS[ARMS[request.param]]))


def test_arm_has_enough_revolute_joints_and_an_end_effector(sim: ArmSim) -> None:
    assert sim.arm.n_joints >= 5
    assert sim.arm.chain[-1].child == sim.cfg.arm.ee_link


def test_joint_names_order_and_limits_agree(sim: ArmSim) -> None:
    m, arm = sim.model, sim.arm
    hinge_names = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert tuple(hinge_names) == arm.joint_names
    actuator_names = tuple(m.actuator(i).name for i in range(m.nu))
    assert actuator_names == arm.joint_names
    for i, name in enumerate(arm.joint_names):
        j, a = m.joint(name).id, m.actuator(name).id
        np.testing.assert_allclose(m.jnt_range[j], [arm.lower[i], arm.upper[i]])
        np.testing.assert_allclose(m.actuator_ctrlrange[a], [arm.lower[i], arm.upper[i]])
        np.testing.assert_allclose(m.actuator_forcerange[a], [-arm.effort[i], arm.effort[i]])
        assert m.jnt_limited[j] and m.actuator_ctrllimited[a] and m.actuator_forcelimited[a]


def test_link_masses_agree(sim: ArmSim) -> None:
    for link in sim.arm.links:
        assert sim.model.body(link.name).mass[0] == pytest.approx(link.mass)


def test_numpy_forward_kinematics_matches_mujoco(sim: ArmSim) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(sim.arm.lower, sim.arm.upper)
        sim.data.qpos[sim._qadr] = q
        mujoco.mj_kinematics(sim.model, sim.data)
        np.testing.assert_allclose(forward_kinematics(sim.arm, q), sim.data.site_xpos[sim._ee_site], atol=1e-9)


def test_position_jacobian_matches_finite_differences(sim: ArmSim) -> None:
    q = sim.home + 0.1
    jac = position_jacobian(sim.arm, q)
    eps = 1e-6
    fd = np.stack([(forward_kinematics(sim.arm, q + eps * e) - forward_kinematics(sim.arm, q - eps * e)) / (2 * eps)
                   for e in np.eye(sim.arm.n_joints)], axis=1)
    np.testing.assert_allclose(jac, fd, atol=1e-6)


def test_servos_hold_the_home_pose_against_gravity(sim: ArmSim) -> None:
    sim.reset()
    for _ in range(40):
        sim.set_position_targets(sim.home)
        sim.step_period()
    np.testing.assert_allclose(sim.joint_positions(), sim.home, atol=1e-3)
    assert sim.warning_counts() == {}


def test_urdf_errors_name_the_problem() -> None:
    bad = b'<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="revolute">' \
          b'<parent link="a"/><child link="b"/><axis xyz="0 0 1"/></joint></robot>'
    with pytest.raises(UrdfError, match="joint j: revolute joint needs <limit"):
        parse_urdf(bad, "b")
    with pytest.raises(UrdfError, match="end-effector link 'tool' not found"):
        parse_urdf(b'<robot name="r"><link name="a"/></robot>', "tool")
    with pytest.raises(UrdfError, match="mesh' is not supported"):
        parse_urdf(b'<robot name="r"><link name="a"><visual><geometry><mesh filename="x.stl"/>'
                   b'</geometry></visual></link></robot>', "a")
    with pytest.raises(UrdfError, match="cannot read URDF"):
        load_urdf("/nonexistent.urdf", "a")
