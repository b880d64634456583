"""The deduplicating store: upserts and merge rules, on a SQLite file and (when available) PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from digest.errors import InputError, NotFoundError
from digest.models import Paper, PaperSource, Source
from digest.sources import ParsedPaper
from digest.sources.check import MAX_IDENTIFIER
from digest.sources.clean import MAX_KEY, paper_key
from digest.store import session_scope
from digest.store.papers import (
    best_abstract,
    count_papers,
    get_paper_by_ident,
    papers_since,
    source_names_of,
    upsert_papers,
)
from digest.store.sources import (
    add_source,
    get_source,
    list_sources,
    record_fetch_error,
    record_fetch_success,
    remove_source,
)

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(days=1)


def arxiv(n: str = "2608.11232", version: int = 1, **kw) -> ParsedPaper:
    fields = dict(
        key=f"arxiv:{n}", ident=n, title=f"Paper {n}", abstract="A short abstract.", authors=["Ruoxi Zhao"],
        categories=["cs.CL"], arxiv_id=n, version=version, url=f"https://arxiv.org/abs/{n}",
        announce_type="new", published=NOW - timedelta(hours=20), item_id=f"oai:arXiv.org:{n}v{version}",
    )
    fields.update(kw)
    return ParsedPaper(**fields)


def hf(n: str = "2608.11232", **kw) -> ParsedPaper:
    fields = dict(
        key=f"arxiv:{n}", ident=n, title=f"Paper {n}", abstract="A short abstract, told at greater length by Hugging Face.",
        authors=["Ruoxi Zhao", "Maziar Raissi"], arxiv_id=n, upvotes=12, ai_summary="LLM agents trade.",
        github_repo="https://github.com/x/backtrader-bench",
    )
    fields.update(kw)
    return ParsedPaper(**fields)


@pytest.fixture
def sources(engine):
    with session_scope(engine) as s:
        return {name: add_source(s, name, kind, f"https://example.org/{name}", NOW).id
                for name, kind in (("arxiv", "arxiv-rss"), ("hf", "hf-daily"), ("file:x.jsonl", "file"))}


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(Paper.__table__).order_by(Paper.__table__.c.key)).mappings()]


def links(engine) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        q = sa.select(Paper.__table__.c.key, PaperSource.__table__.c.source_id).join(PaperSource.__table__)
        return set(conn.execute(q).all())


def test_upsert_papers_inserts_new_rows_and_links_source(engine, sources):
    report = upsert_papers(engine, sources["arxiv"], [arxiv("2608.00001"), arxiv("2608.00002")], NOW)
    assert (report.new, report.updated, report.unchanged, report.linked) == (2, 0, 0, 2)
    stored = rows(engine)
    assert [r["key"] for r in stored] == ["arxiv:2608.00001", "arxiv:2608.00002"]
    assert stored[0]["authors"] == ["Ruoxi Zhao"] and stored[0]["first_seen"] == NOW
    assert links(engine) == {("arxiv:2608.00001", sources["arxiv"]), ("arxiv:2608.00002", sources["arxiv"])}


def test_upsert_papers_twice_changes_nothing(engine, sources):
    batch = [arxiv("2608.00001"), hf("2608.00002")]
    upsert_papers(engine, sources["arxiv"], batch, NOW)
    before = rows(engine)
    report = upsert_papers(engine, sources["arxiv"], batch, LATER)
    assert (report.new, report.updated, report.unchanged) == (0, 0, 2)
    after = rows(engine)
    assert [{k: v for k, v in r.items() if k != "last_seen"} for r in after] == [
        {k: v for k, v in r.items() if k != "last_seen"} for r in before]
    assert {r["last_seen"] for r in after} == {LATER}
    assert len(links(engine)) == 2


def test_upsert_papers_merges_arxiv_and_hf_into_one_row(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv()], NOW)
    report = upsert_papers(engine, sources["hf"], [hf()], LATER)
    assert (report.new, report.updated, report.linked) == (0, 1, 1)
    assert upsert_papers(engine, sources["hf"], [hf()], LATER).linked == 0
    (row,) = rows(engine)
    assert row["abstract"] == hf().abstract  # the longer real abstract
    assert row["upvotes"] == 12 and row["ai_summary"] == "LLM agents trade." and row["github_repo"].endswith("bench")
    assert row["authors"] == ["Ruoxi Zhao"]  # the first source's author list stays
    assert row["version"] == 1 and row["announce_type"] == "new" and row["categories"] == ["cs.CL"]
    assert row["first_seen"] == NOW and row["last_seen"] == LATER
    assert links(engine) == {("arxiv:2608.11232", sources["arxiv"]), ("arxiv:2608.11232", sources["hf"])}
    with session_scope(engine) as s:
        paper = get_paper_by_ident(s, "2608.11232")
        assert source_names_of(s, [paper.id]) == {paper.id: ["arxiv", "hf"]}


def test_upsert_papers_keeps_max_upvotes_and_longest_abstract(engine, sources):
    upsert_papers(engine, sources["hf"], [hf(upvotes=30)], NOW)
    report = upsert_papers(engine, sources["arxiv"], [arxiv(abstract="Short.")], LATER)
    (row,) = rows(engine)
    assert row["upvotes"] == 30 and row["abstract"] == hf().abstract
    assert row["version"] == 1  # version filled in from arXiv
    assert report.updated == 1


def test_upsert_papers_newer_version_updates_row(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv()], NOW)
    v2 = arxiv(version=2, title="Paper, revised", abstract="Rewritten.", announce_type="replace", published=LATER,
               updated=LATER, item_id="oai:arXiv.org:2608.11232v2")
    report = upsert_papers(engine, sources["arxiv"], [v2], LATER)
    assert (report.new, report.updated) == (0, 1)
    (row,) = rows(engine)
    assert (row["version"], row["title"], row["abstract"], row["updated"]) == (2, "Paper, revised", "Rewritten.", LATER)
    assert row["announce_type"] == "new"  # a replace announcement never makes it a new paper
    assert row["published"] == NOW - timedelta(hours=20) and row["first_seen"] == NOW
    # an older version seen afterwards changes nothing
    assert upsert_papers(engine, sources["arxiv"], [arxiv()], LATER).unchanged == 1


@pytest.mark.parametrize("hf_first", [False, True], ids=["hf-after-v2", "v2-after-hf"])
def test_upsert_papers_a_revisions_text_beats_a_copy_without_version(engine, sources, hf_first):
    """Hugging Face's copy (no version; taken from v1) had the longer abstract, so it replaced arXiv v2's rewritten one
    while the title stayed v2's: a row mixing two versions."""
    v2 = arxiv(version=2, title="Paper, revised", abstract="Rewritten.", announce_type="replace", item_id="oai:arXiv.org:2608.11232v2")
    first, second = ((sources["hf"], hf()), (sources["arxiv"], v2)) if hf_first else ((sources["arxiv"], v2), (sources["hf"], hf()))
    upsert_papers(engine, first[0], [first[1]], NOW)
    upsert_papers(engine, second[0], [second[1]], LATER)
    (row,) = rows(engine)
    assert (row["version"], row["title"], row["abstract"]) == (2, "Paper, revised", "Rewritten.")
    assert row["upvotes"] == hf().upvotes and row["ai_summary"] == hf().ai_summary  # what the copy adds stays


