"""`digest bounces read` over bounce reports captured from real MTAs (tests/fixtures/bounces, SOURCES.md there),
against a real SQLite ledger whose editions were sent by `digest send`: a dead address stops the mail at once, a
vaguer failure counts towards the limit, delays and forged or foreign reports change nothing, and every way a
report arrives (a file, standard input, an mbox, a Maildir) reads the same."""

from __future__ import annotations

import mailbox
import sqlite3
from pathlib import Path

import pytest

from digest.delivery.bounces import parse_bounce
from digest.store.deliveries import BOUNCE_LIMIT

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
GHOST_ID = "<digest.2026-11-29.4.13e8e72a09d5@example.org>"  # the edition the exim and postfix reports return
AWAY_ID = "<digest.2026-11-29.5.394703f4ddaa@example.org>"  # the one the delay notice is about


def report(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def ledger(cli, home: Path) -> Path:
    """A demo home where ghost@ and away@ got today's edition, their ledger rows carrying the Message-IDs that the
    captured reports return (the ids the real MTAs saw)."""
    assert cli("--home", str(home), "demo").exit_code == 0
    for address in ("ghost@digest-lab.net", "away@slow.digest-lab.net"):
        assert cli("subscribers", "add", address, "--interests", "speech recognition", "--send-at", "00:00").exit_code == 0
    assert cli("send").exit_code == 0
    with sqlite3.connect(home / "digest.db") as db:
        for address, message_id in (("ghost@digest-lab.net", GHOST_ID), ("away@slow.digest-lab.net", AWAY_ID)):
            changed = db.execute("UPDATE delivery SET message_id = ? WHERE state = 'sent' AND subscriber_id = "
                                 "(SELECT id FROM subscriber WHERE email = ?)", (message_id, address)).rowcount
            assert changed == 1
    return home / "digest.db"


def state(db_path: Path, address: str) -> tuple[str, int, str, str | None]:
    """(subscriber status, consecutive bounces, their newest delivery's state and error)."""
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT s.status, s.consecutive_bounces, d.state, d.last_error FROM subscriber s JOIN delivery d "
                          "ON d.subscriber_id = s.id WHERE s.email = ? ORDER BY d.edition DESC LIMIT 1", (address,)).fetchone()


def test_parse_bounce_reads_each_captured_report() -> None:
    exim, postfix, delayed = (parse_bounce(report(n)).reports for n in ("exim-unrouteable.eml", "postfix-unknown-user.eml", "postfix-delayed.eml"))
    assert [(r.recipient, r.kind, r.status, r.dead_address, r.message_ids) for r in exim] == [("ghost@digest-lab.net", "failed", "5.0.0", False, (GHOST_ID,))]
    assert [(r.kind, r.status, r.diagnostic, r.dead_address, r.message_ids) for r in postfix] == [("failed", "5.1.1", 'unknown user: "ghost"', True, (GHOST_ID,))]
    assert [(r.recipient, r.kind, r.status, r.message_ids) for r in delayed] == [("away@slow.digest-lab.net", "delayed", "4.4.1", (AWAY_ID,))]


def test_a_dead_address_stops_the_mail_at_once(cli, ledger: Path) -> None:
    result = cli("bounces", "read", str(FIXTURES / "postfix-unknown-user.eml"))
    assert result.exit_code == 0, result.output
    assert result.output == ('ghost@digest-lab.net: bounced (5.1.1 unknown user: "ghost"): no more mail until `digest subscribers resume`\n'
                             "1 message read: 1 bounced\n")
    assert state(ledger, "ghost@digest-lab.net") == ("bounced", 1, "failed", 'bounced after the relay accepted it: 5.1.1 unknown user: "ghost"')
    assert state(ledger, "ada@example.org")[:3] == ("active", 0, "sent")  # nobody else
    again = cli("bounces", "read", str(FIXTURES / "postfix-unknown-user.eml"))  # the same report twice: nothing more
    assert again.output.splitlines()[0] == f"ghost@digest-lab.net: the {state_edition(ledger)} edition's failure was already recorded"


