"""The daily job and the delivery ledger: real SQLite (and PostgreSQL for the ledger), real ranking and
rendering, a real SMTP server on 127.0.0.1; a recording transport only where the test is about the seam."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.delivery.loop import FIRST_WAIT, LONGEST_WAIT, RETRY_DELAYS, retry_wait
from digest.errors import ConfigError, DeliveryError, LockedError, ServerDownError
from digest.ingest import import_file
from digest.models import Subscriber
from digest.pipeline.job import preview_email, run_job, run_lock
from digest.store import deliveries as ledger
from digest.store import init_db, open_engine, session_scope
from digest.store.candidates import sent_among
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber, set_status
from digest.tokens import read_token

NOW = datetime(2024, 5, 2, 8, 0, tzinfo=timezone.utc)
SECRET = "test-secret-key-0123456789"
TOPICS = {
    "sae": ("Sparse autoencoders for interpretability of language model features", "We train sparse autoencoders on residual stream activations and find interpretable, monosemantic features."),
    "speech": ("Self-supervised speech recognition for low-resource audio", "A speech model trained on raw audio improves automatic speech recognition and speaker verification."),
    "robot": ("Reinforcement learning for robot manipulation", "A robot arm learns dexterous manipulation with reinforcement learning from sparse rewards in simulation."),
}


def write_papers(path: Path, prefix: str, per_topic: int = 3) -> Path:
    lines = []
    for topic, (title, abstract) in TOPICS.items():
        for i in range(per_topic):
            lines.append(json.dumps({"id": f"{prefix}-{topic}-{i}", "title": f"{title} ({prefix} {i})", "abstract": f"{abstract} Variant {prefix}{i}.", "authors": ["Ada Lovelace", "Alan Turing"]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def world(home: Path, tmp_path: Path):
    """A database with 9 papers first seen at NOW - 1h and three subscribers (one per topic)."""
    settings = load_settings(home, env={}).replace(secret_key=SECRET, from_address="digest@example.org", base_url="https://digest.example.org")
    engine = open_engine(settings.database_url)
    init_db(engine)
    import_file(engine, write_papers(tmp_path / "day1.jsonl", "d1"), NOW - timedelta(hours=1))
    with session_scope(engine) as session:
        for email, interest in (("ada@example.org", "sparse autoencoders interpretability"), ("bob@example.org", "speech recognition audio"), ("cy@example.org", "robot reinforcement learning")):
            add_subscriber(session, email, SubscriberInput(name=email.split("@")[0].title(), interests=[interest]), now=NOW - timedelta(days=10))
    yield settings, engine
    engine.dispose()


def smtp(settings, server, **changes):
    """Settings for `server`; one SMTP connection unless `smtp_connections` says otherwise (these tests follow the
    order of the messages; tests/test_senders.py covers several connections)."""
    return settings.replace(**{"smtp_host": server.host, "smtp_port": server.port, "smtp_security": "none", "smtp_timeout": 5, "smtp_connections": 1, **changes})


class Recorder:
    """A transport that records: the seam for tests about the pipeline's own decisions."""

    def __init__(self, on_send=None):
        self.sent: list[tuple[str, bytes]] = []
        self.on_send = on_send

    def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        self.sent.append((recipient, message))
        if self.on_send:
            self.on_send(len(self.sent))

    def close(self) -> None:
        pass


def sleeps() -> tuple[list[float], object]:
    calls: list[float] = []
    return calls, calls.append


def events(caplog) -> dict[str, dict]:
    """The events logged (log_event), each with the fields of its last occurrence."""
    return {r.digest_event: r.digest_fields for r in caplog.records if hasattr(r, "digest_event")}


def states(engine, edition: str = "2024-05-02") -> dict[int, str]:
    return {d.subscriber_id: d.state for d in ledger.deliveries_for(engine, edition=edition)}


# --- the whole run over SMTP --------------------------------------------------------------------------


def test_run_job_delivers_each_due_subscriber_once_and_records_it(world, smtp_server, caplog) -> None:
    settings, engine = world
    caplog.set_level("INFO", logger="digest.pipeline")
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    assert (report.sent, report.skipped, report.failed, report.deferred, report.unserved) == (3, 0, 0, 0, 0)
    assert sorted(smtp_server.recipients()) == ["ada@example.org", "bob@example.org", "cy@example.org"]
    assert smtp_server.connections == 1
    assert set(report.timings) >= {"plan", "rank", "render", "build", "send"}
    done = events(caplog)["run-done"]
    assert (done["sent"], type(done["seconds"])) == (3, float)  # a number in JSON logs (it was the string "0.1")
    rows = ledger.deliveries_for(engine)
    assert [r.state for r in rows] == ["sent"] * 3 and all(r.attempts == 1 and r.papers for r in rows)
    received = {m.rcpt_tos[0]: m.parsed for m in smtp_server.messages}
    for row in rows:
        with session_scope(engine) as session:
            sub = get_subscriber(session, row.subscriber_id)
        assert received[sub.email]["Message-ID"] == row.message_id
        assert sub.last_digest_at == NOW and sub.consecutive_bounces == 0
    with session_scope(engine) as session:  # every paper carried is recorded as sent to its reader
        assert {r.subscriber_id: set(r.papers) for r in rows} == sent_among(session, [r.subscriber_id for r in rows], [p for r in rows for p in r.papers])
    ada = received["ada@example.org"]
    assert "Sparse autoencoders" in str(ada["Subject"])
    assert_contents_recorded(engine, rows)
    assert again(engine, settings, smtp_server) == 0  # a second run the same day has nothing due


def assert_contents_recorded(engine, rows) -> None:
    """Each 'sent' row keeps how its email showed the papers (the edition's web page reads it): the picks, with
    their reasons, then the trending papers, together the papers it carried."""
    from digest.store.editions import sent_edition

    for row in rows:
        sent = sent_edition(engine, row.subscriber_id, row.edition)
        assert sent is not None and sent.picks is not None and sent.trending is not None
        assert [pid for pid, _ in sent.picks] + sent.trending == row.papers
        assert any(reasons for _, reasons in sent.picks) or not sent.picks


def again(engine, settings, server, now=NOW) -> int:
    return run_job(engine, smtp(settings, server), now, fetch=False).sent


def test_run_job_links_carry_signed_tokens_for_the_reader(world, smtp_server) -> None:
    settings, engine = world
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="ada@example.org")
    msg = smtp_server.messages[0].parsed
    url = msg["List-Unsubscribe"].split(",")[0].strip("<> ")
    assert url.startswith("https://digest.example.org/unsubscribe/")
    with session_scope(engine) as session:
        ada = get_subscriber(session, "ada@example.org")
    assert read_token(SECRET, "unsubscribe", url.rsplit("/", 1)[1]).subscriber_id == ada.id
    html = msg.get_body(("html",)).get_content()
    assert url in html and "https://digest.example.org/feedback/" in html and "https://digest.example.org/preferences/" in html


