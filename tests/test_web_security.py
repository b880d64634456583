"""The web front probed as an attacker and a careful subscriber would: old forms, hostile input, client addresses,
what the logs keep. Real HTTP (waitress on 127.0.0.1, httpx), a real SQLite file (and PostgreSQL when configured)."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from html import unescape

import httpx
import pytest
import time_machine
from test_web import (
    ONE_CLICK,
    add_active,
    add_paper,
    confirm_link,
    feedback_rows,
    load,
    preferences_form,
    subscribe,
    token,
)
from web_server import SECRET, confirm_path, serve_web

from digest.models import Subscriber
from digest.web.security import CSRF_COOKIE, Csrf

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def site(home):
    with serve_web(home) as running:
        yield running


def day_old_csrf(site, path: str, client: httpx.Client | None = None) -> str:
    """The form token a tab opened 25 hours ago holds: signed for this browser's cookie, but a day old."""
    client = client or site.client
    client.get(path)  # the browser's CSRF cookie
    with time_machine.travel(datetime.now(timezone.utc) - timedelta(hours=25)):
        return Csrf(SECRET, site.base_url).token_for(client.cookies[CSRF_COOKIE])


def fresh_csrf(response: httpx.Response) -> str:
    match = CSRF_INPUT.search(response.text)
    assert match, f"no form on the page ({response.status_code})"
    return match.group(1)


# --- a form left open for a day -------------------------------------------------------------------------


def test_confirm_button_of_a_day_old_page_shows_the_page_again(site):
    path = confirm_link(site)
    stale = site.client.post(path, data={"csrf_token": day_old_csrf(site, path)})
    assert stale.status_code == 400 and "<h1>Confirm your subscription</h1>" in stale.text and "Yes, confirm" in stale.text
    assert "This form had expired" in stale.text and "not subscribed yet" in stale.text and 'role="alert"' in stale.text
    assert load(site, "ada@example.org").status == "pending"
    again = site.client.post(path, data={"csrf_token": fresh_csrf(stale)})  # the button of the page shown again
    assert again.status_code == 200 and "You are subscribed" in again.text
    assert load(site, "ada@example.org").status == "active"


@pytest.mark.parametrize("value, word", [(1, "liked"), (-1, "disliked")])
def test_feedback_buttons_of_a_day_old_page_show_the_page_again(site, value, word):
    paper = add_paper(site, "2401.00021", "Old tabs")
    sub = add_active(site)
    path = f"/feedback/{token(sub, 'vote')}/{paper.id}/{'like' if value > 0 else 'dislike'}"
    stale = site.client.post(path, data={"csrf_token": day_old_csrf(site, path), "action": "record"})
    assert stale.status_code == 400 and "Old tabs" in stale.text and 'name="action" value="record"' in stale.text
    assert "This form had expired" in stale.text and "nothing was recorded" in stale.text
    assert feedback_rows(site) == []
    recorded = site.client.post(path, data={"csrf_token": fresh_csrf(stale), "action": "record"})
    assert recorded.status_code == 200 and f"You {word}" in recorded.text and feedback_rows(site) == [(paper.id, value)]
    stale_undo = site.client.post(path, data={"csrf_token": day_old_csrf(site, path), "action": "undo"})
    assert stale_undo.status_code == 400 and "This form had expired" in stale_undo.text and 'name="action" value="undo"' in stale_undo.text
    assert feedback_rows(site) == [(paper.id, value)]  # the vote stands: the Undo button was a day old
    undone = site.client.post(path, data={"csrf_token": fresh_csrf(stale_undo), "action": "undo"})
    assert undone.status_code == 200 and "Feedback removed" in undone.text and feedback_rows(site) == []


def test_feedback_button_from_another_browser_shows_the_page_again(site):
    paper = add_paper(site, "2401.00022", "Two browsers")
    sub = add_active(site)
    path = f"/feedback/{token(sub, 'feedback', paper_id=paper.id, value=1)}"
    other = site.new_client()  # the page was opened in one browser, the form sent from another
    other.get("/subscribe")  # which has a cookie of its own
    response = other.post(path, data={"csrf_token": site.csrf(path), "action": "record"})
    assert response.status_code == 400 and "This form had expired" in response.text and "Two browsers" in response.text
    blocked = site.new_client().post(path, data={"csrf_token": site.csrf(path), "action": "record"})  # no cookie at all
    assert blocked.status_code == 400 and "allow cookies for this site" in blocked.text and "nothing was recorded" in blocked.text
    assert feedback_rows(site) == []


