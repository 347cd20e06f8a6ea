"""Child processes that end with their parent, whatever ends it (Linux ``PR_SET_PDEATHSIG``).

A node, a meta-test process or a data-generation worker that outlives a killed parent keeps
commanding, recording or writing; in a test's DDS domain it is cross-talk.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def end_with(parent: int, sig: int = signal.SIGTERM) -> None:
    """Make this process receive ``sig`` when process ``parent`` dies (already dead: now).
    Elsewhere than Linux this is a no-op and the parent's own stop must end the child."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os.kill(os.getpid(), sig)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the process that
    starts it dies."""
    parent = os.getpid()
    return lambda: end_with(parent, sig)
