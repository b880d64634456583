"""The waitress server around the pages' WSGI app, with the limits that keep it answering slow and idle
clients: how many connections it holds, how long one may sit idle, how long a request may take to arrive.

It must not know about pages, tokens or the database: digest.cli.web builds the app and hands it here.

Waitress reads every request whole in its one I/O thread before a worker thread sees it, so a slow client
never holds a worker; what it can hold is a connection. Hence:
- web_connection_limit: connections held at once (waitress's default, 100, fell to 100 idle sockets);
  the soft RLIMIT_NOFILE is raised to fit, and poll() replaces select(), which stops at descriptor 1023.
- At the limit, the connections idle longest are closed to make room (nginx drains idle keep-alive
  connections the same way), so idle clients alone can never lock the next request out.
- web_idle_timeout: a connection with no request in progress is closed after this many seconds.
- web_request_timeout: a request must arrive whole (headers and body) within this many seconds of its
  first byte; a client that trickles it (slow loris) is disconnected even though it is never idle.
- Waiting connections are accepted many at a time (ACCEPT_BATCH), so a crowd connecting at once is not let in
  one per turn of the loop.

The listening sockets are bound by bind_listeners, apart from the server, so that `digest web --processes N`
(digest.web.processes) binds them once and each forked process serves them with its own waitress.
"""

from __future__ import annotations

import heapq
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

try:
    import resource
except ImportError:  # not POSIX: no open-files limit to raise
    resource = None  # type: ignore[assignment]

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from ..config import Settings
from ..log import log_event

log = logging.getLogger("digest.web")
# Files besides the connections: the database, an SMTP connection, the log, the listening socket,
# waitress's trigger pipe and Python's own. A connection takes one file: bodies stay under
# inbuf_overflow and pages under outbuf_overflow, so waitress never spills them to temporary files.
SPARE_FILES = 64
MAX_HEADER_BYTES = 64 * 1024  # waitress's default is 256 KiB; our requests carry one small cookie
MAX_BODY_BYTES = 256 * 1024  # the app refuses forms above 64 KiB with its own page; waitress stops the absurd (default 1 GB)
BACKLOG = 1024  # connections the kernel queues while waitress is busy (capped by net.core.somaxconn)
ACCEPT_BATCH = 64  # connections accepted per turn of the loop (waitress: one)
QUEUE_LOG_SECONDS = 60.0  # waitress's "Task queue depth is N", at most once a minute