# --- hostile form input -----------------------------------------------------------------------------------


@pytest.fixture
def any_db_site(home, engine):
    """The pages on a SQLite file and, when DIGEST_TEST_POSTGRES_URL is set, on PostgreSQL (which refuses NUL)."""
    with serve_web(home, engine=engine) as running:
        yield running


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("name", "Ada\x00Lovelace", "invisible control character"),
        ("interests", "sparse\x00autoencoders", "invisible control character"),
        ("muted_authors", "J. Doe\x1b[31m", "invisible control character"),
        ("seed_papers", "2401.00031\x00", "invisible control character"),
        ("name", "A" * 201, "200 characters"),
    ],
    ids=["nul-name", "nul-interest", "escape-author", "nul-seed", "long-name"],
)
def test_preferences_refuse_control_characters_and_a_huge_name(any_db_site, field, value, words):
    site = any_db_site
    add_paper(site, "2401.00031", "A seed")
    sub = add_active(site, name="Ada", interests=["kept"])
    path = f"/preferences/{token(sub, 'preferences')}"
    response = site.client.post(path, data={**preferences_form(site, path, name="Ada", interests="changed"), field: value})
    assert response.status_code == 400 and words in response.text and f'id="{field}-error"' in response.text
    assert "Nothing was saved" in response.text and "try again" not in response.text.lower()
    after = load(site, "ada@example.org")
    assert (after.name, after.interests) == ("Ada", ["kept"])  # nothing stored, on any database


@pytest.mark.parametrize(
    "extra, field",
    [({"interests": "sparse\x00autoencoders"}, "interests"), ({"seed": "2401.00032\x00"}, "seed_papers"), ({"tz": "UTC\x00"}, "tz")],
    ids=["nul-interest", "nul-seed", "nul-zone"],
)
def test_subscribe_refuses_control_characters_beside_the_field(any_db_site, extra, field):
    site = any_db_site
    add_paper(site, "2401.00032", "A seed")
    response = subscribe(site, "ada@example.org", **extra)
    assert response.status_code == 400 and f'id="{field}-error"' in response.text and "try again" not in response.text.lower()
    assert load(site, "ada@example.org") is None and site.outbox_messages() == []


# --- what the logs keep -------------------------------------------------------------------------------------


def test_a_failed_request_is_logged_without_the_token_of_its_link(home, caplog):
    """A link's token acts for its subscriber for ever: the log line of a request that failed names the page, not the
    token (logs are kept, shipped and read by more people than the links' owners)."""
    from digest.log import EventFormatter
    from digest.store import open_engine

    down = open_engine(f"sqlite:///{home / 'missing-dir' / 'x.db'}", create_dir=False)
    secret = token(Subscriber(id=7, email="ada@example.org", token_version=12345), "preferences")
    with caplog.at_level(logging.ERROR, logger="digest.web"), serve_web(home, engine=down) as site:
        response = site.client.get(f"/preferences/{secret}")
    assert response.status_code == 503
    lines = [EventFormatter().format(r) for r in caplog.records if r.name == "digest.web"]
    assert any("event=request-failed" in line and "path=/preferences/<token>" in line for line in lines), lines
    assert not [line for line in lines if secret in line or secret.split(".")[-1] in line]


# --- the subscribe rate limit's client ----------------------------------------------------------------------


def from_client(site, address: str, email: str) -> httpx.Response:
    """A subscribe POST from `address`, as the trusted reverse proxy forwards it."""
    client = httpx.Client(base_url=site.base_url, timeout=10, follow_redirects=True, headers={"X-Forwarded-For": address})
    with client:
        return subscribe(site, email, client=client)


