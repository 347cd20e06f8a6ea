"""Process settings for a control loop: SCHED_FIFO for every thread, a frozen GC heap.

What ros2_control's controller manager does for its loop (``thread_priority``, SCHED_FIFO 50),
applied to a Python node: every thread of the process, including the DDS receive threads
created by ``rclpy.init``, gets the real-time policy, so a state message is handled ahead of
ordinary work on a loaded machine. Opt-in (``realtime_priority`` > 0): it needs
CAP_SYS_NICE or an rtprio limit, and on a desktop it is a surprising default.
"""

from __future__ import annotations

import gc
import os
import struct


def freeze_heap() -> None:
    """Move every object alive after start-up out of the cyclic GC's reach (``gc.freeze``):
    the collections that still run during control only scan objects made since."""
    gc.collect()
    gc.freeze()


def set_realtime_priority(priority: int) -> str | None:
    """SCHED_FIFO at ``priority`` (1..99) for every thread of this process.

    Returns None on success, else why not (the caller logs it and runs on normally).
    """
    if not 1 <= priority <= 99:
        return f"priority {priority} is outside 1..99"
    if not hasattr(os, "sched_setscheduler"):
        return "this platform has no sched_setscheduler"
    param = os.sched_param(priority)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
    except PermissionError:
        return "not permitted (needs CAP_SYS_NICE or an rtprio limit, see `ulimit -r`)"
    except OSError as exc:
        return str(exc)
    return None


def set_normal_priority() -> None:
    """Back to SCHED_OTHER for every thread of this process (benchmarks switch between both)."""
    for tid in (int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


CPU_DMA_LATENCY = "/dev/cpu_dma_latency"


def hold_cpu_dma_latency(microseconds: int, path: str = CPU_DMA_LATENCY) -> tuple[int | None, str | None]:
    """Ask the kernel to keep every core's wake-up latency under ``microseconds`` (0: no deep
    idle states), as real-time setups do (cyclictest, PREEMPT_RT guides). The request holds
    while the returned file descriptor is open; close it to release.

    At 100 Hz the cores idle between two states and the next one wakes them from deep sleep:
    holding 0 here took the controller's 100 Hz p99 from 2.68 to 2.32 ms
    (docs/results/deployment_bench.md). Returns (fd, None), or (None, why not).
    """
    if microseconds < 0:
        return None, f"latency {microseconds} us is negative"
    try:
        fd = os.open(path, os.O_WRONLY)
    except PermissionError:
        return None, f"{path}: not permitted (root, or a udev rule giving the group write access)"
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    try:
        os.write(fd, struct.pack("i", int(microseconds)))
    except OSError as exc:
        os.close(fd)
        return None, f"{path}: {exc.strerror}"
    return fd, None
