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
"""

from __future__ import annotations

import heapq
import logging
import time
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


def create_server(app: Any, settings: Settings, *, host: str, port: int, threads: int, trusted_proxy: str | None = None,
                  url_prefix: str = "", ident: str = "digest") -> GuardedServer | MultiSocketServer:
    """A waitress server for `app`, bound and listening (run() serves); OSError or ValueError when it cannot bind.

    One GuardedServer per address the host resolves to (`localhost` may give 127.0.0.1 and ::1),
    sharing one socket map and one pool of worker threads, as waitress.create_server does."""
    limit = fit_open_files(settings.web_connection_limit)
    if limit < settings.web_connection_limit:
        log_event(log, "web-connection-limit", logging.WARNING, wanted=settings.web_connection_limit, usable=limit, reason="open-files-limit",
                  hint="raise LimitNOFILE (ulimit -n)")
    adj = Adjustments(**server_options(settings, host=host, port=port, threads=threads, connection_limit=limit, trusted_proxy=trusted_proxy,
                                       url_prefix=url_prefix, ident=ident))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    servers: list[GuardedServer] = []
    try:
        for sockinfo in adj.listen:
            server = GuardedServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
            server.request_timeout = settings.web_request_timeout
            servers.append(server)
    except BaseException:
        for server in servers:  # one address bound, the next refused: free the first port too
            server.close()
        dispatcher.shutdown(cancel_pending=True, timeout=5)  # and its worker threads (a later fork must not copy them)
        raise
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher, log.info)


def listening_on(server: GuardedServer | MultiSocketServer) -> list[tuple[str, int]]:
    """The (host, port) pairs the server listens on."""
    if isinstance(server, MultiSocketServer):
        return list(server.effective_listen)
    return [(server.effective_host, server.effective_port)]