def state_edition(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT edition FROM delivery WHERE message_id = ?", (GHOST_ID,)).fetchone()[0]


def test_a_vaguer_failure_counts_and_the_limit_in_a_row_stops_the_mail(cli, ledger: Path) -> None:
    # Exim's 5.0.0 says the message failed, not that the address is dead: one edition is not enough.
    first = cli("bounces", "read", "-", input=report("exim-unrouteable.eml"))  # as an MTA's pipe delivers it
    assert first.output.splitlines()[0] == f"ghost@digest-lab.net: the {state_edition(ledger)} edition failed (5.0.0); 1 in a row"
    assert state(ledger, "ghost@digest-lab.net")[:3] == ("active", 1, "failed")
    # Two earlier editions came back the same way (their rows failed): the third in a row stops the mail.
    with sqlite3.connect(ledger) as db:
        sub, papers = db.execute("SELECT subscriber_id, papers FROM delivery WHERE message_id = ?", (GHOST_ID,)).fetchone()
        for n in range(1, BOUNCE_LIMIT):
            db.execute("INSERT INTO delivery (subscriber_id, edition, state, attempts, message_id, papers, created_at, last_error) "
                       "VALUES (?, ?, 'failed', 1, ?, ?, '2026-11-01 00:00:00', 'bounced after the relay accepted it: 5.0.0')",
                       (sub, f"2026-11-0{n}", f"<older.{n}@example.org>", papers))
        db.execute("UPDATE delivery SET state = 'sent', last_error = NULL WHERE message_id = ?", (GHOST_ID,))
        db.execute("UPDATE subscriber SET consecutive_bounces = 0 WHERE id = ?", (sub,))  # the relay's 250 reset it
    third = cli("bounces", "read", str(FIXTURES / "exim-unrouteable.eml"))
    assert third.output.splitlines()[0] == "ghost@digest-lab.net: bounced (5.0.0): no more mail until `digest subscribers resume`"
    assert state(ledger, "ghost@digest-lab.net")[:3] == ("bounced", BOUNCE_LIMIT, "failed")
    assert cli("subscribers", "resume", "ghost@digest-lab.net").exit_code == 0


def test_a_delay_notice_changes_nothing(cli, ledger: Path) -> None:
    before = state(ledger, "away@slow.digest-lab.net")
    result = cli("bounces", "read", str(FIXTURES / "postfix-delayed.eml"))
    assert result.output == ("away@slow.digest-lab.net: delayed (4.4.1 connect to 127.0.0.1[127.0.0.1]:9: Connection refused), nothing recorded\n"
                             "1 message read: 1 delayed\n")
    assert state(ledger, "away@slow.digest-lab.net") == before == ("active", 0, "sent", None)


@pytest.mark.parametrize("forged", ["another-message-id", "no-returned-message"])
def test_a_report_that_returns_no_edition_of_ours_changes_nothing(cli, ledger: Path, forged: str) -> None:
    """Whoever can mail the bounce address could forge a report naming any subscriber: only the id of an email sent
    to them (which a forger does not have) makes it count."""
    raw = report("postfix-unknown-user.eml")
    if forged == "another-message-id":
        raw = raw.replace(GHOST_ID.encode(), b"<digest.2026-11-29.4.000000000000@example.org>")
    else:  # the report alone, without the returned message
        raw = raw[:raw.index(b"Content-Description: Undelivered Message")]
    result = cli("bounces", "read", "-", input=raw)
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == 'ghost@digest-lab.net: failed (5.1.1 unknown user: "ghost"), but it returns no edition digest sent: skipped'
    assert state(ledger, "ghost@digest-lab.net") == ("active", 0, "sent", None)


def test_an_mbox_and_a_maildir_read_the_same_and_the_maildir_once(cli, ledger: Path, tmp_path: Path) -> None:
    auto_reply = b"From: ada@example.org\r\nTo: digest@example.org\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n"
    names = ("postfix-delayed.eml", "postfix-unknown-user.eml")
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for message in (*[report(n) for n in names], auto_reply):
        box.add(message)
    box.flush()
    from_mbox = cli("bounces", "read", str(tmp_path / "bounces.mbox"))
    assert from_mbox.output.splitlines()[-1] == "3 messages read: 1 bounced, 1 delayed, 1 not a report"
    assert f"{tmp_path / 'bounces.mbox'} message 3: not a delivery report ('Out of office'), skipped" in from_mbox.output

    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for message in (*[report(n) for n in names], auto_reply):
        maildir.add(message)
    from_maildir = cli("bounces", "read", str(tmp_path / "Maildir"))
    assert from_maildir.output.splitlines()[-1] == "3 messages read: 1 already, 1 delayed, 1 not a report"
    assert sorted(p.parent.name for p in (tmp_path / "Maildir").glob("*/*")) == ["cur"] * 3  # each marked seen
    assert all(name.endswith(":2,S") for name in (p.name for p in (tmp_path / "Maildir" / "cur").iterdir()))
    assert cli("bounces", "read", str(tmp_path / "Maildir")).output == "0 messages read\n"


@pytest.mark.parametrize("case", ["missing-file", "directory-not-maildir"])
def test_bounces_read_refuses_what_it_cannot_read_with_one_line(cli, ledger: Path, tmp_path: Path, case: str) -> None:
    path = tmp_path / ("nothing.eml" if case == "missing-file" else "folder")
    if case == "directory-not-maildir":
        path.mkdir()
    result = cli("bounces", "read", str(path))
    assert result.exit_code == 1
    expected = {"missing-file": f"error: cannot read {path}: No such file or directory",
                "directory-not-maildir": f"error: {path} is a directory but not a Maildir (no cur, new and tmp in it)"}[case]
    assert result.output.startswith(expected) and result.output.count("\n") == 1


def test_record_returned_edition_on_each_database(engine) -> None:
    """The ledger's side alone, on SQLite and PostgreSQL: a dead address's report fails the row and the subscriber;
    a second report of the same edition is 'already'; an unknown id is 'unknown'."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from digest.models import Delivery, Subscriber
    from digest.store.bounces import record_returned_edition

    now = datetime(2026, 11, 29, 18, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:
        sub = conn.execute(sa.insert(Subscriber.__table__).values(email="ghost@digest-lab.net", status="active", interests=[], seed_papers=[],
                                                                   muted_terms=[], muted_authors=[], categories=[], max_papers=10,
                                                                   trending_weight=0.2, send_at="07:00", tz="UTC", frequency="daily",
                                                                   consecutive_bounces=0, token_version=1, created_at=now)).inserted_primary_key[0]
        conn.execute(sa.insert(Delivery.__table__).values(subscriber_id=sub, edition="2026-11-29", state="sent", attempts=1, message_id=GHOST_ID,
                                                          papers=[], created_at=now))
    assert record_returned_edition(engine, ["<nobody@example.org>"], dead_address=True, error="5.1.1", now=now).result == "unknown"
    done = record_returned_edition(engine, ["<nobody@example.org>", GHOST_ID], dead_address=True, error="5.1.1 no such user", now=now)
    assert (done.result, done.email, done.edition, done.failed_in_a_row) == ("bounced", "ghost@digest-lab.net", "2026-11-29", 1)
    assert record_returned_edition(engine, [GHOST_ID], dead_address=True, error="5.1.1", now=now).result == "already"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM subscriber")).scalar_one() == "bounced"
        assert conn.execute(sa.text("SELECT state, last_error FROM delivery")).one() == ("failed", "bounced after the relay accepted it: 5.1.1 no such user")


def test_bounces_read_on_a_terminal_asks_for_a_path_rather_than_waiting(home: Path) -> None:
    import os
    import subprocess
    import sys

    primary, secondary = os.openpty()  # standard input a terminal, as when typed without a pipe
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "digest"), "bounces", "read"], stdin=secondary, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "DIGEST_HOME": str(home)})
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 2
    assert "give a PATH (a message, an mbox or a Maildir), or pipe one message in" in result.stderr
    assert list(home.iterdir()) == []  # nothing made