def test_run_job_without_secret_key_stops_before_sending(world, smtp_server) -> None:
    settings, engine = world
    with pytest.raises(ConfigError, match="secret_key"):
        run_job(engine, smtp(settings, smtp_server).replace(secret_key=""), NOW, fetch=False)
    assert smtp_server.messages == [] and ledger.deliveries_for(engine) == []


@pytest.mark.parametrize("setting, value", [("from_address", "digest@@example.org"), ("reply_to", "nope"), ("base_url", "digest.example.org")],
                         ids=["from_address", "reply_to", "base_url"])
def test_run_job_with_a_sender_setting_no_message_can_carry_stops_before_recording(world, smtp_server, setting, value) -> None:
    settings, engine = world
    with pytest.raises(ConfigError, match=f"^{setting} {value!r} "):
        run_job(engine, smtp(settings, smtp_server).replace(**{setting: value}), NOW, fetch=False)
    assert smtp_server.messages == [] and ledger.deliveries_for(engine) == []  # nobody's edition is spent
    assert run_job(engine, smtp(settings, smtp_server), NOW, fetch=False).sent == 3  # once fixed, everyone gets it


def test_run_job_retries_a_4xx_with_backoff_then_sends(world, smtp_server) -> None:
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = ["451 4.7.1 greylisted"]
    slept, sleep = sleeps()
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep)
    assert (report.sent, report.deferred) == (3, 0)
    assert slept == [RETRY_DELAYS[0]]
    bob = [d for d in ledger.deliveries_for(engine) if d.state == "sent" and d.attempts == 2]
    assert len(bob) == 1


@pytest.mark.parametrize("reply", ["421 4.3.2 try again later", "451 4.3.0 temporary failure"], ids=["421", "451"])
def test_run_job_persistent_4xx_is_deferred_then_sent_by_the_next_run(world, smtp_server, reply: str) -> None:
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = reply
    slept, sleep = sleeps()
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep)
    assert (report.sent, report.deferred, report.unserved) == (2, 1, 1)
    assert slept == list(RETRY_DELAYS)
    deferred = [d for d in ledger.deliveries_for(engine) if d.state == "deferred"]
    assert len(deferred) == 1 and deferred[0].attempts == 1 + len(RETRY_DELAYS) and reply.split()[0] in deferred[0].last_error
    del smtp_server.rcpt_replies["bob@example.org"]
    second = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(minutes=15), fetch=False, sleep=sleep)
    assert (second.sent, second.deferred) == (1, 0)
    assert sorted(smtp_server.recipients()) == ["ada@example.org", "bob@example.org", "cy@example.org"]


def test_run_job_a_deferred_delivery_waits_for_its_retry_time_and_the_wait_grows(world, smtp_server) -> None:
    """A recipient that answers 4xx run after run is not tried on every run (a daemon runs every minute, each run
    pausing 35 s for its retry rounds and knocking on the recipient's server three times): a deferred delivery waits
    FIRST_WAIT after the run that deferred it, then twice as long after each such run, up to LONGEST_WAIT."""
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = "451 4.7.1 greylisted, try again in 5 minutes"
    slept, sleep = sleeps()
    first = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep)
    assert (first.sent, first.deferred, first.waiting) == (2, 1, 0)
    connections = smtp_server.connections
    slept.clear()
    soon = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(minutes=1), fetch=False, sleep=sleep)
    assert (soon.due, soon.sent, soon.deferred, soon.unserved, soon.waiting) == (0, 0, 0, 0, 1)
    assert slept == [] and smtp_server.connections == connections  # nothing sent, no pause: bob's server is left alone
    assert soon.next_retry is not None and NOW + FIRST_WAIT <= soon.next_retry <= NOW + FIRST_WAIT + timedelta(minutes=1)
    assert "1 deferred delivery waits for its retry at" in soon.summary()
    again = run_job(engine, smtp(settings, smtp_server), soon.next_retry, fetch=False, sleep=sleep)
    assert (again.due, again.deferred) == (1, 1)  # tried again once its time came, and deferred again
    assert again.next_retry is None
    later = run_job(engine, smtp(settings, smtp_server), soon.next_retry + FIRST_WAIT + timedelta(seconds=30), fetch=False, sleep=sleep)
    assert (later.due, later.waiting) == (0, 1)  # the second wait is twice the first
    assert later.next_retry is not None and later.next_retry - soon.next_retry >= 2 * FIRST_WAIT
    del smtp_server.rcpt_replies["bob@example.org"]
    done = run_job(engine, smtp(settings, smtp_server), later.next_retry, fetch=False, sleep=sleep)
    assert (done.due, done.sent, done.deferred, done.waiting) == (1, 1, 0, 0)


def test_retry_wait_doubles_per_deferring_run_up_to_the_longest() -> None:
    per_run = 1 + len(RETRY_DELAYS)
    waits = [retry_wait(per_run * runs) for runs in range(1, 8)]
    assert waits[0] == FIRST_WAIT and waits[1] == 2 * FIRST_WAIT and waits[-1] == LONGEST_WAIT
    assert waits == sorted(waits)
    assert retry_wait(0) == retry_wait(1) == FIRST_WAIT  # a deferral whose message went unanswered is one attempt


def test_run_job_for_one_subscriber_tries_a_waiting_deferred_delivery_at_once(world, smtp_server) -> None:
    """`digest send EMAIL` is the operator asking for that subscriber now: a deferred delivery's wait gives way."""
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = ["451 4.7.1 greylisted"] * 3
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleeps()[1])
    report = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(minutes=1), fetch=False, only="bob@example.org", sleep=sleeps()[1])
    assert (report.due, report.sent, report.waiting) == (1, 1, 0)


def test_run_job_5xx_fails_the_delivery_and_three_in_a_row_bounce_the_subscriber(world, smtp_server, tmp_path: Path) -> None:
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    for day in range(3):
        now = NOW + timedelta(days=day)
        import_file(engine, write_papers(tmp_path / f"day{day}.jsonl", f"x{day}"), now - timedelta(hours=1))
        report = run_job(engine, smtp(settings, smtp_server), now, fetch=False)
        assert (report.sent, report.failed) == (2, 1)
    with session_scope(engine) as session:
        bob = get_subscriber(session, "bob@example.org")
    assert (bob.status, bob.consecutive_bounces) == ("bounced", 3)
    import_file(engine, write_papers(tmp_path / "day3.jsonl", "x3"), NOW + timedelta(days=3))
    report = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(days=3, hours=1), fetch=False)
    assert (report.due, report.sent, report.failed) == (2, 2, 0)  # no more mail to bob
    assert "bob@example.org" not in smtp_server.recipients()


