"""rosbag2 recordings as reward-free episode stores, and stores as rosbag2 (MCAP) files.

Reads and writes bags with the pure-Python ``rosbags`` library: no ROS install is needed
(``pip install rosbags``, the ``bag`` extra). Both storage formats are read (sqlite3, MCAP).

Import (``smrl data import-bag``): ``sensor_msgs/JointState`` (joints matched by name), the
position command topic (``std_msgs/Float64MultiArray``, the model's joint order, as a
``forward_command_controller`` takes it) and, for push, the object pose
(``geometry_msgs/PoseStamped``) become transitions at the model's control rate:

* the observation is built exactly as the robot side builds it
  (:class:`smrl_train.robot.control.ObservationBuilder`: joint positions and velocities,
  forward kinematics of the URDF, the object position);
* the action is the command as a delta in the policy's normalised units,
  ``(command - q) / max_step`` clipped to [-1, 1] (the clipped entries are counted), as
  :func:`smrl_train.robot.control.executed_action` records a target the safety layer changed;
* time base: the bag's receive times (what ``ros2 bag record`` writes). ``stepping="time"``
  (a real arm) samples a grid at the control rate, interpolating the joint states and taking
  the newest command of each period; ``stepping="commands"`` (a lockstep simulation, which runs
  faster than real time) takes every command as one control period, from the state it was
  computed from to the next new state (a command the recorder heard after its result is
  paired by continuity, see :func:`_steps_by_commands`).

Episodes are split at gaps in the command stream, where consecutive commands do not chain
(a reset), where the arm idles at its home pose (homing between episodes), on every message of
an optional marker topic, and then into pieces of the configured episode length. Each
episode's kind is :data:`smrl_train.data.recordings.UNNAMED_KIND` (``recorded``): its policy is
unknown, so the trainer puts it in the RL buffer only, never in the exploration context.

Export (``smrl data export-bag``): a store's episodes as ``/joint_states``, the commanded
targets ``q + a * max_step`` on ``/forward_position_controller/commands``, the object pose
when the observation has one, and one ``/smrl/episode`` marker (std_msgs/String, JSON) per
episode, in an MCAP bag that Foxglove and ``ros2 bag play`` open; episodes are laid one after
another at the control rate, one second apart.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smrl_train.data.store import EpisodeStore, StoreError

JOINT_STATES = "/joint_states"
COMMANDS = "/forward_position_controller/commands"
OBJECT_POSE = "/puck_pose"
ROBOT_DESCRIPTION = "/robot_description"
EPISODE_MARKER = "/smrl/episode"
STEPPINGS = ("time", "commands")
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
COMMAND_TYPE = "std_msgs/msg/Float64MultiArray"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
STRING_TYPE = "std_msgs/msg/String"
AT_REST = 0.05  # rad/s: the arm idles at home when every joint is slower than this
# A joint-state stream is sparse when more than this share of its intervals (within an
# episode) exceeds 1.5 control periods.
SPARSE_SHARE = 0.05


class BagError(StoreError):
    """A bag cannot be imported or written (one line naming the bag and the problem)."""


def _rosbags() -> Any:
    try:
        import rosbags.rosbag2 as rosbag2
        import rosbags.typesys as typesys
    except ImportError:
        raise BagError("reading and writing rosbag2 needs the rosbags package: pip install 'rosbags==0.11.9' "
                       "(or the smrl 'bag' extra)") from None
    return rosbag2, typesys


def _typestore() -> Any:
    _, typesys = _rosbags()
    return typesys.get_typestore(typesys.Stores.ROS2_HUMBLE)


@dataclass
class BagStreams:
    """The messages an import uses, in receive order. Times in s; joints in the model's order."""

    state_t: np.ndarray  # (S,) receive time
    state_stamp: np.ndarray  # (S,) header stamp (the receive time when the header is unset)
    q: np.ndarray  # (S, n)
    qd: np.ndarray  # (S, n)
    cmd_t: np.ndarray  # (C,)
    cmd: np.ndarray  # (C, n)
    obj_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    marker_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    description: str | None = None
    duplicates: int = 0
    non_monotonic: int = 0