def test_upsert_papers_replace_of_unknown_paper_is_marked_replace(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv(version=3, announce_type="replace")], NOW)
    (row,) = rows(engine)
    assert row["announce_type"] == "replace" and row["version"] == 3


def test_upsert_papers_dedupes_within_one_batch(engine, sources):
    report = upsert_papers(engine, sources["arxiv"], [arxiv(), arxiv(version=2, categories=["cs.AI"]), hf()], NOW)
    assert (report.new, report.updated, report.unchanged) == (1, 0, 0)
    (row,) = rows(engine)
    assert row["version"] == 2 and row["upvotes"] == 12 and row["categories"] == ["cs.CL", "cs.AI"]


def test_upsert_papers_unique_key_is_enforced_by_database(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv()], NOW)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(Paper.__table__).values(key="arxiv:2608.11232", ident="x", title="t", abstract="",
                                                       authors=[], categories=[], upvotes=0, first_seen=NOW, last_seen=NOW))


def test_upsert_papers_rolls_back_with_callers_transaction(engine, sources):
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        upsert_papers(s, sources["arxiv"], [arxiv()], NOW)
        raise RuntimeError("later step failed")
    assert rows(engine) == []


def test_upsert_papers_many_rows_span_batches(engine, sources):
    batch = [arxiv(f"2608.{i:05d}") for i in range(4_500)]
    assert upsert_papers(engine, sources["file:x.jsonl"], batch, NOW).new == 4_500
    assert upsert_papers(engine, sources["file:x.jsonl"], batch, NOW).unchanged == 4_500
    with session_scope(engine) as s:
        assert count_papers(s) == 4_500 and count_papers(s, "file:x.jsonl") == 4_500 and count_papers(s, "hf") == 0


