"""The public pages in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): a visitor reads a
folded abstract on the front page, ticks two papers, subscribes, confirms from the email at a local SMTP server,
and `digest rank --json` explains picks by the ticked papers; a real edition sent over SMTP is the same on the web;
axe-core (npm, installed by .ci/run into tests/node) finds no serious or critical accessibility violation on the
front, day, search, edition, subscribe, preferences (also as a confirmation leads to it), unsubscribe and 404
pages, in light and dark mode. Screenshots go to tests/artifacts/front/.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path

import pytest
from test_pipeline import write_papers
from web_server import SECRET, confirm_path, serve_web

from digest.ingest import import_file
from digest.pipeline.job import run_job
from digest.sources import ParsedPaper
from digest.store import session_scope
from digest.store.papers import upsert_papers
from digest.store.sources import add_source
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber
from digest.tokens import read_token

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).parent / "artifacts" / "front"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
NOW = datetime(2026, 8, 13, 12, 0, tzinfo=timezone.utc)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

SAE = ("Sparse autoencoders recover interpretable features from the activations of large language models. We train sparse "
       "autoencoders with dictionaries of up to sixteen million features on the residual stream of a language model. "
       "Features split as the dictionary grows and their explanations become more specific, and we measure how well each "
       "feature is explained. We release the dictionaries, the training code and a viewer for every feature.")
PAPERS = [  # (arXiv id, title, abstract, Hugging Face upvotes)
    ("2406.04093", "Scaling and evaluating sparse autoencoders", SAE, 120),
    ("2501.00010", "Interpretable features of language models from dictionary learning",
     "Dictionary learning finds interpretable, monosemantic features in language model activations; sparse autoencoders scale it.", 40),
    ("2501.00001", "Protein structure prediction with diffusion", "A diffusion model folds amino acid sequences into accurate three-dimensional protein structures.", 0),
    ("2501.00002", "Robot learning from human videos", "Robots learn manipulation skills from videos of humans performing household tasks.", 8),
    ("2501.00003", "Efficient attention for long documents", "A linear-time attention mechanism for transformers over long documents and retrieval.", 0),
    ("2501.00004", "Graph neural networks for molecules", "Message passing networks predict molecular properties from graphs of atoms and bonds.", 0),
    ("2501.00005", "Mechanistic interpretability of attention heads", "Circuits of attention heads in language models explain induction; features of the residual stream.", 0),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def store_papers(site, when: datetime) -> None:
    """The papers as arXiv listed them, and the upvoted ones as Hugging Face did too (two badges, upvotes)."""
    def parsed(ident, title, abstract, upvotes=None):
        return ParsedPaper(key=f"arxiv:{ident}", ident=ident, title=title, abstract=abstract, arxiv_id=ident, url=f"https://arxiv.org/abs/{ident}",
                           authors=["Leo Gao", "Tom Dupré la Tour", "Henk Tillman", "Gabriel Goh"], categories=["cs.LG"], upvotes=upvotes)

    with session_scope(site.engine) as session:
        arxiv = add_source(session, "arxiv:cs.LG", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", when).id
        hf = add_source(session, "hf", "hf-daily", "https://huggingface.co/api/daily_papers", when).id
    upsert_papers(site.engine, arxiv, [parsed(i, t, a) for i, t, a, _ in PAPERS], when)
    upsert_papers(site.engine, hf, [parsed(i, t, a, v) for i, t, a, v in PAPERS if v], when + timedelta(minutes=10))


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    # Readable on a phone: nothing wider than the viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"], f"{name} overflows horizontally"


def watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems


def test_browser_visitor_reads_ticks_two_papers_subscribes_and_rank_follows_the_ticks(home, cli, browser, smtp_server):  # noqa: F811
    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none") as site:
        store_papers(site, site.clock() - timedelta(hours=2))  # the real clock: `digest rank` below ranks at the real now
        context = browser.new_context(viewport=PHONE, timezone_id="Asia/Tokyo", device_scale_factor=2)
        page = context.new_page()
        problems = watch(page)
        page.goto(f"{site.base_url}/")
        assert page.locator("link[rel=alternate][type='application/atom+xml']").get_attribute("href") == "/feed.xml"
        titles = page.locator("article h3").all_inner_texts()
        assert titles[:2] == [PAPERS[0][1], PAPERS[1][1]]  # the most upvoted first (the trending score)
        shoot(page, "01-front-phone")

        # Read a folded abstract: its end is hidden until the native disclosure opens.
        sae = page.locator("#paper-1")
        rest = sae.locator("details.abstract > p")
        assert not rest.is_visible()
        sae.locator("summary").click()
        assert rest.is_visible() and "viewer for every feature" in rest.inner_text()
        shoot(page, "02-front-abstract-open-phone")

        # Tick two papers and subscribe from the box on top.
        page.check("#paper-1 input[name=seed]")
        page.check("#paper-2 input[name=seed]")
        page.fill("#email", "ada@example.org")
        page.click("#subscribe button[type=submit]")
        page.wait_for_selector("text=Check your inbox")
        with session_scope(site.engine) as session:
            sub = get_subscriber(session, "ada@example.org")
        assert (sub.status, sub.seed_papers, sub.interests, sub.tz) == ("pending", ["2406.04093", "2501.00010"], [], "Asia/Tokyo")

        # Confirm from the email at the SMTP server.
        [received] = smtp_server.messages
        page.goto(site.base_url + confirm_path(received.parsed, site.base_url))
        page.click("text=Yes, confirm")
        page.wait_for_selector("text=You are subscribed")

        # The ticked papers shape the ranking, and are not offered themselves (the reader knows them): `digest rank`.
        result = cli("rank", "ada@example.org", "--json", "--limit", "10")
        assert result.exit_code == 0, result.output
        ranked = json.loads(result.output)
        assert {entry["id"] for entry in ranked} == {i for i, *_ in PAPERS} - {"2406.04093", "2501.00010"}
        # Interpretability before the unrelated papers. (On these seven papers the words the ticked ones share with it,
        # in three of the seven, weigh little with BM25's IDF: its likeness to them is under the "similar to" reason's
        # threshold, and every relevance is negative, under the day's average paper, so only their order says this.)
        relevance = {entry["id"]: entry["relevance"] for entry in ranked if not any(r.startswith("nothing matched") for r in entry["reasons"])}
        assert max(relevance, key=relevance.__getitem__) == "2501.00005", relevance
        assert problems == []  # no CSP violation, no script error

        dark = browser.new_context(viewport=PHONE, color_scheme="dark").new_page()
        dark.goto(f"{site.base_url}/")
        shoot(dark, "03-front-dark-phone")
        desktop = browser.new_context(viewport=DESKTOP).new_page()
        desktop.goto(f"{site.base_url}/day/{site.clock().date()}")
        shoot(desktop, "04-day-desktop")
        context.close()


def test_browser_front_page_reads_and_subscribes_without_javascript(home, browser):
    with serve_web(home) as site:
        store_papers(site, site.clock() - timedelta(hours=2))
        context = browser.new_context(viewport=PHONE, java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{site.base_url}/")
        page.locator("#paper-1 summary").click()  # <details> needs no script
        assert page.locator("#paper-1 details.abstract > p").is_visible()
        page.check("#paper-3 input[name=seed]")
        page.fill("#email", "grace@example.org")
        page.click("#subscribe button[type=submit]")
        page.wait_for_selector("text=Check your inbox")
        with session_scope(site.engine) as session:
            sub = get_subscriber(session, "grace@example.org")
        assert (sub.seed_papers, sub.tz) == (["2501.00001"], "UTC")  # no script: the zone stays UTC
        page.goto(f"{site.base_url}/search?q=sparse+autoencoders")
        assert page.locator("article h3").all_inner_texts()[:1] == [PAPERS[0][1]]
        shoot(page, "05-search-phone-nojs")
        context.close()


def sent_edition(site, smtp_server, tmp_path) -> tuple[str, list[str], str]:
    """A real edition sent with run_job over SMTP: the "view in your browser" URL the email carries, the titles of
    the email's picks and the email's HTML."""
    import_file(site.engine, write_papers(tmp_path / "day.jsonl", "d1"), NOW - timedelta(hours=1))
    with session_scope(site.engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders interpretability"]), now=NOW - timedelta(days=3))
    assert run_job(site.engine, site.settings, NOW, fetch=False).sent == 1
    [received] = smtp_server.messages
    html = received.parsed.get_body(("html",)).get_content()
    picks = [unescape(t) for t in re.findall(r'class="title"[^>]*>([^<]+)</(?:a|span)>', html)]
    url = unescape(re.search(r'<a class="browser-link" href="([^"]+)"', html).group(1))
    claim = read_token(SECRET, "edition", url.removeprefix(f"{site.base_url}/edition/"))  # signed now: compare what it says
    assert (claim.subscriber_id, claim.version, claim.edition) == (sub.id, sub.token_version, NOW.date().isoformat())
    return url, picks, html


def test_browser_edition_page_shows_the_picks_of_the_email(home, browser, smtp_server, tmp_path):  # noqa: F811
    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none", from_address="digest@example.org") as site:
        site.clock.now = NOW
        url, picks, html = sent_edition(site, smtp_server, tmp_path)
        assert len(picks) >= 3
        page = browser.new_context(viewport=PHONE).new_page()
        page.goto(url)  # the link in the email, as the reader clicks it
        assert page.locator("h2#picks-heading").text_content() == "Picked for you"  # the sections the email had, as recorded
        assert page.locator("article h3").all_inner_texts()[: len(picks)] == picks
        emailed_reasons = [" ".join(unescape(r).split()) for r in re.findall(r'class="reason"[^>]*>(.*?)</div>', html, re.S)]
        shown_reasons = [" ".join(r.split()) for r in page.locator("article p.reason").all_inner_texts()]
        assert emailed_reasons and shown_reasons[: len(emailed_reasons)] == [re.sub(r"<[^>]+>", "", r) for r in emailed_reasons]
        shoot(page, "06-edition-phone")
        # A view that grants nothing: no vote, preferences or unsubscribe link (they are in the email).
        assert page.locator("a[href*='/feedback/'], a[href*='/preferences/'], a[href*='/unsubscribe/']").count() == 0


def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations on the page (rules of WCAG 2.x A and AA, and best practices)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed: npm ci --prefix tests/node (as .ci/run does)")
def test_browser_pages_pass_axe_core(home, browser, smtp_server, tmp_path):  # noqa: F811
    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none", from_address="digest@example.org") as site:
        site.clock.now = NOW
        edition, _, html = sent_edition(site, smtp_server, tmp_path)
        store_papers(site, NOW - timedelta(hours=3))
        # The subscriber's own pages too, by the links of the email: preferences and unsubscribe.
        own = [unescape(re.search(rf'href="{re.escape(site.base_url)}(/{kind}/[^"]+)"', html).group(1)) for kind in ("preferences", "unsubscribe")]
        # The page a confirmation leads to (its notice), and the error page of a link cut short (404).
        paths = ["/", f"/day/{NOW.date()}", "/search?q=sparse+autoencoders", "/search?q=nothing+matches+this", edition.removeprefix(site.base_url),
                 "/subscribe", *own, f"{own[0]}?done=confirm", "/no/such/page"]
        found = {}
        for scheme in ("light", "dark"):
            # The pages' CSP lets only their own nonce run scripts; the test's injected axe-core needs the bypass.
            page = browser.new_context(viewport=PHONE, color_scheme=scheme, bypass_csp=True).new_page()
            for path in paths:
                response = page.goto(site.base_url + path)
                assert response is not None and response.status == (404 if path == "/no/such/page" else 200), path  # the page meant
                if path == "/":
                    page.locator("details.abstract summary").first.click()  # an open disclosure is checked too
                found[f"{scheme} {path[:20]}{path[-12:] if '?done' in path else ''}"] = axe_violations(page)
        assert found == {key: [] for key in found}


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed: npm ci --prefix tests/node (as .ci/run does)")
def test_browser_paper_lists_keep_the_heading_order(home, browser):
    """A screen reader user moves by headings: the papers' titles (h3) sit under an h2 on every page that lists them,
    not straight under the h1 (axe-core's heading-order rule: no level skipped), on the day and search pages as on the
    front page and the edition page."""
    with serve_web(home) as site:
        site.clock.now = NOW
        store_papers(site, NOW - timedelta(hours=3))
        page = browser.new_context(viewport=DESKTOP, bypass_csp=True).new_page()
        found = {}
        for path in ("/", f"/day/{NOW.date()}", "/search?q=sparse+autoencoders"):
            assert page.goto(site.base_url + path).ok, path
            assert page.locator("article h3").count() > 0, path
            levels = page.evaluate("[...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => Number(h.tagName[1]))")
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("async () => await axe.run(document, {runOnly: ['heading-order'], resultTypes: ['violations']})")
            found[path.split("?")[0][:5]] = ([(a, b) for a, b in zip(levels, levels[1:]) if b > a + 1],
                                             [node["target"] for v in result["violations"] for node in v["nodes"]])
        assert found == {key: ([], []) for key in found}
