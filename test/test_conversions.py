"""Message <-> numpy conversions (no rclpy.init), and typed parameters from dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from smrl_ros import conversions as conv
from smrl_ros import params


def test_stamps_round_trip() -> None:
    for t in (0.0, 1.5, 1_795_467_824.868233, 12.999999999):
        stamp = conv.seconds_to_stamp(t)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert conv.stamp_to_seconds(stamp) == pytest.approx(t, abs=1e-6)


def test_joint_state_round_trip_keeps_names_and_values_together() -> None:
    names = ["b", "a", "c"]
    msg = conv.make_joint_state(names, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]),
                                conv.seconds_to_stamp(5.0), frame_id="base")
    got_names, pos, vel = conv.joint_state_arrays(msg)
    assert got_names == names and msg.header.frame_id == "base"
    np.testing.assert_array_equal(pos, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(vel, [0.1, 0.2, 0.3])
    no_vel = conv.make_joint_state(names, np.zeros(3), None, conv.seconds_to_stamp(0))
    assert len(conv.joint_state_arrays(no_vel)[2]) == 0


def test_command_carries_targets_and_documents_joint_order() -> None:
    msg = conv.make_command(np.array([0.1, -0.2]), ["j1", "j2"])
    np.testing.assert_array_equal(conv.command_array(msg), [0.1, -0.2])
    assert msg.layout.dim[0].label == "joints:j1,j2" and msg.layout.dim[0].size == 2
    assert conv.make_command(np.zeros(3)).layout.dim == []


def test_pose_round_trip() -> None:
    msg = conv.make_pose(np.array([0.4, -0.1, 0.015]), conv.seconds_to_stamp(1.0), "base_link")
    np.testing.assert_allclose(conv.pose_position(msg), [0.4, -0.1, 0.015])
    assert msg.header.frame_id == "base_link" and msg.pose.orientation.w == 1.0


def test_diagnostic_status_values() -> None:
    status = conv.make_status("x", conv.WARN, "holding", {"ticks": 3, "p99_ms": 1.23456789, "hold": "stale"})
    assert conv.status_values(status) == {"ticks": "3", "p99_ms": "1.23457", "hold": "stale"}
    assert status.level == conv.WARN


def test_task_markers_place_goal_end_effector_and_puck() -> None:
    from visualization_msgs.msg import Marker

    def position(m: Marker) -> list[float]:
        return [m.pose.position.x, m.pose.position.y, m.pose.position.z]

    stamp = conv.seconds_to_stamp(3.0)
    reach = {m.ns: m for m in conv.make_task_markers((0.4, 0.1, 0.3), 0.05, np.array([0.3, 0.0, 0.5]), stamp,
                                                     "base_link").markers}
    assert sorted(reach) == ["end_effector", "goal"]
    goal, ee = reach["goal"], reach["end_effector"]
    assert goal.type == Marker.SPHERE and (goal.scale.x, goal.scale.y, goal.scale.z) == (0.1, 0.1, 0.1)
    assert goal.color.a < 1 and goal.action == Marker.ADD and goal.pose.orientation.w == 1.0
    np.testing.assert_allclose(position(goal), [0.4, 0.1, 0.3])
    np.testing.assert_allclose(position(ee), [0.3, 0.0, 0.5])
    assert all(m.header.frame_id == "base_link" and m.header.stamp == stamp and m.id == 0 for m in reach.values())

    push = {m.ns: m for m in conv.make_task_markers((0.5, -0.1), 0.04, np.zeros(3), stamp, "panda_link0", table_z=0.01,
                                                    puck=np.array([0.45, 0.0, 0.025]), puck_size=(0.03, 0.03)).markers}
    assert sorted(push) == ["end_effector", "goal", "puck"]
    disc, puck = push["goal"], push["puck"]
    assert disc.type == Marker.CYLINDER and (disc.scale.x, disc.scale.y) == (0.08, 0.08) and disc.scale.z < 0.01
    assert disc.pose.position.z - disc.scale.z / 2 == pytest.approx(0.01)  # lies on the table
    np.testing.assert_allclose(position(disc)[:2], [0.5, -0.1])
    np.testing.assert_allclose(position(puck), [0.45, 0.0, 0.025])
    assert (puck.scale.x, puck.scale.z) == (0.06, 0.03)


# -- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoParams:
    rate_hz: float = params.param(20.0, "rate")
    name: str = params.param("x", "a name")
    count: int = params.param(3, "a count")
    enabled: bool = params.param(False, "a flag")
    joints: tuple[str, ...] = params.param((), "joint names")
    goal: tuple[float, ...] = params.param((0.1, 0.2), "a goal")

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise params.ParameterError("parameter 'rate_hz': must be > 0")


def _node(overrides: list[str]):
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    ctx = Context()
    rclpy.init(context=ctx, args=["--ros-args", *overrides], domain_id=0)
    node = Node("params_test", context=ctx, start_parameter_services=False, enable_rosout=False)
    return ctx, node


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], DemoParams()),
    (["-p", "rate_hz:=500", "-p", "joints:=[a, b]", "-p", "goal:=[1.0, 2.5]", "-p", "enabled:=true"],
     DemoParams(rate_hz=500.0, joints=("a", "b"), goal=(1.0, 2.5), enabled=True)),
])
def test_parameters_are_declared_from_the_dataclass_and_read_back_typed(overrides, expected) -> None:
    ctx, node = _node(overrides)
    try:
        params.declare(node, DemoParams)
        assert all(node.has_parameter(name) for name in DemoParams.__dataclass_fields__)
        got = params.read(node, DemoParams)
        assert got == expected and isinstance(got.rate_hz, float) and isinstance(got.goal, tuple)
    finally:
        node.destroy_node()
        ctx.try_shutdown()


@pytest.mark.parametrize(("overrides", "message"), [
    (["-p", "rate_hz:=fast"], "parameter 'rate_hz': expected float, got str 'fast'"),
    (["-p", "count:=2.5"], "parameter 'count': expected int, got float 2.5"),
    (["-p", "enabled:=1"], "parameter 'enabled': expected bool, got int 1"),
    (["-p", "joints:=[1, 2]"], "parameter 'joints': expected list of str"),
    (["-p", "rate_hz:=-1.0"], "parameter 'rate_hz': must be > 0"),
])
def test_bad_parameters_name_the_parameter_and_the_expected_type(overrides, message) -> None:
    ctx, node = _node(overrides)
    try:
        params.declare(node, DemoParams)
        with pytest.raises(params.ParameterError) as err:
            params.read(node, DemoParams)
        assert message in str(err.value)
    finally:
        node.destroy_node()
        ctx.try_shutdown()


@dataclass(frozen=True)
class RangedParams:
    period: float = params.param(1.0, "a bounded period", low=0.1, high=10.0)
    seed: int = params.param(0, "a bounded seed", low=0, high=2**31 - 1)


@pytest.mark.parametrize(("overrides", "message"), [
    # rclpy's own range check refuses these at declaration (float values of a float range) ...
    (["-p", "period:=.nan"], "parameter 'period': must be a finite number in [0.1, 10], got nan"),
    (["-p", "period:=20.0"], "parameter 'period': must be a finite number in [0.1, 10], got 20.0"),
    (["-p", "seed:=-1"], "parameter 'seed': must be a finite number in [0, 2147483647], got -1"),
    # ... and ours at reading, where rclpy's cannot (an int given for a float range).
    (["-p", "period:=20"], "parameter 'period': must be a finite number in [0.1, 10], got 20.0"),
])
def test_a_value_outside_a_parameters_range_is_refused_naming_it(overrides, message) -> None:
    ctx, node = _node(overrides)
    try:
        with pytest.raises(params.ParameterError) as err:
            params.declare(node, RangedParams)
            params.read(node, RangedParams)
        assert message in str(err.value)
        descriptor = node.describe_parameter("period") if node.has_parameter("period") else None
        if descriptor is not None:
            assert descriptor.floating_point_range[0].to_value == 10.0
    finally:
        node.destroy_node()
        ctx.try_shutdown()


def test_help_table_lists_every_parameter() -> None:
    table = params.help_table(DemoParams)
    assert [row[0] for row in table] == list(DemoParams.__dataclass_fields__)
    assert table[0] == ("rate_hz", "float", "20.0", "rate")


def test_node_parameter_dataclasses_match_the_config_files() -> None:
    # Every key a shipped YAML gives smrl_sim/smrl_controller must be a declared parameter.
    import yaml

    from smrl_ros.controller_node import ControllerParams
    from smrl_ros.sim_node import SimParams

    from conftest import REPO

    fields = {"smrl_sim": set(SimParams.__dataclass_fields__),
              "smrl_controller": set(ControllerParams.__dataclass_fields__)}
    for path in (REPO / "config").glob("*.yaml"):
        data = yaml.safe_load(path.read_text()) or {}
        for node, section in data.items():
            if node in fields and isinstance(section, dict) and "ros__parameters" in section:
                unknown = set(section["ros__parameters"]) - fields[node]
                assert not unknown, f"{path.name}: {node} has no parameter(s) {unknown}"