def test_run_job_a_success_resets_the_bounce_counter(world, smtp_server, tmp_path: Path) -> None:
    settings, engine = world
    smtp_server.rcpt_replies["bob@example.org"] = ["550 5.2.1 mailbox disabled"]
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="bob@example.org")
    import_file(engine, write_papers(tmp_path / "d2.jsonl", "y"), NOW + timedelta(hours=20))
    run_job(engine, smtp(settings, smtp_server), NOW + timedelta(days=1), fetch=False, only="bob@example.org")
    with session_scope(engine) as session:
        assert get_subscriber(session, "bob@example.org").consecutive_bounces == 0


def test_run_job_ten_failures_in_a_row_stop_the_run_as_server_down(world, smtp_server) -> None:
    settings, engine = world
    with session_scope(engine) as session:
        for i in range(9):
            add_subscriber(session, f"extra{i}@example.org", SubscriberInput(interests=["speech"]), now=NOW - timedelta(days=1))
    smtp_server.default_rcpt_reply = "451 4.3.0 queue full"
    slept, sleep = sleeps()
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep)
    assert isinstance(report.error, ServerDownError) and "10 deliveries in a row" in str(report.error)
    assert "not the recipients" in str(report.error)
    assert (report.sent, report.deferred, report.not_attempted, report.due) == (0, 10, 2, 12)
    assert slept == []  # no backoff once the server is known to be down
    assert sorted(states(engine).values()) == ["deferred"] * 10 + ["pending"] * 2  # nothing left 'sending'
    smtp_server.default_rcpt_reply = None
    # The next run sends those never tried; the deferred ones wait their first retry time (the server asked for it).
    soon = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    assert (soon.sent, soon.waiting) == (2, 10) and sorted(states(engine).values()) == ["deferred"] * 10 + ["sent"] * 2
    later = run_job(engine, smtp(settings, smtp_server), NOW + FIRST_WAIT + timedelta(seconds=5), fetch=False)
    assert (later.sent, later.waiting) == (10, 0) and sorted(states(engine).values()) == ["sent"] * 12


def test_run_job_refused_connection_leaves_every_delivery_pending(world, smtp_server, caplog) -> None:
    settings, engine = world
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    report = run_job(engine, smtp(settings, smtp_server).replace(smtp_port=closed_port), NOW, fetch=False)
    assert isinstance(report.error, DeliveryError) and "connection refused" in str(report.error)
    assert (report.sent, report.not_attempted) == (0, 3)
    assert sorted(states(engine).values()) == ["pending"] * 3  # nothing was handed over: none left 'sending'
    with caplog.at_level("WARNING", logger="digest.pipeline"):
        assert run_job(engine, smtp(settings, smtp_server), NOW, fetch=False).sent == 3
    assert "resume" not in events(caplog)  # no false "may arrive twice" warning


@pytest.mark.parametrize("stored", [False, True], ids=["lost", "stored"])
def test_run_job_defers_a_message_whose_answer_never_came_to_the_next_run(world, smtp_server, caplog, stored: bool) -> None:
    """The whole message went and the connection dropped before the server answered. Whether the server stored it
    ("stored") or not ("lost") the client cannot tell: deferred, not retried at once nor in the run's retry rounds
    (that gave a recipient four copies in 35 s), the others sent over a new connection; the first run after its
    retry wait sends it."""
    settings, engine = world
    if stored:
        smtp_server.drop_stored = 1
    else:
        smtp_server.drop_data = 1
    slept, sleep = sleeps()
    with caplog.at_level("WARNING", logger="digest.delivery"):
        report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep)
    assert (report.sent, report.deferred) == (2, 1) and slept == []  # no retry round for it
    assert len(set(smtp_server.recipients())) == len(smtp_server.recipients()) == (3 if stored else 2)
    assert "may have been accepted" in events(caplog)["deferred"]["error"]
    [deferred] = [d for d in ledger.deliveries_for(engine) if d.state == "deferred"]
    assert smtp_server.connections == 2
    assert run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleep).waiting == 1  # not at once
    report = run_job(engine, smtp(settings, smtp_server), NOW + FIRST_WAIT + timedelta(minutes=1), fetch=False, sleep=sleep)
    assert (report.sent, report.deferred) == (1, 0)
    with session_scope(engine) as session:
        again = session.get(Subscriber, deferred.subscriber_id).email
    # Sent once more by the second run: twice in all when the server had stored it (what "may arrive twice" means).
    assert Counter(smtp_server.recipients())[again] == (2 if stored else 1)
    assert len(smtp_server.recipients()) == (4 if stored else 3)


def test_run_job_resends_a_message_that_may_have_arrived_with_the_papers_it_carried(world, smtp_server, tmp_path: Path) -> None:
    """Found by the soak (benchmarks/soak.py): the copy sent again after a message whose answer never came was ranked
    afresh, and a paper fetched in between changed it: two emails under one Message-ID with other papers. A mail
    client that hides the second as a duplicate showed papers the ledger did not count as sent and hid some it did.
    The resend now carries the papers, order and reasons of the copy that may have arrived."""
    settings, engine = world
    smtp_server.drop_stored = 1  # the first message is stored, and its answer never comes
    first = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, sleep=sleeps()[1])
    assert first.deferred == 1
    [row] = [d for d in ledger.deliveries_for(engine) if d.state == "deferred"]
    [stored] = [m for m in smtp_server.messages if m.rcpt_tos == [smtp_server.messages[0].rcpt_tos[0]]]
    with session_scope(engine) as session:
        reader = session.get(Subscriber, row.subscriber_id)
    topic = {"ada@example.org": "sae", "bob@example.org": "speech", "cy@example.org": "robot"}[reader.email]
    title, abstract = TOPICS[topic]
    newer = tmp_path / "newer.jsonl"  # a better paper for the reader, first seen before the resend
    newer.write_text(json.dumps({"id": "late-1", "title": f"{title}: the definitive study", "abstract": f"{abstract} {abstract}"}) + "\n", encoding="utf-8")
    import_file(engine, newer, NOW + timedelta(minutes=2))
    again = run_job(engine, smtp(settings, smtp_server), NOW + FIRST_WAIT + timedelta(minutes=1), fetch=False, sleep=sleeps()[1])
    assert (again.sent, again.deferred) == (1, 0)
    copies = [m for m in smtp_server.messages if m.rcpt_tos == [reader.email]]
    assert len(copies) == 2 and copies[0].parsed["Message-ID"] == copies[1].parsed["Message-ID"]
    assert copies[0] is stored
    texts = [re.sub(r"https?://\S+", "<link>", c.parsed.get_body(("plain",)).get_content()) for c in copies]
    assert "the definitive study" not in " ".join(texts[1].split()) and texts[0] == texts[1]  # the same email, links aside
    [sent] = [d for d in ledger.deliveries_for(engine) if d.subscriber_id == reader.id]
    assert row.contents is not None and row.contents["until"] == NOW.isoformat()  # what the first copy showed, and its window
    assert sent.state == "sent" and sent.contents == {k: v for k, v in row.contents.items() if k != "until"}
    later = tmp_path / "later.jsonl"
    later.write_text(json.dumps({"id": "late-2", "title": f"{title}: yet another", "abstract": abstract}) + "\n", encoding="utf-8")
    import_file(engine, later, NOW + timedelta(days=1) - timedelta(hours=1))
    run_job(engine, smtp(settings, smtp_server), NOW + timedelta(days=1), fetch=False)
    tomorrow = [m for m in smtp_server.messages if m.rcpt_tos == [reader.email]][-1].parsed.get_body(("plain",)).get_content()
    assert "the definitive study" in " ".join(tomorrow.split())  # not counted as sent: it comes the next day


