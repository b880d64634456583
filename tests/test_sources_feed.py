"""Generic RSS and Atom feeds: which entry is which paper. A feed entry without a DOI or an arXiv id is found again by
its source's guid (else its link), so a title the publisher corrects is the same paper: real HTTP server, real
SQLite file (and PostgreSQL when available), the real CLI and a real SMTP server."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import time_machine

from digest.models import Paper
from digest.sources.parse import parse_source
from digest.store import open_engine, session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber, record_feedback

DAY1 = datetime(2026, 9, 14, 8, 0, tzinfo=timezone.utc)
DAY2 = datetime(2026, 9, 15, 8, 0, tzinfo=timezone.utc)
READER = "reader@example.org"


def rss(*items: tuple[str, str, str, str]) -> bytes:
    """An RSS 2.0 journal feed; each item is (guid, link, title, description)."""
    body = "".join(f"<item><guid isPermaLink=\"false\">{guid}</guid><link>{link}</link><title>{title}</title>"
                   f"<description>{text}</description></item>" for guid, link, title, text in items)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Journal of Speech</title>{body}</channel></rss>'.encode()


def smtp_env(server) -> dict[str, str]:
    return {"DIGEST_SMTP_HOST": server.host, "DIGEST_SMTP_PORT": str(server.port), "DIGEST_SMTP_SECURITY": "none", "DIGEST_SMTP_TIMEOUT": "10"}


def paper_rows(home: Path) -> list[dict]:
    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("SELECT id, key, title, abstract, first_seen FROM paper ORDER BY id")).mappings()]
    engine.dispose()
    return rows


def test_fetch_a_corrected_title_is_the_same_paper_and_never_sent_again(cli, home: Path, sqlite_engine, feed_server, smtp_server) -> None:
    """The defect: a journal fixes a typo in an entry's title (same guid, same link) and the entry became a second
    paper, sent again the next day. It stays one paper, with the corrected title and abstract, its id, its first-seen
    date, its vote and its place in the ledger, and the next edition carries only what is really new."""
    (home / "digest.toml").write_text('secret_key = "feed-test-secret-key-0123456789"\nfrom_address = "digest@example.org"\n', encoding="utf-8")
    typo = ("tag:journal.example.org,2026:article-1041", "https://journal.example.org/a/1041",
            "Speach recognition with sparse autoencoders", "We study speech recognition with sparse autoencoders.")
    other = ("tag:journal.example.org,2026:article-1042", "https://journal.example.org/a/1042",
             "Robust speech recognition in noisy rooms", "Speech recognition when the room is loud.")
    fixed = (*typo[:2], "Speech recognition with sparse autoencoders", "We study speech recognition with sparse autoencoders, corrected.")
    new = ("tag:journal.example.org,2026:article-1043", "https://journal.example.org/a/1043",
           "Speech recognition for bird song", "Speech recognition methods applied to bird song.")
    feed_server.documents["journal.xml"] = rss(typo, other)
    added = cli("sources", "add", feed_server.url("doc/journal.xml"), "--name", "journal")
    assert added.exit_code == 0, added.output
    engine = sqlite_engine
    with session_scope(engine) as session:
        add_subscriber(session, READER, SubscriberInput(interests=["speech recognition"], send_at="07:00", tz="UTC"), now=DAY1.replace(day=1))

    with time_machine.travel(DAY1, tick=True):
        first = cli("run", "--fetch", "always", env=smtp_env(smtp_server))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "journal: new: 2 entries, 2 new, 0 updated, 0 unchanged"
    assert "sent 1, skipped 0" in first.output
    (before,) = [r for r in paper_rows(home) if r["title"] == typo[2]]
    with session_scope(engine) as session:
        reader = get_subscriber(session, READER)
        paper = session.get(Paper, before["id"])
        record_feedback(session, reader, paper, 1, DAY1)

    feed_server.documents["journal.xml"] = rss(fixed, other, new)
    with time_machine.travel(DAY2, tick=True):
        second = cli("run", "--fetch", "always", env=smtp_env(smtp_server))
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[0] == "journal: new: 3 entries, 1 new, 1 updated, 1 unchanged"
    rows = paper_rows(home)
    assert [r["title"] for r in rows] == [fixed[2], other[2], new[2]]
    (after,) = [r for r in rows if r["title"] == fixed[2]]
    assert (after["id"], after["first_seen"], after["abstract"]) == (before["id"], before["first_seen"], fixed[3])
    assert after["key"] == "title:speech recognition with sparse autoencoders"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT paper_id, value FROM feedback")).all() == [(before["id"], 1)]
        carried = [sa.types.JSON().result_processor(conn.dialect, None)(p) for (p,) in conn.execute(sa.text("SELECT papers FROM delivery ORDER BY id"))]
        sent_ids = {p for (p,) in conn.execute(sa.text("SELECT paper_id FROM sent_paper"))}
    new_id = rows[2]["id"]
    assert before["id"] in carried[0] and carried[1] == [new_id]  # the second email carries only the new paper
    assert sent_ids == {r["id"] for r in rows}


# --- which id identifies an entry (pure: parse_source) -----------------------------------------------------------


def item(title: str, guid: str | None = None, link: str | None = None) -> str:
    guid_tag = f"<guid>{guid}</guid>" if guid is not None else ""
    link_tag = f"<link>{link}</link>" if link is not None else ""
    return f"<item><title>{title}</title>{guid_tag}{link_tag}<description>About {title}.</description></item>"


def item_ids(*items: str, source_url: str = "") -> list[str | None]:
    document = f'<rss version="2.0"><channel><title>J</title><link>https://journal.example.org/</link>{"".join(items)}</channel></rss>'
    return [p.item_id for p in parse_source("feed", document.encode(), source_url=source_url).papers]


@pytest.mark.parametrize("items,expected", [
    ([item("A", "tag:journal.example.org,2026:1041", "https://journal.example.org/a/1041")], ["tag:journal.example.org,2026:1041"]),
    ([item("A", "5f0c6a52d1e84b0f", "https://journal.example.org/a/1041")], ["5f0c6a52d1e84b0f"]),
    ([item("A", link="https://journal.example.org/a/1041")], ["https://journal.example.org/a/1041"]),
    ([item("A", "1", "https://journal.example.org/a/1041")], ["https://journal.example.org/a/1041"]),
    ([item("A", "17")], [None]),
    ([item("A", "urn:x", "https://journal.example.org/a/1"), item("B", "urn:x", "https://journal.example.org/a/2")],
     ["https://journal.example.org/a/1", "https://journal.example.org/a/2"]),
    ([item("A", "https://journal.example.org/", "https://journal.example.org/"), item("B", "https://journal.example.org/", "https://journal.example.org/")],
     [None, None]),
    ([item("A", "tag:j,2026:1", "https://journal.example.org/"), item("B", "tag:j,2026:2", "https://journal.example.org/")],
     ["tag:j,2026:1", "tag:j,2026:2"]),
    ([item("A", "tag:j,2026:1"), item("A", "tag:j,2026:1")], ["tag:j,2026:1"]),
], ids=["uri-guid", "hash-guid", "link-only", "counter-guid-uses-link", "counter-guid-no-link", "guid-shared-uses-links",
        "guid-and-link-shared", "link-shared-guids-own", "same-entry-twice"])
def test_parse_source_feed_entry_item_id_is_its_guid_else_its_link(items, expected):
    assert item_ids(*items) == expected


def test_parse_source_feed_counter_guid_made_a_url_by_the_feed_address_is_no_item_id():
    """RSS's <guid>17</guid> claims to be a permalink (isPermaLink defaults to true): feedparser resolves it against
    the feed's address, and "17" looked like https://journal.example.org/feed/17, a URL to trust."""
    url = "https://journal.example.org/feed/rss.xml"
    assert item_ids(item("A", "17"), item("B", "18", "https://journal.example.org/a/1042"), source_url=url) == [
        None, "https://journal.example.org/a/1042"]
    assert item_ids(item("A", "https://journal.example.org/a/1041"), source_url=url) == ["https://journal.example.org/a/1041"]


def test_parse_source_atom_entry_item_id_is_its_id():
    document = ('<feed xmlns="http://www.w3.org/2005/Atom"><title>J</title><id>urn:uuid:feed</id>'
                "<entry><title>A</title><id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>"
                '<link href="https://journal.example.org/a/1"/><summary>About A.</summary></entry></feed>')
    assert [p.item_id for p in parse_source("feed", document.encode()).papers] == ["urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6"]
