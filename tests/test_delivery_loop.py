"""The delivery loop's contract (digest.delivery.loop.deliver_edition) through its seams: a claimer that is not the
ledger (as a database claimer with leases will be), the inline builder, a recording transport. The ledger claimer's
own guarantees (over SQLite and PostgreSQL, the database locked mid-send) are tested through the job in
tests/test_pipeline.py; here, what the loop promises any claimer."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.delivery.build import InlineBuilder, builder_for
from digest.delivery.loop import RETRY_DELAYS, SERVER_DOWN_AFTER, DeliveryReport, deliver_edition
from digest.delivery.work import Letter, Outcome, Settlement
from digest.errors import DeliveryError, PermanentDeliveryError, ServerDownError, TransientDeliveryError
from digest.models import Paper, Subscriber
from digest.rank import Candidate, RankedPaper, RankResult

NOW = datetime(2025, 6, 13, 9, 0, tzinfo=timezone.utc)


def letter(n: int) -> Letter:
    paper = Paper(id=100 + n, key=f"arxiv:2506.{n:05d}", ident=f"2506.{n:05d}", title=f"Paper {n}", abstract="An abstract.", authors=["Ada"])
    result = RankResult(n, [RankedPaper(Candidate(paper, ("arxiv",), ("arxiv-rss",)), 1.0, 1.0, 0.0, ("matched",), True)])
    subscriber = Subscriber(id=n, email=f"reader{n}@example.org", name=f"Reader {n}", token_version=1)
    return Letter(delivery_id=1000 + n, subscriber=subscriber, edition="2025-06-13", message_id=f"<{n}@example.org>", result=result)


class Claimer:
    """Hands the letters out `n` at a time and writes down every call, in order."""

    def __init__(self, letters: list[Letter], fail_claim_after: int | None = None) -> None:
        self.waiting, self.calls, self.recorded = list(letters), [], []
        self.released: list[Letter] | None = None
        self.fail_claim_after = fail_claim_after

    def claim(self, n: int) -> list[Letter]:
        if self.fail_claim_after is not None and sum(call[0] == "claim" for call in self.calls) >= self.fail_claim_after:
            from digest.errors import StoreError

            raise StoreError("the database is locked")
        batch, self.waiting = self.waiting[:n], self.waiting[n:]
        self.calls.append(("claim", [x.delivery_id for x in batch]))
        return batch

    def record(self, outcome: Outcome) -> int:
        self.calls.append(("record", outcome.letter.delivery_id, outcome.state))
        self.recorded.append(outcome)
        return 0

    def release(self, letters) -> Settlement:
        self.released = list(letters)
        self.calls.append(("release", [x.delivery_id for x in letters]))
        return Settlement()


class Transport:
    """Accepts everything, or answers each recipient with the error scripted for them (one per try)."""

    def __init__(self, script: dict[str, list[Exception]] | None = None, stop: threading.Event | None = None) -> None:
        self.script, self.stop, self.sent = script or {}, stop, []

    def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        self.sent.append(recipient)
        if self.stop is not None:
            self.stop.set()
        errors = self.script.get(recipient)
        if errors:
            raise errors.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def settings(home: Path):
    return load_settings(home, env={}, overrides={"secret_key": "loop-test-secret-key-0123456789", "from_address": "digest@example.org", "base_url": "https://digest.example.org"})


def deliver(settings, letters, claimer, transport, **kw) -> DeliveryReport:
    slept: list[float] = kw.pop("slept", [])
    return deliver_edition(letters, claimer=claimer, builder=InlineBuilder(settings, NOW), transport=transport, sender="digest@example.org",
                           stop_event=kw.pop("stop_event", threading.Event()), sleep=slept.append, **kw)


def test_deliver_edition_claims_before_sending_and_records_each_outcome(settings) -> None:
    letters = [letter(n) for n in range(3)]
    claimer, transport, done = Claimer(letters), Transport(), []
    report = deliver(settings, letters, claimer, transport, progress=done.append)
    assert (report.sent, report.failed, report.deferred, report.not_attempted, report.error) == (3, 0, 0, 0, None)
    assert transport.sent == ["reader0@example.org", "reader1@example.org", "reader2@example.org"]
    assert claimer.calls == [("claim", [1000, 1001, 1002]), ("claim", []), ("record", 1000, "sent"), ("record", 1001, "sent"), ("record", 1002, "sent"), ("release", [])]
    assert sum(done) == 3 and set(report.timings) == {"rank", "render", "build", "send"} and report.workers == 0


def test_deliver_edition_retries_a_4xx_then_gives_up_and_a_5xx_is_a_bounce(settings) -> None:
    letters = [letter(n) for n in range(3)]
    greylisted = [TransientDeliveryError("451 greylisted")]
    script = {"reader0@example.org": greylisted, "reader1@example.org": [TransientDeliveryError("451 busy")] * 3, "reader2@example.org": [PermanentDeliveryError("550 no such user")]}
    claimer, slept = Claimer(letters), []
    report = deliver(settings, letters, claimer, Transport(script), slept=slept)
    assert (report.sent, report.failed, report.deferred) == (1, 1, 1)
    assert slept == list(RETRY_DELAYS)
    states = [(o.letter.delivery_id, o.state, o.attempts, o.bounce) for o in claimer.recorded]
    assert states == [(1000, "deferred", 1, False), (1001, "deferred", 1, False), (1002, "failed", 1, True),
                      (1000, "sent", 1, False), (1001, "deferred", 1, False), (1001, "deferred", 1, False)]


def test_deliver_edition_a_server_that_cannot_be_used_ends_it_with_the_letters_released(settings) -> None:
    letters = [letter(n) for n in range(3)]
    claimer = Claimer(letters)
    report = deliver(settings, letters, claimer, Transport({"reader1@example.org": [DeliveryError("cannot connect to 127.0.0.1:1: connection refused")]}))
    assert isinstance(report.error, DeliveryError) and (report.sent, report.not_attempted) == (1, 2)
    assert [x.delivery_id for x in claimer.released] == [1001, 1002]  # the refused one was never handed over


def test_deliver_edition_server_down_after_failures_in_a_row(settings) -> None:
    letters = [letter(n) for n in range(SERVER_DOWN_AFTER + 2)]
    script = {x.subscriber.email: [TransientDeliveryError("421 try later")] for x in letters}
    claimer, slept = Claimer(letters), []
    report = deliver(settings, letters, claimer, Transport(script), slept=slept)
    assert isinstance(report.error, ServerDownError)
    assert (report.sent, report.deferred, report.not_attempted) == (0, SERVER_DOWN_AFTER, 2) and slept == []
    assert len(claimer.released) == 2


def test_deliver_edition_stop_finishes_the_message_in_flight_and_releases_the_rest(settings) -> None:
    letters = [letter(n) for n in range(4)]
    stop = threading.Event()
    claimer = Claimer(letters)
    report = deliver(settings, letters, claimer, Transport(stop=stop), stop_event=stop)
    assert (report.sent, report.not_attempted, report.stopped, report.error) == (1, 3, True, None)
    assert [x.delivery_id for x in claimer.released] == [1001, 1002, 1003]


class StopDuringPause(threading.Event):
    """A stop event on which the retry round's pause is a wait that SIGTERM ends: the request comes during it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.set()
        return True


