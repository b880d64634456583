"""Every SMTP connection from one I/O thread (digest.delivery.multiplex, behind senders.MultiplexedSender) against a
real aiosmtpd server on 127.0.0.1: many messages over a few connections, a 421, a drop mid-DATA, a server closing
idle connections, STARTTLS and implicit TLS with AUTH, refusals, send_rate, 8BITMIME or not, PIPELINING or not,
smtp_timeout. Each message's Handed is what hand_over over a blocking SMTPTransport gives in the same case."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from smtp_server import smtp_server, smtp_tls_server, start_smtp_server  # noqa: F401 - the fixtures
from test_delivery import build, make_settings, smtp_settings

from digest.delivery.message import seven_bit
from digest.delivery.multiplex import Multiplexer
from digest.delivery.senders import Handed, MultiplexedSender, ThreadedSender, hand_over
from digest.delivery.transport import Pace, SMTPTransport
from digest.delivery.work import Built, Letter
from digest.errors import DeliveryError
from digest.models import Subscriber


def letters(settings, count: int, *, size: int = 0) -> list[Built]:
    """`count` built messages to r000@example.org...; `size` pads the text part (large writes, TLS records)."""
    out = []
    for n in range(count):
        email = f"r{n:03d}@example.org"
        message = build(settings, to=email) if not size else build(settings, to=email, rendered=_padded(size))
        out.append(Built(Letter(n + 1, Subscriber(id=n + 1, email=email), "2024-05-02", f"<{n}@example.org>", None), message))
    return out


def _padded(size: int):
    from test_delivery import rendered

    line = "A line of the digest, with a period. And a caf\u00e9.\n"
    return rendered(text=line * (size // len(line)))


def send_all(settings, built: list[Built], connections: int, *, before: Callable[[int], None] = lambda n: None, threads: bool = False) -> list[Handed]:
    """The loop's pattern (digest.delivery.loop): submit while a connection is free, else collect; then drain.
    `before(n)` runs just before the n-th message is submitted (to program the server); `threads`: a ThreadedSender."""
    pace = Pace(settings.send_rate)
    sender = (ThreadedSender(lambda: SMTPTransport(settings, pace=pace), settings.from_address, connections) if threads
              else MultiplexedSender(lambda: SMTPTransport(settings), settings.from_address, connections, pace))
    handed: list[Handed] = []
    try:
        for n, one in enumerate(built):
            while sender.in_flight >= sender.connections:
                handed += sender.collect(wait=True)
            before(n)
            assert sender.in_flight < connections
            sender.submit(one)
        while sender.in_flight:
            handed += sender.collect(wait=True)
    finally:
        sender.close()
    assert sorted(h.built.letter.delivery_id for h in handed) == [b.letter.delivery_id for b in built]  # each once
    return handed


def states(handed: list[Handed]) -> dict[str, str]:
    return {h.built.letter.subscriber.email: (h.outcome.state if h.outcome else f"error: {h.error}") for h in handed}


@pytest.mark.parametrize("threads", [False, True], ids=["one-thread", "a-thread-each"])
def test_multiplexed_sender_many_messages_over_a_few_connections_each_once(tmp_path: Path, smtp_server, threads: bool) -> None:  # noqa: F811
    settings = smtp_settings(tmp_path, smtp_server)
    handed = send_all(settings, letters(settings, 120), 5, threads=threads)
    assert set(states(handed).values()) == {"sent"} and all(h.outcome and h.outcome.contents is None for h in handed)
    received = Counter(smtp_server.recipients())
    assert len(received) == 120 and set(received.values()) == {1}
    assert smtp_server.connections <= 5


def test_multiplexed_sender_large_messages_over_starttls_with_auth(tmp_path: Path, smtp_tls_server, monkeypatch) -> None:  # noqa: F811
    """400 KB messages: writes the kernel takes in parts, TLS records the selector never sees (pending())."""
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_server.cert_path))
    settings = smtp_settings(tmp_path, smtp_tls_server, smtp_security="starttls", smtp_user="user", smtp_password="secret-pass")
    built = letters(settings, 12, size=400_000)
    handed = send_all(settings, built, 3)
    assert set(states(handed).values()) == {"sent"}
    assert smtp_tls_server.logins == ["user"] * smtp_tls_server.connections and smtp_tls_server.connections <= 3
    assert sorted(m.data for m in smtp_tls_server.messages) == sorted(b.message for b in built)


def test_multiplexed_sender_over_implicit_tls(tmp_path: Path, tmp_path_factory, monkeypatch) -> None:
    with start_smtp_server(implicit_tls=True, cert_dir=tmp_path_factory.getbasetemp() / "smtp-cert") as server:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_path))
        settings = smtp_settings(tmp_path, server, smtp_security="tls")
        handed = send_all(settings, letters(settings, 20, size=100_000), 4)
    assert set(states(handed).values()) == {"sent"} and len(server.messages) == 20


def test_multiplexed_sender_a_421_closes_that_connection_and_defers_only_its_letter(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    smtp_server.rcpt_replies["r007@example.org"] = ["421 4.3.2 closing, try again"]
    settings = smtp_settings(tmp_path, smtp_server)
    handed = send_all(settings, letters(settings, 30), 3)
    assert {e: s for e, s in states(handed).items() if s != "sent"} == {"r007@example.org": "deferred"}
    [deferred] = [h for h in handed if h.outcome and h.outcome.state == "deferred"]
    assert "421 4.3.2 closing, try again" in (deferred.outcome.error or "")  # type: ignore[union-attr]
    # The closed connection is opened again when a message finds the other two busy (most runs, not all).
    assert len(smtp_server.messages) == 29 and smtp_server.connections in (3, 4)


@pytest.mark.parametrize("stored", [False, True], ids=["lost", "stored"])
@pytest.mark.parametrize("at", [0, 3], ids=["on-a-new-connection", "on-a-used-connection"])
def test_multiplexed_sender_a_drop_after_the_whole_message(tmp_path: Path, smtp_server, at: int, stored: bool) -> None:  # noqa: F811
    """SMTPTransport.send's rule: the whole message went and the connection dropped before its answer, so the server
    may have stored it ("stored") or not ("lost"), which the client cannot tell: deferred as unconfirmed, never sent
    again at once, on a new connection or a used one; the next message opens a new connection."""
    settings = smtp_settings(tmp_path, smtp_server)
    built = letters(settings, 5)

    def drop(n: int) -> None:
        if n == at:  # with one connection, the messages before it are answered
            if stored:
                smtp_server.drop_stored = 1
            else:
                smtp_server.drop_data = 1

    handed = send_all(settings, built, 1, before=drop)
    email = built[at].letter.subscriber.email
    assert states(handed) == {b.letter.subscriber.email: "deferred" if b is built[at] else "sent" for b in built}
    [dropped] = [h for h in handed if h.built is built[at]]
    assert dropped.outcome is not None and dropped.outcome.unconfirmed
    assert f"after the whole message to {email} was sent; it may have been accepted" in (dropped.outcome.error or "")
    assert smtp_server.connections == 2
    assert Counter(smtp_server.recipients()) == Counter(b.letter.subscriber.email for b in built if b is not built[at] or stored)


def test_multiplexed_sender_drops_after_whole_messages_among_many_connections(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    settings = smtp_settings(tmp_path, smtp_server)
    built = letters(settings, 40)

    def drop(n: int) -> None:
        if n == 20:
            smtp_server.drop_stored = 2

    handed = send_all(settings, built, 4, before=drop)
    # Two messages were stored and their answers lost: both deferred as unconfirmed, none sent twice, the rest sent.
    found = states(handed)
    deferred = {email for email, state in found.items() if state == "deferred"}
    assert len(deferred) == 2 and set(found.values()) == {"sent", "deferred"}, found
    assert Counter(smtp_server.recipients()) == Counter(b.letter.subscriber.email for b in built)
    assert smtp_server.connections >= 5


def test_multiplexed_sender_reopens_connections_the_server_closes_when_idle(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    smtp_server.max_per_connection = 2
    settings = smtp_settings(tmp_path, smtp_server)
    handed = send_all(settings, letters(settings, 5), 1)
    assert set(states(handed).values()) == {"sent"}
    assert smtp_server.recipients() == [f"r{n:03d}@example.org" for n in range(5)]
    assert smtp_server.connections == 3


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-command-at-a-time"])
def test_multiplexed_sender_maps_refusals_as_hand_over_does(tmp_path: Path, pipelining: bool) -> None:
    with start_smtp_server(pipelining=pipelining) as server:
        server.rcpt_replies["r001@example.org"] = "451 4.7.1 try later"
        server.rcpt_replies["r002@example.org"] = "550 5.1.1 no such user"
        settings = smtp_settings(tmp_path, server)
        built = letters(settings, 6)
        handed = send_all(settings, built, 1)
        assert server.connections == 1  # reset after each refusal, and reused
        with SMTPTransport(settings) as transport:  # the same letters, one blocking connection
            blocking = [hand_over(transport, b, settings.from_address) for b in built]
    assert states(handed) == {"r000@example.org": "sent", "r001@example.org": "deferred", "r002@example.org": "failed",
                              "r003@example.org": "sent", "r004@example.org": "sent", "r005@example.org": "sent"}
    assert sorted((h.built.letter.delivery_id, h.outcome) for h in handed) == [(h.built.letter.delivery_id, h.outcome) for h in blocking]  # type: ignore[type-var]
    [deferred] = [h for h in handed if h.built is built[1]]
    assert "451 4.7.1 try later" in (deferred.outcome.error or "")  # type: ignore[union-attr]


def test_multiplexed_sender_a_refused_data_is_permanent(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    smtp_server.data_reply = "554 5.6.0 message rejected"
    settings = smtp_settings(tmp_path, smtp_server)
    handed = send_all(settings, letters(settings, 3), 2)
    assert set(states(handed).values()) == {"failed"} and all("554" in (h.outcome.error or "") for h in handed if h.outcome)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
@pytest.mark.parametrize("eightbitmime", [True, False], ids=["8bitmime", "7bit-only-server"])
def test_multiplexed_sender_sends_8bit_only_to_a_server_that_offers_8bitmime(tmp_path: Path, pipelining: bool, eightbitmime: bool) -> None:
    with start_smtp_server(pipelining=pipelining, eightbitmime=eightbitmime) as server:
        settings = smtp_settings(tmp_path, server)
        built = letters(settings, 4)
        assert not built[0].message.isascii()  # type: ignore[union-attr]
        handed = send_all(settings, built, 2)
    assert set(states(handed).values()) == {"sent"}
    for message in server.messages:
        [original] = [b.message for b in built if b.letter.subscriber.email == message.rcpt_tos[0]]
        assert ("BODY=8BITMIME" in message.mail_options) == eightbitmime
        assert message.data == (original if eightbitmime else seven_bit(original))  # type: ignore[arg-type]


def test_multiplexed_sender_keeps_send_rate(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    settings = smtp_settings(tmp_path, smtp_server, send_rate=20)
    started = time.monotonic()
    handed = send_all(settings, letters(settings, 8), 4)
    assert set(states(handed).values()) == {"sent"}
    accepted = sorted(m.at for m in smtp_server.messages)
    assert accepted[-1] - started >= 7 * 0.05 - 0.01
    assert all(b - a >= 0.05 - 0.02 for a, b in zip(accepted, accepted[1:]))


@pytest.mark.parametrize("data_timeout", [600.0, 1.0], ids=["within-smtp_data_timeout", "past-smtp_data_timeout"])
def test_multiplexed_sender_waits_smtp_data_timeout_for_the_answer_to_a_whole_message(tmp_path: Path, smtp_server, data_timeout: float) -> None:  # noqa: F811
    """The answer to a whole message may come after smtp_timeout (a relay scanning it): it is waited for up to
    smtp_data_timeout; past that the message is unconfirmed (deferred, not resent)."""
    smtp_server.data_delay = 2.5
    settings = smtp_settings(tmp_path, smtp_server, smtp_timeout=1, smtp_data_timeout=data_timeout)
    started = time.monotonic()
    handed = send_all(settings, letters(settings, 2), 2)
    took = time.monotonic() - started
    if data_timeout > 2.5:
        assert set(states(handed).values()) == {"sent"} and took >= 2.5
    else:
        assert took < 2.4
        assert set(states(handed).values()) == {"deferred"}
        assert all(h.outcome is not None and h.outcome.unconfirmed and "gave no answer within smtp_data_timeout (1s)" in (h.outcome.error or "") for h in handed)
    assert smtp_server.connections == 2


def test_multiplexed_sender_a_command_answered_later_than_smtp_timeout_defers_the_message(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    """Before the message has gone, smtp_timeout applies: a server slow to answer MAIL, RCPT and DATA."""
    smtp_server.rcpt_delay = 1.5
    settings = smtp_settings(tmp_path, smtp_server, smtp_timeout=1)
    handed = send_all(settings, letters(settings, 2), 2)
    assert set(states(handed).values()) == {"deferred"}
    assert all(h.outcome is not None and not h.outcome.unconfirmed and "dropped the connection while sending to r00" in (h.outcome.error or "") and "timed out" in (h.outcome.error or "") for h in handed)
    assert smtp_server.recipients() == []


def test_multiplexed_sender_a_refused_connection_is_each_message_s_error(tmp_path: Path) -> None:
    with start_smtp_server() as server:
        port = server.port
    settings = make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_timeout=5)
    handed = send_all(settings, letters(settings, 5), 2)
    assert all(h.outcome is None and isinstance(h.error, DeliveryError) and "connection refused" in str(h.error) for h in handed)


@pytest.mark.parametrize("repace", [True, False], ids=["new-slots", "old-slots"])
def test_multiplexer_messages_whose_slots_passed_in_a_stall_take_new_ones(tmp_path: Path, repace: bool) -> None:
    """The I/O thread stalls for half a second (here: the first message's report blocks it, as GC or a busy host
    would) while nine messages' slots, 50 ms apart, pass. Given the pace, they go 50 ms apart after it; without it,
    all nine at once (what the relay would have seen before: a burst after every stall). The sink stamps a message
    when it reads it: a sink that stalled itself (the test process descheduled on a loaded host; CI saw a 1 ms gap)
    stamps two messages together however far apart they came, so a short gap counts only where it did not stall."""
    with start_smtp_server(watch_stalls=True) as sink:
        _stall_and_send(tmp_path, sink, repace)


def _stall_and_send(tmp_path: Path, sink, repace: bool) -> None:
    settings = smtp_settings(tmp_path, sink, send_rate=20)
    pace = Pace(settings.send_rate)
    reports: list[BaseException | None] = []

    def finished(token: int, error: BaseException | None, seconds: float) -> None:
        if not reports:
            time.sleep(0.5)
        reports.append(error)

    mux: Multiplexer[int] = Multiplexer(lambda: SMTPTransport(settings), 4, finished, pace=pace if repace else None)
    try:
        for n, one in enumerate(letters(settings, 10)):
            assert one.message is not None
            mux.submit(n, one.message, sender=settings.from_address, recipient=one.letter.subscriber.email, delay=pace.wait())
    finally:
        mux.close()
    assert reports == [None] * 10
    accepted = sorted(m.at for m in sink.messages)
    gaps = [round(b - a, 3) for a, b in zip(accepted[1:], accepted[2:])]  # the nine after the stall
    if repace:
        sink_stalled = [any(a - 0.05 <= end <= b + 0.02 for end, _ in sink.stalls) for a, b in zip(accepted[1:], accepted[2:])]
        assert all(gap >= 0.05 - 0.02 or stalled for gap, stalled in zip(gaps, sink_stalled)), (gaps, sink.stalls)
        assert sum(gap >= 0.05 - 0.02 for gap in gaps) >= 4, (gaps, sink.stalls)  # and most are measured as paced
    else:
        assert sum(gap < 0.025 for gap in gaps) >= 5, gaps
