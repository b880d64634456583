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
