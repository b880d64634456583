"""The subscription pages over real HTTP: waitress on 127.0.0.1, httpx as the browser, a real SQLite file."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import time_machine
from sqlmodel import select
from web_server import SECRET, confirm_path, serve_web

from digest.errors import ConfigError
from digest.models import Feedback, Paper, Subscriber
from digest.store import session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, bump_token_version, get_subscriber
from digest.tokens import make_token, vote_url
from digest.web.security import SlidingWindowLimiter

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
TRACEBACK_WORDS = ("Traceback", 'File "', "werkzeug", "sqlalchemy", "Error:")


@pytest.fixture
def site(home):
    with serve_web(home) as running:
        yield running


def add_active(site, email="ada@example.org", **fields) -> Subscriber:
    with session_scope(site.engine) as session:
        return add_subscriber(session, email, SubscriberInput(**fields), now=site.clock())


def add_paper(site, ident: str, title: str, abstract: str = "") -> Paper:
    now = site.clock()
    with session_scope(site.engine) as session:
        paper = Paper(key=f"arxiv:{ident}", ident=ident, arxiv_id=ident, title=title, abstract=abstract, first_seen=now, last_seen=now)
        session.add(paper)
        session.flush()
        return paper


def load(site, email: str) -> Subscriber | None:
    with session_scope(site.engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def token(sub: Subscriber, action: str, **kw) -> str:
    return make_token(SECRET, action, sub.id, sub.token_version, **kw)


def subscribe(site, email: str, interests: str = "sparse autoencoders", client: httpx.Client | None = None, **extra) -> httpx.Response:
    client = client or site.client
    data = {"csrf_token": site.csrf("/subscribe", client), "email": email, "interests": interests, "send_at": "06:30", "tz": "Europe/London", **extra}
    return client.post("/subscribe", data=data)


def page_words(response: httpx.Response) -> str:
    """The visible page without per-request values (CSP nonce, CSRF token)."""
    return re.sub(r'(nonce|value)="[^"]*"', "", response.text)


# --- subscribe ----------------------------------------------------------------------------------------


def test_subscribe_sends_confirmation_and_stays_pending(site):
    response = subscribe(site, "Ada@Example.org", "sparse autoencoders\nmechanistic interpretability, of LMs")
    assert response.status_code == 200 and "Check your inbox" in response.text
    sub = load(site, "ada@example.org")
    assert sub.status == "pending" and sub.confirmed_at is None
    assert sub.interests == ["sparse autoencoders", "mechanistic interpretability, of LMs"]
    assert (sub.send_at, sub.tz) == ("06:30", "Europe/London")
    [message] = site.outbox_messages()
    assert message["To"] == "ada@example.org" and "Confirm your subscription" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated" and message["List-Unsubscribe"] is None
    assert confirm_path(message, site.base_url).startswith("/confirm/")
    assert "/confirm/" in message.get_body(preferencelist=("html",)).get_content()


def test_subscribe_same_page_for_new_and_existing_address(site):
    add_active(site, "old@example.org", interests=["graph neural networks"])
    new = subscribe(site, "new@example.org")
    existing = subscribe(site, "old@example.org", "something else entirely")
    site.clock.now += timedelta(seconds=site.settings.confirm_interval)  # past the per-address cap's 10 minutes
    again = subscribe(site, "new@example.org", "another topic")
    assert new.status_code == existing.status_code == again.status_code == 200
    assert page_words(new) == page_words(existing) == page_words(again)
    with session_scope(site.engine) as session:
        emails = sorted(s.email for s in session.exec(select(Subscriber)))
    assert emails == ["new@example.org", "old@example.org"]  # resubscribing made no second row
    old = load(site, "old@example.org")
    assert old.status == "active" and old.interests == ["graph neural networks"]  # a stranger cannot rewrite it
    assert [m["To"] for m in site.outbox_messages()] == ["new@example.org", "old@example.org", "new@example.org"]


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "pending"])
def test_subscribe_by_a_stranger_changes_no_stored_profile_until_confirmed(site, status):
    """Someone who knows grace's address fills in the form: her stored profile and status stay as they were (also a
    pending one, past the cap's interval), and only the link of the stranger's own email would apply the request."""
    add_active(site, "grace@example.org", interests=["quantum error correction"], send_at="08:00", tz="Europe/Oslo")
    with session_scope(site.engine) as session:
        get_subscriber(session, "grace@example.org").status = status
    before = load(site, "grace@example.org")
    stranger = site.new_client()
    response = subscribe(site, "grace@example.org", "cheap watches", client=stranger, send_at="03:00", tz="Pacific/Kiritimati")
    assert response.status_code == 200 and "Check your inbox" in response.text
    after = load(site, "grace@example.org")
    assert (after.status, after.interests, after.send_at, after.tz) == (status, ["quantum error correction"], "08:00", "Europe/Oslo")
    assert after.token_version == before.token_version
    [message] = site.outbox_messages()
    path = confirm_path(message, site.base_url)
    page = site.client.get(path)  # what the button would apply is on the page: grace can tell it is not hers
    assert page.status_code == 200 and "cheap watches" in page.text and "Pacific/Kiritimati" in page.text
    assert load(site, "grace@example.org").status == status


def test_confirm_link_applies_its_own_request_not_a_later_one(site):
    add_active(site, "grace@example.org", interests=["old topic"])
    with session_scope(site.engine) as session:
        get_subscriber(session, "grace@example.org").status = "unsubscribed"
    subscribe(site, "grace@example.org", "quantum error correction", send_at="08:00", tz="Europe/Oslo")
    site.clock.now += timedelta(seconds=site.settings.confirm_interval + 1)  # past the cap: the stranger's email goes out
    subscribe(site, "grace@example.org", "cheap watches", client=site.new_client(), send_at="03:00", tz="Pacific/Kiritimati")
    first, second = (confirm_path(m, site.base_url) for m in site.outbox_messages())
    assert "cheap watches" not in site.client.get(first).text
    assert site.client.post(first, data={"csrf_token": site.csrf(first)}).status_code == 200
    sub = load(site, "grace@example.org")
    assert (sub.status, sub.interests, sub.send_at, sub.tz) == ("active", ["quantum error correction"], "08:00", "Europe/Oslo")
    assert site.client.post(second, data={"csrf_token": site.csrf("/subscribe")}).status_code == 410  # the stranger's link died
    assert load(site, "grace@example.org").interests == ["quantum error correction"]


def test_subscribe_over_smtp_delivers_confirmation(home, smtp_server):  # noqa: F811
    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none") as site:
        assert subscribe(site, "grace@example.org").status_code == 200
        [received] = smtp_server.messages
        assert received.rcpt_tos == ["grace@example.org"]
        path = confirm_path(received.parsed, site.base_url)
        assert site.client.post(path, data={"csrf_token": site.csrf(path)}).status_code == 200
        assert load(site, "grace@example.org").status == "active"


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("email", "not-an-address", "valid email address"),
        ("email", "", "valid email address"),
        ("tz", "Mars/Olympus_Mons", "Choose a time zone from the list"),
        ("send_at", "25:99", "Enter a time such as 07:00"),
        ("send_at", "7pm", "Enter a time such as 07:00"),
    ],
    ids=["bad-email", "no-email", "bad-zone", "bad-time", "7pm"],
)
def test_subscribe_invalid_input_shows_form_error(site, field, value, words):
    data = {"csrf_token": site.csrf("/subscribe"), "email": "ada@example.org", "interests": "x", "tz": "UTC", field: value}
    response = site.client.post("/subscribe", data=data)
    assert response.status_code == 400 and words in response.text and 'aria-invalid="true"' in response.text
    assert f'aria-describedby="{field}-error"' in response.text and f'<p class="error" id="{field}-error">' in response.text
    assert not re.search(r"is not HH:MM|not a whole number|unknown time zone '", response.text)  # no words for developers
    assert load(site, "ada@example.org") is None and site.outbox_messages() == []


@pytest.mark.parametrize(
    "interests, words",
    [("a;b;c\nd, e", "its own line"), ("x" * 60_000, "200 characters"), ("\n".join(f"topic {n}" for n in range(1800)), "at most 20")],
    ids=["semicolons", "one-huge-interest", "1800-lines"],
)
def test_subscribe_interests_are_lines_within_limits(site, interests, words):
    response = subscribe(site, "ada@example.org", interests)
    assert response.status_code == 400 and words in response.text
    assert 'aria-describedby="interests-error"' in response.text and 'id="interests-error"' in response.text
    assert f">{interests}</textarea>" in unescape(response.text)  # what was typed is kept
    assert load(site, "ada@example.org") is None and site.outbox_messages() == []


def test_subscribe_interest_lines_keep_commas(site):
    assert subscribe(site, "ada@example.org", "graph neural networks, for chemistry\n\n  protein   folding ").status_code == 200
    assert load(site, "ada@example.org").interests == ["graph neural networks, for chemistry", "protein folding"]


def test_subscribe_honeypot_pretends_success_and_sends_nothing(site):
    response = subscribe(site, "bot@example.org", website="http://spam.example")
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert load(site, "bot@example.org") is None and site.outbox_messages() == []


def test_subscribe_rate_limited_per_address(home):
    with serve_web(home, subscribe_limit=2) as site:
        assert [subscribe(site, f"u{i}@example.org").status_code for i in range(2)] == [200, 200]
        limited = subscribe(site, "u2@example.org")
        assert limited.status_code == 429 and "Too many attempts" in limited.text and int(limited.headers["Retry-After"]) > 0
        assert load(site, "u2@example.org") is None
        site.clock.now += timedelta(seconds=site.settings.subscribe_window + 1)  # the window slides on
        assert subscribe(site, "u2@example.org").status_code == 200


# --- confirmation emails capped per recipient -----------------------------------------------------------


def client_at(site, n: int) -> httpx.Client:
    """A browser at the client address 127.0.0.n (Linux routes all of 127/8 to the loopback interface)."""
    return httpx.Client(base_url=site.base_url, timeout=30, follow_redirects=True, transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}"))


def smtp_settings(server) -> dict:
    return {"smtp_host": server.host, "smtp_port": server.port, "smtp_security": "none"}


def test_500_subscribe_requests_from_50_clients_send_one_confirmation(home, smtp_server):  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    # The default per-client limit (10 per 10 minutes): each client address stays within it, so only the
    # per-recipient cap can stop the flood.
    with serve_web(home, subscribe_limit=10, **smtp_settings(smtp_server)) as site:
        def flood(n: int) -> list[httpx.Response]:
            with client_at(site, n) as client:
                data = {"csrf_token": site.csrf("/subscribe", client), "email": "victim@example.org", "interests": f"topic {n}"}
                return [client.post("/subscribe", data=data) for _ in range(10)]

        with ThreadPoolExecutor(10) as pool:
            responses = [r for batch in pool.map(flood, range(2, 52)) for r in batch]
        assert len(responses) == 500 and {r.status_code for r in responses} == {200}
        assert len({page_words(r) for r in responses}) == 1  # sent or capped: the same page
        assert smtp_server.recipients() == ["victim@example.org"]
        with session_scope(site.engine) as session:
            assert [s.email for s in session.exec(select(Subscriber))] == ["victim@example.org"]  # one pending row, reused


def test_fourth_confirmation_in_a_day_is_refused_whoever_asks(home, smtp_server):  # noqa: F811
    with serve_web(home, **smtp_settings(smtp_server)) as site:
        start, pages = site.clock.now, []
        for n, minutes in enumerate((0, 11, 22, 33), start=2):
            site.clock.now = start + timedelta(minutes=minutes)
            with client_at(site, n) as client:  # a new client address each time: the per-client limit never counts
                pages.append(subscribe(site, "ada@example.org", client=client))
        assert [r.status_code for r in pages] == [200] * 4 and len({page_words(r) for r in pages}) == 1
        assert smtp_server.recipients() == ["ada@example.org"] * 3
        with client_at(site, 5) as client:  # the client that was refused may still subscribe another address
            assert subscribe(site, "bob@example.org", client=client).status_code == 200
        assert smtp_server.recipients()[-1] == "bob@example.org"
        site.clock.now = start + timedelta(hours=24, minutes=1)  # the first email left the last 24 hours
        assert subscribe(site, "ada@example.org").status_code == 200
        assert smtp_server.recipients().count("ada@example.org") == 4


def test_confirmation_not_sent_does_not_count(home, smtp_server):  # noqa: F811
    with serve_web(home, **smtp_settings(smtp_server)) as site:
        smtp_server.default_rcpt_reply = "451 4.3.0 try again later"
        failed = subscribe(site, "ada@example.org")
        assert failed.status_code == 503 and "try again" in failed.text
        smtp_server.default_rcpt_reply = None
        assert subscribe(site, "ada@example.org").status_code == 200  # at once: the failed email took no slot
        assert smtp_server.recipients() == ["ada@example.org"]


def test_plus_addresses_of_one_inbox_share_its_confirmation_caps(home, smtp_server):  # noqa: F811
    """victim+1@, victim+2@... reach one inbox: asked for one after another (within the per-client limit of 10 in 10
    minutes), they sent the victim 10 confirmations. The caps count the address with its +tag cut and lower-cased;
    the subscription is the address as typed."""
    with serve_web(home, **smtp_settings(smtp_server)) as site:
        start = site.clock.now
        pages = [subscribe(site, f"victim+{n}@example.org") for n in range(1, 10)] + [subscribe(site, "VICTIM@Example.org")]
        assert [r.status_code for r in pages] == [200] * 10 and len({page_words(r) for r in pages}) == 1
        assert smtp_server.recipients() == ["victim+1@example.org"]
        assert load(site, "victim+1@example.org").status == "pending" and load(site, "victim+2@example.org") is None
        for minutes in (11, 22, 33):  # the interval passed each time; the fourth in 24 hours is refused
            site.clock.now = start + timedelta(minutes=minutes)
            with client_at(site, 2 + minutes) as client:
                assert subscribe(site, f"victim+{minutes}@example.org", client=client).status_code == 200
        assert smtp_server.recipients() == ["victim+1@example.org", "victim+11@example.org", "victim+22@example.org"]
        assert subscribe(site, "victimx@example.org").status_code == 200  # another address, another count
        assert smtp_server.recipients()[-1] == "victimx@example.org"


def test_a_confirmation_not_sent_gives_back_the_slot_of_its_inbox(home, smtp_server):  # noqa: F811
    with serve_web(home, **smtp_settings(smtp_server)) as site:
        smtp_server.default_rcpt_reply = "451 4.3.0 try again later"
        assert subscribe(site, "ada+news@example.org").status_code == 503
        smtp_server.default_rcpt_reply = None
        assert subscribe(site, "ada+papers@example.org").status_code == 200  # at once: the failed email took no slot
        assert smtp_server.recipients() == ["ada+papers@example.org"]


@pytest.mark.parametrize(("typed", "counted"), [
    ("ada@example.org", "ada@example.org"),
    ("Ada+News@Example.ORG", "ada@example.org"),
    ("ada+a+b@example.org", "ada@example.org"),
    ("+tag@example.org", "+tag@example.org"),
    ("a.d.a@example.org", "a.d.a@example.org"),
    ("A.D.A+x@GoogleMail.com", "ada@gmail.com"),
    ("ada-news@example.org", "ada-news@example.org"),
], ids=["plain", "tag-and-case", "two-pluses", "only-a-tag", "dots-kept", "gmail-dots", "dash-kept"])
def test_canonical_address_folds_the_tag_and_case(typed, counted):
    from digest.addresses import canonical_address

    assert canonical_address(typed) == counted


@pytest.mark.parametrize("case", ["missing", "wrong", "other-cookie", "no-cookie"])
def test_subscribe_refuses_bad_csrf(site, case):
    good = site.csrf("/subscribe")
    client = site.client
    if case == "other-cookie":  # a token from another browser's page
        client = site.new_client()
        client.get("/subscribe")
    elif case == "no-cookie":
        client = site.new_client()
    data = {"email": "ada@example.org", "interests": "x"}
    if case != "missing":
        data["csrf_token"] = good if case in ("other-cookie", "no-cookie") else good[:-4] + "AAAA"
    response = client.post("/subscribe", data=data)
    assert response.status_code == 400 and "nothing was sent" in response.text and "Subscribe again" not in response.text
    assert 'value="ada@example.org"' in response.text and ">x</textarea>" in response.text  # the form again, as typed
    assert load(site, "ada@example.org") is None and site.outbox_messages() == []
    if case != "missing":  # the form shown again carries a good token: sending it as it is now works
        again = client.post("/subscribe", data={**data, "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)})
        assert again.status_code == 200 and "Check your inbox" in again.text


# --- confirm ------------------------------------------------------------------------------------------


def confirm_link(site, email: str = "ada@example.org") -> str:
    subscribe(site, email)
    return confirm_path(site.outbox_messages()[-1], site.base_url)


def test_confirm_activates_once(site):
    path = confirm_link(site)
    page = site.client.get(path)
    assert page.status_code == 200 and "ada@example.org" in page.text
    assert load(site, "ada@example.org").status == "pending"  # opening the link (a mail scanner) confirms nothing
    done = site.client.post(path, data={"csrf_token": site.csrf(path)})
    assert done.status_code == 200 and "You are subscribed" in done.text and done.url.path.startswith("/preferences/")
    sub = load(site, "ada@example.org")
    assert sub.status == "active" and sub.confirmed_at is not None
    # A replay or a double click: the subscription stands, and the page says so.
    for again in (site.client.get(path), site.client.post(path, data={"csrf_token": site.csrf("/subscribe")}), site.new_client().get(path)):
        assert again.status_code == 200 and "already subscribed" in again.text, again.text
        assert "/preferences/" not in again.text  # an old link hands out no new one
    assert load(site, "ada@example.org").confirmed_at == sub.confirmed_at


def test_confirm_link_used_then_unsubscribed_is_gone_with_a_way_to_subscribe(site):
    path = confirm_link(site)
    site.client.post(path, data={"csrf_token": site.csrf(path)})
    with session_scope(site.engine) as session:
        get_subscriber(session, "ada@example.org").status = "unsubscribed"
    again = site.client.get(path)
    assert again.status_code == 410 and 'href="/subscribe"' in again.text
    assert load(site, "ada@example.org").status == "unsubscribed"


def test_confirm_second_link_of_active_subscriber_changes_nothing(site):
    add_active(site)
    path = confirm_link(site)  # an active subscriber asked again: the link works once and changes nothing
    assert site.client.post(path, data={"csrf_token": site.csrf(path)}).status_code == 200
    again = site.client.get(path)
    assert again.status_code == 200 and "already subscribed" in again.text
    assert load(site, "ada@example.org").status == "active"


def test_confirm_expired_link_refused(site):
    subscribe(site, "ada@example.org")
    sub = load(site, "ada@example.org")
    with time_machine.travel(datetime.now(timezone.utc) - timedelta(days=7, minutes=1)):
        old = token(sub, "confirm")
    response = site.client.get(f"/confirm/{old}")
    assert response.status_code == 410 and "expired" in response.text and 'href="/subscribe"' in response.text
    with time_machine.travel(datetime.now(timezone.utc) - timedelta(days=6, hours=23)):
        fresh = token(sub, "confirm")
    assert site.client.get(f"/confirm/{fresh}").status_code == 200


@pytest.mark.parametrize("mangle", ["flip", "truncate", "other-action", "garbage"])
def test_confirm_tampered_link_refused(site, mangle):
    path = confirm_link(site)
    good = path.rsplit("/", 1)[1]
    sub = load(site, "ada@example.org")
    bad = {
        "flip": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
        "truncate": good[: len(good) // 2],
        "other-action": token(sub, "unsubscribe"),  # a valid token for another action
        "garbage": "<script>alert(1)</script>",
    }[mangle]
    response = site.client.get(f"/confirm/{quote(bad, safe='')}")
    assert response.status_code in (400, 404) and "<script>alert" not in response.text
    if response.status_code == 400:
        assert "not valid" in response.text and 'href="/subscribe"' in response.text
    assert site.client.post(f"/confirm/{quote(bad, safe='')}", data={"csrf_token": site.csrf("/subscribe")}).status_code in (400, 404)
    assert load(site, "ada@example.org").status == "pending"


# --- unsubscribe --------------------------------------------------------------------------------------


def test_unsubscribe_get_does_not_unsubscribe(site):
    sub = add_active(site)
    page = site.client.get(f"/unsubscribe/{token(sub, 'unsubscribe')}")
    assert page.status_code == 200 and "<form" in page.text and 'method="post"' in page.text
    assert load(site, "ada@example.org").status == "active"


def test_unsubscribe_one_click_post_needs_nothing_else(site):
    sub = add_active(site)
    path = f"/unsubscribe/{token(sub, 'unsubscribe')}"
    provider = site.new_client()  # a mail provider: no cookie, no CSRF token, the exact RFC 8058 body
    first = provider.post(path, **ONE_CLICK)
    assert first.status_code == 200 and "You are unsubscribed" in first.text
    gone = load(site, "ada@example.org")
    assert gone.status == "unsubscribed" and gone.unsubscribed_at is not None
    second = provider.post(path, **ONE_CLICK)  # twice is fine
    assert second.status_code == 200 and load(site, "ada@example.org").unsubscribed_at == gone.unsubscribed_at


def test_unsubscribe_page_of_someone_already_unsubscribed_says_so(site):
    sub = add_active(site)
    path = f"/unsubscribe/{token(sub, 'unsubscribe')}"
    site.new_client().post(path, **ONE_CLICK)
    page = site.client.get(path)
    assert page.status_code == 200 and "already unsubscribed" in page.text and "<button" not in page.text
    assert "/preferences/" in page.text  # where to resume


def test_links_opened_with_head_change_nothing(site):
    paper = add_paper(site, "2401.00009", "P")
    sub = add_active(site)
    scanner = site.new_client()  # link checkers often send HEAD
    path = confirm_link(site, "eve@example.org")
    for link in (f"/unsubscribe/{token(sub, 'unsubscribe')}", f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=1)}", path):
        assert scanner.head(link).status_code == 200, link
    assert load(site, "ada@example.org").status == "active" and load(site, "eve@example.org").status == "pending"
    with session_scope(site.engine) as session:
        assert session.exec(select(Feedback)).all() == []


def email_links(site, sub: Subscriber, paper: Paper, edition: str = "2026-11-27"):
    """The links of one digest email to `sub`, made as delivery makes them (digest.delivery.build.make_links)."""
    from digest.delivery.build import make_links

    return make_links(site.settings, sub, [paper.id], edition=edition)


def confirm_by_button(site, email: str) -> None:
    path = confirm_link(site, email)
    assert site.client.post(path, data={"csrf_token": site.csrf(path)}).status_code == 200


def test_unsubscribe_link_of_an_email_before_resubscribing_still_unsubscribes(site):
    """Resubscribing bumps the token version, which revokes the older links: their preferences, vote and edition links
    stop working, but the unsubscribe link (and List-Unsubscribe) of every email ever sent must go on working."""
    paper = add_paper(site, "2401.00031", "A paper")
    confirm_by_button(site, "ada@example.org")
    old = email_links(site, load(site, "ada@example.org"), paper)
    provider = site.new_client()
    assert provider.post(old.unsubscribe, **ONE_CLICK).status_code == 200
    site.clock.now += timedelta(seconds=site.settings.confirm_interval + 1)
    confirm_by_button(site, "ada@example.org")  # she subscribes again: a new version
    assert load(site, "ada@example.org").status == "active"
    page = site.new_client().get(old.unsubscribe)
    assert page.status_code == 200 and 'method="post"' in page.text and "ada@example.org" in page.text
    done = provider.post(old.unsubscribe, **ONE_CLICK)
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert "/preferences/" not in done.text  # an old link hands out no preferences link: the bump revoked those
    assert load(site, "ada@example.org").status == "unsubscribed"
    again = site.new_client().get(old.unsubscribe)
    assert again.status_code == 200 and "already unsubscribed" in again.text and "/preferences/" not in again.text
    for revoked in (old.preferences, old.like[paper.id], old.edition):
        assert site.new_client().get(revoked).status_code == 410, revoked


def test_unsubscribe_link_made_before_links_named_their_address_keeps_the_version_rule(site):
    """A link of an email sent before unsubscribe tokens carried their address cannot tell a resubscribed reader from a
    newcomer given the same id (SQLite): it works while its version is current, as before."""
    sub = add_active(site)
    path = f"/unsubscribe/{token(sub, 'unsubscribe')}"
    with session_scope(site.engine) as session:
        bump_token_version(session, get_subscriber(session, sub.id))
    response = site.new_client().post(path, **ONE_CLICK)
    assert response.status_code == 410 and "no longer valid" in response.text
    assert load(site, "ada@example.org").status == "active"


def test_unsubscribe_link_of_a_deleted_subscriber_says_no_mail_goes_and_spares_whoever_has_the_id(site):
    """Deleted: nothing is sent to the address, which is what the link asks (200, also to a mail provider's one-click
    POST). When SQLite gave the id to someone else, the link names another address and leaves them subscribed."""
    paper = add_paper(site, "2401.00032", "A paper")
    confirm_by_button(site, "first@example.org")
    first = load(site, "first@example.org")
    old = email_links(site, first, paper)
    prefs = old.preferences.removeprefix(site.base_url)
    site.client.post(prefs, data={"csrf_token": site.csrf(prefs), "action": "delete", "confirm_delete": "yes"})
    for response in (site.new_client().get(old.unsubscribe), site.new_client().post(old.unsubscribe, **ONE_CLICK)):
        assert response.status_code == 200 and "No digests go to this address" in response.text
    confirm_by_button(site, "second@example.org")
    second = load(site, "second@example.org")
    assert second.id == first.id  # SQLite handed the id out again
    for response in (site.new_client().get(old.unsubscribe), site.new_client().post(old.unsubscribe, **ONE_CLICK)):
        assert response.status_code == 200 and "No digests go to this address" in response.text
        assert "second@example.org" not in response.text and "/preferences/" not in response.text
    assert load(site, "second@example.org").status == "active"


# --- preferences --------------------------------------------------------------------------------------


def preferences_form(site, path: str, **changes) -> dict:
    data = {"csrf_token": site.csrf(path), "action": "save", "name": "", "interests": "sparse autoencoders", "seed_papers": "",
            "muted_terms": "", "muted_authors": "", "categories": "", "max_papers": "10", "send_at": "07:00", "tz": "UTC",
            "frequency": "daily", "trending_weight": "0.2"}
    return {**data, **changes}


def test_preferences_update_changes_profile(site):
    add_paper(site, "2406.04093", "Scaling and evaluating sparse autoencoders")
    sub = add_active(site, interests=["old topic"])
    path = f"/preferences/{token(sub, 'preferences')}"
    page = site.client.get(path)
    assert page.status_code == 200 and "old topic" in page.text
    data = preferences_form(site, path, interests="protein folding\nrobot learning", seed_papers="arXiv:2406.04093", max_papers="5",
                            send_at="18:45", tz="Asia/Tokyo", frequency="weekly:fri", trending_weight="0.6")
    saved = site.client.post(path, data=data)
    assert saved.status_code == 200 and "Saved" in saved.text and "robot learning" in saved.text
    after = load(site, "ada@example.org")
    assert after.interests == ["protein folding", "robot learning"] and after.seed_papers == ["2406.04093"]
    assert (after.max_papers, after.send_at, after.tz, after.frequency, after.trending_weight) == (5, "18:45", "Asia/Tokyo", "weekly:fri", 0.6)


def test_preferences_save_that_changes_no_ranking_field_leaves_profile_changed_at(site):
    """Saving the preferences page as it stands stamped profile_changed_at all the same (a prune then read the seed
    list again): a save that changes nothing, or only the name and send time, leaves it; a new interest moves it."""
    sub = add_active(site, interests=["sparse autoencoders"])
    stamped = sub.profile_changed_at
    path = f"/preferences/{token(sub, 'preferences')}"
    site.clock.now += timedelta(days=1)
    assert site.client.post(path, data=preferences_form(site, path)).status_code == 200
    assert load(site, "ada@example.org").profile_changed_at == stamped
    saved = site.client.post(path, data=preferences_form(site, path, name="Ada", send_at="09:00", frequency="weekly:mon"))
    assert saved.status_code == 200 and "Saved" in saved.text
    after = load(site, "ada@example.org")
    assert (after.name, after.send_at, after.frequency, after.profile_changed_at) == ("Ada", "09:00", "weekly:mon", stamped)
    assert site.client.post(path, data=preferences_form(site, path, interests="sparse autoencoders\nprobing")).status_code == 200
    assert load(site, "ada@example.org").profile_changed_at == site.clock.now


def test_preferences_show_and_change_name_muted_terms_authors_and_categories(site):
    sub = add_active(site, name="Ada", interests=["probing"], muted_terms=["survey"], muted_authors=["J. Doe"], categories=["cs.LG"])
    path = f"/preferences/{token(sub, 'preferences')}"
    page = site.client.get(path).text
    for shown in ('value="Ada"', ">survey</textarea>", ">J. Doe</textarea>", ">cs.LG</textarea>"):
        assert shown in page, shown
    data = preferences_form(site, path, name="  Ada   Lovelace ", muted_terms="survey\nbenchmark, a new one", muted_authors="J. Doe\nR. Roe",
                            categories="cs.cl\nstat.ML")
    saved = site.client.post(path, data=data)
    assert saved.status_code == 200 and "Saved" in saved.text
    after = load(site, "ada@example.org")
    assert after.name == "Ada Lovelace" and after.muted_terms == ["survey", "benchmark, a new one"]
    assert after.muted_authors == ["J. Doe", "R. Roe"] and after.categories == ["cs.CL", "stat.ML"]
    cleared = site.client.post(path, data=preferences_form(site, path, name="", muted_terms="", muted_authors="", categories=""))
    assert cleared.status_code == 200
    after = load(site, "ada@example.org")
    assert (after.name, after.muted_terms, after.muted_authors, after.categories) == ("", [], [], [])


def test_preferences_refuse_an_unknown_category_with_a_guess(site):
    sub = add_active(site, categories=["cs.LG"])
    path = f"/preferences/{token(sub, 'preferences')}"
    response = site.client.post(path, data=preferences_form(site, path, categories="machine learning"))
    assert response.status_code == 400 and "is not an arXiv category" in response.text and "cs.LG" in response.text
    assert 'id="categories-error"' in response.text and ">machine learning</textarea>" in response.text  # what was typed is kept
    assert load(site, "ada@example.org").categories == ["cs.LG"]


def test_preferences_interests_are_lines_within_limits(site):
    sub = add_active(site, interests=["kept"])
    path = f"/preferences/{token(sub, 'preferences')}"
    for typed, words in (("a;b", "its own line"), ("y" * 201, "200 characters"), ("\n".join(map(str, range(21))), "at most 20")):
        response = site.client.post(path, data=preferences_form(site, path, interests=typed))
        assert response.status_code == 400 and words in response.text and 'id="interests-error"' in response.text
        assert f">{typed}</textarea>" in unescape(response.text)
    assert load(site, "ada@example.org").interests == ["kept"]


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("max_papers", "0", "Enter a number of papers from 1 to 100, such as 10"),
        ("max_papers", "", "Enter a number of papers from 1 to 100, such as 10"),
        ("max_papers", "many", "Enter a number of papers from 1 to 100, such as 10"),
        ("trending_weight", "2", "Enter a number from 0 to 1, such as 0.2"),
        ("tz", "Mars/Olympus_Mons", "Choose a time zone from the list"),
        ("send_at", "7 o'clock", "Enter a time such as 07:00"),
        ("frequency", "hourly", "Choose every day or one day of the week"),
        ("seed_papers", "2999.99999", "No paper &#39;2999.99999&#39; is known here"),
    ],
    ids=["zero-papers", "no-papers", "word-papers", "weight", "zone", "time", "frequency", "unknown-seed"],
)
def test_preferences_invalid_value_shows_form_error(site, field, value, words):
    sub = add_active(site, interests=["kept"])
    path = f"/preferences/{token(sub, 'preferences')}"
    response = site.client.post(path, data=preferences_form(site, path, interests="changed", **{field: value}))
    assert response.status_code == 400 and words in response.text and "Nothing was saved" in response.text
    assert not any(w in response.text for w in TRACEBACK_WORDS) and "digest fetch" not in response.text  # no operator's hint
    assert load(site, "ada@example.org").interests == ["kept"]  # all or nothing


def test_preferences_pause_and_resume(site):
    sub = add_active(site)
    path = f"/preferences/{token(sub, 'preferences')}"
    paused = site.client.post(path, data={"csrf_token": site.csrf(path), "action": "pause"})
    assert paused.status_code == 200 and "Resume the digest" in paused.text and load(site, "ada@example.org").status == "paused"
    resumed = site.client.post(path, data={"csrf_token": site.csrf(path), "action": "resume"})
    assert resumed.status_code == 200 and load(site, "ada@example.org").status == "active"


def test_preferences_refuses_bad_csrf(site):
    sub = add_active(site, interests=["kept"])
    path = f"/preferences/{token(sub, 'preferences')}"
    data = preferences_form(site, path, interests="changed")
    data["csrf_token"] = "forged"
    expired = site.client.post(path, data=data)
    assert expired.status_code == 400 and "nothing was saved" in expired.text and ">changed</textarea>" in expired.text  # as typed
    again = site.client.post(path, data={**data, "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', expired.text).group(1)})
    assert again.status_code == 200 and load(site, "ada@example.org").interests == ["changed"]  # sent again: saved
    with session_scope(site.engine) as session:
        get_subscriber(session, "ada@example.org").interests = ["kept"]
    assert site.new_client().post(path, data={**data, "csrf_token": site.csrf(path)}).status_code == 400  # no cookie
    assert load(site, "ada@example.org").interests == ["kept"]


def test_preferences_delete_my_data_removes_subscriber_and_feedback(site):
    paper = add_paper(site, "2401.00001", "A paper")
    sub = add_active(site)
    assert press(site, f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=1)}", "record").status_code == 200
    assert feedback_rows(site) != []
    path = f"/preferences/{token(sub, 'preferences')}"
    unticked = site.client.post(path, data={"csrf_token": site.csrf(path), "action": "delete"})
    assert unticked.status_code == 400 and load(site, "ada@example.org") is not None
    deleted = site.client.post(path, data={"csrf_token": site.csrf(path), "action": "delete", "confirm_delete": "yes"})
    assert deleted.status_code == 200 and "deleted" in deleted.text
    assert load(site, "ada@example.org") is None
    with session_scope(site.engine) as session:
        assert session.exec(select(Feedback)).all() == []
    assert site.client.get(path).status_code == 410


def test_deleted_subscriber_links_stay_dead_when_id_is_reused(site):
    path = confirm_link(site, "first@example.org")
    site.client.post(path, data={"csrf_token": site.csrf(path)})
    first = load(site, "first@example.org")
    old = f"/preferences/{token(first, 'preferences')}"
    site.client.post(old, data={"csrf_token": site.csrf(old), "action": "delete", "confirm_delete": "yes"})
    subscribe(site, "second@example.org")
    second = load(site, "second@example.org")
    assert second.id == first.id  # SQLite handed the id out again
    response = site.client.get(old)
    assert response.status_code == 410 and "second@example.org" not in response.text


# --- feedback -----------------------------------------------------------------------------------------


def feedback_rows(site) -> list[tuple[int, int]]:
    with session_scope(site.engine) as session:
        return [(f.paper_id, f.value) for f in session.exec(select(Feedback))]


def press(site, path: str, action: str, client: httpx.Client | None = None) -> httpx.Response:
    """Press a button of the feedback page: the form's POST with its CSRF token."""
    client = client or site.client
    return client.post(path, data={"csrf_token": site.csrf(path, client), "action": action})