def test_subscribe_rate_limit_counts_an_ipv6_client_by_its_64_network(home):
    """One IPv6 subscriber line (a home, a VPS) is given a /64: 2**64 addresses. Counted address by address, one machine
    had no limit at all: each request from a new address of its /64 passed."""
    with serve_web(home, subscribe_limit=2, trusted_proxy="127.0.0.1") as site:
        statuses = [from_client(site, f"2001:db8:1:2::{n:x}", f"u{n}@example.org").status_code for n in range(1, 5)]
        assert statuses == [200, 200, 429, 429]
        assert from_client(site, "2001:db8:1:3::1", "other@example.org").status_code == 200  # the next /64: another client
        assert from_client(site, "::ffff:192.0.2.7", "v4a@example.org").status_code == 200  # IPv4 (mapped) stays per address
        assert from_client(site, "::ffff:192.0.2.8", "v4b@example.org").status_code == 200
        assert [m["To"] for m in site.outbox_messages()] == ["u1@example.org", "u2@example.org", "other@example.org", "v4a@example.org", "v4b@example.org"]


# --- what a crafted link shows -------------------------------------------------------------------------------


def test_search_query_cannot_turn_the_page_around_or_carry_control_characters(site):
    """/search?q= is shown back on the page: a right-to-left override in it (U+202E) reversed the rest of the
    sentence ("No paper matches ...") for whoever opened a crafted link, and a NUL byte was written into the page."""
    page = site.client.get("/search", params={"q": "\u202enoisuffid\x00 \x1b[2J \u2067x"}).text
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\u202a-\u202e\u2066-\u2069]", page)
    assert "<title>noisuffid [2J x: search" in page and "&ldquo;<bdi>noisuffid [2J x</bdi>&rdquo;" in page
    arabic = site.client.get("/search", params={"q": "\u0634\u0628\u0643\u0629 graph"}).text  # a right-to-left word stays
    assert "&ldquo;<bdi>\u0634\u0628\u0643\u0629 graph</bdi>&rdquo;" in arabic  # isolated from the sentence around it


def test_confirm_page_isolates_each_interest_a_stranger_typed(site):
    """The confirm page shows the interests of the request, typed by whoever filled in the form: a right-to-left
    override in one reversed the others and the text after them for the address's owner."""
    subscribe(site, "ada@example.org", "\u202etnemyap deen\nprotein folding")
    page = site.client.get(confirm_path(site.outbox_messages()[-1], site.base_url)).text
    assert "Interests: <bdi>\u202etnemyap deen</bdi>; <bdi>protein folding</bdi></li>" in page
    subscribe(site, "bob@example.org", "")
    assert "Interests: none</li>" in site.client.get(confirm_path(site.outbox_messages()[-1], site.base_url)).text


def test_links_in_the_confirmation_email_use_base_url_whatever_the_host_header(site):
    """A forged Host (or X-Forwarded-Host) must not send the victim's confirmation link to the attacker's site."""
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    client = httpx.Client(base_url=site.base_url, timeout=10, follow_redirects=True, headers=forged)
    with client:
        assert subscribe(site, "ada@example.org", client=client).status_code == 200
    [message] = site.outbox_messages()
    body = message.get_body(preferencelist=("plain",)).get_content() + message.get_body(preferencelist=("html",)).get_content()
    assert "evil.example" not in body and f"{site.base_url}/confirm/" in body


# --- single use ----------------------------------------------------------------------------------------------


def test_a_used_confirmation_link_spelled_otherwise_is_still_the_used_link(site):
    """base64 leaves spare bits in the signature's last character, so one confirmation link has four spellings that
    verify. Used once, each of them must say "already subscribed", as the link itself does."""
    path = confirm_link(site)
    assert site.client.post(path, data={"csrf_token": site.csrf(path)}).status_code == 200
    tail = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    answers = {char: site.client.get(path[:-1] + char) for char in tail}
    verified = {char: r for char, r in answers.items() if r.status_code != 400}
    assert len(verified) == 4 and all(r.status_code == 200 and "already subscribed" in r.text for r in verified.values()), \
        {char: r.status_code for char, r in verified.items()}
    assert load(site, "ada@example.org").status == "active"


# --- under a path prefix ---------------------------------------------------------------------------------------


def local_links(html: str) -> list[str]:
    """Every link and form target of a page that stays on this site (not data: or another host)."""
    return [unescape(u) for u in re.findall(r'(?:href|action)="(/[^"]*)"', html)]


