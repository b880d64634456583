"""Polite fetching against a real HTTP server on 127.0.0.1 (tests/feed_server.py); sleeps are recorded, never slept."""

from __future__ import annotations

import httpx
import pytest

from digest.config import load_settings
from digest.errors import SourceError
from digest.sources.fetch import fetch_arxiv_pages, fetch_feed, make_client

FEED = "real/arxiv-rss/rss-cs.SD-2026-06-12.xml"


@pytest.fixture
def settings(home):
    return load_settings(env={"DIGEST_CONTACT_EMAIL": "ops@example.org", "DIGEST_FETCH_TIMEOUT": "2",
                              "DIGEST_RETRY_AFTER_MAX": "5", "DIGEST_FETCH_RETRIES": "2"}, home=home)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_fetch_feed_sends_user_agent_and_returns_body_and_validators(feed_server, settings):
    result = fetch_feed(feed_server.url(f"files/{FEED}"), settings=settings)
    assert result.status == "ok" and result.body.startswith(b"<?xml") and result.http_status == 200
    assert result.etag and result.last_modified == "Thu, 13 Aug 2026 04:00:13 GMT"
    (request,) = feed_server.log
    assert "mailto:ops@example.org" in request.headers["user-agent"]
    assert "if-none-match" not in request.headers


def test_fetch_feed_conditional_get_gives_not_modified(feed_server, settings):
    first = fetch_feed(feed_server.url(f"files/{FEED}"), settings=settings)
    again = fetch_feed(feed_server.url(f"files/{FEED}"), settings=settings, etag=first.etag, last_modified=first.last_modified)
    assert (again.status, again.body, again.http_status) == ("not_modified", b"", 304)
    assert feed_server.log[1].headers["if-none-match"] == first.etag
    assert feed_server.log[1].headers["if-modified-since"] == first.last_modified
    only_date = fetch_feed(feed_server.url(f"files/{FEED}"), settings=settings, last_modified=first.last_modified)
    assert only_date.status == "not_modified"
    stale = fetch_feed(feed_server.url(f"files/{FEED}"), settings=settings, etag='"old"')
    assert stale.status == "ok" and stale.body


@pytest.mark.parametrize("route,status,moves", [
    ("moved", "moved", True), ("moved308", "moved", True), ("temp", "ok", False),
], ids=["301-moves", "308-moves", "302-stays"])
def test_fetch_feed_redirects_update_url_only_when_permanent(feed_server, settings, route, status, moves):
    asked = feed_server.url(f"{route}/{FEED}")
    result = fetch_feed(asked, settings=settings)
    assert result.status == status and result.body.startswith(b"<?xml")
    assert result.url == (feed_server.url(f"files/{FEED}") if moves else asked)


def test_fetch_feed_redirect_loop_is_an_error_that_says_so(feed_server, settings):
    # It said "more than 5 redirects from URL (`digest sources list` shows each source's state)": no loop, no advice.
    with pytest.raises(SourceError) as raised:
        fetch_feed(feed_server.url("loop/0"), settings=settings)
    assert str(raised.value) == (f"more than 5 redirects from {feed_server.url('loop/0')} (the last to {feed_server.url('loop/0')}) "
                                 "(the server redirects in a loop or too far; open the URL in a browser and add the feed's final address)")
    assert len(feed_server.requests_to("/loop/")) == 6


def test_fetch_feed_gone_is_reported_not_raised(feed_server, settings):
    result = fetch_feed(feed_server.url("gone"), settings=settings)
    assert (result.status, result.http_status) == ("gone", 410)


@pytest.mark.parametrize("status,retry_after", [(429, "2"), (503, "3"), (429, "none")], ids=["429-seconds", "503-seconds", "429-no-header"])
def test_fetch_feed_honours_retry_after(feed_server, settings, status, retry_after):
    sleeps = Sleeps()
    result = fetch_feed(feed_server.url(f"flaky/{FEED}?fail=2&status={status}&retry_after={retry_after}"), settings=settings, sleep=sleeps)
    assert result.status == "ok" and result.requests == 3
    assert sleeps == ([float(retry_after)] * 2 if retry_after != "none" else [1.0, 2.0])


def test_fetch_feed_honours_retry_after_http_date(feed_server, settings):
    sleeps = Sleeps()
    fetch_feed(feed_server.url(f"flaky/{FEED}?fail=1&retry_after=date:3"), settings=settings, sleep=sleeps)
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 3.0


def test_fetch_feed_gives_up_after_retries(feed_server, settings):
    sleeps = Sleeps()
    with pytest.raises(SourceError, match=r"HTTP 429 .* after 3 tries"):
        fetch_feed(feed_server.url(f"flaky/{FEED}?fail=9&retry_after=1"), settings=settings, sleep=sleeps)
    assert sleeps == [1.0, 1.0] and len(feed_server.log) == 3


def test_fetch_feed_refuses_retry_after_beyond_the_bound(feed_server, settings):
    sleeps = Sleeps()
    with pytest.raises(SourceError, match=r"come back in 3600 s .*retry_after_max"):
        fetch_feed(feed_server.url(f"flaky/{FEED}?fail=1&retry_after=3600"), settings=settings, sleep=sleeps)
    assert sleeps == [] and len(feed_server.log) == 1


