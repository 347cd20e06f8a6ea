"""Which executor the nodes spin, and that the choice can be forced (smrl_ros.executors)."""

from __future__ import annotations

import pytest
from rclpy.executors import SingleThreadedExecutor

from smrl_ros import executors


def test_the_events_executor_is_the_default_where_rclpy_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(executors.ENV_VAR, raising=False)
    pytest.importorskip("rclpy.experimental", reason="this rclpy predates the EventsExecutor (ROS 2 Kilted)")
    assert executors.executor_kind() == "events"


def test_smrl_executor_single_forces_the_single_threaded_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    import rclpy
    from rclpy.context import Context

    monkeypatch.setenv(executors.ENV_VAR, "single")
    context = Context()
    rclpy.init(context=context, domain_id=0)
    try:
        assert isinstance(executors.make_executor(context), SingleThreadedExecutor)
    finally:
        rclpy.shutdown(context=context)


def test_an_unknown_executor_name_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(executors.ENV_VAR, "multi")
    with pytest.raises(ValueError, match="SMRL_EXECUTOR='multi': expected one of events, single"):
        executors.executor_kind()
