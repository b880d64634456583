"""A seeded multi-day "chaos" soak of the whole pipeline (tests/soak_world.py): the real job ticking every
--tick minutes over --days simulated days, a real feed server and SMTP server, feed and mail faults, subscribers
pausing, unsubscribing and voting; then the invariants a subscriber cares about. Prints the figures and every
violation; exits 1 when there is one.

    python benchmarks/soak.py [--days 60] [--seed 1] [--seeds 1,2,3] [--subscribers 30] [--tick 15] [--no-faults]
                              [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Each seed gets a new DIGEST_HOME (a SQLite file there), or a new PostgreSQL database next to --database-url's
(dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import sqlalchemy as sa  # noqa: E402
from smtp_server import start_smtp_server  # noqa: E402
from soak_world import DayFeeds, Soak, settings_for  # noqa: E402

from digest.store import init_db, open_engine  # noqa: E402


def soak_one(seed: int, args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="digest-soak-") as tmp, start_smtp_server() as smtp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["DIGEST_HOME"] = str(home)
        admin, name = None, None
        url = f"sqlite:///{home / 'digest.db'}"
        if args.database_url:
            admin = sa.create_engine(args.database_url, isolation_level="AUTOCOMMIT")
            name = f"digest_soak_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = sa.engine.make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
        feeds = DayFeeds.start()
        engine = open_engine(url)
        try:
            init_db(engine)
            soak = Soak(engine, settings_for(home, smtp, database_url=url), seed=seed, days=args.days, subscribers=args.subscribers,
                        feeds=feeds, smtp=smtp, tick_minutes=args.tick, faults=not args.no_faults)
            soak.run()
            violations = soak.check()
            summary = soak.summary()
            summary["paper repeats explained by faults"] = soak.paper_repeats_explained
            summary["resent copies with other papers"] = len(soak.differing_copies)
            summary["violations"] = len(violations)
            print(json.dumps(summary))
            for line in soak.differing_copies:  # allowed (docs/email.md "Exactly once"), shown for a person to judge
                print(f"  note (seed {seed}): {line}")
            for line in violations:
                print(f"  violation (seed {seed}): {line}")
            return violations
        finally:
            engine.dispose()
            feeds.stop()
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", default="", help="several seeds, comma-separated (instead of --seed)")
    parser.add_argument("--subscribers", type=int, default=30)
    parser.add_argument("--tick", type=int, default=15, help="simulated minutes between runs (a cron's interval)")
    parser.add_argument("--no-faults", action="store_true", help="the same days without any injected fault")
    parser.add_argument("--database-url", default="", help="a PostgreSQL URL: each seed runs in a new database next to it")
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the faults make warnings by design; the figures say what happened
    seeds = [int(s) for s in args.seeds.split(",") if s] or [args.seed]
    failed = 0
    for seed in seeds:
        failed += bool(soak_one(seed, args))
    print(f"{len(seeds)} seed(s), {failed} with violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
