"""/healthz latency of a real `digest web` process while idle connections and trickling clients hold it open.
Prints p50 / p95 / max milliseconds for each load; no assertions (figures, not timed tests).

    python benchmarks/web_idle.py [--idle 500] [--tricklers 50] [--requests 200]

Loads: nothing else; `--idle` connections that never send a byte; the same plus `--tricklers` clients that
send one header byte every 0.2 s (slow loris). Each /healthz goes on a new connection, as a monitor's does,
so it queues behind the idle ones in the kernel's accept queue.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_web(home: Path) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": "benchmark-secret-key-0123456789", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "digest", "web", "--port", "0"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://(127\.0\.0\.1):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"digest web did not start: {line!r}")
    return proc, match.group(1), int(match.group(2))


def measure(url: str, count: int) -> list[float]:
    times = []
    client = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))  # a new connection per request
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"/healthz answered {response.status_code}")
    client.close()
    return times


def report(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(f"{label:<40} p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   max {ordered[-1]:6.1f} ms   ({len(ordered)} requests)")


def trickle(host: str, port: int, stop: threading.Event) -> None:
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not stop.wait(0.2):
            try:
                sock.send(b"a")
            except OSError:  # cut off at web_request_timeout: start again, as an attacker would
                return trickle(host, port, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--tricklers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle + args.tricklers + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    print(f"load average: {open('/proc/loadavg').read().strip()}")
    with tempfile.TemporaryDirectory() as home:
        proc, host, port = start_web(Path(home))
        url = f"http://{host}:{port}/healthz"
        try:
            measure(url, 5)  # warm up
            report("no other clients", measure(url, args.requests))
            idle = [socket.create_connection((host, port)) for _ in range(args.idle)]
            report(f"{args.idle} idle connections", measure(url, args.requests))
            stop = threading.Event()
            threads = [threading.Thread(target=trickle, args=(host, port, stop), daemon=True) for _ in range(args.tricklers)]
            for thread in threads:
                thread.start()
            time.sleep(1)
            report(f"{args.idle} idle + {args.tricklers} trickling", measure(url, args.requests))
            stop.set()
            closed = 0
            for sock in idle:
                sock.setblocking(False)
                try:
                    closed += sock.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    pass
                sock.close()
            print(f"idle connections still open at the end: {args.idle - closed} of {args.idle} (web_idle_timeout closes them after 30 s)")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)


if __name__ == "__main__":
    main()
