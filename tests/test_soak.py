"""The short soak (tests/soak_world.py): a few seeds x 8 simulated days of the real job ticking every 15 minutes over
a real database, feed server and SMTP server, with feed and mail faults, pauses, unsubscribes and votes mixed in;
then no subscriber got a paper twice or an edition twice beyond the injected faults, nothing due went missing,
nothing was left 'sending', no mail reached a paused or unsubscribed reader, and `status --check` was failing while
the mail server was down and is ok after a clean last day. benchmarks/soak.py runs the long one (60 days)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from soak_world import DayFeeds, Soak, settings_for  # noqa: E402


@pytest.fixture
def feeds():
    server = DayFeeds.start()
    yield server
    server.stop()


@pytest.mark.parametrize("seed", [1, 5])
def test_soak_eight_days_of_faults_keep_every_subscriber_invariant(seed, home, db_url, feeds, smtp_server, caplog) -> None:
    from digest.store import init_db, open_engine

    caplog.set_level(logging.CRITICAL)  # the faults log warnings and errors by design; the checks below judge them
    engine = open_engine(db_url)
    try:
        init_db(engine)
        soak = Soak(engine, settings_for(home, smtp_server, database_url=db_url), seed=seed, days=8, subscribers=10, feeds=feeds, smtp=smtp_server)
        figures = soak.run()
        assert soak.check() == []
    finally:
        engine.dispose()
    assert len(smtp_server.messages) > 20 and figures.ticks == 8 * 96  # the soak did send, every tick ran
    assert figures.drop_stored + figures.drop_data + figures.kills + figures.greylisted > 0  # and faults were injected


def test_soak_without_faults_sends_each_edition_once(home, sqlite_url, feeds, smtp_server, caplog) -> None:
    from digest.store import init_db, open_engine

    caplog.set_level(logging.CRITICAL)
    engine = open_engine(sqlite_url)
    try:
        init_db(engine)
        soak = Soak(engine, settings_for(home, smtp_server), seed=7, days=4, subscribers=8, feeds=feeds, smtp=smtp_server, faults=False)
        soak.run()
        assert soak.check() == []
        assert soak.summary()["duplicate copies"] == 0
    finally:
        engine.dispose()