@pytest.mark.parametrize("value, word", [(1, "liked"), (-1, "disliked")])
def test_feedback_records_on_button_and_undo_removes(site, value, word):
    paper = add_paper(site, "2401.00002", "Attention <b>is</b> all you need")
    sub = add_active(site)
    path = f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=value)}"
    page = site.client.get(path)
    assert page.status_code == 200 and "Attention &lt;b&gt;is&lt;/b&gt;" in page.text and 'name="action" value="record"' in page.text
    assert feedback_rows(site) == []  # opening the link (a mail scanner) records nothing
    assert site.client.post(path, data={"action": "record"}).status_code == 400  # the button is a form: CSRF checked
    assert feedback_rows(site) == []
    thanks = press(site, path, "record")
    assert thanks.status_code == 200 and f"You {word}" in thanks.text and "Attention &lt;b&gt;is&lt;/b&gt;" in thanks.text
    assert feedback_rows(site) == [(paper.id, value)]
    reopened = site.client.get(path)  # the link again: the vote stands, with its Undo button
    assert f"You {word}" in reopened.text and 'name="action" value="undo"' in reopened.text
    assert site.client.post(path, data={"action": "undo"}).status_code == 400
    undone = press(site, path, "undo")
    assert undone.status_code == 200 and "Feedback removed" in undone.text
    assert f'href="{path}"' in undone.text and 'href="/"' in undone.text  # a way back: vote again, or the front page
    assert feedback_rows(site) == []
    words = "more papers like this one" if value > 0 else "fewer papers like this one"
    assert words in page.text and words in thanks.text  # the question and the thanks say it alike