def test_fetch_feed_times_out_with_hint(feed_server, settings):
    with pytest.raises(SourceError, match=r"no answer from .*/hang within 2 s.*fetch_timeout"):
        fetch_feed(feed_server.url("hang"), settings=settings)


@pytest.mark.parametrize("length", ["1", "0"], ids=["declared", "streamed"])
def test_fetch_feed_caps_body_size(feed_server, home, length):
    settings = load_settings(env={"DIGEST_MAX_FEED_BYTES": "50000"}, home=home)
    with pytest.raises(SourceError, match="max_feed_bytes"):
        fetch_feed(feed_server.url(f"big?bytes=2000000&length={length}"), settings=settings)
    ok = fetch_feed(feed_server.url(f"big?bytes=40000&length={length}"), settings=settings)
    assert len(ok.body) == 40000


@pytest.mark.parametrize("code,words", [
    (404, "not there"), (500, "server failed; the next fetch tries again"), (502, "server failed"), (403, "refuses us"),
    (400, "refuses the request as made; check the URL"), (405, "refuses the request as made"), (451, "refuses the request as made"),
])
def test_fetch_feed_http_errors_raise_with_hint(feed_server, settings, code, words):
    with pytest.raises(SourceError, match=f"HTTP {code}.*{words}") as raised:
        fetch_feed(feed_server.url(f"status/{code}"), settings=settings)
    # A 4xx refuses the request itself: it was "the server failed; the next fetch tries again", which it never does.
    assert ("tries again" in str(raised.value)) == (code >= 500)


def test_fetch_feed_unreachable_host_raises_with_hint(settings):
    with pytest.raises(SourceError, match=r"cannot reach http://127.0.0.1:1/.*check the URL"):
        fetch_feed("http://127.0.0.1:1/feed.xml", settings=settings)


def test_fetch_feed_uses_injected_transport(settings):
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(400, content=(b"<feed><entry><title>Error</title>"
                                            b"<summary>incorrect id format for abc</summary></entry></feed>"))

    with make_client(settings, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(SourceError, match="HTTP 400 Bad Request .*: incorrect id format for abc"):
            fetch_feed("https://export.arxiv.org/api/query?id_list=abc", settings=settings, client=client)
    assert seen[0].headers["user-agent"].startswith("digest/")


def test_fetch_arxiv_pages_pages_politely_until_the_cap(feed_server, settings):
    sleeps = Sleeps()
    pages, warnings = fetch_arxiv_pages(feed_server.url("api?search_query=all:testing&sortBy=submittedDate"),
                                        settings=settings, page_size=10, max_pages=2, sleep=sleeps)
    assert len(pages) == 2 and all(b"<entry>" in p for p in pages) and warnings == []
    assert sleeps == [3.0]  # arxiv_api_delay, at least 3 s, between requests and not before the first
    assert [r.path.split("?")[1] for r in feed_server.log] == [
        "search_query=all%3Atesting&sortBy=submittedDate&start=0&max_results=10",
        "search_query=all%3Atesting&sortBy=submittedDate&start=10&max_results=10",
    ]


def test_fetch_arxiv_pages_stops_at_total_results(settings):
    bodies = [b"<feed><opensearch:totalResults>3</opensearch:totalResults><entry>a</entry><entry>b</entry></feed>",
              b"<feed><opensearch:totalResults>3</opensearch:totalResults><entry>c</entry></feed>"]
    with make_client(settings, transport=httpx.MockTransport(lambda r: httpx.Response(200, content=bodies.pop(0)))) as client:
        pages, _ = fetch_arxiv_pages("https://export.arxiv.org/api/query?search_query=x", settings=settings, page_size=2,
                                     max_pages=10, client=client, sleep=Sleeps())
    assert len(pages) == 2 and bodies == []


def test_fetch_arxiv_pages_keeps_pages_read_before_a_failure(feed_server, settings):
    sleeps = Sleeps()
    pages, warnings = fetch_arxiv_pages(feed_server.url("api?search_query=all:testing"), settings=settings,
                                        page_size=10, max_pages=5, sleep=sleeps)
    assert len(pages) == 2 and sleeps == [3.0, 3.0]
    assert len(warnings) == 1 and "stopped paging at start=20: HTTP 404" in warnings[0]


def test_fetch_arxiv_pages_first_page_failure_raises(feed_server, settings):
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_arxiv_pages(feed_server.url("status/404"), settings=settings, sleep=Sleeps())


@pytest.mark.timeout(120)  # before fetch_deadline this never returned: the server trickles until the test ends
@pytest.mark.parametrize("head", ["1", "0"], ids=["body", "headers"])
def test_fetch_feed_cuts_off_a_server_that_trickles_bytes(feed_server, home, head):
    """A hostile or broken server sending one byte every 0.2 s never trips fetch_timeout (2 s per read): without a
    deadline on the whole request a 20 MB body at that pace takes 46 days, and `digest run` never reaches sending."""
    settings = load_settings(env={"DIGEST_FETCH_TIMEOUT": "2", "DIGEST_FETCH_DEADLINE": "1"}, home=home)
    with pytest.raises(SourceError, match=r"/trickle\?every=0.2&head=\d took more than fetch_deadline \(1 s\).*raise fetch_deadline"):
        fetch_feed(feed_server.url(f"trickle?every=0.2&head={head}"), settings=settings)
