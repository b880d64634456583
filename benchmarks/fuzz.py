"""Fuzz run, longer than the CI suite (tests/test_fuzz.py): hostile documents of every format (tests/fuzz_documents.py)
through parse, through the source boundary of `digest fetch` and through `digest import`, into a SQLite file (and
PostgreSQL with --postgres URL). Prints cases per second and every failure found:

    python benchmarks/fuzz.py [--cases 500] [--seconds 0] [--postgres postgresql+psycopg://...] [--format rss ...]

A failure is an exception other than DigestError escaping a parser, anything escaping fetch or import, a parser
tripping on an entry ("unexpected ..."), a failed fetch or import that changed the store, or a stored row that breaks
the validation rules. Not derandomized: each run draws new cases. Exit status 1 when there was a failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import httpx
from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_documents import DOCUMENTS, NOW, Case, is_bug, parse_problems, snapshot, stored_problems  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.errors import DigestError  # noqa: E402
from digest.ingest import fetch_sources, import_file  # noqa: E402
from digest.sources.fetch import make_client  # noqa: E402
from digest.store import init_db, open_engine, session_scope  # noqa: E402
from digest.store.sources import add_source  # noqa: E402

FETCHED = {"rss": "feed", "atom": "feed", "arxiv-listing": "arxiv-rss", "arxiv-api": "arxiv-api", "hf-daily": "hf-daily"}


class Run:
    def __init__(self, engine, home: Path, label: str) -> None:
        self.engine, self.home, self.label = engine, home, label
        self.settings = load_settings(home, env={}).replace(fetch_timeout=5, fetch_retries=0)
        self.current = b""
        self.client = make_client(self.settings, transport=httpx.MockTransport(lambda request: httpx.Response(200, content=self.current)))
        self.cases = 0
        self.outcomes: Counter = Counter()
        self.failures: list[tuple[str, Case]] = []
        with session_scope(engine) as session:
            for fmt, kind in FETCHED.items():
                add_source(session, fmt, kind, f"https://fuzz.example/{fmt}", NOW)

    def check(self, fmt: str, case: Case) -> None:
        self.cases += 1
        problems = parse_problems(case)
        try:
            if fmt in FETCHED:
                problems += self._fetch(fmt, case)
            problems += self._import(case)
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            problems.append(f"escaped: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}")
        for problem in problems:
            self.failures.append((f"{self.label} {fmt}: {problem}", case))

    def _fetch(self, fmt: str, case: Case) -> list[str]:
        self.current = case.data
        before = snapshot(self.engine)
        (report,) = fetch_sources(self.engine, self.settings, NOW, only=fmt, client=self.client)
        self.outcomes[f"fetch {report.status}"] += 1
        if is_bug(report.error or ""):
            return [f"fetch: {report.error}"]
        if report.status == "error":
            return [] if snapshot(self.engine) == before else ["fetch: a failed fetch changed the store"]
        return [f"fetch: {p}" for p in stored_problems(self.engine, fmt)]

    def _import(self, case: Case) -> list[str]:
        path = self.home / case.name
        path.write_bytes(case.data)
        before = snapshot(self.engine)
        try:
            report = import_file(self.engine, path, NOW)
        except DigestError as exc:
            self.outcomes["import refused"] += 1
            if is_bug(str(exc)):
                return [f"import: {exc}"]
            return [] if snapshot(self.engine) == before else ["import: a refused import changed the store"]
        self.outcomes[f"import {report.status}"] += 1
        return [f"import: {p}" for p in stored_problems(self.engine, report.name)]


def fuzz(run: Run, fmt: str, cases: int, deadline: float) -> None:
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=DOCUMENTS[fmt])
    def one(case: Case) -> None:
        if time.monotonic() < deadline:
            run.check(fmt, case)

    one()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500, help="cases per format and database")
    parser.add_argument("--seconds", type=float, default=0, help="stop each format after this long (0: no limit)")
    parser.add_argument("--postgres", help="also store into this PostgreSQL database (it is initialised)")
    parser.add_argument("--format", action="append", choices=list(DOCUMENTS), help="only these formats (repeatable)")
    args = parser.parse_args()
    formats = args.format or list(DOCUMENTS)
    print(f"load average: {Path('/proc/loadavg').read_text().split()[0]}")
    with tempfile.TemporaryDirectory(prefix="digest-fuzz-") as tmp:
        home = Path(tmp)
        urls = [("sqlite", f"sqlite:///{home / 'fuzz.db'}")] + ([("postgres", args.postgres)] if args.postgres else [])
        total_failures = 0
        for label, url in urls:
            engine = open_engine(url)
            init_db(engine)
            run = Run(engine, home, label)
            for fmt in formats:
                started, before = time.monotonic(), run.cases
                fuzz(run, fmt, args.cases, started + args.seconds if args.seconds else float("inf"))
                elapsed, done = time.monotonic() - started, run.cases - before
                failed = sum(1 for label_, _ in run.failures if label_.startswith(f"{label} {fmt}:"))
                print(f"{label:8} {fmt:14} {done:6,} cases in {elapsed:6.1f} s = {done / elapsed:6.1f} cases/s; failures: {failed}", flush=True)
            print(f"{label:8} outcomes: {dict(sorted(run.outcomes.items()))}")
            for problem, case in run.failures[:10]:
                print(f"FAILURE {problem}\n  case: {case.describe()[:400]}")
            total_failures += len(run.failures)
            run.client.close()
            engine.dispose()
    print(f"failures: {total_failures}")
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
