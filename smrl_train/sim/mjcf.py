"""Build the MuJoCo model of an arm from its URDF at run time (MjSpec), plus the task scene.

The URDF stays the single description of the arm: joint names, order, limits, inertias and
geometry come from :mod:`smrl_train.robot.urdf`; this module adds only what a URDF cannot say:
position-servo actuators (what a ros2_control position interface provides), gravity
compensation (real position-controlled arms compensate gravity in their drives), rotor
armature, the table, the goal marker and, for the push family, the puck.
"""

from __future__ import annotations

import mujoco
import numpy as np

from smrl_train.config import ArmConfig
from smrl_train.robot.urdf import ArmDescription, Geometry, rpy_to_matrix

TABLE_TOP_Z = 0.0
PUCK_RADIUS = 0.03
PUCK_HALF_HEIGHT = 0.015
EE_SITE = "ee_site"
GOAL_BODY = "goal"
PUCK_BODY = "puck"

# Contact filtering: arm geoms touch the table and the puck but never each other.
_ARM_CONTACT = dict(contype=1, conaffinity=0)
_TABLE_CONTACT = dict(contype=0, conaffinity=1)
_PUCK_CONTACT = dict(contype=1, conaffinity=1)


def _quat(rpy: tuple[float, ...]) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rpy_to_matrix(rpy).ravel())
    return quat


def _add_geom(body: mujoco.MjsBody, geom: Geometry, collide: bool, name: str) -> None:
    kind = {"box": mujoco.mjtGeom.mjGEOM_BOX, "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
            "sphere": mujoco.mjtGeom.mjGEOM_SPHERE}[geom.kind]
    if geom.kind == "box":
        size = [s / 2 for s in geom.size]
    elif geom.kind == "cylinder":
        size = [geom.size[0], geom.size[1] / 2, 0]
    else:
        size = [geom.size[0], 0, 0]
    contact = _ARM_CONTACT if collide else dict(contype=0, conaffinity=0)
    body.add_geom(
        name=name, type=kind, size=size, pos=list(geom.xyz), quat=list(_quat(geom.rpy)),
        rgba=list(geom.rgba), group=0 if collide else 1, mass=0, density=0, **contact,
    )