def _stamp(header: Any) -> float:
    return float(header.stamp.sec) + 1e-9 * float(header.stamp.nanosec)


def read_bag(path: str | Path, joint_names: Sequence[str], *, joint_states: str = JOINT_STATES,
             commands: str = COMMANDS, object_pose: str | None = None, marker: str | None = None,
             ignore_extra_joints: bool = False, urdf_joint_names: Sequence[str] = ()) -> BagStreams:
    """The joint states, commands, object poses and markers of the bag at ``path``.

    Raises:
        BagError: not a bag, an empty bag, a missing topic or one of another type, joint names
            that do not match (``urdf_joint_names``: the URDF's, named in the message), extra
            joints without ``ignore_extra_joints``, commands of the wrong length.
    """
    rosbag2, _ = _rosbags()
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    store = _typestore()
    try:
        reader = rosbag2.Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for an unreadable bag
        raise BagError(f"{path}: not a readable rosbag2 ({type(exc).__name__}: {exc})") from None
    try:
        if reader.message_count == 0:
            raise BagError(f"{path}: the bag is empty (no messages)")
        by_topic = {c.topic: c for c in reader.connections}
        wanted = {joint_states: JOINT_STATE_TYPE, commands: COMMAND_TYPE}
        if object_pose:
            wanted[object_pose] = POSE_TYPE
        missing = [t for t in wanted if t not in by_topic]
        if missing:
            raise BagError(f"{path}: missing topic(s) {', '.join(missing)} (the bag has "
                           f"{', '.join(sorted(by_topic)) or 'none'}; name them with --joint-states, --commands, "
                           "--object-pose)")
        for topic, msgtype in wanted.items():
            if by_topic[topic].msgtype != msgtype:
                raise BagError(f"{path}: topic {topic} is {by_topic[topic].msgtype}, expected {msgtype}")
        if marker and marker not in by_topic:
            raise BagError(f"{path}: missing marker topic {marker} (the bag has {', '.join(sorted(by_topic))})")
        conns = [by_topic[t] for t in wanted] + ([by_topic[marker]] if marker else [])
        if ROBOT_DESCRIPTION in by_topic and by_topic[ROBOT_DESCRIPTION].msgtype == STRING_TYPE:
            conns.append(by_topic[ROBOT_DESCRIPTION])
        n = len(joint_names)
        order: list[int] | None = None
        seen_names: list[str] = []
        st_t: list[float] = []
        st_stamp: list[float] = []
        c_t: list[float] = []
        o_t: list[float] = []
        m_t: list[float] = []
        qs: list[np.ndarray] = []
        qds: list[np.ndarray] = []
        cs: list[np.ndarray] = []
        os_: list[list[float]] = []
        description = None
        last_key: tuple[Any, ...] | None = None
        duplicates = non_monotonic = 0
        for conn, t_ns, raw in reader.messages(connections=conns):
            t = t_ns * 1e-9
            msg = _decode(store, raw, conn.msgtype, path, conn.topic)
            if conn.topic == joint_states:
                names = list(msg.name)
                if names != seen_names:
                    order = _joint_order(path, names, joint_names, ignore_extra_joints, urdf_joint_names)
                    seen_names = names
                assert order is not None
                pos = np.asarray(msg.position, dtype=np.float64)
                vel = np.asarray(msg.velocity, dtype=np.float64)
                if pos.shape != (len(names),) or vel.shape != (len(names),):
                    raise BagError(f"{path}: {joint_states} message at t={t:.3f} has {pos.size} positions and "
                                   f"{vel.size} velocities for {len(names)} names (velocities are needed)")
                stamp = _stamp(msg.header) or t
                key = (stamp, pos.tobytes())
                if key == last_key:
                    duplicates += 1  # a state republished unchanged (the sim bridge when idle)
                    continue
                if st_stamp and stamp <= st_stamp[-1]:
                    non_monotonic += 1
                last_key = key
                st_t.append(t)
                st_stamp.append(stamp)
                qs.append(pos[order])
                qds.append(vel[order])
            elif conn.topic == commands:
                data = np.asarray(msg.data, dtype=np.float64)
                if data.shape != (n,):
                    raise BagError(f"{path}: {commands} message at t={t:.3f} has {data.size} values for the "
                                   f"model's {n} joints")
                c_t.append(t)
                cs.append(data)
            elif conn.topic == object_pose:
                p = msg.pose.position
                o_t.append(t)
                os_.append([p.x, p.y, p.z])
            elif conn.topic == marker:
                m_t.append(t)
            else:
                description = str(msg.data)
    finally:
        reader.close()
    if not st_t:
        raise BagError(f"{path}: no messages on {joint_states}")
    if not c_t:
        raise BagError(f"{path}: no messages on {commands}")
    if object_pose and not o_t:
        raise BagError(f"{path}: no messages on {object_pose}")
    return BagStreams(np.asarray(st_t), np.asarray(st_stamp), np.asarray(qs), np.asarray(qds), np.asarray(c_t),
                      np.asarray(cs), np.asarray(o_t), np.asarray(os_).reshape(-1, 3), np.asarray(m_t),
                      description, duplicates, non_monotonic)