def test_pages_under_a_path_prefix_link_under_it(home):
    """base_url https://example.org/digest: every page lives under /digest, and so must every link a page gives (the
    "vote again" link of the feedback page after Undo led to /feedback/..., outside the prefix: a 404 at the proxy)."""
    with serve_web(home, url_prefix="/digest") as site:
        paper = add_paper(site, "2401.00041", "Prefixed")
        sub = add_active(site)
        vote = f"/feedback/{token(sub, 'vote')}/{paper.id}/like"
        pages = [site.client.get("/subscribe"), site.client.get(confirm_link(site, "bob@example.org")), site.client.get(vote)]
        pages.append(site.client.post(vote, data={"csrf_token": fresh_csrf(pages[-1]), "action": "record"}))
        pages.append(site.client.post(vote, data={"csrf_token": fresh_csrf(pages[-1]), "action": "undo"}))
        assert "Feedback removed" in pages[-1].text
        links = [link for page in pages for link in local_links(page.text)]
        assert links and [link for link in links if not link.startswith("/digest/")] == []
        again = [link for link in local_links(pages[-1].text) if "/feedback/" in link]
        assert again == [f"/digest{vote}"] and site.client.get(again[0].removeprefix("/digest")).status_code == 200


@pytest.mark.parametrize(
    "action, words, status",
    [("pause", "the digest was not paused", "active"), ("delete", "nothing was deleted", "active"), ("save", "nothing was saved", "active")],
)
def test_preferences_buttons_of_a_day_old_page_say_what_did_not_happen(site, action, words, status):
    sub = add_active(site, interests=["kept"])
    path = f"/preferences/{token(sub, 'preferences')}"
    data = {**preferences_form(site, path, interests="changed"), "action": action, "confirm_delete": "yes", "csrf_token": day_old_csrf(site, path)}
    response = site.client.post(path, data=data)
    assert response.status_code == 400 and f"This form had expired (or was opened in another browser), so {words}." in response.text
    after = load(site, "ada@example.org")
    assert after is not None and (after.status, after.interests) == (status, ["kept"])


def test_a_form_sent_without_the_cookie_says_cookies_are_needed(site):
    """A browser that keeps no cookies got "this form had expired" after every press: it was told to press again, for
    ever. The page now says what is missing."""
    blocked = site.new_client()
    token_only = fresh_csrf(site.client.get("/subscribe"))  # the page's token; this browser keeps no cookie
    response = blocked.post("/subscribe", data={"csrf_token": token_only, "email": "ada@example.org", "interests": "x"})
    assert response.status_code == 400 and "nothing was sent" in response.text and "allow cookies for this site" in response.text
    expired = site.client.post("/subscribe", data={"csrf_token": day_old_csrf(site, "/subscribe"), "email": "ada@example.org"})
    assert "This form had expired" in expired.text and "cookies" not in expired.text  # the cookie came: it is the age


OLD_KEY = "the-key-before-the-rotation-0123456789"


def test_links_and_forms_signed_with_a_previous_key_work_after_rotation(home):
    """secret_key rotated, the old one in previous_secret_keys: the links of emails sent before and a form opened before
    still work, new links are signed with the new key, and a link signed with a key in neither list is refused."""
    from digest.delivery.build import make_links
    from digest.tokens import make_token, read_token

    with serve_web(home, previous_secret_keys=[OLD_KEY]) as site:
        add_paper(site, "2401.00041", "A paper")
        sub = add_active(site)
        before = make_links(site.settings.replace(secret_key=OLD_KEY), sub, [])  # an email of the old key
        preferences = before.preferences.removeprefix(site.base_url)
        page = site.client.get(preferences)
        assert page.status_code == 200 and "ada@example.org" in page.text
        cookie = site.client.cookies[CSRF_COOKIE]
        old_form = Csrf(OLD_KEY, site.base_url).token_for(cookie)  # a form rendered before the rotation
        saved = site.client.post(preferences, data={**preferences_form(site, preferences), "csrf_token": old_form, "name": "Ada"})
        assert saved.status_code == 200 and "Saved" in saved.text
        done = site.new_client().post(before.unsubscribe, **ONE_CLICK)
        assert done.status_code == 200 and load(site, "ada@example.org").status == "unsubscribed"
        handed = re.search(r'/preferences/([^"]+)"', done.text).group(1)
        assert read_token(SECRET, "preferences", handed).subscriber_id == sub.id  # a link handed out now: the new key
        fresh = site.csrf("/subscribe")
        assert Csrf(SECRET, site.base_url)._serializer.loads(fresh) == site.client.cookies[CSRF_COOKIE]  # new: the new key
        stranger = make_token("a-key-in-neither-list-0123456789", "preferences", sub.id, sub.token_version)
        assert site.client.get(f"/preferences/{stranger}").status_code == 400
        forged = Csrf("a-key-in-neither-list-0123456789", site.base_url).token_for(cookie)
        assert site.client.post(preferences, data={**preferences_form(site, preferences), "csrf_token": forged}).status_code == 400


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