def build_spec(arm: ArmDescription, arm_cfg: ArmConfig, timestep: float, with_puck: bool) -> mujoco.MjSpec:
    """The scene as an editable MjSpec: table, arm (bodies per URDF link), servos, goal, puck."""
    spec = mujoco.MjSpec()
    spec.modelname = f"{arm.name}_scene"
    spec.option.timestep = timestep
    # implicitfast integrates the servos' velocity feedback implicitly: stiff servos stay stable.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.compiler.autolimits = True
    spec.compiler.degree = False  # URDF angles are radians; MJCF defaults to degrees

    world = spec.worldbody
    world.add_light(name="sun", pos=[0, 0, 2.5], dir=[0, 0, -1])
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.7, 0.7, 0.02],
                   pos=[0.3, 0, TABLE_TOP_Z - 0.02], rgba=[0.45, 0.35, 0.25, 1],
                   friction=[0.5, 0.005, 0.0001], **_TABLE_CONTACT)

    # Links: one MuJoCo body per URDF link; a fixed joint becomes a body without a DOF.
    body = world.add_body(name=arm.base_link)
    links = {link.name: link for link in arm.links}

    def fill(b: mujoco.MjsBody, link_name: str) -> None:
        link = links[link_name]
        if link.mass > 0:
            b.mass = link.mass
            b.ipos = list(link.com)
            ixx, iyy, izz, ixy, ixz, iyz = link.inertia
            if ixy == ixz == iyz == 0:
                b.iquat = list(_quat(link.inertia_rpy))
                b.inertia = [ixx, iyy, izz]
            else:
                b.fullinertia = [ixx, iyy, izz, ixy, ixz, iyz]
            b.explicitinertial = True
        b.gravcomp = 1.0
        for k, geom in enumerate(link.visuals):
            # A visual with a matching collision element is drawn by the collision geom.
            if geom not in link.collisions:
                _add_geom(b, geom, collide=False, name=f"{link_name}_visual{k}")
        for k, geom in enumerate(link.collisions):
            _add_geom(b, geom, collide=True, name=f"{link_name}_collision{k}")

    fill(body, arm.base_link)
    for joint in arm.chain:
        body = body.add_body(name=joint.child, pos=list(joint.xyz), quat=list(_quat(joint.rpy)))
        fill(body, joint.child)
        if joint.kind != "fixed":
            body.add_joint(
                name=joint.name, type=mujoco.mjtJoint.mjJNT_HINGE, axis=list(joint.axis),
                range=[joint.lower, joint.upper], limited=mujoco.mjtLimited.mjLIMITED_TRUE,
                damping=joint.damping, frictionloss=joint.friction, armature=arm_cfg.armature,
            )
    body.add_site(name=EE_SITE, pos=[0, 0, 0], size=[0.005, 0, 0], rgba=[1, 0, 0, 1], group=3)

    # Position servos: kp scales with the joint's effort limit; force limited to the effort.
    for joint in arm.chain:
        if joint.kind == "fixed":
            continue
        kp = arm_cfg.servo_stiffness * joint.effort
        act = spec.add_actuator(name=joint.name, target=joint.name)
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[0] = kp
        act.biasprm[0:3] = [0.0, -kp, 0.0]  # kv is set after compiling, from the joint inertia
        act.ctrlrange = [joint.lower, joint.upper]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-joint.effort, joint.effort]
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE

    goal = world.add_body(name=GOAL_BODY, mocap=True, pos=[0.4, 0, 0.3])
    goal.add_site(name="goal_site", size=[0.02, 0, 0], rgba=[0.1, 0.9, 0.2, 0.5], group=2)

    if with_puck:
        puck = world.add_body(name=PUCK_BODY, pos=[0.45, 0, TABLE_TOP_Z + PUCK_HALF_HEIGHT])
        puck.add_freejoint(name="puck_free")
        puck.add_geom(name="puck_geom", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                      size=[PUCK_RADIUS, PUCK_HALF_HEIGHT, 0], mass=0.2, rgba=[0.8, 0.1, 0.1, 1],
                      friction=[0.5, 0.005, 0.0001], condim=4, **_PUCK_CONTACT)
    return spec


def full_inertia(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """The dense joint-space inertia matrix (nv, nv) at ``data``'s state (after mj_forward).

    ``mj_fullM`` takes (m, dst, M) with M = ``data.qM`` up to MuJoCo 3.9 and (m, d, dst) from
    3.10 on (tried: 3.3.0 to 3.9.0 the first, 3.10.0 to 4.0.0 the second); both are accepted, so
    the whole range setup.py allows (test_mujoco_floor.py) builds the same model.
    """
    full = np.zeros((model.nv, model.nv))
    try:
        mujoco.mj_fullM(model, data, full)
    except TypeError:  # the older signature
        mujoco.mj_fullM(model, full, data.qM)
    return full


def build_model(arm: ArmDescription, arm_cfg: ArmConfig, timestep: float, with_puck: bool,
                home: np.ndarray) -> mujoco.MjModel:
    """Compile the scene and tune each servo's damping to ``servo_damping_ratio`` at ``home``."""
    model = build_spec(arm, arm_cfg, timestep, with_puck).compile()
    data = mujoco.MjData(model)
    qadr = [model.jnt_qposadr[model.joint(n).id] for n in arm.joint_names]
    dadr = [model.jnt_dofadr[model.joint(n).id] for n in arm.joint_names]
    data.qpos[qadr] = home
    mujoco.mj_forward(model, data)
    full = full_inertia(model, data)
    for i, name in enumerate(arm.joint_names):
        act = model.actuator(name).id
        kp = model.actuator_gainprm[act, 0]
        inertia = full[dadr[i], dadr[i]]
        model.actuator_biasprm[act, 2] = -2.0 * arm_cfg.servo_damping_ratio * np.sqrt(kp * inertia)
    return model