def _decode(store: Any, raw: bytes, msgtype: str, path: Path, topic: str) -> Any:
    """A CDR message. Tolerates the alignment padding some middlewares (Fast DDS) append to a
    serialised message (up to 8 bytes, not necessarily zero), which ``rosbags`` takes for a size
    mismatch: parsing stops where the message ends, so the padding is never read."""
    data = bytes(raw)
    error: Exception | None = None
    for extra in (0, 4, 8):
        if extra >= len(data) - 4:
            break
        try:
            return store.deserialize_cdr(data[:len(data) - extra], msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags' SerdeError and struct errors alike
            error = error or exc
            if "size mismatch" not in str(exc):
                break
    raise BagError(f"{path}: cannot decode a {msgtype} message on {topic} ({error})")


def _joint_order(path: Path, names: list[str], joint_names: Sequence[str], ignore_extra: bool,
                 urdf_names: Sequence[str]) -> list[int]:
    missing = [j for j in joint_names if j not in names]
    if missing:
        raise BagError(f"{path}: the joint states name {names}, which lacks the URDF's joint(s) "
                       f"{', '.join(missing)} (URDF joints: {', '.join(urdf_names or joint_names)})")
    extra = [j for j in names if j not in joint_names]
    if extra and not ignore_extra:
        raise BagError(f"{path}: the joint states name joint(s) {', '.join(extra)} that the URDF does not have "
                       "(pass --ignore-extra-joints to drop them)")
    return [names.index(j) for j in joint_names]


# ---------------------------------------------------------------------------------------
# Steps and episodes


@dataclass
class ImportResult:
    """What an import wrote and dropped."""

    episodes: int = 0
    steps: int = 0
    clipped_actions: int = 0  # action entries clipped to [-1, 1]
    idle_steps: int = 0  # dropped: idling at the home pose
    short_dropped: int = 0  # steps of pieces shorter than min_steps
    unpaired_commands: int = 0  # commands without a joint state before or after them
    unsampled_steps: int = 0  # grid steps in a pause of the joint states (time stepping)
    reordered_commands: int = 0  # commands the recorder heard after their result (commands stepping)
    duplicate_states: int = 0
    already_in_store: int = 0  # episodes the output store held already (the same bag imported again)
    paths: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.episodes} episodes ({self.steps} steps); {self.clipped_actions} action entries clipped to "
                f"[-1, 1]; dropped {self.idle_steps} idle steps at home, {self.short_dropped} steps of too short "
                f"pieces, {self.unsampled_steps} in pauses of the joint states, {self.unpaired_commands} unpaired "
                f"commands ({self.reordered_commands} heard after their result); {self.already_in_store} episodes "
                "already in the store")