@pytest.mark.parametrize("title, said", [("Can Agents Do Science?", "Can Agents Do Science?</span> Your"),
                                         ("Sparse features", "Sparse features</span>. Your")], ids=["question", "plain"])
def test_feedback_thanks_end_a_title_with_one_mark(site, title, said):
    """"You liked <title>." printed "... Science?." for a title that ends a sentence itself."""
    paper = add_paper(site, "2401.00021", title)
    path = f"/feedback/{token(add_active(site), 'feedback', paper_id=paper.id, value=1)}"
    assert said in press(site, path, "record").text


@pytest.mark.parametrize("value, word", [(1, "liked"), (-1, "disliked")])
def test_vote_link_of_an_email_records_on_button(site, value, word):
    """An email's like and dislike links share one "vote" token; the paper and the vote are in the path."""
    paper = add_paper(site, "2401.00012", "Vote links")
    sub = add_active(site)
    path = vote_url("", token(sub, "vote"), paper.id, value)
    assert site.client.get(path).status_code == 200 and feedback_rows(site) == []
    assert press(site, path, "record").status_code == 200
    assert feedback_rows(site) == [(paper.id, value)]


def test_vote_link_refuses_another_action_or_vote_word(site):
    paper = add_paper(site, "2401.00013", "P")
    sub = add_active(site)
    assert site.client.get(f"/feedback/{token(sub, 'vote')}/{paper.id}/love").status_code == 400
    assert site.client.get(f"/feedback/{token(sub, 'unsubscribe')}/{paper.id}/like").status_code == 400  # scoped: not a vote token
    assert site.client.get(f"/feedback/{token(sub, 'vote')}").status_code == 400  # a vote token is not a one-paper feedback token
    assert feedback_rows(site) == []


