"""`digest web` under slow and idle clients, over real sockets: a real `digest web` process (or the same
waitress server in a thread) holding hundreds of idle connections, trickled requests and oversized bodies,
while /healthz keeps answering within a second."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest
from web_server import SECRET, digest_web, serve_web

HEALTHZ_SECONDS = 1.0  # the promise: /healthz answers within a second whatever the other clients do


def need_open_files(count: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `count` (the test's own client sockets), or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"the open-files hard limit ({hard}) is below the {count} this test needs")
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def open_idle(url: str, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte."""
    parts = urlsplit(url)
    return [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(count)]


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)  # a peek that never waits
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True  # reset


def healthz_times(url: str, count: int) -> list[float]:
    """Seconds each of `count` /healthz requests took, each on a new connection (queued behind the idle ones)."""
    times = []
    with httpx.Client(timeout=HEALTHZ_SECONDS, limits=httpx.Limits(max_keepalive_connections=0)) as monitor:
        for _ in range(count):
            started = time.perf_counter()
            response = monitor.get(f"{url}/healthz")
            times.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["status"] == "ok"
    return times


def test_digest_web_answers_healthz_while_500_idle_connections_stay_open(home):
    need_open_files(500 + 200)
    # It starts with a soft limit of 256 open files, as a login shell may give it: it raises its own to fit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with digest_web(home, files=(256, hard)) as (url, _):
        idle = open_idle(url, 500)
        try:
            healthz_times(url, 10)  # the kernel hands connections over in order: these came after all 500
            assert sum(closed_by_server(s) for s in idle) == 0  # held open, not dropped to make room
        finally:
            for sock in idle:
                sock.close()


def test_digest_web_closes_the_longest_idle_when_its_open_files_cannot_hold_the_limit(home):
    need_open_files(400 + 200)
    with digest_web(home, files=(256, 256)) as (url, proc):  # a hard limit it cannot raise: 192 connections fit
        idle = open_idle(url, 400)
        try:
            healthz_times(url, 5)
            closed = [closed_by_server(s) for s in idle]
            assert sum(closed) >= 400 - 192 and closed[0] and not closed[-1]  # the oldest made room, the newest stay
        finally:
            for sock in idle:
                sock.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        assert "event=web-connection-limit wanted=1000 usable=192" in proc.stderr.read()


def test_a_trickled_request_holds_no_worker_and_is_cut_off_at_the_request_timeout(home):
    with serve_web(home, threads=1, web_request_timeout=2, web_idle_timeout=60) as site:
        parts = urlsplit(site.base_url)
        tricklers = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(5)]
        for sock in tricklers:
            sock.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started, cut_off = time.monotonic(), {}
        while len(cut_off) < len(tricklers) and time.monotonic() - started < 12:
            for i, sock in enumerate(tricklers):  # a byte every quarter second: never idle, never done
                if i in cut_off:
                    continue
                try:
                    sock.send(b"a")
                except OSError:
                    cut_off[i] = time.monotonic() - started
                    continue
                if closed_by_server(sock):
                    cut_off[i] = time.monotonic() - started
            # One worker thread, five clients in the middle of a request: the pages still answer.
            assert site.client.get("/healthz", timeout=HEALTHZ_SECONDS).status_code == 200
            time.sleep(0.25)
        for sock in tricklers:
            sock.close()
        assert len(cut_off) == len(tricklers), f"still connected after 12 s: {len(tricklers) - len(cut_off)}"
        assert all(1.5 < t < 8 for t in cut_off.values()), cut_off  # web_request_timeout (2 s), checked every second


def test_an_oversized_body_is_refused_before_it_is_sent(home):
    with serve_web(home) as site:
        parts = urlsplit(site.base_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=HEALTHZ_SECONDS) as sock:
            # Headers announce 100 MB and no byte of it follows: the answer must not wait for the body.
            sock.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n")
            assert sock.recv(200).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("base_url, listening, problem", [
    ("http://127.0.0.1:8080", [("127.0.0.1", 37579)], "base_url http://127.0.0.1:8080 does not reach this server: it listens on port 37579"),
    ("http://localhost:8080/digest", [("127.0.0.1", 8080)], None),
    ("http://127.0.0.1:8080", [("0.0.0.0", 8080)], None),
    ("http://127.0.0.1", [("127.0.0.1", 8080)], "base_url http://127.0.0.1 does not reach this server: it listens on port 8080"),
    ("http://127.0.0.1:8080", [("192.168.1.5", 8080)], "base_url http://127.0.0.1:8080 does not reach this server: it listens on 192.168.1.5"),
    ("http://192.168.1.5:8000", [("192.168.1.5", 8080)], "base_url http://192.168.1.5:8000 does not reach this server: it listens on port 8080"),
    ("https://papers.example.org", [("127.0.0.1", 8080)], None),
    ("http://[::1]:8080", [("::1", 8080)], None),
], ids=["other-port", "localhost-and-path", "all-interfaces", "default-port-80", "other-interface", "lan-address-other-port",
        "public-name-behind-a-proxy", "ipv6-loopback"])
def test_base_url_problem(base_url, listening, problem):
    from digest.cli.web import base_url_problem

    assert base_url_problem(base_url, listening) == problem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("matching", [False, True], ids=["base-url-elsewhere", "base-url-here"])
