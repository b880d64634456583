"""The public pages over real HTTP (waitress on 127.0.0.1, httpx as the browser, a real SQLite file): the front page
with its Subscribe box, day pages, search, the Atom feed, caching (ETag, Last-Modified, 304), and a sent edition on
the web (/edition/<token>)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html import unescape

import feedparser
import pytest
from web_server import SECRET, serve_web

from digest.sources import ParsedPaper
from digest.store import deliveries as ledger
from digest.store import session_scope
from digest.store.editions import record_edition_contents
from digest.store.papers import upsert_papers
from digest.store.sources import add_source, find_source
from digest.store.subscribers import SubscriberInput, add_subscriber, bump_token_version, find_subscriber
from digest.tokens import edition_url, make_token, read_token
from digest.web.front import DAY_PAGE, FRONT_PER_DAY, SEARCH_PAGE

NOW = datetime(2026, 8, 13, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()
LONG = ("Sparse autoencoders recover interpretable features from the activations of large language models. "
        "We study how dictionary size, sparsity and training data change what the features mean. "
        "Features split as the dictionary grows, and their explanations become more specific. "
        "We release the dictionaries, the training code and an interactive viewer for every feature we found. "
        "Finally, we show that features found this way steer the model more reliably than neurons or directions.")


@pytest.fixture
def site(home):
    with serve_web(home) as running:
        running.clock.now = NOW
        yield running


def paper(n: int, title: str, abstract: str = "A short abstract.", **kw) -> ParsedPaper:
    ident = f"2608.{n:05d}"
    fields = dict(key=f"arxiv:{ident}", ident=ident, title=title, abstract=abstract, arxiv_id=ident, authors=["Ada Lovelace"],
                  url=f"https://arxiv.org/abs/{ident}")
    return ParsedPaper(**{**fields, **kw})


def store(site, papers: list[ParsedPaper], when: datetime = NOW, source: str = "arxiv", kind: str = "arxiv-rss") -> None:
    with session_scope(site.engine) as session:
        found = find_source(session, source)
        source_id = found.id if found else add_source(session, source, kind, f"https://example.org/{source}", when).id
    upsert_papers(site.engine, source_id, papers, when)


def titles_on(html: str) -> list[str]:
    return [unescape(t) for t in re.findall(r'<h3 id="paper-\d+-title">(?:<a href="[^"]*">)?([^<]+)', html)]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


# --- the front page -----------------------------------------------------------------------------------


def test_front_page_orders_todays_papers_by_the_trending_score(site):
    store(site, [
        paper(1, "Plain arXiv paper"),
        paper(2, "Popular everywhere", LONG, authors=["Ana", "Ben", "Cy", "Dee"], github_repo="https://github.com/x/sae"),
        paper(3, "Somewhat popular"),
    ])
    store(site, [paper(2, "Popular everywhere", upvotes=90), paper(3, "Somewhat popular", upvotes=10)], NOW + timedelta(minutes=5), "hf", "hf-daily")
    page = site.client.get("/")
    assert page.status_code == 200
    assert titles_on(page.text) == ["Popular everywhere", "Somewhat popular", "Plain arXiv paper"]
    card = page.text[page.text.index('id="paper-2"'):page.text.index("</article>", page.text.index('id="paper-2"'))]
    assert '<a href="https://arxiv.org/abs/2608.00002">Popular everywhere</a>' in card
    assert "Ana, Ben, Cy et al." in card
    assert 'badge-arxiv">arXiv' in card and 'badge-hf">Hugging Face' in card and " 90<" in card
    assert 'href="https://arxiv.org/pdf/2608.00002"' in card and 'href="https://github.com/x/sae"' in card
    summary = re.search(r"<details class=\"abstract\"><summary>(.*?)</summary><p>(.*?)</p></details>", card, re.S)
    assert summary and LONG.startswith(unescape(summary.group(1)).split(" <span")[0])  # folded after a sentence
    assert (unescape(summary.group(1)).split(" <span")[0] + " " + unescape(summary.group(2))) == LONG  # nothing lost
    short = page.text[page.text.index('id="paper-1"'):]
    assert '<p class="abstract">A short abstract.</p>' in short[:short.index("</article>")]
    assert 'type="checkbox" name="seed" value="2608.00002" form="subscribe"' in card
    assert 'rel="alternate" type="application/atom+xml"' in page.text and "A quiet day" not in page.text


def test_front_page_shows_the_newest_day_first_and_links_the_rest_of_a_day(site):
    store(site, [paper(n, f"Yesterday {n}") for n in range(1, 4)], NOW - timedelta(days=1))
    store(site, [paper(100 + n, f"Today {n}") for n in range(FRONT_PER_DAY + 5)])
    page = site.client.get("/").text
    shown = titles_on(page)
    assert len(shown) == FRONT_PER_DAY + 3 and shown[0].startswith("Today") and shown[-1].startswith("Yesterday")
    assert page.index("Thursday 13 August 2026") < page.index("Wednesday 12 August 2026")
    assert f'<a href="/day/{TODAY}">All {FRONT_PER_DAY + 5} papers of Thursday 13 August 2026</a>' in page


def test_front_page_on_a_quiet_day_says_so_and_links_the_last_day_with_papers(site):
    assert "A quiet day: no new papers yet today" in site.client.get("/").text  # an empty store, no link
    last = TODAY - timedelta(days=5)
    store(site, [paper(1, "Old news")], NOW - timedelta(days=5))
    page = site.client.get("/").text
    assert "A quiet day: no new papers yet today, Thursday 13 August 2026." in page
    assert f'The last papers came on <a href="/day/{last}">Saturday 8 August 2026</a>' in page
    assert titles_on(page) == []  # five days ago is not on the front page
    store(site, [paper(2, "Yesterday's paper")], NOW - timedelta(days=1))
    page = site.client.get("/").text
    assert "A quiet day" in page and titles_on(page) == ["Yesterday's paper"]


# --- subscribing from the front page ------------------------------------------------------------------


def subscribe_from_front(site, client=None, **form):
    client = client or site.client
    page = client.get("/")
    data = {"csrf_token": csrf_of(page.text), "email": "ada@example.org", "interests": "", "tz": "Europe/Paris", **form}
    return client.post("/subscribe", data=data)


def pending(site, email: str = "ada@example.org"):
    with session_scope(site.engine) as session:
        return find_subscriber(session, email)


def test_subscribe_box_turns_ticked_papers_into_seed_papers(site):
    store(site, [paper(1, "Sparse autoencoders"), paper(2, "Protein folding"), paper(3, "Robots")])
    response = subscribe_from_front(site, seed=["2608.00001", "2608.00003"])
    assert response.status_code == 200 and "Check your inbox" in response.text
    sub = pending(site)
    assert (sub.status, sub.seed_papers, sub.interests, sub.tz) == ("pending", ["2608.00001", "2608.00003"], [], "Europe/Paris")
    [message] = site.outbox_messages()
    assert message["To"] == "ada@example.org" and "/confirm/" in message.get_body(("plain",)).get_content()


def test_subscribe_box_refuses_an_unknown_paper_and_keeps_the_ticks(site):
    store(site, [paper(1, "Sparse autoencoders")])
    response = subscribe_from_front(site, seed=["2608.00001", "9999.99999"])
    assert response.status_code == 400 and "No paper &#39;9999.99999&#39; is known here" in response.text
    assert ticked_on(response.text) == ["2608.00001", "9999.99999"] and "2 papers ticked" in response.text
    assert pending(site) is None and site.outbox_messages() == []


def ticked_on(html: str) -> list[str]:
    """The seed papers a subscribe page sends again: its ticked "seed" checkboxes."""
    return re.findall(r'<input type="checkbox" name="seed" value="([^"]+)" id="seed-\d+" checked', html)


def test_subscribe_box_with_too_many_ticks_lets_the_reader_untick(site):
    store(site, [paper(n, f"Paper number {n}") for n in range(1, 26)])
    ticks = [f"2608.{n:05d}" for n in range(1, 26)]
    too_many = subscribe_from_front(site, seed=ticks)
    assert too_many.status_code == 400 and "Tick at most 20 papers" in too_many.text and pending(site) is None
    assert ticked_on(too_many.text) == ticks and "Paper number 25" in too_many.text  # each one a checkbox, with its title
    assert 'type="hidden" name="seed"' not in too_many.text
    assert 'aria-describedby="seed_papers-error"' in too_many.text
    kept = ticks[:20]  # the reader unticks five and sends the page again
    again = site.client.post("/subscribe", data={"csrf_token": csrf_of(too_many.text), "email": "ada@example.org", "interests": "",
                                                 "tz": "Europe/Paris", "seed": kept})
    assert again.status_code == 200 and "Check your inbox" in again.text
    assert pending(site).seed_papers == kept


def test_subscribe_box_checks_csrf_and_shares_the_subscribe_pages_limits(home):
    with serve_web(home, subscribe_limit=3) as site:
        site.clock.now = NOW
        store(site, [paper(1, "Sparse autoencoders")])
        forged = site.new_client().post("/subscribe", data={"email": "eve@example.org", "seed": "2608.00001"})  # counts: same client address
        assert forged.status_code == 400 and pending(site, "eve@example.org") is None
        assert subscribe_from_front(site, seed=["2608.00001"]).status_code == 200
        assert subscribe_from_front(site, seed=["2608.00001"]).status_code == 200  # capped per address: no second email
        assert len(site.outbox_messages()) == 1
        limited = subscribe_from_front(site, email="bob@example.org")
        assert limited.status_code == 429 and "Retry-After" in limited.headers  # the fourth try from this client address


# --- day pages and search -----------------------------------------------------------------------------


def test_day_page_links_the_days_before_and_after_and_pages(site):
    store(site, [paper(1, "Monday paper")], NOW - timedelta(days=3))
    store(site, [paper(100 + n, f"Thursday paper {n}") for n in range(DAY_PAGE + 5)])
    page = site.client.get(f"/day/{TODAY}").text
    assert len(titles_on(page)) == DAY_PAGE and f'<a href="/day/{TODAY - timedelta(days=3)}" rel="prev">' in page
    assert 'rel="next"' not in page and f'href="/day/{TODAY}?page=2">Next page' in page
    second = site.client.get(f"/day/{TODAY}?page=2").text
    assert len(titles_on(second)) == 5 and f"Papers {DAY_PAGE + 1} to {DAY_PAGE + 5} of {DAY_PAGE + 5}." in second
    monday = site.client.get(f"/day/{TODAY - timedelta(days=3)}").text
    assert titles_on(monday) == ["Monday paper"] and f'<a href="/day/{TODAY}" rel="next">' in monday
    empty = site.client.get(f"/day/{TODAY - timedelta(days=1)}")
    assert empty.status_code == 200 and "No papers were first seen that day." in empty.text
    for bad in (f"/day/{TODAY}?page=3", f"/day/{TODAY}?page=0", f"/day/{TODAY}?page=x", "/day/2026-8-13", "/day/2026-02-30", "/day/today"):
        assert site.client.get(bad).status_code == 404, bad


def test_search_page_finds_stemmed_words_and_pages(site):
    store(site, [paper(n, f"Sparse autoencoder study {n}") for n in range(SEARCH_PAGE + 5)] + [paper(99, "Protein folding", "Proteins fold.")])
    first = site.client.get("/search", params={"q": "autoencoders"}).text
    assert f"{SEARCH_PAGE + 5} papers match &ldquo;<bdi>autoencoders</bdi>&rdquo;: 1 to {SEARCH_PAGE}" in first
    assert len(titles_on(first)) == SEARCH_PAGE and "Protein" not in first and 'href="/search?q=autoencoders&amp;page=2"' in first
    assert len(titles_on(site.client.get("/search", params={"q": "autoencoders", "page": 2}).text)) == 5
    none = site.client.get("/search", params={"q": "<script>alert(1)</script>"}).text
    assert "No paper matches &ldquo;<bdi>&lt;script&gt;alert(1)&lt;/script&gt;</bdi>&rdquo;." in none and "<script>alert" not in none
    assert site.client.get("/search", params={"q": "autoencoders", "page": 3}).status_code == 404
    assert "Every word must match" in site.client.get("/search").text


# --- the feed -----------------------------------------------------------------------------------------


def test_feed_is_atom_of_the_front_pages_list_with_stable_ids(site):
    store(site, [paper(1, "Plain paper", authors=["Ana", "Ben"]), paper(2, "Popular paper", LONG)])
    store(site, [paper(2, "Popular paper", upvotes=50)], NOW + timedelta(minutes=1), "hf", "hf-daily")
    response = site.client.get("/feed.xml")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/atom+xml")
    feed = feedparser.parse(response.content)
    assert not feed.bozo and feed.version == "atom10"
    assert [e.title for e in feed.entries] == titles_on(site.client.get("/").text) == ["Popular paper", "Plain paper"]
    popular, plain = feed.entries
    assert popular.link == "https://arxiv.org/abs/2608.00002" and popular.summary == LONG
    assert [a.name for a in plain.authors] == ["Ana", "Ben"] and {t.term for t in popular.tags} == {"arXiv", "Hugging Face"}
    assert feed.feed.links[0].href == f"{site.base_url}/feed.xml" and len({e.id for e in feed.entries}) == 2
    store(site, [paper(3, "Another paper")], NOW + timedelta(hours=1))
    later = feedparser.parse(site.client.get("/feed.xml").content)
    assert {e.title: e.id for e in later.entries if e.title != "Another paper"} == {e.title: e.id for e in feed.entries}


# --- caching ------------------------------------------------------------------------------------------


def test_public_pages_answer_304_until_a_fetch_changes_them(site):
    store(site, [paper(1, "First")])
    for path in ("/", f"/day/{TODAY}", "/feed.xml", "/search?q=first"):
        first = site.client.get(path)
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        again = site.client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag, path
        # The front page's form carries this browser's token: only its ETag (which follows the cookie) earns a 304.
        assert site.client.get(path, headers={"If-Modified-Since": modified}).status_code == (200 if path == "/" else 304), path
        assert "Content-Security-Policy" in again.headers and again.headers["X-Frame-Options"] == "DENY"
    front, day = site.client.get("/"), site.client.get(f"/day/{TODAY}")
    assert front.headers["Cache-Control"] == "private, no-cache" and front.headers["Vary"] == "Cookie"
    assert day.headers["Cache-Control"] == "public, no-cache"
    store(site, [paper(2, "Second")], NOW + timedelta(minutes=30))
    changed = site.client.get("/", headers={"If-None-Match": front.headers["ETag"]})
    assert changed.status_code == 200 and titles_on(changed.text) == ["First", "Second"]
    site.clock.now = NOW + timedelta(days=1)  # a new day: the front page changes even without a fetch
    assert site.client.get(f"/day/{TODAY}", headers={"If-None-Match": day.headers["ETag"]}).status_code == 200


def test_front_page_etag_follows_the_csrf_cookie(site):
    first = site.client.get("/")
    stranger = site.new_client().get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert stranger.status_code == 200 and "digest_csrf=" in stranger.headers["Set-Cookie"]  # a form for its own cookie
    assert csrf_of(stranger.text) != csrf_of(first.text)
    assert site.client.get("/", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_personal_pages_stay_no_store(site):
    with session_scope(site.engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(), now=NOW)
    for path in ("/subscribe", f"/preferences/{make_token(SECRET, 'preferences', sub.id, sub.token_version)}", "/no/such/page", "/day/x"):
        assert site.client.get(path).headers["Cache-Control"] == "no-store", path


# --- a sent edition on the web ------------------------------------------------------------------------


def sent_delivery(site, papers: list[int], edition: str = "2026-08-13"):
    with session_scope(site.engine) as session:
        sub = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["autoencoders"]), now=NOW)
    rows = ledger.open_deliveries(site.engine, [(sub.id, edition)], NOW, lambda s, e: f"<{s}.{e}@example.org>")
    row = rows[(sub.id, edition)]
    ledger.write(site.engine, lambda conn: ledger.record_sent(conn, row.id, sub.id, papers, 1, NOW, NOW))
    return sub, row


def test_edition_page_shows_the_recorded_picks_with_reasons_then_trending(site):
    store(site, [paper(1, "Pick one"), paper(2, "Pick two"), paper(3, "Trending one")])
    sub, row = sent_delivery(site, [2, 1, 3])
    ledger.write(site.engine, lambda conn: record_edition_contents(conn, row.id, [(2, ("matched terms: autoencoders",)), (1, ())], [3, 2]))
    url = edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-13")
    page = site.client.get(url)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "Your papers of Thursday 13 August 2026" in page.text
    assert titles_on(page.text) == ["Pick two", "Pick one", "Trending one"]
    assert page.text.index("Picked for you") < page.text.index("Pick two") < page.text.index("Trending today") < page.text.index("Trending one")
    assert '<p class="reason">matched terms: autoencoders</p>' in page.text and page.text.count('class="reason"') == 1


def test_edition_page_grants_nothing_to_whoever_has_it(site):
    """People share the "view in your browser" page: it carries no link that acts for the subscriber (preferences,
    unsubscribe, votes) and not their address; it says the controls are in the email."""
    store(site, [paper(1, "Pick one"), paper(2, "Trending one")])
    sub, row = sent_delivery(site, [1, 2])
    ledger.write(site.engine, lambda conn: record_edition_contents(conn, row.id, [(1, ("matched terms: autoencoders",))], [2]))
    page = site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-13"))
    assert page.status_code == 200 and titles_on(page.text) == ["Pick one", "Trending one"]
    for path in ("/preferences/", "/unsubscribe/", "/feedback/", "/confirm/", "/edition/"):
        assert path not in page.text, path
    assert "More like this" not in page.text and "Less like this" not in page.text
    assert "ada@example.org" not in page.text
    assert "in the email" in page.text  # where the controls are


def test_edition_page_of_an_email_sent_before_contents_were_recorded_lists_its_papers(site):
    store(site, [paper(1, "First"), paper(2, "Second")])
    sub, _ = sent_delivery(site, [2, 1])
    page = site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-13")).text
    assert titles_on(page) == ["Second", "First"] and "In this email" in page and "Trending today" not in page


def test_edition_page_refuses_other_links_unsent_editions_and_revoked_tokens(site):
    store(site, [paper(1, "First")])
    sub, _ = sent_delivery(site, [1])
    assert site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-12")).status_code == 404
    other = make_token(SECRET, "preferences", sub.id, sub.token_version)
    assert site.client.get(f"/edition/{other}").status_code == 400  # a token of another action
    url = edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-13")
    assert site.client.get(url[:-3] + "xyz").status_code == 400
    with session_scope(site.engine) as session:
        bump_token_version(session, find_subscriber(session, "ada@example.org"))
    assert site.client.get(url).status_code == 410


def test_edition_url_is_a_pure_signed_link_to_one_edition():
    url = edition_url("https://digest.example.org/", SECRET, 7, 3, "2026-08-13")
    assert url.startswith("https://digest.example.org/edition/") and url == edition_url("https://digest.example.org", SECRET, 7, 3, "2026-08-13")
    claim = read_token(SECRET, "edition", url.rsplit("/", 1)[1])
    assert (claim.action, claim.subscriber_id, claim.version, claim.edition) == ("edition", 7, 3, "2026-08-13")
    with pytest.raises(ValueError):
        edition_url("https://digest.example.org", SECRET, 7, 3, "13 August")


def test_edition_page_shows_the_picks_of_a_real_sent_email(home, smtp_server, tmp_path):  # noqa: F811
    from test_pipeline import TOPICS, write_papers

    from digest.ingest import import_file
    from digest.pipeline.job import run_job

    with serve_web(home, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none", from_address="digest@example.org") as site:
        site.clock.now = NOW
        import_file(site.engine, write_papers(tmp_path / "day.jsonl", "d1"), NOW - timedelta(hours=1))
        with session_scope(site.engine) as session:
            add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders interpretability"]), now=NOW - timedelta(days=3))
        assert run_job(site.engine, site.settings, NOW, fetch=False).sent == 1
        [received] = smtp_server.messages
        html = received.parsed.get_body(("html",)).get_content()
        emailed = [unescape(t) for t in re.findall(r'class="title"[^>]*>([^<]+)</(?:a|span)>', html)]
        assert emailed and all(TOPICS["sae"][0] in t for t in emailed)
        link = unescape(re.search(r'<a class="browser-link" href="([^"]+)"', html).group(1))  # "View in your browser"
        assert read_token(SECRET, "edition", link.rsplit("/", 1)[1]).edition == "2026-08-13"
        text = received.parsed.get_body(("plain",)).get_content()
        assert f"View in your browser: {link}" in text
        page = site.client.get(link)
        assert page.status_code == 200
        assert "Picked for you" in page.text  # the contents were recorded with 'sent'
        assert titles_on(page.text)[: len(emailed)] == emailed  # the email's picks, in the email's order
        [delivery] = ledger.deliveries_for(site.engine)
        assert len(titles_on(page.text)) == len(delivery.papers)  # and after them the email's trending papers


def test_recent_asks_for_the_version_at_most_once_per_ttl():
    from digest.web.cache import Recent

    moment = [100.0]
    loads: list[int] = []
    recent = Recent(1.0, clock=lambda: moment[0])
    load = lambda: loads.append(len(loads)) or len(loads)  # noqa: E731
    assert [recent.get(load) for _ in range(3)] == [1, 1, 1]
    moment[0] += 1.0  # a second later: asked again (a fetch shows on the pages within a second)
    assert recent.get(load) == 2 and len(loads) == 2
    assert [Recent(0).get(load) for _ in range(2)] == [3, 4]  # ttl 0: every time (the tests' web server)


def test_front_page_escapes_an_abstract_about_markup_stored_verbatim(site):
    words = 'We show how "javascript: URLs" and onload="x" handlers slip past filters.'
    store(site, [paper(1, "Cross-site scripting <b>in</b> extensions", words)])
    with session_scope(site.engine) as session:
        from digest.store.papers import get_paper_by_ident

        assert get_paper_by_ident(session, "2608.00001").abstract == words  # stored as the source wrote it
    page = site.client.get("/").text
    assert 'onload="x"' not in page and "<b>in</b>" not in page
    assert unescape(re.search(r'<p class="abstract">(.*?)</p>', page, re.S).group(1)) == words


def test_edition_page_of_a_pruned_edition_says_it_is_no_longer_kept(home):
    """keep_ledger_days: `digest prune` deletes the ledger of older editions, and their "view in your browser" links
    said "This edition was not sent" (404), which the reader who got it knows to be false."""
    with serve_web(home, keep_ledger_days=30) as site:
        site.clock.now = NOW
        store(site, [paper(1, "First")])
        sub, _ = sent_delivery(site, [1])  # 2026-08-13, today
        pruned = site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-07-01"))
        assert pruned.status_code == 410
        assert "This edition is no longer kept" in pruned.text and "the last 30 days" in pruned.text
        recent = site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-12"))  # inside the horizon
        assert recent.status_code == 404 and "This edition was not sent" in recent.text
        assert site.client.get(edition_url(site.base_url, SECRET, sub.id, sub.token_version, "2026-08-13")).status_code == 200


def test_confirm_page_names_the_ticked_papers_by_title(site):
    """The reader ticked titles on the front page: the confirm page, which shows what the button applies, names them so
    (an arXiv id alone says nothing), with the id for a seed no stored paper has."""
    store(site, [paper(1, "Sparse autoencoders"), paper(2, "Protein folding")])
    assert subscribe_from_front(site, seed=["2608.00001", "2608.00002"]).status_code == 200
    [message] = site.outbox_messages()
    link = re.search(r"/confirm/[A-Za-z0-9_.\-]+", message.get_body(("plain",)).get_content()).group(0)
    page = site.client.get(link)
    assert page.status_code == 200
    assert "Papers like: <bdi>Sparse autoencoders</bdi>, <bdi>Protein folding</bdi>" in page.text, page.text