@pytest.mark.parametrize("paper_id", ["99999999999999999999999", "9223372036854775808", "-1", "1e3", "abc"])
def test_vote_link_with_an_impossible_paper_id_is_a_bad_link(site, paper_id):
    sub = add_active(site)
    for method in ("GET", "POST"):
        response = site.client.request(method, f"/feedback/{token(sub, 'vote')}/{paper_id}/like")
        assert response.status_code in (400, 404), (method, response.status_code)
        assert "Something went wrong" not in response.text and not any(w in response.text for w in TRACEBACK_WORDS)
    assert feedback_rows(site) == []


def test_every_int_in_a_url_path_fits_the_database(site):
    """An int path parameter reaches SQL: beyond a signed 64-bit integer SQLite raises OverflowError (a 500)."""
    from werkzeug.routing import IntegerConverter

    from digest.web import create_app

    app = create_app(site.settings, site.engine)
    ints = [(rule.rule, name, conv) for rule in app.url_map.iter_rules() for name, conv in rule._converters.items() if isinstance(conv, IntegerConverter)]
    assert ints, "the vote route has an int paper id"
    for rule, name, conv in ints:
        assert conv.max is not None and conv.max <= 2**63 - 1 and conv.min is not None and conv.min >= 0, (rule, name)


def test_feedback_unknown_action_refused(site):
    paper = add_paper(site, "2401.00004", "P")
    sub = add_active(site)
    path = f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=1)}"
    response = press(site, path, "like-everything")
    assert response.status_code == 400 and feedback_rows(site) == []


