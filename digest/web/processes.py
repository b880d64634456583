"""`digest web --processes N`: N server processes forked from one parent, all serving the listening sockets the
parent bound (pre-fork, as gunicorn does); the parent only watches them, replaces one that dies, and stops them
all on SIGINT or SIGTERM.

Why: one Python process serves with one core at most (waitress's threads share the GIL), and with 500 clients
at once the front page's p95 was bounded by that one core (benchmarks/web_front.py, docs/benchmarks.md).
The kernel hands each new connection to whichever process accepts it first.

It must not know about pages, the database or waitress: the caller gives `serve`, run in each child (it builds
its server on the inherited sockets and serves until killed). What lives in a process's memory (the rendered
pages, the memory:// rate limit) is per process.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Callable

from ..children import die_with_parent
from ..log import log_event

log = logging.getLogger("digest.web")
EARLY_EXIT_SECONDS = 2.0  # a child that ends this soon after its start failed to start: replacing it would loop


class Stop(Exception):
    """SIGTERM reached the parent."""


def _stop(signum: int, frame: object) -> None:
    raise Stop


def serve_in_processes(count: int, serve: Callable[[], None]) -> int:
    """Fork `count` children running `serve()` and keep `count` of them running until SIGINT or SIGTERM;
    then end them (SIGTERM) and return 0. Returns 1 when a child ends within EARLY_EXIT_SECONDS of its start
    (it could not serve: the cause is in its log), after ending the others."""
    parent = os.getpid()
    children: dict[int, float] = {}  # pid -> when it was forked

    def fork_one() -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve until killed, never return into the parent's code
            code = 0
            try:
                die_with_parent(parent)
                serve()
            except BaseException:  # noqa: BLE001 - whatever ends a child is logged, and the parent decides
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    previous = signal.signal(signal.SIGTERM, _stop)
    status = 0
    try:
        for _ in range(count):
            fork_one()
        while True:
            pid, wait_status = os.wait()
            started = children.pop(pid, None)
            if started is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            early = time.monotonic() - started < EARLY_EXIT_SECONDS
            log_event(log, "web-process-ended", logging.ERROR, pid=pid, exit_code=code, replaced=not early)
            if early:
                status = 1
                break
            fork_one()
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        signal.signal(signal.SIGTERM, previous)
    return status