def test_digest_web_warns_when_base_url_does_not_reach_it(home, matching):
    port = free_port()
    env = {**os.environ, "DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    if matching:
        env["DIGEST_BASE_URL"] = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "web", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(f"serving the web pages on http://127.0.0.1:{port}/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    warnings = [line for line in proc.stderr.read().splitlines() if line.startswith("warning: ")]
    if matching:
        assert warnings == []
    else:
        assert warnings == [f"warning: base_url http://127.0.0.1:8080 does not reach this server: it listens on port {port} "
                            f"(every link in emails and pages leads there: set base_url to http://127.0.0.1:{port}, "
                            f"e.g. DIGEST_BASE_URL=http://127.0.0.1:{port}, or use --port 8080)"]


PROXY_WARNING = ("warning: base_url https://digest.example.org is https, so a TLS proxy serves this plain-HTTP server, and "
                 "without --trusted-proxy every client has the proxy's address: the subscribe rate limit counts them all as one "
                 "(give the proxy's address, e.g. --trusted-proxy 127.0.0.1)")


@pytest.mark.parametrize(("base_url", "args", "warned"), [
    ("https://digest.example.org", (), True),
    ("https://digest.example.org", ("--trusted-proxy", "127.0.0.1"), False),
    ("http://papers.example.org", (), False),
], ids=["https-no-proxy", "https-trusted-proxy", "http"])
def test_digest_web_warns_of_an_https_base_url_without_a_trusted_proxy(home, base_url, args, warned):
    """waitress speaks plain HTTP, so an https base_url means a TLS proxy in front: without --trusted-proxy every client
    is the proxy's address to the per-client limit, and the first 10 posts in 10 minutes lock everyone out."""
    with digest_web(home, args=args, base_url=base_url) as (url, proc):
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    warnings = [line for line in proc.stderr.read().splitlines() if line.startswith("warning: ")]
    assert warnings == ([PROXY_WARNING] if warned else [])


@pytest.mark.parametrize(("limit", "accepted"), [(100, 30), (10, 8)], ids=["all-waiting", "up-to-the-connection-limit"])
def test_one_turn_of_the_loop_accepts_every_waiting_connection(home, limit, accepted):
    from digest.config import load_settings
    from digest.web.serve import create_server

    settings = load_settings(home, env={}, overrides={"secret_key": SECRET, "web_connection_limit": limit})
    server = create_server(lambda environ, start_response: [], settings, host="127.0.0.1", port=0, threads=1)
    clients = [socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=5) for _ in range(30)]
    try:  # the 30 handshakes are done: all wait in the kernel's queue for accept()
        server.handle_accept()  # what one turn of waitress's loop does when the listening socket is readable
        assert len(server.active_channels) == accepted  # waitress alone: 1; the map also holds the server and its trigger
    finally:
        for sock in clients:
            sock.close()
        for channel in list(server._map.values()):
            channel.close()
        server.task_dispatcher.shutdown()


def _threaded_server(home, app):
    import threading

    from digest.config import load_settings
    from digest.web.serve import create_server

    settings = load_settings(home, env={}, overrides={"secret_key": SECRET})
    server = create_server(app, settings, host="127.0.0.1", port=0, threads=2)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    return server, loop


def test_a_connection_a_worker_answers_on_is_not_polled_for_writing(home):
    from digest.config import load_settings
    from digest.web.serve import create_server

    settings = load_settings(home, env={}, overrides={"secret_key": SECRET})
    server = create_server(lambda environ, start_response: [], settings, host="127.0.0.1", port=0, threads=1)
    client = socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=5)
    try:
        server.handle_accept()
        (channel,) = server.active_channels.values()
        channel.total_outbufs_len = 10  # output waiting to be sent
        assert channel.writable()  # the loop sends it
        channel.requests = [object()]  # a worker is answering: it sends, the loop would only spin on its lock
        assert not channel.writable()
        channel.will_close = True  # but a connection to close is closed by the loop
        assert channel.writable()
    finally:
        client.close()
        for each in list(server._map.values()):
            each.close()
        server.task_dispatcher.shutdown()


def test_output_left_when_the_worker_is_done_is_sent_by_the_loop(home):
    # What the socket did not take during the worker's write goes out once the worker is done and the client reads.
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than the socket buffers hold

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
        return [body]

    server, loop = _threaded_server(home, app)
    try:
        with socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)  # not reading yet: the worker's write fills the buffers and the worker finishes
            data = b""
            while True:
                chunk = client.recv(1 << 16)  # socket.timeout (a failure) if the rest never comes
                if not chunk:
                    break
                data += chunk
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and len(rest) >= len(body):
                    break
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and rest == body
    finally:
        server.task_dispatcher.shutdown()
        server.trigger.pull_trigger(lambda: [c.close() for c in list(server._map.values()) if c is not server.trigger])
        loop.join(5)


def test_serve_web_stops_when_the_loop_runs_the_stop_before_the_wakeup_byte(home, monkeypatch):
    """The helper's teardown, in the order CI once met (strace: the loop's thread closed the trigger pipe 0.7 ms
    before the test's thread wrote its byte): the stop is queued, the loop, woken by a worker thread that has just
    answered, runs it at once, and only then is the wake-up byte written. That write failed with EBADF while the
    stop closed the pipe; the pipe is now closed after the loop has ended."""
    import threading

    from waitress import trigger

    pull = trigger.trigger.pull_trigger

    def pull_after_the_loop_ran_it(self, thunk=None):
        with self.lock:
            self.thunks.append(thunk)
        os.write(self._fds[1], b"w")  # a worker thread's wake-up byte
        for thread in threading.enumerate():
            if thread.name == "waitress-test":
                thread.join(5)
                assert not thread.is_alive()
        self._physical_pull()

    monkeypatch.setattr(trigger.trigger, "pull_trigger", pull_after_the_loop_ran_it)
    with serve_web(home) as site:
        assert site.client.get("/subscribe").status_code == 200
    monkeypatch.setattr(trigger.trigger, "pull_trigger", pull)