def test_feedback_get_and_head_record_nothing(site):
    paper = add_paper(site, "2401.00005", "P")
    sub = add_active(site)
    scanner = site.new_client()
    for value in (1, -1, 1):
        path = f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=value)}"
        assert scanner.get(path).status_code == 200 and scanner.head(path).status_code == 200
    assert feedback_rows(site) == []


def digest_links(message) -> list[str]:
    """Every link of both parts of a digest email, in order, once each."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    found = re.findall(r"https?://[^\s<>\"']+", text) + [unescape(h) for h in re.findall(r'href="([^"]+)"', html)]
    return list(dict.fromkeys(found))


def test_scanner_opening_every_link_of_a_real_digest_records_nothing(home, smtp_server):  # noqa: F811
    from digest.pipeline.job import run_job

    smtp = {"smtp_host": smtp_server.host, "smtp_port": smtp_server.port, "smtp_security": "none", "from_address": "digest@example.org"}
    with serve_web(home, **smtp) as site:
        for i in range(5):
            add_paper(site, f"2501.0010{i}", f"Sparse autoencoders for language models, part {i}", f"We train sparse autoencoders on activations, study {i}.")
        with session_scope(site.engine) as session:
            add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders"], send_at="00:00", tz="UTC"), now=site.clock() - timedelta(days=2))
        report = run_job(site.engine, site.settings, site.clock() + timedelta(hours=1), fetch=False)
        assert report.sent == 1
        [received] = smtp_server.messages
        links = [link for link in digest_links(received.parsed) if link.startswith(site.base_url)]
        votes = [link for link in links if "/feedback/" in link]
        assert len(votes) == 10  # five papers, a like and a dislike each
        scanner = site.new_client()  # a mail security scanner: opens every link of the email, with GET and HEAD
        for link in links:
            assert scanner.get(link).status_code == 200, link
            assert scanner.head(link).status_code == 200, link
        assert feedback_rows(site) == []
        sub = load(site, "ada@example.org")
        assert sub.status == "active" and sub.interests == ["sparse autoencoders"]
        reader = site.new_client()  # then the reader: one link, one press of the button
        assert press(site, votes[0].removeprefix(site.base_url), "record", reader).status_code == 200
        assert [value for _, value in feedback_rows(site)] == [1]


# --- every page ---------------------------------------------------------------------------------------


def every_page(site) -> list[tuple[str, str]]:
    sub = add_active(site)
    paper = add_paper(site, "2401.00003", "P")
    return [
        ("GET", "/subscribe"),
        ("GET", f"/unsubscribe/{token(sub, 'unsubscribe')}"),
        ("GET", f"/preferences/{token(sub, 'preferences')}"),
        ("GET", f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=1)}"),
        ("GET", "/confirm/not-a-token"),
        ("GET", "/no/such/page"),
        ("DELETE", "/subscribe"),
        ("POST", "/subscribe"),
        ("GET", "/healthz"),
    ]


def test_security_headers_on_every_page(site):
    for method, path in every_page(site):
        response = site.client.request(method, path)
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        for part in ("default-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "script-src 'nonce-"):
            assert part in csp, (method, path, csp)
        assert headers.get("X-Content-Type-Options") == "nosniff", path
        assert headers.get("Referrer-Policy") == "no-referrer", path
        assert headers.get("X-Frame-Options") == "DENY", path
        nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
        if "<script" in response.text:
            assert f'<script nonce="{nonce}">' in response.text


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/no/such/page", 404), ("DELETE", "/subscribe", 405), ("GET", "/confirm/xyz", 400), ("POST", "/healthz", 405)],
    ids=["404", "405", "bad-token", "post-healthz"],
)
def test_error_pages_are_html_without_traceback(site, method, path, status):
    response = site.client.request(method, path)
    assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
    assert "<h1>" in response.text and not any(w in response.text for w in TRACEBACK_WORDS)


WERKZEUG_WORDS = ("requested URL", "on the server", "manually", "method is not allowed", "could not understand", "Internal Server Error")


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/no/such/page", 404, "This page does not exist. If a link in an email brought you here"),
    ("GET", "/preferences", 404, "This page does not exist."),  # a link cut short
    ("GET", "/day/2026-02-30", 404, "This page does not exist."),  # a page's own abort(404)
    ("DELETE", "/subscribe", 405, "This page cannot be used that way."),
    ("POST", "/healthz", 405, "This page cannot be used that way."),
], ids=["404", "404-cut-link", "404-bad-day", "405", "405-healthz"])
def test_error_pages_speak_digests_words_with_a_way_on(site, method, path, status, words):
    """Not werkzeug's "The requested URL was not found on the server. If you entered the URL manually...": one h1, the
    page's title, what happened and the front page as the way on, with the right status."""
    response = site.client.request(method, path)
    assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
    assert words in response.text and not any(w in response.text for w in WERKZEUG_WORDS), response.text
    assert response.text.count("<h1>") == 1 and '<html lang="en">' in response.text
    assert re.search(r"<title>(Page not found|Not allowed) · ", response.text) and 'class="button" href="/"' in response.text