@pytest.mark.parametrize(("public_url", "prefix"), [("https://digest.example.org", ""), ("https://example.org/digest", "/digest")],
                         ids=["https", "https-under-a-path"])
def test_csrf_cookie_behind_https_is_a_host_cookie(home, public_url, prefix):
    """RFC 6265bis: a `__Host-` cookie is Secure, Path=/ and has no Domain, so no subdomain or other path of the host can
    set or shadow it; with an https base_url, whatever path it has, the CSRF cookie is one (the Flask pages and the
    front page served from memory alike), and forms check it."""
    with serve_web(home, trusted_proxy="127.0.0.1", url_prefix=prefix, public_url=public_url) as site:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        site.client.get("/")  # rendered once: the next `GET /` is answered from memory (digest.web.fast)
        for path in ("/subscribe", "/"):
            [cookie] = set_cookies(site.new_client().get(path, headers=proxy))
            name, _, attributes = cookie.partition("=")
            assert name == "__Host-digest_csrf", cookie
            assert "; Secure" in attributes and "; Path=/;" in attributes + ";" and "Domain" not in attributes, cookie
        browser = site.new_client()
        page = browser.get("/subscribe", headers=proxy)
        value = page.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        form = {"csrf_token": CSRF_INPUT.search(page.text).group(1), "email": "ada@example.org", "interests": "speech"}
        sent = browser.post("/subscribe", data=form, headers={**proxy, "Cookie": f"__Host-digest_csrf={value}"})
        assert sent.status_code == 200 and "Check your inbox" in sent.text
        plain = browser.post("/subscribe", data=form, headers={**proxy, "Cookie": f"digest_csrf={value}"})
        assert plain.status_code == 400  # the http cookie's name is not read behind https


def test_an_https_site_tells_browsers_to_keep_to_https(home):
    """Strict-Transport-Security (RFC 6797) with an https base_url, on every answer (a page, a 304, an error, the front
    page from memory): a browser that was once on the site never again asks over plain http, where whoever is on the
    network reads the tokens in the links and the CSRF cookie. Not for subdomains (not ours to decide), and never with
    an http base_url (the demo, a trial), where it would lock a browser out of the site."""
    hsts = "max-age=31536000"
    with serve_web(home, trusted_proxy="127.0.0.1", public_url="https://digest.example.org") as site:
        proxy = {"X-Forwarded-Proto": "https"}
        feed = site.client.get("/feed.xml", headers=proxy)
        answers = [site.client.get("/", headers=proxy), site.client.get("/", headers=proxy),  # rendered, then from memory
                   site.client.get("/feed.xml", headers={**proxy, "If-None-Match": feed.headers["etag"]}),
                   site.client.get("/subscribe", headers=proxy), site.client.get("/confirm/nonsense", headers=proxy),
                   site.client.get("/no-such-page", headers=proxy), site.client.delete("/subscribe", headers=proxy)]
        assert [a.status_code for a in answers] == [200, 200, 304, 200, 400, 404, 405]
        assert [a.headers.get_list("strict-transport-security") for a in answers] == [[hsts]] * len(answers)
    with serve_web(home) as site:
        site.client.get("/")
        assert not [a for a in (site.client.get("/"), site.client.get("/subscribe")) if "strict-transport-security" in a.headers]


def test_csrf_cookie_with_an_http_base_url_keeps_its_name_and_path(home):
    """An http base_url (the demo, a trial): a `__Host-` cookie needs Secure, which a browser would not send back over
    http, so the cookie stays digest_csrf, for the pages' path."""
    with serve_web(home, url_prefix="/digest") as site:
        [cookie] = set_cookies(site.new_client().get("/subscribe"))
        assert cookie.startswith("digest_csrf=") and "Secure" not in cookie and "Path=/digest;" in cookie, cookie
