"""Several digest processes on one PostgreSQL database, as two hosts would run them: each its own DIGEST_HOME and
environment, all sending to one SMTP server on 127.0.0.1. Shared by tests/test_fleet.py and benchmarks/fleet_safety.py.

    world = FleetWorld.create(url, tmp_path, smtp_server, subscribers=2000)
    a = world.start("send", "a"); b = world.start("send", "b")
    world.wait(a, b); world.counts()   # recipient -> messages received

The processes run `python -m digest` from whatever `digest` the interpreter imports (PYTHONPATH may point at
another checkout, as the benchmark does to measure main).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SECRET = "fleet-test-secret-key-0123456789"
TOPICS = (
    ("Sparse autoencoders for interpretability of language model features", "sparse autoencoders interpretability"),
    ("Self-supervised speech recognition for low-resource audio", "speech recognition audio"),
    ("Reinforcement learning for robot manipulation", "robot reinforcement learning"),
)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(encoding="utf-8") + self.err.read_text(encoding="utf-8")


@dataclass
class FleetWorld:
    url: str
    root: Path
    server: object  # tests/smtp_server.SMTPServer
    subscribers: int
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, url: str, root: Path, server, *, subscribers: int, ready: bool = False, **settings: str) -> FleetWorld:
        """The database made ready through the CLI (as an operator would): 9 papers, `subscribers` subscribers
        due now (send_at 00:00 UTC). `ready`: it already is (a copy of a template made so)."""
        world = cls(url, root, server, subscribers, {f"DIGEST_{k.upper()}": str(v) for k, v in settings.items()})
        root.mkdir(parents=True, exist_ok=True)
        if ready:
            return world
        papers = root / "papers.jsonl"
        papers.write_text("".join(json.dumps({"id": f"fleet-{t}-{i}", "title": f"{title} ({i})", "abstract": f"{title}: variant {i}.", "authors": ["Ada Lovelace"]}) + "\n"
                                  for t, (title, _) in enumerate(TOPICS) for i in range(3)), encoding="utf-8")
        people = root / "subscribers.csv"
        people.write_text("email,interests,send_at,tz\n" + "".join(f"r{k:05d}@example.org,{TOPICS[k % 3][1]},00:00,UTC\n" for k in range(subscribers)), encoding="utf-8")
        for args in (("import", str(papers)), ("subscribers", "import", str(people))):
            done = subprocess.run([sys.executable, "-m", "digest", *args], env=world.env("setup"), capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        return world

    def emails(self) -> set[str]:
        return {f"r{k:05d}@example.org" for k in range(self.subscribers)}

    def env(self, host: str, **settings: str) -> dict[str, str]:
        """The environment of one host: its own DIGEST_HOME, the shared database and SMTP server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
        home = self.root / f"home-{host}"
        home.mkdir(exist_ok=True)
        env.update(
            DIGEST_HOME=str(home), DIGEST_DATABASE_URL=self.url, DIGEST_SMTP_HOST=self.server.host, DIGEST_SMTP_PORT=str(self.server.port),
            DIGEST_SMTP_SECURITY="none", DIGEST_SECRET_KEY=SECRET, DIGEST_FROM_ADDRESS="digest@example.org",
            DIGEST_BASE_URL="https://digest.example.org", DIGEST_LOG_LEVEL="warning", PGAPPNAME=f"digest-fleet-{host}",
        )
        env.update(self.extra_env)
        env.update({f"DIGEST_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def start(self, command: str, host: str, *args: str, **settings: str) -> Worker:
        out, err = self.root / f"{host}.out", self.root / f"{host}.err"
        process = subprocess.Popen([sys.executable, "-m", "digest", command, *args], env=self.env(host, **settings),
                                   stdout=out.open("wb"), stderr=err.open("wb"), stdin=subprocess.DEVNULL)
        return Worker(host, process, out, err)

    def wait(self, *workers: Worker, timeout: float = 600) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        codes = {}
        for worker in workers:
            codes[worker.name] = worker.process.wait(max(1.0, deadline - time.monotonic()))
        return codes

    def wait_for_messages(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.server.messages) < count:
            assert time.monotonic() < deadline, f"only {len(self.server.messages)} of {count} messages arrived"
            time.sleep(0.02)

    def counts(self) -> Counter:
        return Counter(self.server.recipients())

    def duplicates(self) -> int:
        """Messages beyond the first for each recipient."""
        return sum(n - 1 for n in self.counts().values())