class ExplodingTransport:
    def send(self, message, *, sender, recipient):
        raise RuntimeError("boom: smtp password is hunter2")

    def close(self):
        pass


def test_unexpected_error_shows_plain_500_page(home):
    with serve_web(home, transport=ExplodingTransport()) as site:
        response = subscribe(site, "ada@example.org")
        assert response.status_code == 500 and "Something went wrong" in response.text
        assert "hunter2" not in response.text and "boom" not in response.text and not any(w in response.text for w in TRACEBACK_WORDS)
        assert response.text.count("<h1>") == 1 and 'class="button" href="/"' in response.text


def test_healthz_reports_database(site, home):
    ok = site.client.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "database": "ok", "schema": "current"}
    from digest.store import open_engine

    broken = open_engine(f"sqlite:///{home / 'missing-dir' / 'x.db'}", create_dir=False)
    with serve_web(home, engine=broken) as down:
        response = down.client.get("/healthz")
        assert response.status_code == 503 and response.json()["status"] == "error"


def test_create_app_requires_secret_key(home):
    from digest.config import load_settings
    from digest.web import create_app

    for key in ("", "short"):
        with pytest.raises(ConfigError, match="secret_key"):
            create_app(load_settings(home, env={}, overrides={"secret_key": key}), engine=None)