def test_papers_since_filters_by_first_seen_and_source(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv("2608.00001")], NOW)
    upsert_papers(engine, sources["hf"], [hf("2608.00002")], LATER)
    with session_scope(engine) as s:
        assert [p.ident for p in papers_since(s)] == ["2608.00002", "2608.00001"]
        assert [p.ident for p in papers_since(s, LATER)] == ["2608.00002"]
        assert [p.ident for p in papers_since(s, source="arxiv")] == ["2608.00001"]
        assert len(papers_since(s, limit=1)) == 1


@pytest.mark.parametrize("ident", ["2608.11232", "2608.11232v3", "arXiv:2608.11232", "10.48550/arxiv.2608.11232",
                                   "https://doi.org/10.48550/arXiv.2608.11232", "s001", "oai:arXiv.org:2608.11232v1"],
                         ids=["bare", "versioned", "prefixed", "doi", "doi-url", "imported-id", "item-id"])
def test_get_paper_by_ident_finds_each_form(engine, sources, ident):
    upsert_papers(engine, sources["arxiv"], [arxiv(doi="10.48550/arxiv.2608.11232")], NOW)
    upsert_papers(engine, sources["file:x.jsonl"], [arxiv(ident="s001", item_id="s001")], NOW)
    with session_scope(engine) as s:
        assert get_paper_by_ident(s, ident).key == "arxiv:2608.11232"
        assert get_paper_by_ident(s, "2608.99999") is None


def test_get_paper_by_ident_finds_old_style_and_title_keys(engine, sources):
    old = arxiv("hep-th/9901001", key="arxiv:hep-th/9901001")
    untitled = ParsedPaper(key="title:a paper without ids", ident="rec-7", title="A paper without IDs", item_id="rec-7")
    upsert_papers(engine, sources["file:x.jsonl"], [old, untitled], NOW)
    with session_scope(engine) as s:
        assert get_paper_by_ident(s, "hep-th/9901001v2").key == "arxiv:hep-th/9901001"
        assert get_paper_by_ident(s, "rec-7").key == "title:a paper without ids"


@pytest.mark.parametrize("first,second,expected", [
    ("Short.", "A longer abstract.", "A longer abstract."),
    ("A real abstract.", "No abstract available.", "A real abstract."),
    ("", "N/A", "N/A"),
    ("Same length", "Same-length", "Same length"),
], ids=["longer", "placeholder", "nothing-real", "tie-keeps-first"])
def test_best_abstract_prefers_longest_real(first, second, expected):
    assert best_abstract(first, second) == expected


def test_record_fetch_success_and_error_track_state(engine):
    with session_scope(engine) as s:
        src = add_source(s, "cl", "arxiv-rss", "https://rss.arxiv.org/rss/cs.CL", NOW)
        record_fetch_error(s, src, NOW, "HTTP 503")
        record_fetch_error(s, src, NOW, "HTTP 503")
    with session_scope(engine) as s:
        src = get_source(s, "cl")
        assert (src.consecutive_errors, src.last_error, src.last_error_at) == (2, "HTTP 503", NOW)
        record_fetch_success(s, src, LATER, count=139, new_papers=56, etag='"e1"', last_modified="Thu", url="https://new/")
        record_fetch_success(s, src, LATER, count=None)  # 304: the count and validators stay
    with session_scope(engine) as s:
        src = get_source(s, "cl")
        assert (src.consecutive_errors, src.last_error, src.last_success_at) == (0, None, LATER)
        assert (src.last_fetch_count, src.papers_seen, src.etag, src.url) == (139, 56, '"e1"', "https://new/")
        record_fetch_error(s, src, LATER, "gone (HTTP 410)", disable=True)
    with session_scope(engine) as s:
        src = get_source(s, "cl")
        assert not src.enabled and src.disabled_reason == "gone (HTTP 410)"
        assert list_sources(s, enabled_only=True) == []


def test_add_source_refuses_duplicate_name_and_unknown_kind(engine):
    with session_scope(engine) as s:
        add_source(s, "cl", "arxiv-rss", "https://rss.arxiv.org/rss/cs.CL", NOW)
    with pytest.raises(InputError, match="already exists"), session_scope(engine) as s:
        add_source(s, "cl", "feed", "https://x/", NOW)
    with pytest.raises(InputError, match="unknown source kind 'gopher'"), session_scope(engine) as s:
        add_source(s, "g", "gopher", "gopher://x/", NOW)