def test_run_job_resends_rows_left_sending_by_a_dead_run_with_the_same_message_id(world, smtp_server) -> None:
    settings, engine = world
    with session_scope(engine) as session:
        ada = get_subscriber(session, "ada@example.org")
    rows = ledger.open_deliveries(engine, [(ada.id, "2024-05-02")], NOW, lambda s, e: "<kept@example.org>")
    ledger.mark_sending(engine, [rows[(ada.id, "2024-05-02")].id], NOW)  # as if killed right after handing it over
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    assert report.sent == 3
    by_rcpt = {m.rcpt_tos[0]: m.parsed for m in smtp_server.messages}
    assert by_rcpt["ada@example.org"]["Message-ID"] == "<kept@example.org>"


def test_run_job_never_sends_a_paper_twice_to_a_subscriber(world, smtp_server, tmp_path: Path) -> None:
    settings, engine = world
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="ada@example.org")
    first = set(ledger.deliveries_for(engine)[0].papers)
    import_file(engine, write_papers(tmp_path / "day2.jsonl", "d2"), NOW + timedelta(hours=12))
    with session_scope(engine) as session:  # forget the window: only the SentPaper rows can keep day-1 papers out
        get_subscriber(session, "ada@example.org").last_digest_at = None
    report = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(days=1), fetch=False, only="ada@example.org")
    assert report.sent == 1
    second = ledger.deliveries_for(engine, edition="2024-05-03")[0].papers
    assert second and not first & set(second)


def test_run_job_skip_empty_sends_nothing_on_a_day_with_nothing_new(world, smtp_server) -> None:
    settings, engine = world
    later = NOW + timedelta(days=1)  # day-1 papers were sent yesterday, nothing new since
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    report = run_job(engine, smtp(settings, smtp_server), later, fetch=False)
    assert (report.sent, report.skipped, report.unserved) == (0, 3, 0)
    assert set(states(engine, "2024-05-03").values()) == {"skipped"}
    assert len(smtp_server.messages) == 3
    assert run_job(engine, smtp(settings, smtp_server), later + timedelta(hours=1), fetch=False).due == 0  # skipped is finished


def test_run_job_without_skip_empty_sends_the_quiet_day_email(world, smtp_server) -> None:
    settings, engine = world
    run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    report = run_job(engine, smtp(settings, smtp_server, skip_empty=False), NOW + timedelta(days=1), fetch=False)
    assert (report.sent, report.skipped) == (3, 0)
    assert "quiet day" in smtp_server.messages[-1].parsed.get_body(("plain",)).get_content()


def test_run_job_no_match_still_gets_trending(world, smtp_server, tmp_path: Path) -> None:
    settings, engine = world
    upvoted = tmp_path / "hf.jsonl"
    upvoted.write_text(json.dumps({"id": "hf-1", "title": "Weather forecasting with neural operators", "abstract": "Global forecasts.", "upvotes": 40}) + "\n", encoding="utf-8")
    import_file(engine, upvoted, NOW - timedelta(hours=1))
    with session_scope(engine) as session:
        add_subscriber(session, "dee@example.org", SubscriberInput(interests=["underwater basket weaving"]), now=NOW - timedelta(days=1))
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="dee@example.org")
    assert report.sent == 1
    [delivery] = ledger.deliveries_for(engine)
    assert len(delivery.papers) == 1  # the one paper that trends (upvotes), not the day's other papers


def test_run_job_no_match_and_nothing_trending_is_a_quiet_day(world, smtp_server) -> None:
    # No paper of the day has upvotes or a second source: nothing trends, so there is nothing to send.
    settings, engine = world
    with session_scope(engine) as session:
        add_subscriber(session, "dee@example.org", SubscriberInput(interests=["underwater basket weaving"]), now=NOW - timedelta(days=1))
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="dee@example.org")
    assert (report.sent, report.skipped) == (0, 1) and smtp_server.messages == []


def test_run_job_only_a_paused_subscriber_is_an_input_error(world, smtp_server) -> None:
    settings, engine = world
    with session_scope(engine) as session:
        set_status(session, get_subscriber(session, "ada@example.org"), "paused", NOW)
    with pytest.raises(Exception, match="paused, not active"):
        run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, only="ada@example.org")


def test_run_job_date_sends_that_edition_once(world, smtp_server) -> None:
    settings, engine = world
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, edition="2024-05-01")
    assert (report.sent, report.editions) == (3, ["2024-05-01"])
    assert run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, edition="2024-05-01").due == 0


def test_run_job_dry_run_sends_and_records_nothing(world, smtp_server) -> None:
    settings, engine = world
    report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False, dry_run=True)
    assert (report.sent, report.dry_run) == (3, True) and report.summary().startswith("dry run: would send 3")
    assert smtp_server.messages == [] and ledger.deliveries_for(engine) == []


def test_run_job_stop_event_finishes_the_message_in_flight_then_stops(world) -> None:
    settings, engine = world
    stop = threading.Event()
    transport = Recorder(on_send=lambda n: stop.set())
    report = run_job(engine, settings, NOW, fetch=False, transport=transport, stop_event=stop)
    assert (report.sent, report.not_attempted, report.stopped) == (1, 2, True)
    assert sorted(states(engine).values()) == ["pending", "pending", "sent"]
    assert run_job(engine, settings, NOW, fetch=False, transport=transport).sent == 2
    assert sorted(r for r, _ in transport.sent) == ["ada@example.org", "bob@example.org", "cy@example.org"]


