"""Read an arm's URDF into plain numpy, and its forward kinematics.

Numpy only (no MuJoCo, no torch), so the robot-side runtime computes the end-effector
position the policy observes with exactly the function the simulator's observation uses.

Supported URDF subset: a serial chain of ``revolute``/``continuous``/``fixed`` joints,
``box``/``cylinder``/``sphere`` geometry (no meshes), diagonal or full inertia tensors.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class UrdfError(ValueError):
    """The URDF is malformed or outside the supported subset (message names the element)."""


Vec3 = tuple[float, float, float]
Rgba = tuple[float, float, float, float]


@dataclass(frozen=True)
class Geometry:
    kind: str  # "box" | "cylinder" | "sphere"
    size: tuple[float, ...]  # box: full extents (x, y, z); cylinder: (radius, length); sphere: (radius,)
    xyz: Vec3
    rpy: Vec3
    rgba: Rgba = (0.7, 0.7, 0.7, 1.0)


@dataclass(frozen=True)
class Link:
    name: str
    mass: float
    com: Vec3
    inertia_rpy: Vec3
    # (ixx, iyy, izz, ixy, ixz, iyz) about the centre of mass, in the inertial frame.
    inertia: tuple[float, float, float, float, float, float]
    visuals: tuple[Geometry, ...]
    collisions: tuple[Geometry, ...]


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str  # "revolute" | "continuous" | "fixed"
    parent: str
    child: str
    xyz: Vec3
    rpy: Vec3
    axis: Vec3
    lower: float
    upper: float
    velocity: float
    effort: float
    damping: float
    friction: float


@dataclass(frozen=True)
class ArmDescription:
    """A serial arm: links and joints from the base to ``ee_link``, in chain order.

    ``joint_names``/``lower``/``upper``/``velocity``/``effort`` cover the actuated joints
    only (revolute and continuous), in chain order: the policy's joint order.
    """

    name: str
    base_link: str
    ee_link: str
    links: tuple[Link, ...]
    chain: tuple[Joint, ...]  # every joint from base to ee_link, fixed ones included
    urdf_sha256: str
    joint_names: tuple[str, ...] = field(init=False)
    lower: np.ndarray = field(init=False, repr=False)
    upper: np.ndarray = field(init=False, repr=False)
    velocity: np.ndarray = field(init=False, repr=False)
    effort: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        actuated = [j for j in self.chain if j.kind != "fixed"]
        object.__setattr__(self, "joint_names", tuple(j.name for j in actuated))
        object.__setattr__(self, "lower", np.array([j.lower for j in actuated]))
        object.__setattr__(self, "upper", np.array([j.upper for j in actuated]))
        object.__setattr__(self, "velocity", np.array([j.velocity for j in actuated]))
        object.__setattr__(self, "effort", np.array([j.effort for j in actuated]))

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)


def position_bounds(arm: ArmDescription, names: Sequence[str], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The positions (rad, ``names`` order) a joint-state sensor can report for the arm: its
    limits widened by ``margin``; unbounded for a continuous joint (it turns past +-pi)."""
    joints = {j.name: j for j in arm.chain}
    lower = np.array([-np.inf if joints[n].kind == "continuous" else joints[n].lower - margin for n in names])
    upper = np.array([np.inf if joints[n].kind == "continuous" else joints[n].upper + margin for n in names])
    return lower, upper


# ---------------------------------------------------------------------------------------
# Parsing


def _floats(text: str | None, n: int, what: str, default: tuple[float, ...] | None = None) -> tuple[float, ...]:
    if text is None:
        if default is None:
            raise UrdfError(f"{what}: missing")
        return default
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        raise UrdfError(f"{what}: expected {n} numbers, got {text!r}") from None
    if len(values) != n:
        raise UrdfError(f"{what}: expected {n} numbers, got {text!r}")
    return values


def _vec3(text: str | None, what: str, default: Vec3 | None = None) -> Vec3:
    x, y, z = _floats(text, 3, what, default)
    return x, y, z


def _rgba(text: str | None, what: str) -> Rgba:
    r, g, b, a = _floats(text, 4, what)
    return r, g, b, a


def _origin(elem: ET.Element | None, what: str) -> tuple[Vec3, Vec3]:
    if elem is None:
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    return (
        _vec3(elem.get("xyz"), f"{what} origin xyz", (0.0, 0.0, 0.0)),
        _vec3(elem.get("rpy"), f"{what} origin rpy", (0.0, 0.0, 0.0)),
    )


