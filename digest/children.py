"""Forked helper processes (the JSON Lines parser of `digest import`, the render workers of `digest send`) die
with the process that forked them, even when it is killed with SIGKILL and has no chance to clean up; and how many
helpers (processes or threads) the cores this process may use can keep busy (usable_cores).

Without this, such a child outlives its parent: blocked forever on a pipe whose other end it holds itself,
keeping the database and its WAL open. It must not fork anything itself; the modules that fork call
die_with_parent() first thing in the child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 1.0  # how often the fallback (no prctl) looks for its parent


def die_with_parent(parent_pid: int) -> None:
    """In a forked child, first thing: be killed when the parent (pid `parent_pid`, taken before the fork) dies.

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), then a check that the parent is still `parent_pid`, since it may
    have died between the fork and the prctl (the child was then re-parented and no signal will come).
    Elsewhere: a daemon thread that polls getppid() and exits the child when the parent is gone. The parent
    must fork from the thread that lives as long as it does (PR_SET_PDEATHSIG follows the forking thread).

    The parent's Python signal handlers are dropped too: a forked copy of `digest send`'s graceful-stop handler
    would make the child ignore the SIGTERM with which multiprocessing's Pool.terminate() ends its workers, and
    the parent would wait for it forever. SIGINT is ignored: Ctrl-C reaches the whole process group, and the
    parent stops its children itself once it has finished what was in flight."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _set_pdeathsig():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="digest-watch-parent", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def usable_cores() -> int:
    """The cores this process may run on (taskset, systemd's CPUAffinity=, a container's cpuset), not the machine's:
    what sizes the render workers and the ranking threads. A process confined to one core that started one per core
    of the machine would only add switching."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (not Linux)
        return os.cpu_count() or 1


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc with prctl (an unusual libc, a sandbox): fall back to polling
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