@dataclass
class _Steps:
    """Per step: obs state index or interpolation weights, resolved into arrays."""

    q: np.ndarray  # (T, n) state at the step's start
    qd: np.ndarray
    q_next: np.ndarray
    qd_next: np.ndarray
    cmd: np.ndarray  # (T, n)
    t: np.ndarray  # (T,) receive time of the step's start
    t_next: np.ndarray  # (T,)
    stamp: np.ndarray  # (T,) header stamp of the next state
    cut: np.ndarray  # (T,) bool: an episode starts at this step
    valid: np.ndarray | None = None  # (T,) bool: joint states close around both ends (time stepping)


def _steps_by_commands(s: BagStreams, gap_s: float, bound: np.ndarray, result: ImportResult) -> _Steps:
    """One step per command, for a lockstep simulation: each command makes the sim step one
    control period and publish one new state.

    Messages are taken in receive order. Commands wait in order for the new states that follow
    them, one state each: a recorder hears the two topics from two writers, so it may hear the
    next command before the state the previous one made (under load), and a lockstep sim never
    drops a command. A command still waiting when a state ``gap_s`` younger arrives had no
    result (unpaired). A state out of one step's reach from the newest state (``bound``: per
    joint, velocity limit x period) is a reset, never a result: the first command of an episode
    may be heard before the reset state it was computed from. A recorder may also hear a result
    before the command itself (the sim steps faster than the command reaches the recorder): a
    command that follows a lone state, where that state is one step's reach from the previous
    result and the command one step's reach from that previous result too, is paired with the
    previous result (a reset state is a jump, and starts a new episode instead).
    """
    events = sorted([(float(t), 0, i) for i, t in enumerate(s.state_t)]
                    + [(float(t), 1, i) for i, t in enumerate(s.cmd_t)])
    obs_i: list[int] = []
    cmd_i: list[int] = []
    next_i: list[int] = []
    last: int | None = None  # newest state
    result_of_prev: int | None = None  # the state that ended the previous step
    waiting: deque[int] = deque()  # commands awaiting their results, oldest first
    orphans: list[int] = []  # states since the previous step's result, no command between
    for t, kind, i in events:
        if kind == 0:
            while waiting and t - s.cmd_t[waiting[0]] > gap_s:
                waiting.popleft()
                result.unpaired_commands += 1
            if waiting and last is not None and np.all(np.abs(s.q[i] - s.q[last]) <= 1.5 * bound):
                obs_i.append(last)
                cmd_i.append(waiting.popleft())
                next_i.append(i)
                result_of_prev, orphans = i, []
            else:
                orphans.append(i)
            last = i
        elif waiting:
            waiting.append(i)
        elif last is None:
            result.unpaired_commands += 1
        elif (len(orphans) == 1 and result_of_prev is not None
              and np.all(np.abs(s.q[orphans[0]] - s.q[result_of_prev]) <= 1.5 * bound)
              and np.all(np.abs(s.cmd[i] - s.q[result_of_prev]) <= bound * (1 + 1e-6) + 1e-9)):
            obs_i.append(result_of_prev)
            cmd_i.append(i)
            next_i.append(orphans[0])
            result_of_prev, orphans = orphans[0], []
            result.reordered_commands += 1
        else:
            waiting.append(i)
    result.unpaired_commands += len(waiting)
    o, c, n = np.asarray(obs_i, dtype=int), np.asarray(cmd_i, dtype=int), np.asarray(next_i, dtype=int)
    cut = np.ones(o.size, dtype=bool)
    # Consecutive steps chain when the next one starts from the state the previous one ended in.
    cut[1:] = (o[1:] != n[:-1]) | (np.diff(s.cmd_t[c]) > gap_s)
    return _Steps(s.q[o], s.qd[o], s.q[n], s.qd[n], s.cmd[c], s.cmd_t[c], s.state_t[n], s.state_stamp[n], cut)