def test_deliver_edition_stop_during_a_retry_pause_ends_it_at_once_with_nothing_more_sent(settings) -> None:
    # The daemon's SIGTERM came during the 30 s pause before a retry round: it waited the pause out (time.sleep), then
    # sent the round all the same, and only then stopped.
    letters = [letter(n) for n in range(2)]
    stop = StopDuringPause()
    claimer, transport = Claimer(letters), Transport({"reader0@example.org": [TransientDeliveryError("451 greylisted")] * 3})
    report = deliver_edition(letters, claimer=claimer, builder=InlineBuilder(settings, NOW), transport=transport, sender="digest@example.org", stop_event=stop)
    assert stop.waits == [RETRY_DELAYS[0]]  # the pause is a wait on the stop event, not a sleep
    assert transport.sent == ["reader0@example.org", "reader1@example.org"]  # no retry round after the stop
    assert (report.sent, report.deferred, report.stopped) == (1, 1, True)


def test_deliver_edition_a_claim_that_fails_is_the_error_and_nothing_is_left_held(settings, monkeypatch) -> None:
    monkeypatch.setattr("digest.delivery.loop.CHUNK", 2)
    letters = [letter(n) for n in range(5)]
    claimer = Claimer(letters, fail_claim_after=2)  # the first two claims work, the third meets a locked database
    report = deliver(settings, letters, claimer, Transport())
    assert report.error is not None and "locked" in str(report.error)
    # The first batch went out; the second, claimed ahead while it was sent, goes back; the fifth was never claimed.
    assert (report.sent, report.not_attempted) == (2, 3)
    assert [x.delivery_id for x in claimer.released] == [1002, 1003]