def test_remove_source_keeps_papers_and_drops_links(engine, sources):
    upsert_papers(engine, sources["arxiv"], [arxiv()], NOW)
    with session_scope(engine) as s:
        remove_source(s, "arxiv")
    with session_scope(engine) as s:
        assert count_papers(s) == 1 and links(engine) == set()
        assert [x.name for x in list_sources(s)] == ["hf", "file:x.jsonl"]
        with pytest.raises(NotFoundError, match="no source named 'arxiv'"):
            remove_source(s, "arxiv")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Source.__table__)).scalar_one() == 2


# --- a feed entry found again by its item id (guid, else link) -------------------------------------------------


def entry(title: str, item_id: str | None = "https://journal.example.org/a/1", **kw) -> ParsedPaper:
    """A generic feed entry without a DOI or an arXiv id: keyed by its title."""
    doi = kw.get("doi")
    fields = dict(key=paper_key(None, doi, title), ident=item_id or title, title=title, abstract=f"About {title.lower()}.",
                  authors=["Ana Garcia"], url=item_id, item_id=item_id)
    fields.update(kw)
    return ParsedPaper(**fields)


@pytest.fixture
def feeds(engine):
    with session_scope(engine) as s:
        return [add_source(s, name, "feed", f"https://{name}.example.org/rss", NOW).id for name in ("journal", "mirror")]


def test_upsert_papers_a_retitled_entry_is_the_same_paper_under_its_new_title(engine, feeds, caplog):
    """The publisher fixed a typo: same guid, new title key. The entry was a second paper, new again."""
    upsert_papers(engine, feeds[0], [entry("Speach recognition with sparse autoencoders")], NOW)
    (before,) = rows(engine)
    caplog.set_level("INFO", logger="digest.store")
    fixed = entry("Speech recognition with sparse autoencoders", abstract="About it, corrected.", authors=["Ana García"])
    report = upsert_papers(engine, feeds[0], [fixed], LATER)
    assert (report.new, report.updated, report.unchanged, report.linked) == (0, 1, 0, 0)
    (after,) = rows(engine)
    assert (after["id"], after["first_seen"], after["last_seen"]) == (before["id"], NOW, LATER)
    assert (after["key"], after["title"], after["abstract"], after["authors"]) == (
        "title:speech recognition with sparse autoencoders", fixed.title, "About it, corrected.", ["Ana García"])
    assert [r.getMessage() for r in caplog.records] == ["paper-retitled"]
    # From now on its new key finds it; the old title is a new paper only if something sends it again.
    assert upsert_papers(engine, feeds[0], [fixed], LATER).unchanged == 1


def test_upsert_papers_a_retitled_entry_another_source_carries_is_linked_not_retitled(engine, feeds):
    """Two feeds carry the article under one title and one of them corrects it: taking the correction would move
    the key away from the other feed's title, and each fetch would then rename it back and forth."""
    upsert_papers(engine, feeds[0], [entry("Speach recognition")], NOW)
    upsert_papers(engine, feeds[1], [entry("Speach recognition", "https://mirror.example.org/9")], NOW)
    report = upsert_papers(engine, feeds[0], [entry("Speech recognition")], LATER)
    assert (report.new, report.updated, report.unchanged, report.linked) == (0, 0, 1, 0)
    assert upsert_papers(engine, feeds[1], [entry("Speach recognition", "https://mirror.example.org/9")], LATER).unchanged == 1
    assert upsert_papers(engine, feeds[0], [entry("Speech recognition")], LATER).unchanged == 1
    (row,) = rows(engine)
    assert (row["key"], row["title"]) == ("title:speach recognition", "Speach recognition")


def test_upsert_papers_an_entry_that_gains_a_doi_stays_one_paper_under_its_doi(engine, feeds):
    """The DOI is the stronger key: it replaces the title key even when another feed carries the paper (that feed's
    old title still finds it, by its own guid), so a third source giving the DOI finds it too."""
    upsert_papers(engine, feeds[0], [entry("Speech recognition")], NOW)
    upsert_papers(engine, feeds[1], [entry("Speech recognition", "https://mirror.example.org/9")], NOW)
    report = upsert_papers(engine, feeds[0], [entry("Speech recognition", doi="10.5555/speech.1")], LATER)
    assert (report.new, report.updated) == (0, 1)
    assert upsert_papers(engine, feeds[1], [entry("Speech recognition", "https://mirror.example.org/9")], LATER).unchanged == 1
    with session_scope(engine) as s:
        third = add_source(s, "crossref", "feed", "https://crossref.example.org/rss", NOW).id
    assert upsert_papers(engine, third, [entry("Speech recognition", "tag:x,1", doi="10.5555/speech.1")], LATER).linked == 1
    (row,) = rows(engine)
    assert (row["key"], row["doi"], row["first_seen"]) == ("doi:10.5555/speech.1", "10.5555/speech.1", NOW)