def _interp(t: np.ndarray, xt: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(t, xt, x[:, j]) for j in range(x.shape[1])], axis=1)


def _steps_by_time(s: BagStreams, period: float, gap_s: float, result: ImportResult, path: Path) -> _Steps:
    # Segments of the command stream without gaps; each a grid at the control rate.
    breaks = np.flatnonzero(np.diff(s.cmd_t) > gap_s) + 1
    grids, cuts, sparse, intervals = [], [], 0, 0
    for seg in np.split(np.arange(s.cmd_t.size), breaks):
        t0 = s.cmd_t[seg[0]]
        t_end = min(s.cmd_t[seg[-1]] + period, s.state_t[-1])
        t0 = max(t0, s.state_t[0])
        k = int(np.floor((t_end - t0) / period + 1e-9))
        if k < 1:
            result.unpaired_commands += seg.size
            continue
        grid = t0 + period * np.arange(k + 1)
        grids.append(grid)
        c = np.zeros(k, dtype=bool)
        c[0] = True
        cuts.append(c)
        inside = (s.state_t >= t0) & (s.state_t <= grid[-1])
        gaps = np.diff(s.state_t[inside])
        intervals += gaps.size
        sparse += int((gaps > 1.5 * period).sum())
        if not inside.any():
            sparse += k
            intervals += k
    if intervals and sparse > SPARSE_SHARE * intervals:
        raise BagError(f"{path}: sparse joint states: {sparse} of {intervals} intervals are longer than 1.5 control "
                       f"periods ({1.5 * period * 1e3:.0f} ms); record /joint_states at the control rate or faster")
    if not grids:
        raise BagError(f"{path}: no command period with joint states around it")
    t = np.concatenate([g[:-1] for g in grids])
    t_next = np.concatenate([g[1:] for g in grids])
    ci = np.searchsorted(s.cmd_t, t_next - 1e-6, side="left") - 1  # newest command before the period ends
    # Interpolate only between close states: never across a pause of the joint-state stream.
    valid = _bracketed(s.state_t, t, 1.5 * period) & _bracketed(s.state_t, t_next, 1.5 * period)
    return _Steps(_interp(t, s.state_t, s.q), _interp(t, s.state_t, s.qd), _interp(t_next, s.state_t, s.q),
                  _interp(t_next, s.state_t, s.qd), s.cmd[ci], t, t_next,
                  np.interp(t_next, s.state_t, s.state_stamp), np.concatenate(cuts), valid)


def _bracketed(state_t: np.ndarray, x: np.ndarray, max_gap: float) -> np.ndarray:
    """Whether each time in ``x`` is a state's time (to 1 us) or lies between two states at most
    ``max_gap`` apart."""
    j = np.clip(np.searchsorted(state_t, x - 1e-6, side="left"), 0, state_t.size - 1)
    exact = np.abs(state_t[j] - x) <= 1e-6
    inside = (j > 0) & (state_t[j] >= x) & (state_t[j] - state_t[np.maximum(j - 1, 0)] <= max_gap)
    return exact | inside


def _object_at(s: BagStreams, t: np.ndarray) -> np.ndarray | None:
    """The newest object position received at or before each time (NaN before the first)."""
    if s.obj_t.size == 0:
        return None
    i = np.searchsorted(s.obj_t, t + 1e-6, side="right") - 1  # 1 us: stamps rounded to ns
    out = s.obj[np.maximum(i, 0)].copy()
    out[i < 0] = np.nan
    return out