def test_sliding_window_limiter_forgets_old_events():
    limiter = SlidingWindowLimiter(limit=2, window=10, max_keys=2)
    assert [limiter.allow("a", t) for t in (0, 1, 2)] == [True, True, False]
    assert limiter.retry_after("a", 2) == 8
    assert limiter.allow("a", 10.5) is True  # the event at 0 left the window
    limiter.allow("b", 11)
    limiter.allow("c", 12)  # only two addresses are remembered: "a" is forgotten first
    assert limiter.allow("a", 12) is True and limiter.allow("a", 12) is True and limiter.allow("a", 12) is False


def test_web_command_serves_with_waitress(home):
    env = {**os.environ, "DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "web", "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line + proc.stderr.read()
        response = httpx.get(f"{url.group(0)}/healthz", timeout=10)
        assert response.status_code == 200 and response.headers["Server"] == "digest"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def test_web_command_without_secret_key_fails_in_one_line(cli):
    result = cli("web", "--port", "0")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "secret_key" in result.output


def test_web_command_without_secret_key_makes_no_home_and_says_what_init_does(cli, tmp_path):
    """A newcomer's `digest web` before `digest init`: the line `preview` and `send` give (naming `digest init`), and
    no DIGEST_HOME or database made on the way to it."""
    missing = tmp_path / "new"
    result = cli("--home", str(missing), "web", "--port", "0")
    assert result.exit_code == 1
    assert result.output == ("error: secret_key is not set, and the links in emails and pages need it (`digest init` writes a random one "
                             "into the digest.toml it creates; or set DIGEST_SECRET_KEY_FILE to a file only digest can read, holding a random "
                             "key: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\n")
    assert not missing.exists()


def test_web_command_on_a_port_in_use_names_the_address_in_one_line(cli):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("web", "--port", str(port), env={"DIGEST_SECRET_KEY": "web-test-secret-key-0123456789"})
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use (")
    # The server that could not listen leaves no worker threads behind (they stopped the forked parser of later imports).
    assert not [t.name for t in threading.enumerate() if t.name.startswith("waitress")]



# --- the package ------------------------------------------------------------------------------------

DIGEST = Path(__file__).resolve().parent.parent / "digest"


def digest_imports() -> dict[str, list[tuple[str, bool]]]:
    """Each digest module's imports of digest modules, as (module, inside a function?)."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(DIGEST.rglob("*.py")):
        parts = path.relative_to(DIGEST.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f) if n is not f}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found += [(t, id(node) in nested) for t in targets if t.startswith("digest")]
        graph[name] = found
    return {m: [(t, inner) for t, inner in deps if t in graph] for m, deps in graph.items()}


def test_web_package_has_no_import_cycle_and_no_imports_inside_functions():
    graph = digest_imports()
    web = sorted(m for m in graph if m == "digest.web" or m.startswith("digest.web."))
    assert "digest.web.app" in web and "digest.web.pages" in web
    assert {m: [t for t, inner in graph[m] if inner] for m in web} == {m: [] for m in web}
    edges = {m: {t for t, _ in deps if t != m} for m, deps in graph.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    # A package imports its modules through __init__; a cycle is a module that reaches itself through others.
    cycles = [m for m in web if m != "digest.web" and reaches(m, m)]
    assert cycles == []


def field_tag(html: str, ident: str) -> str:
    match = re.search(rf'<(?:input|textarea|select)\b[^>]*\bid="{ident}"[^>]*>', html)
    assert match, f"no field #{ident}"
    return match.group(0)


@pytest.mark.parametrize(("field", "value"), [("trending_weight", "2"), ("max_papers", "0"), ("categories", "cs.XX")],
                         ids=["weight-with-help", "papers", "categories"])
def test_preferences_error_is_the_description_of_its_field(site, field, value):
    """A screen reader reads the error with the field: one aria-describedby naming it (a second attribute is dropped by
    the browser, so the trending weight's help hid its error)."""
    sub = add_active(site)
    path = f"/preferences/{token(sub, 'preferences')}"
    response = site.client.post(path, data=preferences_form(site, path, **{field: value}))
    assert response.status_code == 400 and f'id="{field}-error"' in response.text
    tag = field_tag(response.text, field)
    described = re.findall(r'aria-describedby="([^"]*)"', tag)
    assert len(described) == 1 and f"{field}-error" in described[0].split(), tag
    assert 'aria-invalid="true"' in tag


def test_preferences_delete_unticked_error_is_the_description_of_the_tick_box(site):
    sub = add_active(site)
    path = f"/preferences/{token(sub, 'preferences')}"
    response = site.client.post(path, data={"csrf_token": site.csrf(path), "action": "delete"})
    assert response.status_code == 400 and 'id="delete-error"' in response.text
    tag = field_tag(response.text, "confirm_delete")
    assert 'aria-describedby="delete-error"' in tag and 'aria-invalid="true"' in tag


def test_forms_that_worked_answer_with_a_redirect_to_a_page_of_their_own(site):
    """Post/Redirect/Get: Back to the page a form led to, or a reload, must not send the form again."""
    client = httpx.Client(base_url=site.base_url, timeout=10)  # follows nothing
    data = {"csrf_token": site.csrf("/subscribe", client), "email": "ada@example.org", "interests": "", "send_at": "", "tz": "UTC"}
    sent = client.post("/subscribe", data=data)
    assert sent.status_code == 303 and sent.headers["Location"] == "/subscribe/sent"
    page = client.get("/subscribe/sent")
    assert page.status_code == 200 and "Check your inbox" in page.text and page.headers["Cache-Control"] == "no-store"
    honeypot = client.post("/subscribe", data={**data, "email": "bot@example.org", "website": "http://spam"})
    assert honeypot.status_code == 303 and honeypot.headers["Location"] == "/subscribe/sent"  # the same answer
    sub = add_active(site, "grace@example.org")
    path = f"/preferences/{token(sub, 'preferences')}"
    for action, words in (("save", "Saved."), ("pause", "Paused."), ("resume", "Resumed.")):
        form = {**preferences_form(site, path), "csrf_token": site.csrf(path, client)} if action == "save" else {"csrf_token": site.csrf(path, client), "action": action}
        done = client.post(path, data=form)
        assert done.status_code == 303 and done.headers["Location"] == f"{path}?done={action}", action
        assert words in client.get(done.headers["Location"]).text
    assert "Saved." not in client.get(path).text
    # A vote and its Undo: to the link itself, which shows the vote as it stands (Back to it asked to resubmit).
    paper = add_paper(site, "2401.00031", "Redirected votes")
    vote_path = vote_url("", token(sub, "vote"), paper.id, 1)
    recorded = client.post(vote_path, data={"csrf_token": site.csrf(vote_path, client), "action": "record"})
    assert recorded.status_code == 303 and recorded.headers["Location"] == vote_path and feedback_rows(site) == [(paper.id, 1)]
    assert "You liked" in client.get(vote_path).text
    undone = client.post(vote_path, data={"csrf_token": site.csrf(vote_path, client), "action": "undo"})
    assert undone.status_code == 303 and undone.headers["Location"] == f"{vote_path}?done=undo" and feedback_rows(site) == []
    assert "Feedback removed" in client.get(undone.headers["Location"]).text
    assert "More like this?" in client.get(vote_path).text  # the link alone asks again
    stale = client.post(vote_path, data={"csrf_token": "forged", "action": "record"})
    assert stale.status_code == 400 and feedback_rows(site) == []  # a refused form is the page again, not a redirect
    client.close()


def test_confirm_answers_with_a_redirect_to_the_new_subscribers_preferences(site):
    """Post/Redirect/Get for the confirmation button too (its page answered the POST: Back to it asked to resubmit).
    The page it leads to is the preferences page by the subscriber's own new link, which says they are subscribed: it
    needs the link, so nobody else learns anything from it. Pressed again (a double click, a second tab): the link
    itself, whose GET says "already subscribed"."""
    client = httpx.Client(base_url=site.base_url, timeout=10)  # follows nothing
    path = confirm_link(site)
    done = client.post(path, data={"csrf_token": site.csrf(path, client)})
    assert done.status_code == 303 and load(site, "ada@example.org").status == "active"
    location = done.headers["Location"]
    assert re.fullmatch(r"/preferences/[\w.-]+\?done=confirm", location), location
    page = client.get(location)
    assert page.status_code == 200 and "You are subscribed." in page.text and "ada@example.org" in page.text
    assert page.headers["Cache-Control"] == "no-store" and "history.replaceState" not in page.text
    assert "You are subscribed" in client.get(location).text  # a reload: the same page, nothing sent again
    again = client.post(path, data={"csrf_token": site.csrf("/subscribe", client)})
    assert again.status_code == 303 and again.headers["Location"] == path
    assert "already subscribed" in client.get(path).text and load(site, "ada@example.org").status == "active"
    forged = client.get(location.replace("?", "x?"))  # another's link is refused and names nobody
    assert forged.status_code == 400 and "ada@example.org" not in forged.text
    client.close()


def test_a_page_answering_a_post_turns_its_history_entry_into_a_get(site):
    """A form's error is shown with the form, from the POST, with 400 (what the tests and screen readers rely on) and
    no-store (the page holds what was typed). The browser keeps no copy of it, so Back to it from the next page asked
    "Confirm form resubmission": the page rewrites its history entry to a GET of its address (tests/test_web_browser.py
    checks it in Chromium). A page answering a GET has no such script."""
    response = subscribe(site, "ada@example")
    assert response.status_code == 400 and response.headers["Cache-Control"] == "no-store"
    nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"]).group(1)
    assert f'<script nonce="{nonce}">history.replaceState(null, "", location.href);</script>' in response.text
    assert "history.replaceState" not in site.client.get("/subscribe").text