def test_upsert_papers_an_entry_that_loses_its_doi_keeps_its_doi_key(engine, feeds):
    upsert_papers(engine, feeds[0], [entry("Speach recognition", doi="10.5555/speech.1")], NOW)
    assert upsert_papers(engine, feeds[0], [entry("Speech recognition")], LATER).updated == 1
    (row,) = rows(engine)
    assert (row["key"], row["title"]) == ("doi:10.5555/speech.1", "Speech recognition")


@pytest.mark.parametrize("first,second", [
    (dict(doi="10.5555/one"), dict(doi="10.5555/two")),
    ({}, dict(key="arxiv:2608.00001", arxiv_id="2608.00001")),
    (dict(key="arxiv:2608.00001", arxiv_id="2608.00001"), {}),
], ids=["two-dois", "title-then-arxiv", "arxiv-then-title"])
def test_upsert_papers_an_item_id_never_joins_what_a_doi_or_arxiv_id_tells_apart(engine, feeds, first, second):
    """A DOI or an arXiv id is the paper: one guid does not make two of them one."""
    upsert_papers(engine, feeds[0], [entry("Speech recognition", **first)], NOW)
    assert upsert_papers(engine, feeds[0], [entry("Speech recognition, revised", **second)], LATER).new == 1
    assert len(rows(engine)) == 2


def test_upsert_papers_two_records_of_one_import_with_one_id_are_two_papers(engine, sources):
    """A JSON Lines file giving one id to two records, stored in two batches of one transaction: the second is not
    a correction of the first (the guid matches only what the source sent before this import)."""
    with session_scope(engine) as s:
        upsert_papers(s, sources["file:x.jsonl"], [entry("First record", "7")], NOW)
        upsert_papers(s, sources["file:x.jsonl"], [entry("Second record", "7")], NOW)
    assert [r["title"] for r in rows(engine)] == ["First record", "Second record"]


def test_upsert_papers_the_old_title_still_listed_beside_the_corrected_one(engine, feeds):
    """The feed lists the corrected entry and, under another guid, one with the old title: the old title's row is
    that paper (its key), the corrected one is not folded into it too (one statement may not update a row twice)."""
    upsert_papers(engine, feeds[0], [entry("Speach recognition")], NOW)
    report = upsert_papers(engine, feeds[0], [entry("Speech recognition"), entry("Speach recognition", "https://journal.example.org/a/2")], LATER)
    assert (report.new, report.unchanged) == (1, 1)
    assert [r["title"] for r in rows(engine)] == ["Speach recognition", "Speech recognition"]


def test_upsert_papers_a_feed_that_changes_every_guid_is_still_found_by_title(engine, feeds):
    """The second rule, kept: some feeds make a new guid on every fetch; the title key still finds the paper."""
    upsert_papers(engine, feeds[0], [entry("Speech recognition", "urn:uuid:1f0c6a52-0001")], NOW)
    report = upsert_papers(engine, feeds[0], [entry("Speech recognition", "urn:uuid:1f0c6a52-0002")], LATER)
    assert (report.new, report.unchanged) == (0, 1)
    assert len(rows(engine)) == 1


def test_upsert_papers_a_long_item_id_is_bounded_and_still_finds_its_paper(engine, feeds):
    """A 2,000-character guid of non-ASCII characters (8,000 bytes) passes the record check; PostgreSQL's B-tree
    refuses entries over ~2,700 bytes, so it is stored bounded as keys are, and found again all the same."""
    guid = "https://journal.example.org/" + "é" * (MAX_IDENTIFIER - 28)
    assert upsert_papers(engine, feeds[0], [entry("Speach recognition", guid)], NOW).skipped == []
    report = upsert_papers(engine, feeds[0], [entry("Speech recognition", guid)], LATER)
    assert (report.new, report.updated, report.skipped) == (0, 1, [])
    with engine.connect() as conn:
        (stored,) = conn.execute(sa.select(PaperSource.__table__.c.item_id)).scalars().all()
    assert len(stored) == MAX_KEY and stored.startswith("https://journal.example.org/é")
    with session_scope(engine) as s:
        assert get_paper_by_ident(s, guid).title == "Speech recognition"