def test_deliver_edition_a_letter_that_cannot_be_built_is_its_failed_delivery_alone(settings) -> None:
    letters = [letter(n) for n in range(3)]
    broken = Letter(letters[1].delivery_id, Subscriber(id=1, email="not an address", name="X", token_version=1), "2025-06-13", "<x@example.org>", letters[1].result)
    letters[1] = broken
    claimer = Claimer(letters)
    report = deliver(settings, letters, claimer, Transport())
    assert (report.sent, report.failed) == (2, 1)
    failed = [o for o in claimer.recorded if o.state == "failed"]
    assert failed[0].attempts == 0 and "cannot send to 'not an address': An email address must have an @-sign" in failed[0].error and not failed[0].bounce


def test_builder_for_forks_only_for_a_big_edition_in_a_one_thread_process(settings, monkeypatch) -> None:
    assert isinstance(builder_for(settings, [letter(1)], NOW), InlineBuilder)
    monkeypatch.setattr("digest.delivery.build.POOL_FROM", 1)
    monkeypatch.setattr("digest.delivery.build.usable_cores", lambda: 2)
    blocker = threading.Event()
    thread = threading.Thread(target=blocker.wait)
    thread.start()
    try:  # another thread is alive (a daemon's scheduler): never fork
        assert isinstance(builder_for(settings, [letter(1)], NOW), InlineBuilder)
    finally:
        blocker.set()
        thread.join()



def test_forked_builder_pool_sleeps_while_messages_wait_in_its_result_pipe(settings, monkeypatch) -> None:
    """The stock Pool's worker-handler thread also woke on the result pipe, and so spun (taking the GIL) for as long
    as built messages waited there to be read: a quarter of the sending process's CPU on the send benchmark. Now it
    wakes only when the pool changes: once when the batch's tasks are all done, once when it is closed."""
    import multiprocessing.pool

    from digest.delivery.build import ForkedBuilder

    wakeups = []
    stock = multiprocessing.pool.Pool._wait_for_updates

    def counted(sentinels, change_notifier, timeout=None):  # noqa: ANN001, ANN202
        stock(sentinels, change_notifier, timeout)
        wakeups.append(threading.current_thread().name)

    monkeypatch.setattr(multiprocessing.pool.Pool, "_wait_for_updates", staticmethod(counted))
    letters = [letter(n) for n in range(400)]
    builder = ForkedBuilder(settings, letters, NOW, 2)
    try:
        built = list(builder.build(letters))
    finally:
        builder.close()
    assert [b.letter.delivery_id for b in built] == [x.delivery_id for x in letters]
    assert all(b.message is not None and b.problem is None for b in built)
    assert len(wakeups) <= 3, f"the worker handler woke {len(wakeups)} times building 400 letters"


def test_forked_builder_keeps_the_collector_frozen_until_close(settings):
    """The sending process's collector does not walk the edition's objects while it sends (they were frozen for the
    fork), and walks everything again once the builder is closed."""
    import gc

    from digest.delivery.build import ForkedBuilder

    assert gc.get_freeze_count() == 0
    letters = [letter(n) for n in range(20)]
    builder = ForkedBuilder(settings, letters, NOW, 2)
    try:
        assert gc.get_freeze_count() > 0
        assert all(b.message is not None for b in builder.build(letters))
    finally:
        builder.close()
    assert gc.get_freeze_count() == 0
