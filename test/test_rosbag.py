"""rosbag2 import and export without ROS (rosbags): a store exported to MCAP imports back to the
same transitions (reach and push); every rejection is one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smrl_train.cli import main as smrl_main
from smrl_train.data.generate import generate_dataset
from smrl_train.data.recordings import UNNAMED_KIND
from smrl_train.data.rosbag import COMMANDS, JOINT_STATES, export_bag, import_bag
from smrl_train.data.store import EpisodeStore

from conftest import small_config

pytest.importorskip("rosbags")

NAMES = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll"]
HOME = [0.0, 0.3, 1.3, 1.2, 0.0]


def _compare(a: Path, b: Path) -> dict[str, float]:
    sa, sb = EpisodeStore.open(a), EpisodeStore.open(b)
    pa, pb = sa.episode_paths(), sb.episode_paths()
    assert len(pa) == len(pb)
    worst: dict[str, float] = {}
    for x, y in zip(pa, pb):
        ea, eb = sa.read_episode(x), sb.read_episode(y)
        assert len(ea) == len(eb) and eb.meta["kind"] == UNNAMED_KIND
        for k in ("obs", "action", "next_obs"):
            worst[k] = max(worst.get(k, 0.0), float(np.abs(ea.arrays[k] - eb.arrays[k]).max()))
    return worst


@pytest.mark.parametrize("family", ["reach", "push"])
def test_an_exported_store_imports_back_to_the_same_transitions(family: str, tmp_path: Path, capsys) -> None:
    cfg = small_config(family, n_train=2, n_test=1, episode_length=25)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    assert smrl_main(["data", "export-bag", str(tmp_path / "data"), str(tmp_path / "bag")]) == 0
    assert "(rosbag2, MCAP)" in capsys.readouterr().out
    assert list((tmp_path / "bag").glob("*.mcap")) and (tmp_path / "bag" / "metadata.yaml").exists()
    # Episodes are one second apart: the gaps split them (the markers would too).
    r = import_bag(tmp_path / "bag", cfg, tmp_path / "imported", task=0)
    assert r.episodes == len(EpisodeStore.open(tmp_path / "data").episode_paths()) and r.clipped_actions == 0
    worst = _compare(tmp_path / "data", tmp_path / "imported")
    assert worst["obs"] < 1e-5 and worst["next_obs"] < 1e-5 and worst["action"] < 1e-5, worst


def test_a_marker_topic_and_the_episode_length_split_episodes(tmp_path: Path) -> None:
    cfg = small_config("reach", n_train=1, n_test=1, episode_length=20)
    generate_dataset(cfg, tmp_path / "data", progress=False)
    export_bag(tmp_path / "data", tmp_path / "bag")
    n = len(EpisodeStore.open(tmp_path / "data").episode_paths())
    # A gap of 100 s never splits: the markers alone do.
    r = import_bag(tmp_path / "bag", cfg, tmp_path / "marked", marker="/smrl/episode", gap_s=100.0)
    assert r.episodes == n and r.steps == 20 * n
    # Without markers the whole bag is one stream, cut at the configured length (1 s gaps
    # interpolated: only steps are what matters here).
    short = small_config("reach", n_train=1, n_test=1, episode_length=8)
    r = import_bag(tmp_path / "bag", short, tmp_path / "cut", marker="/smrl/episode", gap_s=100.0)
    assert {len(EpisodeStore.open(tmp_path / "cut").read_episode(p)) for p in
            EpisodeStore.open(tmp_path / "cut").episode_paths()} == {8, 4}


# ---------------------------------------------------------------------------------------
# Hand-made bags


def write_bag(path: Path, states: list[tuple[float, list[str], list[float], float | None]],
              commands: list[tuple[float, list[float]]], storage: str = "mcap",
              description: str | None = None, extra_topics: tuple[str, ...] = ()) -> Path:
    """states (receive s, names, positions, header stamp or None = receive time); commands
    (receive s, targets). Velocities are zero."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types

    def stamp(t: float):
        ns = int(round(t * 1e9))
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9,
                                                                                nanosec=ns % 10**9), frame_id="")

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        cs = w.add_connection(JOINT_STATES, "sensor_msgs/msg/JointState", typestore=ts)
        cc = w.add_connection(COMMANDS, "std_msgs/msg/Float64MultiArray", typestore=ts)
        for topic in extra_topics:
            w.add_connection(topic, "std_msgs/msg/String", typestore=ts)
        if description is not None:
            cd = w.add_connection("/robot_description", "std_msgs/msg/String", typestore=ts)
            w.write(cd, 1, ts.serialize_cdr(T["std_msgs/msg/String"](data=description), "std_msgs/msg/String"))
        for t, names, q, st in states:
            msg = T["sensor_msgs/msg/JointState"](header=stamp(t if st is None else st), name=names,
                                                  position=np.asarray(q, float), velocity=np.zeros(len(q)),
                                                  effort=np.zeros(0))
            w.write(cs, int(t * 1e9), ts.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
        for t, c in commands:
            layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.asarray(c, float))
            w.write(cc, int(t * 1e9), ts.serialize_cdr(msg, "std_msgs/msg/Float64MultiArray"))
    return path


