"""digest.store.subscribers on a real SQLite file and, when available, PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.errors import InputError, NotFoundError
from digest.models import Delivery, Feedback, Paper, PendingProfile, SentPaper, Subscriber
from digest.store import session_scope
from digest.store.subscribers import (
    SubscriberInput,
    add_subscriber,
    bump_token_version,
    confirm_subscriber,
    export_csv,
    feedback_for,
    get_subscriber,
    import_csv,
    list_subscribers,
    pending_profile,
    record_feedback,
    remove_feedback,
    remove_subscriber,
    request_confirmation,
    resolve_papers,
    set_status,
    spend_token,
    subscribe_pending,
    token_used,
    update_subscriber,
    validate_email,
    validate_profile,
)

NOW = datetime(2025, 3, 10, 6, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(hours=1)


def add_papers(session: Session) -> dict[str, Paper]:
    """A few stored papers: two arXiv, one with a DOI only, one imported from JSON Lines."""
    rows = {
        "sae": Paper(key="arxiv:2406.04093", ident="2406.04093v2", arxiv_id="2406.04093", version=2, title="Scaling sparse autoencoders"),
        "probe": Paper(key="arxiv:2401.00001", ident="2401.00001", arxiv_id="2401.00001", version=1, title="Linear probes"),
        "doi": Paper(key="doi:10.1234/abc.def", ident="10.1234/abc.def", doi="10.1234/abc.def", title="A journal paper"),
        "jsonl": Paper(key="title:an imported paper", ident="s001", title="An imported paper"),
    }
    for paper in rows.values():
        paper.first_seen = paper.last_seen = NOW
        session.add(paper)
    session.flush()
    return rows


@pytest.fixture
def papers(engine) -> dict[str, Paper]:
    with session_scope(engine) as session:
        return add_papers(session)


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# --- validation (pure) ------------------------------------------------------------------------------


def test_validate_email_lower_cases_and_strips():
    assert validate_email("  Ada@Example.ORG ") == "ada@example.org"


def test_validate_email_gives_an_address_mail_can_be_sent_to():
    # digest sends without SMTPUTF8: an internationalised domain is stored in its ASCII (IDNA) form,
    # a non-ASCII local part is refused at once instead of failing every send.
    assert validate_email("Carol@Exämple.org") == "carol@xn--exmple-cua.org"
    with pytest.raises(InputError, match="invalid email address 'cärol@example.org': "):
        validate_email("cärol@example.org")


@pytest.mark.parametrize("address", ["not-an-email", "a@b", "ada@@example.org", "", "ada@example.test"],
                         ids=["no-at-sign", "no-dot-in-domain", "two-at-signs", "empty", "reserved-domain"])
def test_validate_email_rejects_invalid(address):
    with pytest.raises(InputError, match=f"invalid email address {address!r}: "):
        validate_email(address)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("send_at", "25:00", "'25:00' is not HH:MM"),
        ("send_at", "7.30", "'7.30' is not HH:MM"),
        ("send_at", "07:30:00", "'07:30:00' is not HH:MM"),
        ("tz", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("tz", "", "unknown time zone ''"),
        ("frequency", "monthly", "'monthly' is not daily or weekly:mon ... weekly:sun"),
        ("frequency", "weekly:xyz", "'weekly:xyz' is not daily"),
        ("categories", ["machine learning"], "'machine learning' is not an arXiv category"),
        ("categories", ["cs.LG", "cs.XY"], "'cs.XY' is not an arXiv category"),
        ("max_papers", 0, "0 is not between 1 and 100"),
        ("max_papers", "101", "101 is not between 1 and 100"),
        ("max_papers", "ten", "'ten' is not a whole number"),
        ("trending_weight", -0.1, "-0.1 is not between 0 and 1"),
        ("trending_weight", "1.5", "'1.5' is not between 0 and 1"),
        ("trending_weight", "nan", "'nan' is not between 0 and 1"),
        ("trending_weight", "lots", "'lots' is not a number"),
    ],
    ids=["send-at-hour-25", "send-at-dot", "send-at-seconds", "tz-unknown", "tz-empty", "frequency-monthly",
         "frequency-bad-weekday", "category-name", "category-unknown", "max-papers-zero", "max-papers-101", "max-papers-word", "weight-negative",
         "weight-above-one", "weight-nan", "weight-word"],
)
def test_validate_profile_names_field_and_value(field, value, reason):
    with pytest.raises(InputError) as caught:
        validate_profile(SubscriberInput(**{field: value}))
    assert str(caught.value).startswith(f"{field}: ")
    assert reason in str(caught.value)


def test_validate_profile_normalises_values():
    fields = validate_profile(SubscriberInput(
        name="  Ada   Lovelace ", interests=["sparse  autoencoders", "probing; Sparse autoencoders", " "],
        max_papers="8", trending_weight="0.5", send_at="7:30", tz="Europe/London", frequency="Weekly:Mon",
    ))
    assert (fields.name, fields.interests) == ("Ada Lovelace", ["sparse autoencoders", "probing"])
    assert (fields.max_papers, fields.trending_weight, fields.send_at, fields.frequency) == (8, 0.5, "07:30", "weekly:mon")
    assert validate_profile(SubscriberInput()) == SubscriberInput()


# --- add / get / list / update / status ---------------------------------------------------------------


def test_add_subscriber_is_active_with_defaults(engine):
    with session_scope(engine) as session:
        add_subscriber(session, "Ada@Example.org", SubscriberInput(name="Ada", interests=["sparse autoencoders"]), now=NOW)
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert (sub.email, sub.name, sub.status, sub.interests) == ("ada@example.org", "Ada", "active", ["sparse autoencoders"])
        assert (sub.max_papers, sub.trending_weight, sub.send_at, sub.tz, sub.frequency) == (10, 0.2, "07:00", "UTC", "daily")
        assert sub.created_at == sub.confirmed_at == NOW and sub.unsubscribed_at is None


def test_add_subscriber_rejects_duplicate_in_any_case(engine):
    with session_scope(engine) as session:
        add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
    with pytest.raises(InputError, match="ada@example.org is already subscribed"):
        with session_scope(engine) as session:
            add_subscriber(session, "ADA@example.ORG", SubscriberInput(), now=NOW)
    assert count(engine, Subscriber) == 1


def test_add_subscriber_invalid_profile_writes_nothing(engine):
    with pytest.raises(InputError, match="tz: unknown time zone 'Mars/Base'"):
        with session_scope(engine) as session:
            add_subscriber(session, "ada@example.org", SubscriberInput(tz="Mars/Base"), now=NOW)
    assert count(engine, Subscriber) == 0


def test_get_subscriber_by_address_in_any_case_or_id(engine):
    with session_scope(engine) as session:
        sub_id = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW).id
    with session_scope(engine) as session:
        assert get_subscriber(session, " Ada@Example.org").id == sub_id
        assert get_subscriber(session, sub_id).email == get_subscriber(session, str(sub_id)).email == "ada@example.org"
        with pytest.raises(NotFoundError, match="no subscriber bob@example.org"):
            get_subscriber(session, "bob@example.org")


def test_get_subscriber_by_an_internationalised_domain_in_either_form(engine):
    with session_scope(engine) as session:
        sub_id = add_subscriber(session, "carol@exämple.org", SubscriberInput(), now=NOW).id
    with session_scope(engine) as session:
        assert get_subscriber(session, "Carol@Exämple.org").id == get_subscriber(session, "carol@xn--exmple-cua.org").id == sub_id


def test_list_subscribers_orders_by_address_and_filters_status(engine):
    with session_scope(engine) as session:
        for address in ("carol@example.org", "ada@example.org", "bob@example.org"):
            add_subscriber(session, address, SubscriberInput(), now=NOW)
        set_status(session, get_subscriber(session, "bob@example.org"), "paused", NOW)
    with session_scope(engine) as session:
        assert [s.email for s in list_subscribers(session)] == ["ada@example.org", "bob@example.org", "carol@example.org"]
        assert [s.email for s in list_subscribers(session, "paused")] == ["bob@example.org"]
        with pytest.raises(InputError, match="status: 'gone' is not one of"):
            list_subscribers(session, "gone")


def test_update_subscriber_changes_given_fields_only(engine):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(name="Ada", interests=["probing", "sparse autoencoders"], tz="Europe/London"), now=NOW)
        update_subscriber(session, sub, SubscriberInput(max_papers=5), add_interests=["steering"], remove_interests=["PROBING"], now=LATER)
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert (sub.name, sub.tz, sub.max_papers, sub.interests) == ("Ada", "Europe/London", 5, ["sparse autoencoders", "steering"])


@pytest.mark.parametrize(("fields", "add", "remove", "stamped"), [
    (SubscriberInput(interests=["probing", " sparse  autoencoders"], seed_papers=["2401.00001"]), (), (), False),
    (SubscriberInput(), ["PROBING"], (), False),
    (SubscriberInput(seed_papers=["arXiv:2401.00001"]), (), (), False),
    (SubscriberInput(max_papers="10", trending_weight="0.2", categories=[]), (), (), False),
    (SubscriberInput(name="Ada L.", send_at="08:30", tz="Europe/London", frequency="weekly:mon"), (), (), False),
    (SubscriberInput(interests=["probing"]), (), (), True),
    (SubscriberInput(), ["steering"], (), True),
    (SubscriberInput(), (), ["probing"], True),
    (SubscriberInput(seed_papers=["2406.04093"]), (), (), True),
    (SubscriberInput(max_papers=5), (), (), True),
    (SubscriberInput(muted_terms=["survey"]), (), (), True),
], ids=["same-lists-written-otherwise", "adding-one-it-has", "same-seed-as-arxiv-id", "same-numbers-as-text",
        "name-and-schedule", "interests", "added-interest", "removed-interest", "seeds", "max-papers", "muted-terms"])
def test_update_subscriber_stamps_profile_changed_at_only_when_the_ranking_profile_changes(engine, fields, add, remove, stamped):
    """A save that changes nothing the ranking reads left profile_changed_at moved all the same (a prune then read
    the seed list again); the fields are saved either way."""
    with session_scope(engine) as session:
        add_papers(session)
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(name="Ada", interests=["probing", "sparse autoencoders"],
                                                                         seed_papers=["2401.00001"]), now=NOW)
    with session_scope(engine) as session:
        sub = update_subscriber(session, get_subscriber(session, "ada@example.org"), fields, add, remove, now=LATER)
        saved = {name: getattr(sub, name) for name in ("name", "send_at", "tz", "frequency")}
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert sub.profile_changed_at == (LATER if stamped else NOW)
        assert saved == {name: getattr(sub, name) for name in saved}
        assert fields.name is None or (sub.name, sub.send_at, sub.frequency) == ("Ada L.", "08:30", "weekly:mon")


def test_update_subscriber_removing_unknown_interest_names_it(engine):
    with pytest.raises(InputError, match="interests: 'cooking' is not one of ada@example.org's interests"):
        with session_scope(engine) as session:
            sub = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["probing"]), now=NOW)
            update_subscriber(session, sub, SubscriberInput(), remove_interests=["cooking"], now=NOW)


def test_set_status_keeps_timestamps_true(engine):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
        set_status(session, sub, "unsubscribed", NOW)
        set_status(session, sub, "unsubscribed", LATER)  # twice is fine; the first time is kept
        assert sub.unsubscribed_at == NOW
        with pytest.raises(InputError, match="ada@example.org is unsubscribed: only an active subscriber can be paused"):
            set_status(session, sub, "paused", LATER)
        set_status(session, sub, "active", LATER)
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert (sub.status, sub.unsubscribed_at, sub.confirmed_at) == ("active", None, NOW)


# --- papers a profile refers to ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ident, which",
    [("2406.04093", "sae"), ("2406.04093v1", "sae"), ("arXiv:2406.04093v2", "sae"), ("https://arxiv.org/abs/2406.04093", "sae"),
     ("10.1234/ABC.def", "doi"), ("https://doi.org/10.1234/abc.def", "doi"), ("s001", "jsonl")],
    ids=["arxiv-bare", "arxiv-other-version", "arxiv-prefix", "arxiv-url", "doi-upper-case", "doi-url", "imported-id"],
)
def test_resolve_papers_finds_each_kind_of_ident(engine, papers, ident, which):
    with session_scope(engine) as session:
        assert [p.id for p in resolve_papers(session, [ident])] == [papers[which].id]


def test_resolve_papers_unknown_ident_names_it(engine, papers):
    with session_scope(engine) as session:
        with pytest.raises(NotFoundError, match="no paper '2499.99999' in the store"):
            resolve_papers(session, ["2406.04093", "2499.99999"])


def test_add_subscriber_keeps_seed_papers_normalised(engine, papers):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(seed_papers=["arXiv:2406.04093v2", "https://doi.org/10.1234/ABC.def"]), now=NOW)
        assert sub.seed_papers == ["2406.04093v2", "10.1234/abc.def"]
        assert [p.id for p in resolve_papers(session, sub.seed_papers)] == [papers["sae"].id, papers["doi"].id]
        # Links to the same paper elsewhere name it too (they were "no paper ... in the store").
        links = ["https://huggingface.co/papers/2406.04093", "https://arxiv.org/html/2406.04093v2", "https://www.alphaxiv.org/abs/2406.04093"]
        assert [p.id for p in resolve_papers(session, links)] == [papers["sae"].id] * 3
    with pytest.raises(InputError, match="seed_papers: no paper '2499.99999' in the store"):
        with session_scope(engine) as session:
            add_subscriber(session, "bob@example.org", SubscriberInput(seed_papers=["2499.99999"]), now=NOW)
    assert count(engine, Subscriber) == 1


# --- feedback and removal -------------------------------------------------------------------------------


def test_record_feedback_keeps_one_row_per_paper(engine, papers):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
        record_feedback(session, sub, papers["sae"], 1, NOW)
        record_feedback(session, sub, papers["probe"], 1, NOW)
        record_feedback(session, sub, papers["sae"], -1, LATER)
        record_feedback(session, sub, papers["doi"], -1, LATER)
    with session_scope(engine) as session:
        liked, disliked = feedback_for(session, get_subscriber(session, "ada@example.org"))
        assert [p.id for p in liked] == [papers["probe"].id]
        assert {p.id for p in disliked} == {papers["sae"].id, papers["doi"].id}
    assert count(engine, Feedback) == 3


def test_record_feedback_rejects_other_values(engine, papers):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
        with pytest.raises(InputError, match="feedback value 2 is not"):
            record_feedback(session, sub, papers["sae"], 2, NOW)


def test_remove_feedback_forgets_the_opinion(engine, papers):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
        record_feedback(session, sub, papers["sae"], 1, NOW)
        assert remove_feedback(session, sub, papers["sae"]) is True
        assert remove_feedback(session, sub, papers["sae"]) is False
        assert feedback_for(session, sub) == ([], [])


def test_remove_subscriber_deletes_their_personal_data(engine, papers):
    with session_scope(engine) as session:
        ada = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
        bob = add_subscriber(session, "bob@example.org", SubscriberInput(), now=NOW)
        for sub in (ada, bob):
            record_feedback(session, sub, papers["sae"], 1, NOW)
            delivery = Delivery(subscriber_id=sub.id, edition="2025-03-10", state="sent", papers=[papers["sae"].id], created_at=NOW)
            session.add(delivery)
            session.flush()
            session.add(SentPaper(subscriber_id=sub.id, paper_id=papers["sae"].id, delivery_id=delivery.id, sent_at=NOW))
    with session_scope(engine) as session:
        remove_subscriber(session, get_subscriber(session, "ada@example.org"))
    with Session(engine) as session:
        for table in (Feedback, Delivery, SentPaper):
            assert [row.subscriber_id for row in session.exec(select(table))] == [bob.id], table.__name__
        assert [s.email for s in session.exec(select(Subscriber))] == ["bob@example.org"]
    assert count(engine, Paper) == 4


# --- double opt-in ---------------------------------------------------------------------------------------


def test_subscribe_pending_creates_pending_then_keeps_each_request_apart(engine):
    with session_scope(engine) as session:
        first = subscribe_pending(session, "Ada@example.org", SubscriberInput(interests=["probing"]), NOW)
        sub = first.subscriber
        assert (sub.status, sub.confirmed_at, sub.interests) == ("pending", None, ["probing"])
        again = subscribe_pending(session, "ada@example.org", SubscriberInput(interests=["steering"]), LATER)
        assert (again.subscriber.id, again.subscriber.interests) == (sub.id, ["probing"])  # a request changes no stored profile
        assert first.request != again.request
        assert pending_profile(session, sub, first.request).interests == ["probing"]
        assert pending_profile(session, sub, again.request).interests == ["steering"]
    assert count(engine, Subscriber) == 1


@pytest.mark.parametrize("status", ["active", "paused", "unsubscribed", "bounced"])
def test_subscribe_pending_on_existing_subscriber_changes_nothing_until_confirmed(engine, status):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["probing"]), now=NOW)
        sub.status = status
        asked = subscribe_pending(session, "ada@example.org", SubscriberInput(interests=["steering"], tz="Asia/Tokyo"), LATER)
        assert (asked.subscriber.id, asked.subscriber.status, asked.subscriber.interests, asked.subscriber.tz) == (sub.id, status, ["probing"], "UTC")
        assert (asked.request is None) == (status in ("active", "paused"))  # nothing to apply to an active subscriber
        confirm_subscriber(session, sub, LATER, asked.request)
        expected = ("active", ["steering"], "Asia/Tokyo") if asked.request else (status, ["probing"], "UTC")
        assert (sub.status, sub.interests, sub.tz) == expected
    assert count(engine, Subscriber) == 1


def test_confirm_subscriber_applies_only_its_own_request(engine):
    with session_scope(engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["probing"]), status="unsubscribed", now=NOW)
        mine = subscribe_pending(session, "ada@example.org", SubscriberInput(interests=["steering"]), NOW).request
        theirs = subscribe_pending(session, "ada@example.org", SubscriberInput(interests=["cheap watches"]), LATER).request
        other = add_subscriber(session, "bob@example.org", SubscriberInput(), status="unsubscribed", now=NOW)
        with pytest.raises(NotFoundError):
            confirm_subscriber(session, other, LATER, mine)  # a request of another subscriber
        confirm_subscriber(session, sub, LATER, mine)
        assert (sub.status, sub.interests) == ("active", ["steering"])
        with pytest.raises(NotFoundError):
            pending_profile(session, sub, theirs)  # the later request is forgotten with the confirmation
        assert count(engine, PendingProfile) == 0


CAPS = {"interval": 600, "daily_limit": 3}  # the defaults: one per 10 minutes, 3 a day


def ask(engine, at: datetime, email: str = "ada@example.org", interests: tuple[str, ...] = ("probing",), **caps) -> Subscriber | None:
    """One subscribe request in its own transaction, as the web page makes it: the subscriber to send to, or None."""
    with session_scope(engine) as session:
        asked = request_confirmation(session, email, SubscriberInput(interests=list(interests)), at, **{**CAPS, **caps})
        return asked.subscriber if asked is not None else None


@pytest.mark.parametrize(
    "minutes, allowed",
    [(0, True), (5, False), (11, True), (22, True), (33, False), (23 * 60 + 59, False), (24 * 60 + 1, True)],
    ids=["first", "within-10-min", "second", "third", "fourth-in-24h", "still-3-in-the-last-24h", "first-left-the-24h"],
)
def test_request_confirmation_caps_per_address(engine, minutes, allowed):
    # Each case replays the requests before it: at 0, 11 and 22 minutes three emails go out.
    steps = [0, 5, 11, 22, 33, 23 * 60 + 59, 24 * 60 + 1]
    results = [ask(engine, NOW + timedelta(minutes=m)) is not None for m in steps[: steps.index(minutes) + 1]]
    assert results[-1] is allowed
    assert count(engine, Subscriber) == 1  # every request reused the one pending row


def test_request_confirmation_refused_changes_nothing(engine):
    first = ask(engine, NOW, interests=("probing",))
    assert ask(engine, NOW + timedelta(minutes=1), interests=("stranger's words",)) is None
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert (sub.id, sub.status, sub.interests) == (first.id, "pending", ["probing"])
        assert sub.confirm_emails == [NOW.isoformat()]


def test_request_confirmation_settings_change_the_caps(engine):
    assert [ask(engine, NOW + timedelta(seconds=s), interval=0, daily_limit=5) is not None for s in range(7)] == [True] * 5 + [False] * 2


def test_release_confirmation_gives_the_slot_back(engine):
    from digest.store.caps import release_confirmation

    assert ask(engine, NOW) is not None
    assert ask(engine, NOW + timedelta(seconds=1)) is None
    with session_scope(engine) as session:
        release_confirmation(session, "Ada+Again@example.org", NOW)  # the email could not be sent; the same inbox
    assert ask(engine, NOW + timedelta(seconds=2)) is not None


def test_request_confirmation_caps_per_inbox_and_keeps_nothing_of_a_capped_address(engine):
    """ada+1@, ada+2@, ADA@ and, at Gmail, a.d.a@ reach one inbox: one count in the database for all of them (the web
    kept it in each process's memory unless Redis was set, and the store counted each address apart), and an address
    refused by its inbox's cap gets no subscriber row."""
    assert ask(engine, NOW, "ada+1@example.org") is not None
    assert [ask(engine, NOW + timedelta(minutes=1), a) for a in ("ada+2@example.org", "ADA@example.org", "ada@example.org")] == [None] * 3
    assert ask(engine, NOW + timedelta(minutes=1), "bob@example.org") is not None  # another inbox
    assert ask(engine, NOW + timedelta(minutes=11), "ada+3@example.org") is not None  # the interval passed
    assert ask(engine, NOW, "a.d.a@gmail.com") is not None and ask(engine, NOW + timedelta(minutes=1), "ada+x@googlemail.com") is None
    with session_scope(engine) as session:
        assert sorted(s.email for s in list_subscribers(session)) == ["a.d.a@gmail.com", "ada+1@example.org", "ada+3@example.org", "bob@example.org"]
        assert len(get_subscriber(session, "ada+1@example.org").confirm_emails) == 1  # each address records its own
    with engine.connect() as conn:
        rows = dict(conn.exec_driver_sql("SELECT inbox, emails FROM confirm_inbox").all())
    assert set(rows) == {"ada@example.org", "bob@example.org", "ada@gmail.com"}


def test_request_confirmation_concurrent_requests_for_one_inbox_pass_once(engine):
    """Twelve requests at the same moment for twelve +tags of one inbox, each in its own transaction and connection:
    one email, one subscriber row. The UNIQUE inbox (its first count) decides, on SQLite and PostgreSQL."""
    results = race(12, lambda i: ask(engine, NOW, f"ada+{i}@example.org"))
    assert sum(r is not None for r in results) == 1
    assert count(engine, Subscriber) == 1


def race(n: int, call) -> list:
    """`call(i)` for i in range(n), each in its own thread, all let go at once; their results (none may raise)."""
    import threading

    start, results, errors = threading.Barrier(n), [], []

    def one(i: int) -> None:
        start.wait()
        try:
            results.append(call(i))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == n
    return results


@pytest.mark.parametrize("existing", [False, True], ids=["new-address", "pending-address"])
def test_request_confirmation_concurrent_requests_pass_once(engine, existing):
    """Twelve requests for one address at the same moment, each in its own transaction and connection:
    one row, one email. The UNIQUE email (a new address) and the cap's compare-and-set (a pending one,
    whose last email left the 24 hours) decide, on SQLite and PostgreSQL."""
    if existing:
        assert ask(engine, NOW - timedelta(days=2)) is not None
    results = race(12, lambda i: ask(engine, NOW, interests=(f"topic {i}",)))
    assert sum(r is not None for r in results) == 1
    assert count(engine, Subscriber) == 1
    with session_scope(engine) as session:
        assert len(get_subscriber(session, "ada@example.org").confirm_emails) == 1


def test_confirmation_caps_migration_upgrades_a_database_in_place(db_url):
    """A database at the revision before 0003, with a pending subscriber in it, upgrades in place (and back)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from digest.store import _alembic_config, init_db, open_engine

    engine = open_engine(db_url)
    config = _alembic_config(engine)
    previous = ScriptDirectory.from_config(config).get_revision("0003").down_revision
    command.upgrade(config, previous)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO subscriber (email, name, status, interests, seed_papers, muted_terms, muted_authors, categories, max_papers,"
            " trending_weight, send_at, tz, frequency, consecutive_bounces, token_version, created_at)"
            " VALUES ('ada@example.org', 'Ada', 'pending', '[\"probing\"]', '[]', '[]', '[]', '[]', 10, 0.2, '07:00', 'UTC', 'daily', 0, 7,"
            " '2025-03-10 06:00:00')"))
    init_db(engine)
    with session_scope(engine) as session:
        sub = get_subscriber(session, "ada@example.org")
        assert (sub.name, sub.status, sub.interests, sub.token_version) == ("Ada", "pending", ["probing"], 7)
        assert (sub.confirm_emails, sub.confirm_version) == ([], 0)
    assert ask(engine, NOW) is not None and ask(engine, NOW + timedelta(minutes=1)) is None
    command.downgrade(config, previous)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT email, interests FROM subscriber")).one()[0] == "ada@example.org"
    engine.dispose()


def test_confirm_subscriber_activates_once_and_revokes_the_link(engine):
    with session_scope(engine) as session:
        asked = subscribe_pending(session, "ada@example.org", SubscriberInput(), NOW)
        sub, version = asked.subscriber, asked.subscriber.token_version
        confirm_subscriber(session, sub, LATER, asked.request)
        assert (sub.status, sub.confirmed_at, sub.token_version) == ("active", LATER, version + 1)
        confirm_subscriber(session, sub, LATER + timedelta(hours=1))
        assert (sub.confirmed_at, sub.token_version) == (LATER, version + 1)
        assert bump_token_version(session, sub) == version + 2
    with session_scope(engine) as session:
        assert get_subscriber(session, "ada@example.org").token_version == version + 2


# --- CSV -------------------------------------------------------------------------------------------------

GOOD_CSV = """email,name,interests,max_papers,tz
ada@example.org,Ada,sparse autoencoders;probing,8,Europe/London
Bob@Example.org,"Bob, Jr.",,,
"""


def test_import_csv_adds_active_subscribers_then_updates_them(engine):
    with session_scope(engine) as session:
        import_csv(session, GOOD_CSV, NOW)
    with session_scope(engine) as session:
        ada, bob = list_subscribers(session)
        assert (ada.name, ada.interests, ada.max_papers, ada.tz, ada.status) == ("Ada", ["sparse autoencoders", "probing"], 8, "Europe/London", "active")
        assert (bob.email, bob.name, bob.max_papers, bob.tz) == ("bob@example.org", "Bob, Jr.", 10, "UTC")
        report = import_csv(session, "email,max_papers\nADA@example.org,3\ncarol@example.org,4\n", LATER)
        assert (report.added, report.updated, report.unchanged) == (1, 1, 0)
        assert get_subscriber(session, "ada@example.org").interests == ["sparse autoencoders", "probing"]  # column left out: unchanged
        assert get_subscriber(session, "ada@example.org").max_papers == 3


def test_import_csv_reports_counts(engine):
    with session_scope(engine) as session:
        report = import_csv(session, GOOD_CSV, NOW)
    assert (report.added, report.updated, report.unchanged) == (2, 0, 0)


def test_import_csv_again_changes_nothing_and_says_so(engine):
    """Re-importing a file counts its rows as unchanged and leaves profile_changed_at alone (a prune reads again the
    seed lists changed since it started); a row whose profile changes is updated and stamped, a status alone is not a
    profile change."""
    with session_scope(engine) as session:
        import_csv(session, GOOD_CSV, NOW)
    with session_scope(engine) as session:
        report = import_csv(session, GOOD_CSV.replace("Bob@Example.org", "BOB@example.org"), LATER)
        assert (report.added, report.updated, report.unchanged) == (0, 0, 2)
        assert [s.profile_changed_at for s in list_subscribers(session)] == [NOW, NOW]
    with session_scope(engine) as session:
        report = import_csv(session, "email,max_papers,status\nada@example.org,9,\nbob@example.org,,paused\n", LATER)
        assert (report.added, report.updated, report.unchanged) == (0, 2, 0)
        ada, bob = list_subscribers(session)
        assert (ada.max_papers, ada.profile_changed_at) == (9, LATER)
        assert (bob.status, bob.profile_changed_at) == ("paused", NOW)


@pytest.mark.parametrize(
    "line3, column, reason",
    [
        ("carol@example.org,Carol,,Mars/Base,", "tz", "unknown time zone 'Mars/Base'"),
        ("carol@@example.org,Carol,,,", "email", "invalid email address 'carol@@example.org'"),
        ("ADA@example.org,Ada again,,,", "email", "ada@example.org is already on line 2"),
        (",Nobody,,,", "email", "missing"),
        ("carol@example.org,Carol,0,,", "max_papers", "0 is not between 1 and 100"),
        ("carol@example.org,Carol,,,2499.99999", "seed_papers", "no paper '2499.99999' in the store"),
        ("carol@example.org,Carol,,,,extra", None, "more cells than columns"),
    ],
    ids=["bad-tz", "bad-email", "duplicate-address", "missing-email", "max-papers-zero", "unknown-seed-paper", "extra-cell"],
)
def test_import_csv_bad_line_writes_nothing(engine, tmp_path, line3, column, reason):
    path = tmp_path / "people.csv"
    path.write_text(f"email,name,max_papers,tz,seed_papers\nada@example.org,Ada,5,UTC,\n{line3}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        with session_scope(engine) as session:
            import_csv(session, path, NOW)
    where = f"{path} line 3, column {column}: " if column else f"{path} line 3: "
    assert str(caught.value).startswith(where)
    assert reason in str(caught.value)
    assert count(engine, Subscriber) == 0


def test_import_csv_counts_lines_of_multi_line_cells(engine):
    text = 'email,name\nada@example.org,"Ada\nLovelace"\nbob@example.org,Bob\ncarol@example,Carol\n'
    with pytest.raises(InputError, match="^CSV line 5, column email: "):
        with session_scope(engine) as session:
            import_csv(session, text, NOW)


@pytest.mark.parametrize("header, message", [("email,colour", "line 1: unknown column 'colour'"), ("name,tz", "line 1: no 'email' column")],
                         ids=["unknown-column", "no-email-column"])
def test_import_csv_rejects_bad_header(engine, header, message):
    with pytest.raises(InputError, match=message):
        with session_scope(engine) as session:
            import_csv(session, f"{header}\nada@example.org,x\n", NOW)


def test_import_csv_never_resubscribes_without_a_status(engine):
    with session_scope(engine) as session:
        set_status(session, add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW), "unsubscribed", NOW)
        import_csv(session, "email,name,status\nada@example.org,Ada,\nbob@example.org,Bob,paused\n", LATER)
        assert [(s.email, s.status) for s in list_subscribers(session)] == [("ada@example.org", "unsubscribed"), ("bob@example.org", "paused")]


def test_export_csv_round_trips_exactly(engine, papers):
    with session_scope(engine) as session:
        add_subscriber(session, "zoe@example.org", SubscriberInput(
            name='Zoë "Z" Müller, PhD', interests=["sparse autoencoders", "language models, small ones"], seed_papers=["2406.04093", "s001"],
            muted_terms=["survey"], muted_authors=["J. Doe"], categories=["cs.LG", "cs.CL"], max_papers=8, trending_weight=0.35,
            send_at="06:45", tz="America/New_York", frequency="weekly:fri"), now=NOW)
        set_status(session, add_subscriber(session, "ada@example.org", SubscriberInput(name="Ada"), now=NOW), "unsubscribed", NOW)
        add_subscriber(session, "bob@example.org", SubscriberInput(), status="paused", now=NOW)
        first = io.StringIO()
        assert export_csv(session, first) == 3
    with session_scope(engine) as session:
        for sub in list_subscribers(session):
            remove_subscriber(session, sub)
    with session_scope(engine) as session:
        assert import_csv(session, first.getvalue(), LATER).added == 3
        second = io.StringIO()
        export_csv(session, second)
    assert second.getvalue() == first.getvalue()
    assert first.getvalue().splitlines()[0] == "email,name,interests,seed_papers,muted_terms,muted_authors,categories,max_papers,trending_weight,send_at,tz,frequency,status"
    assert '"Zoë ""Z"" Müller, PhD","sparse autoencoders;language models, small ones",2406.04093;s001' in first.getvalue()


def test_add_subscriber_after_remove_does_not_inherit_old_links(engine):
    """SQLite may reuse a deleted subscriber's id; the random first token_version keeps old links dead."""
    with session_scope(engine) as session:
        old = add_subscriber(session, "old@example.org", SubscriberInput(), now=NOW)
        old_id, old_version = old.id, old.token_version
        remove_subscriber(session, old)
    with session_scope(engine) as session:
        new = add_subscriber(session, "new@example.org", SubscriberInput(), now=NOW)
        assert (new.id, new.token_version) != (old_id, old_version)
        assert 0 <= new.token_version < 2**31


def test_export_csv_defuses_spreadsheet_formulas_and_round_trips(engine):
    hostile = {"name": "=HYPERLINK(\"http://evil.example\",\"click\")", "interests": ["+cmd|' /C calc'!A0", "'quoted", "-1 loss"]}
    with session_scope(engine) as session:
        add_subscriber(session, "=sum@example.org", SubscriberInput(name=hostile["name"], interests=hostile["interests"]), now=NOW)
        out = io.StringIO()
        export_csv(session, out)
    cells = next(csv.reader(io.StringIO(out.getvalue().splitlines()[1])))
    assert cells[0] == "'=sum@example.org" and cells[1].startswith("'=HYPERLINK")
    assert cells[2] == "'+cmd|' /C calc'!A0;'quoted;-1 loss"  # the list cell starts with +, so one prefix for the cell
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    with session_scope(engine) as session:
        remove_subscriber(session, get_subscriber(session, "=sum@example.org"))
        import_csv(session, out.getvalue(), LATER)
        sub = get_subscriber(session, "=sum@example.org")
        assert (sub.name, sub.interests) == (hostile["name"], hostile["interests"])


def test_spend_token_is_single_use(engine):
    with session_scope(engine) as session:
        assert not token_used(session, "abc")
        assert spend_token(session, "abc", NOW) is True
        assert spend_token(session, "abc", LATER) is False  # the second click
        assert token_used(session, "abc") and not token_used(session, "other")