def _geometry(elem: ET.Element, what: str, materials: dict[str, Rgba]) -> Geometry:
    xyz, rpy = _origin(elem.find("origin"), what)
    geom = elem.find("geometry")
    if geom is None or len(geom) != 1:
        raise UrdfError(f"{what}: needs exactly one geometry")
    shape = geom[0]
    if shape.tag == "box":
        size = _floats(shape.get("size"), 3, f"{what} box size")
    elif shape.tag == "cylinder":
        size = (float(shape.get("radius", "nan")), float(shape.get("length", "nan")))
    elif shape.tag == "sphere":
        size = (float(shape.get("radius", "nan")),)
    else:
        raise UrdfError(f"{what}: geometry '{shape.tag}' is not supported (primitives only)")
    if not all(np.isfinite(size)) or min(size) <= 0:
        raise UrdfError(f"{what}: bad {shape.tag} dimensions {size}")
    rgba: Rgba = (0.7, 0.7, 0.7, 1.0)
    material = elem.find("material")
    if material is not None:
        color = material.find("color")
        if color is not None:
            rgba = _rgba(color.get("rgba"), f"{what} color")
        elif material.get("name") in materials:
            rgba = materials[material.get("name", "")]
    return Geometry(shape.tag, size, xyz, rpy, rgba)


def load_urdf(path: str | Path, ee_link: str) -> ArmDescription:
    """Parse the URDF at ``path`` into the chain from its root link to ``ee_link``.

    Raises:
        UrdfError: unreadable file, a joint without limits, a branch off the chain, etc.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UrdfError(f"{path}: cannot read URDF ({exc.strerror})") from None
    return parse_urdf(raw, ee_link, source=str(path))


def parse_urdf(raw: bytes, ee_link: str, source: str = "<urdf>") -> ArmDescription:
    """Parse URDF text (bytes); see :func:`load_urdf`."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise UrdfError(f"{source}: not valid XML: {exc}") from None
    if root.tag != "robot":
        raise UrdfError(f"{source}: top-level element is <{root.tag}>, expected <robot>")

    materials: dict[str, Rgba] = {}
    for mat in root.findall("material"):
        color = mat.find("color")
        if color is not None:
            materials[mat.get("name", "")] = _rgba(color.get("rgba"), "material color")

    links: dict[str, Link] = {}
    for elem in root.findall("link"):
        name = elem.get("name", "")
        inertial = elem.find("inertial")
        inertia: tuple[float, float, float, float, float, float]
        if inertial is None:
            mass, com, irpy, inertia = 0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        else:
            mass_elem = inertial.find("mass")
            mass = float(mass_elem.get("value", "nan")) if mass_elem is not None else float("nan")
            com, irpy = _origin(inertial.find("origin"), f"link {name} inertial")
            ie = inertial.find("inertia")
            if ie is None:
                raise UrdfError(f"link {name}: <inertial> without <inertia>")
            ixx, iyy, izz, ixy, ixz, iyz = (float(ie.get(k, "0")) for k in ("ixx", "iyy", "izz", "ixy", "ixz", "iyz"))
            inertia = (ixx, iyy, izz, ixy, ixz, iyz)
            if not (mass > 0) or min(inertia[:3]) <= 0:
                raise UrdfError(f"link {name}: mass and principal inertias must be > 0")
        visuals = tuple(_geometry(v, f"link {name} visual", materials) for v in elem.findall("visual"))
        collisions = tuple(
            _geometry(c, f"link {name} collision", materials) for c in elem.findall("collision")
        )
        links[name] = Link(name, mass, com, irpy, inertia, visuals, collisions)

    joints_by_child: dict[str, Joint] = {}
    for elem in root.findall("joint"):
        name = elem.get("name", "")
        kind = elem.get("type", "")
        if kind not in ("revolute", "continuous", "fixed"):
            raise UrdfError(f"joint {name}: type '{kind}' is not supported (revolute, continuous, fixed)")
        parent = elem.find("parent")
        child = elem.find("child")
        if parent is None or child is None:
            raise UrdfError(f"joint {name}: needs <parent> and <child>")
        xyz, rpy = _origin(elem.find("origin"), f"joint {name}")
        axis_elem = elem.find("axis")
        axis = _vec3(axis_elem.get("xyz") if axis_elem is not None else None, f"joint {name} axis", (1.0, 0.0, 0.0))
        norm = float(np.linalg.norm(axis))
        if kind != "fixed" and norm == 0:
            raise UrdfError(f"joint {name}: zero axis")
        axis = (axis[0] / norm, axis[1] / norm, axis[2] / norm) if norm else axis
        lower = upper = velocity = effort = 0.0
        limit = elem.find("limit")
        if kind == "revolute":
            if limit is None:
                raise UrdfError(f"joint {name}: revolute joint needs <limit lower upper velocity effort>")
            lower, upper = float(limit.get("lower", "nan")), float(limit.get("upper", "nan"))
            if not lower < upper:
                raise UrdfError(f"joint {name}: limit lower {lower} must be below upper {upper}")
        elif kind == "continuous":
            lower, upper = -np.pi, np.pi
        if kind != "fixed":
            if limit is None:
                raise UrdfError(f"joint {name}: needs <limit velocity effort>")
            velocity, effort = float(limit.get("velocity", "nan")), float(limit.get("effort", "nan"))
            if not (velocity > 0 and effort > 0):
                raise UrdfError(f"joint {name}: limit velocity and effort must be > 0")
        dyn = elem.find("dynamics")
        damping = float(dyn.get("damping", "0")) if dyn is not None else 0.0
        friction = float(dyn.get("friction", "0")) if dyn is not None else 0.0
        joint = Joint(
            name, kind, parent.get("link", ""), child.get("link", ""), xyz, rpy, axis,
            lower, upper, velocity, effort, damping, friction,
        )
        if joint.child in joints_by_child:
            raise UrdfError(f"link {joint.child} has two parent joints")
        joints_by_child[joint.child] = joint

    if ee_link not in links:
        raise UrdfError(f"{source}: end-effector link '{ee_link}' not found (links: {', '.join(links)})")
    chain: list[Joint] = []
    link = ee_link
    while link in joints_by_child:
        joint = joints_by_child[link]
        chain.append(joint)
        link = joint.parent
        if len(chain) > len(joints_by_child):
            raise UrdfError(f"{source}: kinematic loop at link {link}")
    chain.reverse()
    for joint in chain:
        for end in (joint.parent, joint.child):
            if end not in links:
                raise UrdfError(f"joint {joint.name}: link '{end}' is not defined")
    chain_links = [link] + [j.child for j in chain]
    return ArmDescription(
        name=root.get("name", "arm"),
        base_link=link,
        ee_link=ee_link,
        links=tuple(links[n] for n in chain_links),
        chain=tuple(chain),
        urdf_sha256=hashlib.sha256(raw).hexdigest(),
    )