def import_bag(bag: str | Path, cfg: Any, out: str | Path, *, joint_states: str = JOINT_STATES,
               commands: str = COMMANDS, object_pose: str | None = None, marker: str | None = None,
               task: int = 0, stepping: str = "time", gap_s: float = 0.0, min_steps: int = 2,
               ignore_extra_joints: bool = False, dataset: str | Path | None = None,
               home_tolerance: float = 0.01) -> ImportResult:
    """Import the bag at ``bag`` into the reward-free store ``out`` (created, or appended to when
    its schema matches) for the arm and family of ``cfg``; see the module docstring.

    ``gap_s``: a pause in the command stream longer than this starts a new episode (0: five
    control periods, at least 0.5 s). ``dataset``: a training dataset whose schema the store
    must have (its tasks are copied). Raises :class:`BagError` (or StoreError) naming the problem.
    """
    import smrl_train
    from smrl_train.data.generate import store_manifest
    from smrl_train.data.recordings import UNNAMED_KIND, schema_mismatches
    from smrl_train.robot.control import ObservationBuilder
    from smrl_train.robot.urdf import UrdfError, parse_urdf
    from smrl_train.sim.envs import ArmTaskEnv

    if stepping not in STEPPINGS:
        raise BagError(f"stepping: expected one of {', '.join(STEPPINGS)}, got {stepping!r}")
    bag = Path(bag)
    env = ArmTaskEnv(cfg)
    arm = env.arm
    names = list(env.joint_names)
    layout = [(str(a), int(b)) for a, b in env.observation_layout]
    builder = ObservationBuilder(arm, names, layout)
    if builder.needs_object and not object_pose:
        object_pose = OBJECT_POSE
    s = read_bag(bag, names, joint_states=joint_states, commands=commands,
                 object_pose=object_pose if builder.needs_object else None, marker=marker,
                 ignore_extra_joints=ignore_extra_joints, urdf_joint_names=arm.joint_names)
    if s.description is not None:
        try:
            other = parse_urdf(s.description.encode(), cfg.arm.ee_link, f"{bag}:{ROBOT_DESCRIPTION}")
            same = other.name == arm.name and list(other.joint_names) == list(arm.joint_names) and \
                np.allclose(other.lower, arm.lower) and np.allclose(other.upper, arm.upper)
        except UrdfError:
            other, same = None, False
        if not same:
            raise BagError(f"{bag}: recorded on a different arm: its {ROBOT_DESCRIPTION} describes "
                           f"{other.name if other else 'a robot without ' + repr(cfg.arm.ee_link)}"
                           f"{' (joints ' + ', '.join(other.joint_names) + ')' if other else ''}, the config's "
                           f"URDF {arm.name} (joints {', '.join(arm.joint_names)})")
    if s.non_monotonic:
        raise BagError(f"{bag}: non-monotonic timestamps: {s.non_monotonic} of {len(s.state_t)} joint states have "
                       "a header stamp not after the previous one")
    period = 1.0 / float(cfg.env.control_hz)
    gap = gap_s if gap_s > 0 else max(0.5, 5 * period)
    result = ImportResult(duplicate_states=s.duplicates)
    order = [list(arm.joint_names).index(j) for j in names]
    bound = np.asarray(arm.velocity, dtype=np.float64)[order] * period
    steps = (_steps_by_commands(s, gap, bound, result) if stepping == "commands"
             else _steps_by_time(s, period, gap, result, bag))
    cut = steps.cut.copy()
    if steps.valid is not None:
        result.unsampled_steps = int((~steps.valid).sum())
    # A marker starts a new episode at the first step starting at or after it.
    for m in s.marker_t:
        i = int(np.searchsorted(steps.t, m, side="left"))
        if i < cut.size:
            cut[i] = True
    # Homing: steps idling at the home pose (at rest, commanded there) are dropped and split.
    keep = np.ones(cut.size, dtype=bool)
    if cfg.arm.home:
        home = np.clip(np.asarray(cfg.arm.home, dtype=np.float64), arm.lower, arm.upper)[order]
        keep = ~((np.abs(steps.q - home).max(axis=1) <= home_tolerance)
                 & (np.abs(steps.qd).max(axis=1) < AT_REST)
                 & (np.abs(steps.cmd - home).max(axis=1) <= home_tolerance))
        result.idle_steps = int((~keep).sum())
        cut[1:] |= keep[1:] & ~keep[:-1]
    max_step = np.asarray(env.max_step, dtype=np.float64)
    raw = (steps.cmd - steps.q) / max_step
    action = np.clip(raw, -1.0, 1.0)
    obj = _object_at(s, steps.t)
    obj_next = _object_at(s, steps.t_next)
    obs = np.stack([builder.build(steps.q[k], steps.qd[k], None if obj is None else obj[k])
                    for k in range(cut.size)]) if cut.size else np.zeros((0, builder.obs_dim), np.float32)
    next_obs = np.stack([builder.build(steps.q_next[k], steps.qd_next[k], None if obj_next is None else obj_next[k])
                         for k in range(cut.size)]) if cut.size else obs
    finite = np.isfinite(obs).all(axis=1) & np.isfinite(next_obs).all(axis=1)  # before the first object pose
    keep &= finite
    if steps.valid is not None:
        keep &= steps.valid
    cut[1:] |= keep[1:] & ~keep[:-1]

    # Episodes: runs of kept steps between cuts, in pieces of the configured length.
    pieces: list[np.ndarray] = []
    current: list[int] = []
    length = int(cfg.env.episode_length)
    for k in range(cut.size):
        if cut[k] or not keep[k] or len(current) >= length:
            if current:
                pieces.append(np.asarray(current))
            current = []
        if keep[k]:
            current.append(k)
    if current:
        pieces.append(np.asarray(current))
    good = [p for p in pieces if p.size >= max(1, min_steps)]
    result.short_dropped = sum(p.size for p in pieces) - sum(p.size for p in good)
    if not good:
        raise BagError(f"{bag}: no episode of at least {max(1, min_steps)} steps ({len(s.cmd_t)} commands, "
                       f"{len(s.state_t)} joint states; {result.summary()})")

    generator = {"name": "smrl data import-bag", "smrl_version": smrl_train.__version__, "bag": str(bag),
                 "topics": {"joint_states": joint_states, "commands": commands, "object_pose": object_pose,
                            "marker": marker}, "stepping": stepping}
    manifest = store_manifest(env, cfg, reward_labelled=False, tasks={}, generator=generator)
    if dataset is not None:
        dm = EpisodeStore.open(dataset).manifest
        problems = schema_mismatches(manifest, dm, ("bag import", "dataset"))
        if problems:
            raise BagError(f"{bag}: the config's schema does not fit the dataset {dataset}: " + "; ".join(problems))
        manifest["tasks"] = dm["tasks"]
    store = EpisodeStore.create(out, manifest)
    have = store.episode_keys()  # importing a bag again adds nothing
    for p in good:
        n = p.size
        truncated = np.zeros(n, dtype=bool)
        truncated[-1] = True
        arrays = {"obs": obs[p], "action": action[p].astype(np.float32), "next_obs": next_obs[p],
                  "terminated": np.zeros(n, dtype=bool), "truncated": truncated,
                  "timestamp": steps.stamp[p].astype(np.float64)}
        meta = {"kind": UNNAMED_KIND, "source": "smrl data import-bag", "bag": bag.name,
                "bag_time": [float(steps.t[p[0]]), float(steps.t_next[p[-1]])]}
        if store.episode_key(task, arrays) in have:
            result.already_in_store += 1
            continue
        result.paths.append(store.append_episode(task, arrays, meta))
        result.episodes += 1
        result.steps += n
        result.clipped_actions += int((np.abs(raw[p]) > 1.0 + 1e-6).sum())
    return result