def run(bag: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = smrl_main(["data", "import-bag", str(bag), "--config", "config/reach.yaml", "--out",
                      str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    return code, err


def moving(n: int = 60, rate: float = 50.0, names: list[str] | None = None, extra: float | None = None):
    """A slow sine on every joint: states at ``rate``, a command each 0.05 s (20 Hz)."""
    names = names or NAMES
    states, commands = [], []
    for k in range(int(n * rate / 20)):
        t = 100.0 + k / rate
        q = [h + 0.1 + 0.05 * np.sin(t) for h in HOME] + ([extra] if extra is not None else [])
        states.append((t, names, q, None))
    for k in range(n):
        t = 100.0 + k * 0.05 + 0.001
        commands.append((t, [h + 0.1 + 0.05 * np.sin(t + 0.05) for h in HOME]))
    return states, commands


def test_a_well_formed_bag_imports_in_both_storage_formats(tmp_path: Path, capsys) -> None:
    states, commands = moving()
    for storage in ("sqlite3", "mcap"):
        bag = write_bag(tmp_path / f"bag_{storage}", states, commands, storage)
        code, err = run(bag, tmp_path / storage, capsys)
        assert code == 0, err
        out = EpisodeStore.open(tmp_path / storage / "out")
        assert out.manifest["reward_labelled"] is False and len(out.episode_paths()) == 1


def test_importing_a_bag_again_adds_nothing(tmp_path: Path, capsys) -> None:
    """An episode is its task and its arrays' SHA-256: the same bag imported into the same store
    a second time finds every episode there; another bag still appends."""
    states, commands = moving()
    bag = write_bag(tmp_path / "bag", states, commands)
    assert run(bag, tmp_path, capsys)[0] == 0
    store = EpisodeStore.open(tmp_path / "out")
    before = [p.name for p in store.episode_paths()]
    code = smrl_main(["data", "import-bag", str(bag), "--config", "config/reach.yaml", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0 and "wrote 0 episodes (0 steps)" in out and f"{len(before)} episodes already in the store" in out
    assert [p.name for p in store.episode_paths()] == before
    other = write_bag(tmp_path / "bag2", *moving(n=80))
    assert run(other, tmp_path, capsys)[0] == 0
    assert len(store.episode_paths()) == len(before) + 1


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smrl: error: ") and "Traceback" not in err, err
    return lines[0]


def test_rejections_are_one_line_each(tmp_path: Path, capsys) -> None:
    states, commands = moving()
    cases: dict[str, tuple[Path, tuple[str, ...]]] = {}
    cases["no such bag"] = (tmp_path / "nothing", ())
    cases["missing topic(s) /arm/commands"] = (write_bag(tmp_path / "b1", states, commands),
                                               ("--commands", "/arm/commands"))
    cases["lacks the URDF's joint(s) wrist_roll"] = (write_bag(
        tmp_path / "b2", [(t, NAMES[:4] + ["wrist"], q, s) for t, _, q, s in states],
        commands), ())
    extra_states, _ = moving(names=NAMES + ["gripper"], extra=0.02)
    cases["joint(s) gripper that the URDF does not have"] = (write_bag(tmp_path / "b3", extra_states, commands), ())
    backwards = [(t, n, q, (t if k % 10 else t - 1.0)) for k, (t, n, q, _) in enumerate(states)]
    cases["non-monotonic timestamps: 14 of 150 joint states"] = (write_bag(tmp_path / "b4", backwards, commands), ())
    cases["sparse joint states"] = (write_bag(tmp_path / "b5", states[::5], commands), ())
    cases["the bag is empty"] = (write_bag(tmp_path / "b6", [], []), ())
    other = Path("urdf/panda_like.urdf").read_text()
    cases["recorded on a different arm"] = (write_bag(tmp_path / "b7", states, commands, description=other), ())
    cases["has 4 values for the model's 5 joints"] = (write_bag(tmp_path / "b8", states,
                                                               [(t, c[:4]) for t, c in commands]), ())
    for i, (expected, (bag, extra)) in enumerate(cases.items()):
        code, err = run(bag, tmp_path / f"case{i}", capsys, *extra)
        assert code == 2 and expected in one_line(err), (expected, err)
    # Extra joints, when asked, are dropped; the same URDF as description passes.
    code, err = run(tmp_path / "b3", tmp_path / "ok", capsys, "--ignore-extra-joints")
    assert code == 0, err
    same = write_bag(tmp_path / "b9", states, commands, description=Path("urdf/smrl_arm.urdf").read_text())
    assert run(same, tmp_path / "ok2", capsys)[0] == 0


def test_idling_at_home_splits_and_is_dropped(tmp_path: Path) -> None:
    cfg = small_config("reach", episode_length=200)
    states, commands = [], []
    for k in range(120):  # 2 s moving, 2 s idle at home, 2 s moving, at 20 Hz
        t = 10.0 + k * 0.05
        idle = 40 <= k < 80
        q = HOME if idle else [h + 0.1 + 0.05 * np.sin(t) for h in HOME]
        states.append((t, NAMES, q, None))
        commands.append((t + 0.001, HOME if idle else [h + 0.1 + 0.05 * np.sin(t + 0.05) for h in HOME]))
    bag = write_bag(tmp_path / "bag", states, commands)
    r = import_bag(bag, cfg, tmp_path / "out")
    assert r.episodes == 2 and r.idle_steps >= 38, r.summary()


def test_middleware_padding_after_a_message_is_tolerated() -> None:
    """Fast DDS pads a serialised message to alignment with bytes that need not be zero; rosbags
    alone calls that a size mismatch."""
    from smrl_train.data.rosbag import BagError, _decode, _typestore

    ts = _typestore()
    T = ts.types
    msg = T["std_msgs/msg/Float64MultiArray"](layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                              data=np.array([1.0, 2.0]))
    raw = bytes(ts.serialize_cdr(msg, "std_msgs/msg/Float64MultiArray"))
    for pad in (b"", b"\x01\x93\xd2\x02", bytes(8)):
        got = _decode(ts, raw + pad, "std_msgs/msg/Float64MultiArray", Path("bag"), "/c")
        assert list(got.data) == [1.0, 2.0]
    with pytest.raises(BagError, match="cannot decode a std_msgs/msg/Float64MultiArray message on /c"):
        _decode(ts, raw[:-6], "std_msgs/msg/Float64MultiArray", Path("bag"), "/c")


def test_lockstep_commands_heard_after_their_result_still_pair_with_their_state(tmp_path: Path) -> None:
    """--stepping commands: a recorder may hear a lockstep sim's new state before the command
    that made it; the command still pairs with the state it was computed from, and a reset
    (a jump) starts a new episode."""
    cfg = small_config("reach", episode_length=200)
    states, commands, t = [], [], 50.0
    q = np.array(HOME) + 0.2
    expected = []
    for episode in range(2):
        q = np.array(HOME) + 0.2 + 0.3 * episode  # the reset pose: a jump
        states.append((t, NAMES, list(q), None))
        for k in range(10):
            target = q + 0.004 * (k + 1)
            nxt = q + 0.003 * (k + 1)
            swap = k in (3, 7)  # the result heard 0.1 ms before its command
            commands.append((t + (0.0012 if swap else 0.0005), list(target)))
            states.append((t + (0.0011 if swap else 0.001), NAMES, list(nxt), None))
            expected.append((q.copy(), target))
            q, t = nxt, t + 0.001 + (0.0011 if swap else 0.001)
        t += 0.01
    bag = write_bag(tmp_path / "bag", states, commands)
    r = import_bag(bag, cfg, tmp_path / "out", stepping="commands")
    assert (r.episodes, r.steps, r.reordered_commands, r.unpaired_commands) == (2, 20, 4, 0), r.summary()
    store = EpisodeStore.open(tmp_path / "out")
    obs = np.concatenate([store.read_episode(p).arrays["obs"] for p in store.episode_paths()])
    assert np.allclose(obs[:, :5], [e[0] for e in expected], atol=1e-6)


def test_lockstep_commands_heard_before_the_previous_result_still_pair_in_order(tmp_path: Path) -> None:
    """--stepping commands under load: the recorder hears the next command before the state the
    previous one made, and an episode's first command before its reset state. A lockstep sim
    steps once per command, so every command still pairs with its own result and start state."""
    cfg = small_config("reach", episode_length=200)
    states, commands, t = [], [], 50.0
    expected = []
    for episode in range(2):
        q = np.array(HOME) + 0.2 - 0.5 * episode  # the reset pose: a jump
        # The second episode's first command is heard before the reset state it was computed
        # from (the recording starts with the first reset state).
        states.append((t + (0.0005 if episode else -0.0005), NAMES, list(q), None))
        for k in range(10):
            target = q + 0.004 * (k + 1)
            nxt = q + 0.003 * (k + 1)
            late = k in (2, 3, 6)  # this step's result is heard after the next command
            cmd_t = t if k == 0 else t + 0.0001
            commands.append((cmd_t, list(target)))
            states.append((t + (0.0017 if late else 0.0008), NAMES, list(nxt), None))
            expected.append((q.copy(), target, nxt.copy()))
            q, t = nxt, t + 0.001
        t += 0.01
    bag = write_bag(tmp_path / "bag", states, commands)
    r = import_bag(bag, cfg, tmp_path / "out", stepping="commands")
    assert (r.episodes, r.steps, r.unpaired_commands) == (2, 20, 0), r.summary()
    store = EpisodeStore.open(tmp_path / "out")
    eps = [store.read_episode(p) for p in store.episode_paths()]
    obs = np.concatenate([e.arrays["obs"] for e in eps])
    next_obs = np.concatenate([e.arrays["next_obs"] for e in eps])
    assert np.allclose(obs[:, :5], [e[0] for e in expected], atol=1e-6)
    assert np.allclose(next_obs[:, :5], [e[2] for e in expected], atol=1e-6)