# ---------------------------------------------------------------------------------------
# Kinematics


def rpy_to_matrix(rpy: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes X, then Y, then Z) to a rotation matrix (3, 3)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_angle_matrix(axis: tuple[float, ...] | np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit ``axis`` (Rodrigues), shape (3, 3)."""
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def joint_frames(arm: ArmDescription, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World positions and axes of the actuated joints, and the end-effector pose.

    Args:
        q: joint positions (n_joints,), in ``arm.joint_names`` order.
    Returns:
        joint positions (n, 3), joint axes in world (n, 3), ee position (3,), ee rotation (3, 3).
    """
    rot = np.eye(3)
    pos = np.zeros(3)
    positions, axes = [], []
    i = 0
    for joint in arm.chain:
        pos = pos + rot @ np.asarray(joint.xyz)
        rot = rot @ rpy_to_matrix(joint.rpy)
        if joint.kind != "fixed":
            axis_w = rot @ np.asarray(joint.axis)
            positions.append(pos.copy())
            axes.append(axis_w)
            rot = rot @ axis_angle_matrix(joint.axis, float(q[i]))
            i += 1
    return np.array(positions), np.array(axes), pos, rot


def forward_kinematics(arm: ArmDescription, q: np.ndarray) -> np.ndarray:
    """End-effector position (3,) in the base frame for joint positions ``q`` (n_joints,)."""
    return joint_frames(arm, q)[2]


def position_jacobian(arm: ArmDescription, q: np.ndarray) -> np.ndarray:
    """d(ee position)/dq, shape (3, n_joints): column i is axis_i x (p_ee - p_i)."""
    positions, axes, ee, _ = joint_frames(arm, q)
    return np.cross(axes, ee - positions).T