def test_run_job_while_another_holds_the_lock_is_locked_error(world) -> None:
    settings, engine = world
    transport = Recorder()
    with run_lock(settings):
        with pytest.raises(LockedError, match="another digest run holds the lock"):
            run_job(engine, settings, NOW, fetch=False, transport=transport)
    assert transport.sent == []
    assert run_job(engine, settings, NOW, fetch=False, transport=transport).sent == 3  # released


def test_run_job_renders_a_big_edition_in_worker_processes(world, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, engine = world
    monkeypatch.setattr("digest.delivery.build.POOL_FROM", 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert threading.active_count() == 1, "workers are only forked from a process with one thread"
    transport = Recorder()
    report = run_job(engine, settings, NOW, fetch=False, transport=transport)
    assert (report.sent, report.workers) == (3, 2)
    assert [r for r, _ in transport.sent] == ["ada@example.org", "bob@example.org", "cy@example.org"]  # in order
    assert all(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in m for _, m in transport.sent)
    assert report.timings["render"] > 0 and {d.state for d in ledger.deliveries_for(engine)} == {"sent"}
    assert_contents_recorded(engine, ledger.deliveries_for(engine))  # the picks' reasons came back from the workers


def test_run_job_uses_the_outbox_without_smtp_host(world) -> None:
    settings, engine = world
    report = run_job(engine, settings, NOW, fetch=False)
    assert report.sent == 3
    assert len(list(Path(settings.outbox_dir).glob("*.eml"))) == 3


def test_run_job_not_due_before_send_time(world) -> None:
    settings, engine = world
    report = run_job(engine, settings, NOW.replace(hour=6), fetch=False, transport=Recorder())
    assert (report.due, report.sent) == (0, 0)


def test_preview_email_is_the_email_a_run_would_send_without_recording(world) -> None:
    settings, engine = world
    rendered, message, result = preview_email(engine, settings, NOW, "ada@example.org")
    assert b"multipart/alternative" in message and rendered.subject
    assert [r.paper.id for r in result.picks]
    assert ledger.deliveries_for(engine) == []


# --- the ledger on SQLite and PostgreSQL --------------------------------------------------------------


@pytest.fixture
def subscribers(engine):
    with session_scope(engine) as session:
        ids = [add_subscriber(session, f"s{i}@example.org", SubscriberInput(), now=NOW).id for i in range(3)]
    return ids


def test_open_deliveries_creates_once_and_supersedes_older_open_rows(engine, subscribers) -> None:
    a, b, c = subscribers
    first = ledger.open_deliveries(engine, [(a, "2024-05-01"), (b, "2024-05-01")], NOW, lambda s, e: f"<{s}.{e}@x>")
    again_ = ledger.open_deliveries(engine, [(a, "2024-05-01")], NOW, lambda s, e: "<other@x>")
    assert again_[(a, "2024-05-01")] == first[(a, "2024-05-01")]
    assert first[(a, "2024-05-01")].message_id == f"<{a}.2024-05-01@x>" and first[(a, "2024-05-01")].state == "pending"
    ledger.open_deliveries(engine, [(a, "2024-05-02")], NOW, lambda s, e: "<n@x>")
    old = {d.subscriber_id: d for d in ledger.deliveries_for(engine, edition="2024-05-01")}
    assert old[a].state == "failed" and "superseded" in old[a].last_error
    assert old[b].state == "pending"  # b has no newer edition


def test_record_sent_writes_sent_papers_in_the_same_transaction(engine, subscribers, tmp_path: Path) -> None:
    a = subscribers[0]
    import_file(engine, write_papers(tmp_path / "p.jsonl", "p", per_topic=1), NOW)
    with session_scope(engine) as session:
        from digest.store.candidates import candidate_papers

        papers = [c.paper.id for c in candidate_papers(session, NOW - timedelta(days=1), NOW)]
    row = ledger.open_deliveries(engine, [(a, "2024-05-02")], NOW, lambda s, e: "<m@x>")[(a, "2024-05-02")]
    ledger.write(engine, lambda conn: ledger.record_sent(conn, row.id, a, papers, 1, NOW, NOW))
    ledger.write(engine, lambda conn: ledger.record_sent(conn, row.id, a, papers, 1, NOW, NOW))  # idempotent on papers
    with session_scope(engine) as session:
        assert sent_among(session, [a], papers) == {a: set(papers)}
    assert [(d.edition, d.state) for d in ledger.deliveries_for(engine, subscriber_id=a)] == [("2024-05-02", "sent")]
    assert ledger.finished_editions(engine, since="2024-05-01") == {a: "2024-05-02"}
    assert ledger.finished_editions(engine, since="2024-05-03") == {}  # older editions are not read
    with pytest.raises(ZeroDivisionError):
        ledger.write(engine, lambda conn: (ledger.record_sent(conn, row.id, a, [], 1, NOW, NOW), 1 / 0))
    assert ledger.deliveries_for(engine)[0].attempts == 2  # the failed transaction left nothing


def test_finished_editions_reads_only_the_editions_asked_for(engine, subscribers) -> None:
    """The due check reads the ledger from the oldest edition it can compare (earliest_local_day), not all of it: the
    newest finished edition at or after `since` per subscriber; open rows do not count; older editions are not read,
    and on SQLite the query reads them through ix_delivery_edition (it grouped the whole ledger, 87 ms at 120 days of
    1,000 subscribers and growing with its age)."""
    import sqlalchemy as sa

    a, b, c = subscribers
    rows = ledger.open_deliveries(engine, [(a, "2024-04-01"), (a, "2024-05-01"), (b, "2024-04-30"), (b, "2024-05-02"), (c, "2024-04-01")], NOW, lambda s, e: "<m@x>")
    for key in ((a, "2024-04-01"), (a, "2024-05-01"), (b, "2024-04-30"), (c, "2024-04-01")):
        ledger.write(engine, lambda conn, key=key: ledger.record_sent(conn, rows[key].id, key[0], [], 1, NOW, NOW))
    # b's 2024-05-02 row is still pending: its newest finished edition is 2024-04-30
    assert ledger.finished_editions(engine, since="2024-04-01") == {a: "2024-05-01", b: "2024-04-30", c: "2024-04-01"}
    assert ledger.finished_editions(engine, since="2024-04-30") == {a: "2024-05-01", b: "2024-04-30"}
    assert ledger.finished_editions(engine, since="2024-05-02") == {}
    if engine.dialect.name != "sqlite":
        return
    statements: list[tuple[str, tuple]] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, params, context, many: statements.append((statement, params)))
    ledger.finished_editions(engine, since="2024-05-01")
    with engine.connect() as conn:
        plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statements[-1][0], statements[-1][1]))
    assert "USING INDEX ix_delivery_edition (edition>?)" in plan, plan


