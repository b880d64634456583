"""The front page of a real `digest web` process under load, measured with wrk (Debian package `wrk`): 2,000 papers
in the store, first seen over the last three days (all of them on `/`), a fifth of them upvoted on Hugging Face.
Prints p50 / p95 / p99 / max milliseconds and requests per second for each load, and the load average; no
assertions (figures, not timed tests). Targets (issue 13): `/` under 50 ms at p95; 500 concurrent clients keep
p95 under 500 ms.

    python benchmarks/web_front.py [--papers 2000] [--seconds 10] [--threads 4] [--processes 1]

`--processes N` serves with `digest web --processes N` (N forked servers on one port). Loads, each bounded by
--seconds: a few clients (4, as many as waitress threads) on `/`; 500 concurrent clients on
`/`; 500 on `/day/<today>`; 500 on `/feed.xml`. Every wrk request is a new visitor's (no cookie): the page is
served from the in-memory render and gets a fresh CSRF cookie and token, the costliest case after the render itself.
The first request after each change of the data (a fetch) renders the page: timed apart ("cold").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest import synthetic_papers  # noqa: E402 - the ingest benchmark's realistic records

from digest.ingest import import_file  # noqa: E402
from digest.store import init_db, open_engine  # noqa: E402

SECRET = "benchmark-secret-key-0123456789"
LUA = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %.3f %.3f %.3f %.3f\\n", summary.requests, summary.duration, errors,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def build_home(home: Path, papers: int) -> None:
    """A DIGEST_HOME with `papers` papers first seen over the last three days (two JSON Lines imports per day: an
    arXiv-like file and a Hugging Face-like file carrying upvotes for a fifth of them, so two sources and badges)."""
    (home / "digest.toml").write_text(f'secret_key = "{SECRET}"\n', encoding="utf-8")
    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    init_db(engine)
    now = datetime.now(timezone.utc)
    records = list(synthetic_papers(papers, seed=13))
    rng = random.Random(13)
    per_day = -(-papers // 3)
    for day in range(3):
        chunk = records[day * per_day : (day + 1) * per_day]
        when = now - timedelta(days=2 - day, minutes=5)
        arxiv, hf = home / f"arxiv-day{day}.jsonl", home / f"hf-day{day}.jsonl"
        arxiv.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "upvotes"}) + "\n" for r in chunk), encoding="utf-8")
        hf.write_text("".join(json.dumps({**r, "upvotes": rng.randint(1, 300)}) + "\n" for r in chunk[::5]), encoding="utf-8")
        import_file(engine, arxiv, when)
        import_file(engine, hf, when + timedelta(minutes=1))
    engine.dispose()


def start_web(home: Path, threads: int, processes: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DIGEST_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "digest", "web", "--port", "0", "--threads", str(threads), "--processes", str(processes)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"digest web did not start: {line!r}")
    return proc, match.group(0)


def wrk(url: str, clients: int, seconds: int, script: Path) -> str:
    threads = min(2, clients)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if not found:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, micros, errors = int(found.group(1)), int(found.group(2)), int(found.group(3))
    p50, p95, p99, top = (float(found.group(i)) for i in range(4, 8))
    rate = requests / (micros / 1e6)
    return f"p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   p99 {p99:7.1f} ms   max {top:7.1f} ms   {rate:7.0f} req/s   {errors} errors"


def cold(url: str) -> float:
    started = time.perf_counter()
    response = httpx.get(url, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads of `digest web` (of each process)")
    parser.add_argument("--processes", type=int, default=1, help="server processes of `digest web`")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        build_home(home, args.papers)
        script = home / "report.lua"
        script.write_text(LUA, encoding="utf-8")
        proc, base = start_web(home, args.threads, args.processes)
        today = datetime.now(timezone.utc).date().isoformat()
        try:
            print(f"{args.papers} papers over 3 days; digest web --threads {args.threads} --processes {args.processes}; wrk runs of {args.seconds} s")
            for path in ("/", f"/day/{today}", "/feed.xml"):
                print(f"{'cold ' + path:<34} {cold(base + path):7.1f} ms (first request: queries and render)")
            print(f"load average: {open('/proc/loadavg').read().strip()}")
            for clients, path in ((4, "/"), (500, "/"), (500, f"/day/{today}"), (500, "/feed.xml")):
                print(f"{f'{clients} clients {path}':<34} {wrk(base + path, clients, args.seconds, script)}")
            print(f"load average: {open('/proc/loadavg').read().strip()}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)


if __name__ == "__main__":
    main()
