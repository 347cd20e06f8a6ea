"""Process settings for control loops (smrl_ros.realtime): no ROS needed."""

from __future__ import annotations


def test_cpu_dma_latency_request_is_written_and_held_by_an_open_descriptor(tmp_path) -> None:
    import os
    import struct

    from smrl_ros.realtime import hold_cpu_dma_latency

    dev = tmp_path / "cpu_dma_latency"  # stands in for the device: the same write, a readable result
    dev.write_bytes(b"")
    fd, why = hold_cpu_dma_latency(0, str(dev))
    assert why is None and fd is not None
    os.fsync(fd)
    assert struct.unpack("i", dev.read_bytes()) == (0,)
    os.close(fd)
    fd, why = hold_cpu_dma_latency(0, str(tmp_path / "missing"))
    assert fd is None and "No such file" in why
    assert hold_cpu_dma_latency(-5, str(dev)) == (None, "latency -5 us is negative")