def test_due_subscribers_finds_today_due_after_a_long_ledger(world) -> None:
    """Whoever finished only editions older than the ledger's read range (earliest_local_day) is due today, as one
    who never had one is; whoever finished today's is not."""
    from digest.pipeline.plan import due_subscribers
    from digest.store.subscribers import list_subscribers

    settings, engine = world
    with session_scope(engine) as session:
        ada, bob, cy = sorted(s.id for s in list_subscribers(session))
    rows = ledger.open_deliveries(engine, [(ada, "2024-03-01"), (bob, "2024-05-02")], NOW, lambda s, e: "<m@x>")
    for (sub_id, _), row in rows.items():
        ledger.write(engine, lambda conn, row=row, sub_id=sub_id: ledger.record_sent(conn, row.id, sub_id, [], 1, NOW, NOW))
    due = {d.subscriber.id: d.edition for d in due_subscribers(engine, settings, NOW)}
    assert due == {ada: "2024-05-02", cy: "2024-05-02"}, due


def test_record_sent_many_writes_each_papers_row_from_the_deliveries(engine, subscribers, tmp_path: Path) -> None:
    """record_sent_many's sent_paper rows are made by the database from the delivery rows it has just marked 'sent'
    (their papers and sent_at): one row per (subscriber, paper), a paper already sent to that reader kept as it was,
    a delivery that carried nothing adding none; on SQLite (json_each) and PostgreSQL (json_array_elements_text)."""
    a, b, c = subscribers
    import_file(engine, write_papers(tmp_path / "p.jsonl", "p", per_topic=2), NOW)
    with session_scope(engine) as session:
        from digest.store.candidates import candidate_papers

        papers = sorted(c_.paper.id for c_ in candidate_papers(session, NOW - timedelta(days=1), NOW))
    earlier, later = NOW - timedelta(days=1), NOW
    first = ledger.open_deliveries(engine, [(a, "2024-05-01")], earlier, lambda s, e: f"<{s}.{e}@x>")[(a, "2024-05-01")]
    ledger.write(engine, lambda conn: ledger.record_sent(conn, first.id, a, papers[:2], 1, earlier, earlier))
    rows = ledger.open_deliveries(engine, [(a, "2024-05-02"), (b, "2024-05-02"), (c, "2024-05-02")], later, lambda s, e: f"<{s}.{e}@x>")
    ra, rb, rc = (rows[(s, "2024-05-02")].id for s in (a, b, c))
    sent = [(ra, a, papers[1:4], 1), (rb, b, papers[:3], 2), (rc, c, [], 1)]
    contents = [{"picks": [[p, ["why"]] for p in ps], "trending": []} for _, _, ps, _ in sent]
    ledger.write(engine, lambda conn: ledger.record_sent_many(conn, sent, later, later, contents=contents))
    with session_scope(engine) as session:
        from sqlmodel import select

        from digest.models import SentPaper

        got = sorted((r.subscriber_id, r.paper_id, r.delivery_id, r.sent_at) for r in session.exec(select(SentPaper)))
    assert got == [(a, papers[0], first.id, earlier), (a, papers[1], first.id, earlier), (a, papers[2], ra, later), (a, papers[3], ra, later),
                   (b, papers[0], rb, later), (b, papers[1], rb, later), (b, papers[2], rb, later)]
    assert [(d.subscriber_id, d.state) for d in ledger.deliveries_for(engine) if d.edition == "2024-05-02"] == [(a, "sent"), (b, "sent"), (c, "sent")]


def test_record_failed_counts_bounces_and_marks_bounced_at_three(engine, subscribers) -> None:
    a = subscribers[0]
    counts = []
    for day in ("2024-05-01", "2024-05-02", "2024-05-03"):
        row = ledger.open_deliveries(engine, [(a, day)], NOW, lambda s, e: f"<{e}@x>")[(a, day)]
        counts.append(ledger.write(engine, lambda conn, row=row: ledger.record_failed(conn, row.id, a, "550 no", 1, NOW, bounce=True)))
    assert counts == [1, 2, 3]
    with session_scope(engine) as session:
        assert get_subscriber(session, a).status == "bounced"


def test_editions_summary_counts_states_per_edition(engine, subscribers) -> None:
    a, b, c = subscribers
    rows = ledger.open_deliveries(engine, [(a, "2024-05-02"), (b, "2024-05-02"), (c, "2024-05-02")], NOW, lambda s, e: f"<{s}@x>")
    ledger.write(engine, lambda conn: ledger.record_sent(conn, rows[(a, "2024-05-02")].id, a, [], 1, NOW, NOW))
    ledger.write(engine, lambda conn: ledger.record_skipped_row(conn, rows[(b, "2024-05-02")].id, "nothing new", NOW))
    ledger.mark_sending(engine, [rows[(c, "2024-05-02")].id], NOW)
    assert ledger.editions_summary(engine) == [ledger.EditionSummary("2024-05-02", sent=1, skipped=1, pending=1)]
    ledger.settle(engine, [rows[(c, "2024-05-02")].id], [], NOW)  # never handed over: back to 'pending'
    assert states_by_id(engine)[c] == "pending"


def test_editions_summary_counts_only_the_newest_editions(engine, subscribers) -> None:
    """`digest status` shows 14 editions; the summary counted the whole ledger to show them (1.45 s at a year)."""
    a, b, _ = subscribers
    for day, subs in (("2024-05-01", (a, b)), ("2024-05-02", (a,)), ("2024-05-03", (a, b))):
        rows = ledger.open_deliveries(engine, [(s, day) for s in subs], NOW, lambda s, e: f"<{s}.{e}@x>")
        for s in subs:
            ledger.write(engine, lambda conn, row=rows[(s, day)], s=s: ledger.record_sent(conn, row.id, s, [], 1, NOW, NOW))
    assert ledger.editions_summary(engine, limit=2) == [ledger.EditionSummary("2024-05-03", sent=2), ledger.EditionSummary("2024-05-02", sent=1)]
    assert [e.edition for e in ledger.editions_summary(engine)] == ["2024-05-03", "2024-05-02", "2024-05-01"]


def states_by_id(engine) -> dict[int, str]:
    return {d.subscriber_id: d.state for d in ledger.deliveries_for(engine)}


def fake_embed(texts):
    """Stands for the sentence model where the semantic extra may not be installed: a fixed vector per text."""
    import hashlib

    import numpy as np

    vectors = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=384) for t in texts]
    return np.array([v / np.linalg.norm(v) for v in vectors], dtype=np.float32).reshape(len(texts), 384)