class QueueLog:
    """waitress's queue logger, with its warning let through at most every `seconds`. waitress warns "Task queue
    depth is N" for each request that waits for a worker thread: with 500 clients that is a log line per request
    and a twentieth of the server's time (py-spy), so the clock is read before any record is made."""

    def __init__(self, logger: logging.Logger, seconds: float = QUEUE_LOG_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.seconds, self.clock = logger, seconds, clock
        self.last: float | None = None

    def warning(self, message: str, *args: Any) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.seconds:
            return
        self.last = now
        self.logger.warning(message + f" (logged at most every {self.seconds:g} s)", *args)


class DeadlineChannel(HTTPChannel):
    """An HTTP connection that remembers when the request it is receiving began (None between requests)."""

    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        before = self.request
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        elif self.request is not before:
            self.request_started = time.time()  # waitress's own clock (last_activity)
        return result

    def writable(self) -> bool:
        """Not while a worker thread is answering on this connection (unless it must close, or its output passed
        the high watermark): the worker sends what the socket takes and wakes the loop when it is done.

        waitress asks to write whenever output is waiting, and then only tries the lock the worker holds while it
        sends. The worker waits for the GIL, which the I/O thread holds while its loop spins on the ready socket
        without sending anything: with 500 clients `digest web` fell to 23-400 requests/s for whole seconds,
        98% of the GIL spent rebuilding the poll set (py-spy)."""
        if self.requests and not (self.will_close or self.close_when_flushed
                                  or self.total_outbufs_len > self.adj.outbuf_high_watermark):
            return False
        return bool(super().writable())


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with the request deadline and idle draining described above."""

    channel_class = DeadlineChannel
    request_timeout: float = 30.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes channels idle longer than channel_timeout
        cutoff = now - self.request_timeout
        for channel in self.active_channels.values():
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.requests:
                channel.will_close = True

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self.drain_idle()
        return super().readable()

    def handle_accept(self) -> None:
        """Accept up to ACCEPT_BATCH waiting connections, not one. waitress accepts one per turn of its loop, and a
        turn looks at every open connection: when 500 clients connect at once, the last ones waited seconds in the
        kernel's queue (p95 of `/` 7 s at 500 clients, benchmarks/web_front.py) while the first were served."""
        for _ in range(ACCEPT_BATCH):
            held = len(self._map)
            if held >= self.adj.connection_limit:
                return
            super().handle_accept()
            if len(self._map) == held:  # none waiting (or one refused): the next turn looks again
                return

    def drain_idle(self) -> None:
        """Close the connections idle longest, enough to accept again with some headroom."""
        excess = len(self._map) - self.adj.connection_limit + max(1, self.adj.connection_limit // 20)
        idle = [c for c in self.active_channels.values() if c.request is None and not c.requests and not c.total_outbufs_len and not c.will_close]
        for channel in heapq.nsmallest(excess, idle, key=lambda c: c.last_activity):
            channel.will_close = True


def fit_open_files(connection_limit: int) -> int:
    """Raise the soft RLIMIT_NOFILE so `connection_limit` connections fit; returns the limit that fits."""
    if resource is None:
        return connection_limit
    needed = connection_limit + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        return max(1, soft - SPARE_FILES)
    return connection_limit


def server_options(settings: Settings, *, host: str, port: int, threads: int, connection_limit: int, trusted_proxy: str | None = None,
                   url_prefix: str = "", ident: str = "digest") -> dict[str, Any]:
    """waitress's adjustments for `digest web`, every limit chosen on purpose."""
    shortest = min(settings.web_idle_timeout, settings.web_request_timeout)
    options: dict[str, Any] = {
        "host": host, "port": port, "threads": threads, "ident": ident,
        "connection_limit": connection_limit,
        "channel_timeout": settings.web_idle_timeout,
        # How often the timeouts are checked: a timeout is enforced within a quarter of itself.
        "cleanup_interval": max(1, int(shortest // 4)),
        "asyncore_use_poll": True,  # select() cannot watch a descriptor above 1023
        "backlog": BACKLOG,
        "max_request_header_size": MAX_HEADER_BYTES,
        "max_request_body_size": MAX_BODY_BYTES,
    }
    if url_prefix:
        options["url_prefix"] = url_prefix
    if trusted_proxy:
        options.update(trusted_proxy=trusted_proxy, trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"}, clear_untrusted_proxy_headers=True)
    return options


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to (`localhost` may give 127.0.0.1 and ::1), as waitress
    binds them; OSError or ValueError (waitress cannot resolve the host) when one cannot be bound."""
    listen = Adjustments(host=host, port=port).listen
    sockets: list[socket.socket] = []
    try:
        for family, socktype, proto, address in listen:
            sock = socket.socket(family, socktype, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:  # one address bound, the next refused: free the first port too
            sock.close()
        raise
    return sockets


def create_server(app: Any, settings: Settings, *, host: str, port: int, threads: int, trusted_proxy: str | None = None,
                  url_prefix: str = "", ident: str = "digest", sockets: list[socket.socket] | None = None) -> GuardedServer | MultiSocketServer:
    """A waitress server for `app`, bound and listening (run() serves); OSError or ValueError when it cannot bind.

    It serves `sockets` (from bind_listeners, perhaps in the parent of this process), or binds host:port.
    One GuardedServer per listening socket, sharing one socket map and one pool of worker threads, as
    waitress.create_server does."""
    limit = fit_open_files(settings.web_connection_limit)
    if limit < settings.web_connection_limit:
        log_event(log, "web-connection-limit", logging.WARNING, wanted=settings.web_connection_limit, usable=limit, reason="open-files-limit",
                  hint="raise LimitNOFILE (ulimit -n)")
    adj = Adjustments(**server_options(settings, host=host, port=port, threads=threads, connection_limit=limit, trusted_proxy=trusted_proxy,
                                       url_prefix=url_prefix, ident=ident))
    own = sockets is None
    listeners = bind_listeners(host, port) if sockets is None else sockets
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.queue_logger = QueueLog(dispatcher.queue_logger)
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    servers: list[GuardedServer] = []
    try:
        for sock in listeners:
            sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
            server = GuardedServer(app, socket_map, _sock=sock, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo, bind_socket=False)
            server.request_timeout = settings.web_request_timeout
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        if own:
            for sock in listeners:
                sock.close()
        dispatcher.shutdown(cancel_pending=True, timeout=5)  # and its worker threads (a later fork must not copy them)
        raise
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher, log.info)


def listening_on(sockets: list[socket.socket]) -> list[tuple[str, int]]:
    """The (host, port) pairs the sockets listen on, numeric (as waitress names them)."""
    out = []
    for sock in sockets:
        host, port = socket.getnameinfo(sock.getsockname(), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        out.append((host, int(port)))
    return out
