"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): subscribe on the page,
the confirmation email arrives at a local SMTP server, confirm, change preferences, see `digest rank` follow,
like a paper with the button of its feedback page, unsubscribe with one click. Screenshots (phone 375 px and
desktop) go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select
from web_server import SECRET, confirm_path, serve_web

from digest.models import Feedback, Paper
from digest.store import session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber
from digest.tokens import action_url, make_token

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts" / "web"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

PAPERS = [
    ("2406.04093", "Scaling and evaluating sparse autoencoders", "Sparse autoencoders recover interpretable features from language model activations; we study dictionary size and sparsity."),
    ("2501.00001", "Protein structure prediction with diffusion", "A diffusion model for protein structure prediction that folds amino acid sequences into accurate three-dimensional structures."),
    ("2501.00002", "Robot learning from human videos", "Robots learn manipulation skills from videos of humans performing household tasks."),
    ("2501.00003", "Efficient attention for long documents", "A linear-time attention mechanism for transformers over long documents and retrieval."),
    ("2501.00004", "Graph neural networks for molecules", "Message passing networks predict molecular properties from graphs of atoms and bonds."),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def insert_papers(site) -> dict[str, int]:
    now = site.clock() - timedelta(hours=2)
    ids = {}
    with session_scope(site.engine) as session:
        for ident, title, abstract in PAPERS:
            paper = Paper(key=f"arxiv:{ident}", ident=ident, arxiv_id=ident, title=title, abstract=abstract, authors=["A. Author"], categories=["cs.LG"], first_seen=now, last_seen=now)
            session.add(paper)
            session.flush()
            ids[ident] = paper.id
    return ids


def ranked_ids(cli, email: str) -> list[str]:
    """The paper ids of the next digest for `email`, best first, through the real `digest rank --json`."""
    result = cli("rank", email, "--json")
    assert result.exit_code == 0, result.output
    return [entry["id"] for entry in json.loads(result.output)]


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    # Readable on a phone: nothing wider than the viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"], f"{name} overflows horizontally"


def test_browser_subscribe_confirm_preferences_feedback_unsubscribe(home, cli, browser, smtp_server):  # noqa: F811
    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none") as site:
        ids = insert_papers(site)
        context = browser.new_context(viewport=PHONE, timezone_id="Asia/Tokyo", device_scale_factor=2)
        problems: list[str] = []
        page = context.new_page()
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        # Subscribe: the tiny script picked the browser's zone.
        page.goto(f"{site.base_url}/subscribe")
        assert page.input_value("#tz") == "Asia/Tokyo"
        page.fill("#email", "ada@example.org")
        page.fill("#interests", "sparse autoencoders\ninterpretable features of language models")
        shoot(page, "01-subscribe-phone")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Check your inbox")
        shoot(page, "02-check-inbox-phone")

        # The confirmation email arrived over SMTP; open its link.
        [received] = smtp_server.messages
        assert received.rcpt_tos == ["ada@example.org"]
        page.goto(site.base_url + confirm_path(received.parsed, site.base_url))
        shoot(page, "03-confirm-phone")
        page.click("text=Yes, confirm")
        page.wait_for_selector("text=You are subscribed")  # on the preferences page (the POST's redirect)
        shoot(page, "04-subscribed-phone")
        with session_scope(site.engine) as session:
            sub = get_subscriber(session, "ada@example.org")
        assert (sub.status, sub.tz) == ("active", "Asia/Tokyo")
        assert ranked_ids(cli, "ada@example.org")[0] == "2406.04093"

        # Preferences: new interests change the top paper of the next ranking.
        page.wait_for_selector("text=Your digest")
        page.fill("#interests", "protein structure prediction\nprotein folding")
        page.fill("#max_papers", "3")
        page.select_option("#frequency", "weekly:mon")
        shoot(page, "05-preferences-phone")
        page.click("text=Save preferences")
        page.wait_for_selector("text=Saved.")
        after_preferences = ranked_ids(cli, "ada@example.org")
        assert after_preferences[0] == "2501.00001"
        with session_scope(site.engine) as session:
            sub = get_subscriber(session, "ada@example.org")
        assert (sub.max_papers, sub.frequency) == (3, "weekly:mon")

        desktop = browser.new_context(viewport=DESKTOP).new_page()
        desktop.goto(page.url)
        shoot(desktop, "06-preferences-desktop")

        # Like a paper through its feedback link (the link in each digest email).
        like = action_url(site.base_url, "feedback", make_token(SECRET, "feedback", sub.id, sub.token_version, paper_id=ids["2501.00002"], value=1))
        page.goto(like)
        page.wait_for_selector("text=Robot learning from human videos")
        shoot(page, "07-feedback-ask-phone")
        with session_scope(site.engine) as session:  # opening the link records nothing: the button does
            assert session.exec(select(Feedback)).all() == []
        page.click("button:has-text('More like this')")
        page.wait_for_selector("text=Thank you")
        shoot(page, "07-feedback-phone")
        with session_scope(site.engine) as session:
            assert [(f.paper_id, f.value) for f in session.exec(select(Feedback))] == [(ids["2501.00002"], 1)]
        after_like = ranked_ids(cli, "ada@example.org")
        assert "2501.00002" in after_preferences and "2501.00002" not in after_like  # liked: read, so not offered again

        # Unsubscribe: opening the link changes nothing; the button does it at once.
        page.goto(action_url(site.base_url, "unsubscribe", make_token(SECRET, "unsubscribe", sub.id, sub.token_version)))
        shoot(page, "08-unsubscribe-phone")
        with session_scope(site.engine) as session:
            assert get_subscriber(session, "ada@example.org").status == "active"
        page.click("button:has-text('Unsubscribe')")
        page.wait_for_selector("text=You are unsubscribed")
        shoot(page, "09-unsubscribed-phone")
        with session_scope(site.engine) as session:
            assert get_subscriber(session, "ada@example.org").status == "unsubscribed"
        assert problems == []  # no CSP violation, no script error
        context.close()


def test_browser_subscribe_works_without_javascript(home, browser):
    with serve_web(home) as site:
        context = browser.new_context(viewport=PHONE, java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{site.base_url}/subscribe")
        assert page.input_value("#tz") == "UTC"  # no script: the default zone stays
        page.fill("#email", "grace@example.org")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Check your inbox")
        assert [m["To"] for m in site.outbox_messages()] == ["grace@example.org"]
        page.goto(f"{site.base_url}/subscribe")
        page.fill("#email", "not an address")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Please enter a valid email address")
        shoot(page, "10-subscribe-error-phone-nojs")
        context.close()


def test_browser_back_and_reload_after_a_form_worked_send_nothing_again(home, browser):
    """A form that worked answers with a redirect (303) to a page of its own: Back to it from the next page, or a
    reload, shows it again instead of Chromium's "Confirm Form Resubmission" (net::ERR_CACHE_MISS), which would
    send the form a second time. The subscribe form and the preferences form (save, pause)."""
    with serve_web(home) as site:
        page = browser.new_context(viewport=PHONE).new_page()
        page.goto(f"{site.base_url}/subscribe")
        page.fill("#email", "ada@example.org")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "Check your inbox" in page.inner_text("h1")
        page.reload()
        assert "Check your inbox" in page.inner_text("h1")
        page.click("a.site")
        page.wait_for_url(f"{site.base_url}/")
        page.go_back()
        assert "Check your inbox" in page.inner_text("h1")
        assert len(site.outbox_messages()) == 1

        page.goto(site.base_url + confirm_path(site.outbox_messages()[0], site.base_url))
        with page.expect_navigation():
            page.click("text=Yes, confirm")
        assert "/preferences/" in page.url and page.inner_text(".notice").startswith("You are subscribed.")
        page.reload()  # the POST answered 303: a reload asks nothing and confirms nothing again
        assert page.inner_text(".notice").startswith("You are subscribed.")
        page.go_back()  # the confirmation link by GET, which now says so
        assert "already subscribed" in page.inner_text("h1")
        page.go_forward()
        page.fill("#interests", "sparse autoencoders")
        with page.expect_navigation():
            page.click("text=Save preferences")
        assert page.inner_text(".notice").startswith("Saved.")
        page.reload()
        assert page.inner_text(".notice").startswith("Saved.") and page.input_value("#interests") == "sparse autoencoders"
        with page.expect_navigation():
            page.click("button:has-text('Pause the digest')")
        assert page.inner_text(".notice").startswith("Paused.")
        page.click("a.site")
        page.wait_for_url(f"{site.base_url}/")
        page.go_back()
        assert "Resume the digest" in page.inner_text("main")
        with session_scope(site.engine) as session:
            sub = get_subscriber(session, "ada@example.org")
            assert (sub.status, sub.interests) == ("paused", ["sparse autoencoders"])


def test_browser_back_to_a_refused_form_fetches_the_form_again(home, browser):
    """A refused form comes back from its POST with the error beside its field (400, no-store: it holds what was
    typed). Once corrected and sent, Back from the next page to it asked "Confirm Form Resubmission"
    (net::ERR_CACHE_MISS): the browser kept no copy. The page now makes its history entry a GET of its address, so
    Back shows the form afresh, and sends nothing. The subscribe and the preferences forms."""
    with serve_web(home) as site:
        page = browser.new_context(viewport=PHONE).new_page()
        page.goto(f"{site.base_url}/subscribe")
        page.fill("#email", "ada@example")  # the browser's check lets it through; the site's does not
        with page.expect_navigation() as refused:
            page.click("button[type=submit]")
        assert refused.value.status == 400 and "valid email address" in page.inner_text("#email-error")
        page.fill("#email", "ada@example.org")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "Check your inbox" in page.inner_text("h1")
        page.go_back()
        assert page.url == f"{site.base_url}/subscribe" and "Subscribe" in page.title() and page.locator("#email-error").count() == 0
        assert len(site.outbox_messages()) == 1

        with session_scope(site.engine) as session:
            sub = add_subscriber(session, "grace@example.org", SubscriberInput(), now=site.clock())
            path = f"/preferences/{make_token(SECRET, 'preferences', sub.id, sub.token_version)}"
        page.goto(site.base_url + path)
        page.fill("#seed_papers", "2999.99999")  # no such paper here
        with page.expect_navigation() as refused:
            page.click("text=Save preferences")
        assert refused.value.status == 400 and "Nothing was saved" in page.inner_text("[role=alert]")
        page.fill("#seed_papers", "")
        page.fill("#max_papers", "12")
        with page.expect_navigation():
            page.click("text=Save preferences")
        assert page.inner_text(".notice").startswith("Saved.")
        page.go_back()
        assert page.url == site.base_url + path and page.locator("[role=alert]").count() == 0
        with session_scope(site.engine) as session:
            assert get_subscriber(session, "grace@example.org").max_papers == 12


def test_browser_a_refused_form_puts_the_cursor_in_the_field_to_correct(home, browser):
    """A keyboard or screen reader user whose form came back with an error lands in the field to correct (its
    error is its description), not at the top of a new page with no word of what went wrong."""
    with serve_web(home) as site:
        insert_papers(site)
        page = browser.new_context(viewport=PHONE).new_page()
        page.goto(f"{site.base_url}/subscribe")
        page.fill("#email", "ada@@example")
        with page.expect_navigation():
            page.press("#email", "Enter")
        assert page.evaluate("document.activeElement.id") == "email"
        assert page.evaluate("document.activeElement.ariaDescribedByElements.map(e => e.id)") == ["email-error"]

        with session_scope(site.engine) as session:
            sub = add_subscriber(session, "grace@example.org", SubscriberInput(), now=site.clock())
            path = f"/preferences/{make_token(SECRET, 'preferences', sub.id, sub.token_version)}"
        page.goto(site.base_url + path)
        page.fill("#seed_papers", "2999.99999")
        with page.expect_navigation():
            page.click("text=Save preferences")
        assert "Nothing was saved" in page.inner_text("[role=alert]")
        assert page.evaluate("document.activeElement.id") == "seed_papers"