def test_run_job_ranks_with_the_configured_rank_model(world, monkeypatch) -> None:
    import digest.pipeline.plan
    import digest.rank.semantic

    settings, engine = world
    seen: list[str] = []
    real = digest.pipeline.plan.Ranking

    def recording_ranking(*args, **kwargs):
        seen.append(kwargs.get("model", "tfidf"))
        return real(*args, **kwargs)

    monkeypatch.setattr(digest.rank.semantic, "embed", fake_embed)  # the hybrid's extra may not be installed here
    monkeypatch.setattr(digest.pipeline.plan, "Ranking", recording_ranking)
    report = run_job(engine, settings.replace(rank_model="hybrid"), NOW, fetch=False, transport=Recorder())
    assert report.sent == 3 and seen == ["hybrid"]


# --- one subscriber's edition that cannot be built is their failed delivery ---------------------------


def corrupt(engine, sql: str, **params) -> None:
    """A row as a hand edit, an old bug or another tool could leave it: the run must survive what it reads."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


@pytest.mark.parametrize("column, value", [("interests", "5"), ("trending_weight", "x"), ("max_papers", 10**12)],
                         ids=["profile-not-buildable", "ranking-raises-value-error", "ranking-raises-memory-error"])
def test_run_job_a_subscriber_who_cannot_be_ranked_is_their_failed_delivery(world, smtp_server, caplog, column, value) -> None:
    settings, engine = world
    corrupt(engine, f"UPDATE subscriber SET {column} = :value WHERE email = 'bob@example.org'", value=value)
    with caplog.at_level("WARNING", logger="digest.pipeline"):
        report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    assert (report.sent, report.failed, report.unserved) == (2, 1, 1)
    assert sorted(smtp_server.recipients()) == ["ada@example.org", "cy@example.org"]
    rows = {d.subscriber_id: d for d in ledger.deliveries_for(engine)}
    with session_scope(engine) as session:
        bob = get_subscriber(session, "bob@example.org").id
    assert rows[bob].state == "failed" and rows[bob].last_error.startswith("cannot build the edition: ")
    assert [d.state for i, d in rows.items() if i != bob] == ["sent", "sent"]
    failed = [r for r in caplog.records if getattr(r, "digest_event", "") == "failed"]
    # The traceback is kept: in the record, or (ranked with its batch, once claimed) in the event's traceback field.
    assert len(failed) == 1 and failed[0].digest_fields["subscriber"] == "bob@example.org"
    assert failed[0].exc_info or (column != "interests" and "Error" in failed[0].digest_fields["traceback"])
    assert run_job(engine, smtp(settings, smtp_server), NOW, fetch=False).due == 0  # bob's edition is finished, not retried all day


def test_run_job_dry_run_counts_a_subscriber_who_cannot_be_ranked_as_failed(world) -> None:
    settings, engine = world
    corrupt(engine, "UPDATE subscriber SET trending_weight = 'x' WHERE email = 'cy@example.org'")
    report = run_job(engine, settings, NOW, fetch=False, dry_run=True)
    assert (report.sent, report.failed) == (2, 1) and ledger.deliveries_for(engine) == []


def test_rank_isolating_finds_the_bad_profiles_among_many() -> None:
    from digest.pipeline.plan import rank_isolating
    from digest.rank import Profile

    calls: list[int] = []

    def rank(batch):
        calls.append(len(batch))
        bad = [p.subscriber_id for p in batch if p.subscriber_id in (7, 90)]
        if bad:
            raise ValueError(f"profile {bad[0]}")
        return [f"result {p.subscriber_id}" for p in batch]

    results = rank_isolating(rank, [Profile(subscriber_id=i) for i in range(1, 129)])
    assert [str(r) for r in results if isinstance(r, Exception)] == ["profile 7", "profile 90"]
    assert [r for r in results if not isinstance(r, Exception)] == [f"result {i}" for i in range(1, 129) if i not in (7, 90)]
    assert sum(calls) <= 2 * 128 * 2 + 1  # about twice the work of one batch per bad profile, not one call per profile


def test_run_job_candidates_no_one_can_be_ranked_with_stop_the_run_and_spend_no_edition(world, smtp_server) -> None:
    from digest.errors import DigestError

    settings, engine = world
    corrupt(engine, "UPDATE paper SET upvotes = 'lots' WHERE id = (SELECT min(id) FROM paper)")
    with pytest.raises(DigestError, match="cannot rank today's candidates for anyone: TypeError"):
        run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    assert smtp_server.messages == [] and ledger.deliveries_for(engine) == []  # the next run, once it is fixed, sends everyone's


@pytest.mark.parametrize("workers", [False, True], ids=["in-process-over-smtp", "forked-workers"])
def test_run_job_a_subscriber_whose_email_cannot_be_rendered_is_their_failed_delivery(world, request, monkeypatch, caplog, workers) -> None:
    settings, engine = world
    shown = {email: preview_email(engine, settings, NOW, email)[2] for email in ("ada@example.org", "bob@example.org", "cy@example.org")}
    picks = {email: {r.paper.id for r in result.picks} for email, result in shown.items()}
    trending = {r.paper.id for result in shown.values() for r in result.trending}
    only_bob = sorted(picks["bob@example.org"] - picks["ada@example.org"] - picks["cy@example.org"] - trending)
    assert only_bob, picks
    corrupt(engine, "UPDATE paper SET authors = '5' WHERE id = :id", id=only_bob[0])  # a JSON list the renderer iterates
    if workers:  # forked only from a process with one thread: not beside the SMTP server's thread
        monkeypatch.setattr("digest.delivery.build.POOL_FROM", 2)
        monkeypatch.setattr("os.cpu_count", lambda: 2)
        transport = Recorder()
        report = run_job(engine, settings, NOW, fetch=False, transport=transport)
        recipients = [r for r, _ in transport.sent]
    else:
        smtp_server = request.getfixturevalue("smtp_server")
        with caplog.at_level("WARNING", logger="digest.pipeline"):
            report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
        recipients = smtp_server.recipients()
        fields = next(r.digest_fields for r in caplog.records if getattr(r, "digest_event", "") == "failed")
        assert fields["subscriber"] == "bob@example.org" and "render" in fields["traceback"]
    assert (report.sent, report.failed, report.workers) == (2, 1, 2 if workers else 0)
    assert sorted(recipients) == ["ada@example.org", "cy@example.org"]
    failed = [d for d in ledger.deliveries_for(engine) if d.state == "failed"]
    assert len(failed) == 1 and failed[0].last_error.startswith("cannot build the edition: TypeError")


# --- the database locked in the middle of a send --------------------------------------------------------


@pytest.fixture
def crowd(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """300 due subscribers on a SQLite file whose busy timeout is 0.2 s (10 s in production), so a lock held
    for a few seconds outlasts it as a long backup or a forgotten sqlite3 shell outlasts the real one."""
    import digest.store

    monkeypatch.setattr(digest.store, "SQLITE_BUSY_TIMEOUT_MS", 200)
    settings = load_settings(home, env={}).replace(secret_key=SECRET, from_address="digest@example.org", base_url="https://digest.example.org")
    engine = open_engine(settings.database_url)
    init_db(engine)
    import_file(engine, write_papers(tmp_path / "day1.jsonl", "d1"), NOW - timedelta(hours=1))
    with session_scope(engine) as session:
        for i in range(300):
            add_subscriber(session, f"reader{i:03d}@example.org", SubscriberInput(interests=[("sparse autoencoders", "speech recognition", "robot manipulation")[i % 3]]), now=NOW - timedelta(days=10))
    yield settings, engine, home / "digest.db"
    engine.dispose()


@pytest.mark.parametrize("forked", [False, True], ids=["ranked-in-process", "ranked-by-forked-workers"])
def test_run_job_ranks_each_claimed_batch_and_never_holds_every_result(crowd, monkeypatch, forked) -> None:
    """Issue 11: a worker ranks the batch it has claimed, not every due subscriber up front, so the results it holds
    do not grow with the edition: at most two batches (the one sent, the one claimed ahead). Forked render workers
    rank their own share: the parent then ranks and holds none."""
    import gc

    from digest.pipeline.plan import PlansRanking
    from digest.rank import RankResult

    CHUNK = 50  # claimed batches much smaller than the edition of 300, so holding every result would show
    monkeypatch.setattr("digest.delivery.loop.CHUNK", CHUNK)
    settings, engine, _ = crowd
    batches: list[int] = []
    real = PlansRanking.rank

    def recording(self, plans):
        batches.append(len(plans))
        return real(self, plans)

    alive: list[int] = []

    def count_results(sent: int) -> None:
        if sent % 20 == 0:
            alive.append(sum(type(o) is RankResult for o in gc.get_objects()))

    monkeypatch.setattr(PlansRanking, "rank", recording)
    if forked:
        monkeypatch.setattr("digest.delivery.build.POOL_FROM", 2)
        monkeypatch.setattr("digest.delivery.build.usable_cores", lambda: 2)
    gc.collect()
    # What the process held before the run (an earlier test of this worker process may keep a result or two
    # reachable, e.g. in a cache: CI saw 2 under pytest-xdist): the run must add none, or at most two batches.
    before = sum(type(o) is RankResult for o in gc.get_objects())
    report = run_job(engine, settings, NOW, fetch=False, transport=Recorder(on_send=count_results))
    assert (report.sent, report.workers) == (300, 2 if forked else 0)
    assert len(alive) == 15
    if forked:
        assert batches == [] and max(alive) <= before  # the workers ranked them all (their calls are counted in their copy)
    else:
        assert sum(batches) == 300 and max(batches) <= CHUNK  # each subscriber ranked once, a claimed batch at a time
        assert max(alive) - before <= 2 * CHUNK < 300


def hold_write_lock(path: Path, server, after_messages: int, seconds: float) -> threading.Thread:
    """A second connection that takes the write lock (BEGIN EXCLUSIVE) once the server has accepted
    `after_messages` messages, and holds it for `seconds`."""
    import sqlite3
    import time

    def hold() -> None:
        while len(server.messages) < after_messages:
            time.sleep(0.005)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_run_job_locked_past_its_patience_leaves_only_handed_over_messages_sending(crowd, smtp_server, monkeypatch, caplog) -> None:
    from collections import Counter

    from digest.errors import StoreError

    settings, engine, path = crowd
    monkeypatch.setattr(ledger, "LOCK_PATIENCE", 1.0, raising=False)  # the run gives up on the lock after a second...
    monkeypatch.setattr(ledger, "SETTLE_PATIENCE", 30.0, raising=False)  # ...and puts its ledger right once the lock is gone
    smtp_server.data_delay = 0.005
    locker = hold_write_lock(path, smtp_server, after_messages=20, seconds=3.0)
    with caplog.at_level("WARNING"):
        report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    locker.join()
    assert isinstance(report.error, StoreError) and "the database is locked" in str(report.error)
    accepted = len(smtp_server.messages)
    assert 20 <= accepted < 300
    counts = Counter(states(engine).values())
    # Every message the server accepted is recorded 'sent' (the one whose record met the lock, late); nothing is
    # left 'sending'; everyone else is 'pending' for the next run.
    assert counts == Counter({"sent": accepted, "pending": 300 - accepted}), counts
    assert (report.sent, report.not_attempted, report.left_sending) == (accepted, 300 - accepted, 0)
    assert "database-locked" in events(caplog) and events(caplog)["recorded-late"]["deliveries"] == 1
    second = run_job(engine, smtp(settings, smtp_server), NOW + timedelta(minutes=15), fetch=False)
    assert (second.sent, second.unserved) == (300 - accepted, 0)
    assert set(Counter(smtp_server.recipients()).values()) == {1} and len(smtp_server.recipients()) == 300  # each exactly once
    assert "resume" not in events(caplog)


def test_run_job_waits_out_a_lock_shorter_than_its_patience(crowd, smtp_server, caplog) -> None:
    settings, engine, path = crowd
    locker = hold_write_lock(path, smtp_server, after_messages=20, seconds=1.5)  # past the busy timeout, within LOCK_PATIENCE
    with caplog.at_level("WARNING"):
        report = run_job(engine, smtp(settings, smtp_server), NOW, fetch=False)
    locker.join()
    assert (report.sent, report.unserved) == (300, 0)
    assert set(states(engine).values()) == {"sent"} and len(smtp_server.messages) == 300
    assert "database-locked" in events(caplog)


def test_run_job_claims_and_records_on_one_connection(crowd, monkeypatch) -> None:
    """Issue 11: the ledger's claims ('sending') and records ('sent') of a run go through one connection. SQLite
    empties a connection's page cache when another connection has written since its last transaction: claims made on
    a pool connection had the records' connection read ~1,200 pages again after each claim (23,000 reads of the
    database file in the 10,000 edition of benchmarks/send.py, a third of the sending process's system time)."""
    import sqlalchemy as sa

    monkeypatch.setattr("digest.delivery.loop.CHUNK", 50)  # six claims
    settings, engine, _ = crowd
    writers: dict[str, set[int]] = {"claim": set(), "record": set()}

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.startswith("UPDATE delivery SET state="):
            kind = "record" if "'sent'" in statement else "claim"
            writers[kind].add(id(conn.connection.dbapi_connection))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        report = run_job(engine, settings, NOW, fetch=False, transport=Recorder())
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert report.sent == 300
    assert len(writers["claim"]) == 1 and writers["claim"] == writers["record"]