# ---------------------------------------------------------------------------------------
# Export


def export_bag(store_path: str | Path, bag: str | Path, *, joint_states: str = JOINT_STATES,
               commands: str = COMMANDS, object_pose: str = OBJECT_POSE, marker: str = EPISODE_MARKER,
               gap_s: float = 1.0) -> tuple[int, int]:
    """Write the episodes of the store at ``store_path`` as an MCAP rosbag2 at ``bag`` (a new
    folder); returns (episodes, messages). See the module docstring."""
    rosbag2, _ = _rosbags()
    ts = _typestore()
    store = EpisodeStore.open(store_path)
    m = store.manifest
    names = list(m["joint_names"])
    n = len(names)
    offsets, at = {}, 0
    for name, size in m["observation_layout"]:
        offsets[name] = at
        at += int(size)
    if "joint_pos" not in offsets:
        raise BagError(f"{store_path}: the observation has no joint positions to export")
    paths = store.episode_paths()
    if not paths:
        raise BagError(f"{store_path}: no episodes to export")
    bag = Path(bag)
    if bag.exists():
        raise BagError(f"{bag}: exists already (rosbag2 writes a new folder)")
    max_step = np.asarray(m["action"]["max_step"], dtype=np.float64)
    period = 1.0 / float(m["control_hz"])
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    JointState, Multi = T[JOINT_STATE_TYPE], T[COMMAND_TYPE]
    Layout = T["std_msgs/msg/MultiArrayLayout"]
    PoseStamped, Pose = T[POSE_TYPE], T["geometry_msgs/msg/Pose"]
    Point, Quat, String = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"], T[STRING_TYPE]
    frame = "world"

    def header(t: float) -> Any:
        ns = int(round(t * 1e9))
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame)

    def block(obs: np.ndarray, name: str, size: int) -> np.ndarray:
        return np.asarray(obs[offsets[name]:offsets[name] + size], dtype=np.float64)

    count = 0
    with rosbag2.Writer(bag, version=9, storage_plugin=rosbag2.StoragePlugin.MCAP) as writer:
        c_js = writer.add_connection(joint_states, JOINT_STATE_TYPE, typestore=ts)
        c_cmd = writer.add_connection(commands, COMMAND_TYPE, typestore=ts)
        c_obj = writer.add_connection(object_pose, POSE_TYPE, typestore=ts) if "puck_pos" in offsets else None
        c_mark = writer.add_connection(marker, STRING_TYPE, typestore=ts)

        def put(conn: Any, t: float, msg: Any) -> None:
            nonlocal count
            writer.write(conn, int(round(t * 1e9)), ts.serialize_cdr(msg, conn.msgtype))
            count += 1

        t = 1.0
        for path in paths:
            ep = store.read_episode(path)
            obs, act, nxt = ep.arrays["obs"], ep.arrays["action"], ep.arrays["next_obs"]
            states = np.concatenate([obs, nxt[-1:]])
            put(c_mark, t, String(data=json.dumps({"task": ep.task_index, "episode": ep.meta["episode_index"],
                                                   "kind": ep.meta.get("kind", "")}, sort_keys=True)))
            for k, o in enumerate(states):
                tk = t + k * period
                q = block(o, "joint_pos", n)
                qd = block(o, "joint_vel", n) if "joint_vel" in offsets else np.zeros(n)
                put(c_js, tk, JointState(header=header(tk), name=names, position=q, velocity=qd,
                                         effort=np.zeros(0)))
                if c_obj is not None:
                    p = block(o, "puck_pos", 3)
                    put(c_obj, tk, PoseStamped(header=header(tk), pose=Pose(
                        position=Point(x=p[0], y=p[1], z=p[2]), orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0))))
                if k < len(act):
                    target = q + np.asarray(act[k], dtype=np.float64) * max_step
                    put(c_cmd, tk, Multi(layout=Layout(dim=[], data_offset=0), data=target))
            t += len(states) * period + gap_s
    return len(paths), count
