"""digest.ingest.import_file on JSON Lines, streamed piece by piece (in a forked parsing process, or in this one when
threads exist): the same rows, links, counts and warnings as parsing the whole file then storing it, and nothing
written when anything fails. Also: arXiv API pages merged into one paper per key."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import digest.ingest as ingest
from digest.errors import FeedError, StoreError
from digest.ingest import import_file
from digest.models import Paper, PaperSource, Source
from digest.sources.parse import parse_file, parse_source
from digest.store import init_db, open_engine, session_scope
from digest.store.papers import upsert_papers
from digest.store.sources import add_source, ensure_source, record_fetch_success

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)
ARXIV_API = Path(__file__).parent / "fixtures" / "real" / "arxiv-atom"
PAPER, LINK, SOURCE = Paper.__table__, PaperSource.__table__, Source.__table__


def line(ident: str, title: str, **fields) -> bytes:
    abstract = f"About {title}. " + "More words, so that a line is longer than a piece. " * 8
    return json.dumps({"id": ident, "title": title, "abstract": abstract, **fields}, ensure_ascii=False).encode()


def awkward_file(path: Path, *, newer_version_later: bool = False) -> Path:
    """JSON Lines that exercise every rule a streamed import must keep across pieces of a few lines."""
    lines = [
        b"\xef\xbb\xbf" + line("a1", "First", url="https://arxiv.org/abs/2401.00001v1", authors=["Ana Garcia", " Tal  Oved"]),
        line("b1", "Second <b>bold</b> &amp; more", authors="A. One, B. Two", categories=["cs.LG", "cs.AI"]),
        b"not json",
        b"",
        line("c1", "Third", published="2024-01-02", upvotes=3) + b"\r",
        b'["a", "list"]',
        line("d1", "Fourth\u2028with a line separator", authors=[{"name": "C. Three"}, "O\\u{g}uz"]),
        line("e1", "Fifth", url="https://arxiv.org/abs/2401.00005v1"),
        line("e1-v3", "Fifth, third version", url="https://arxiv.org/abs/2401.00005v3"),  # same piece: replaces e1
        b'{"id": "f1", "abstract": "no title"}',
        line("g1", "Cafe").replace(b"Cafe", b"Caf\xe9"),  # not UTF-8
        line("a1-again", "First again", url="https://arxiv.org/abs/2401.00001v1"),  # same version: the first, already stored, stays
    ]
    lines += [line(f"h{i}", f"Bad date {i}", published="someday") for i in range(25)]  # more warnings than the cap
    lines += [b"{broken"] * 22  # more skipped lines than the cap
    lines.append(line("e1-v2", "Fifth, second version", url="https://arxiv.org/abs/2401.00005v2"))  # older: dropped
    if newer_version_later:
        lines.append(line("a1-v2", "First, second version", url="https://arxiv.org/abs/2401.00001v2"))
    lines.append(line("z1", "Last, no line break"))
    path.write_bytes(b"\n".join(lines))
    return path


def import_whole(engine, path: Path, now: datetime) -> ingest.SourceReport:
    """What import_file did before streaming: the whole file parsed, then stored in one upsert."""
    result = parse_file(path.read_bytes(), path.name)
    with session_scope(engine) as session:
        source = ensure_source(session, f"file:{path.name}", "file", str(path.resolve()), now)
        upserted = upsert_papers(session, source.id, result.papers, now)
        record_fetch_success(session, source, now, count=len(result.papers), new_papers=upserted.linked)
    return ingest.SourceReport(f"file:{path.name}", ingest._status_of(upserted), upserted.new, upserted.updated,
                               upserted.unchanged, len(result.papers), warnings=list(result.warnings))


def stored(engine) -> tuple[list, list, list]:
    """Papers in id order (without the id), their links, and the file source's counters."""
    with engine.connect() as conn:
        papers = [tuple(r)[1:] for r in conn.execute(sa.select(PAPER).order_by(PAPER.c.id))]
        links = conn.execute(sa.select(PAPER.c.key, LINK.c.item_id, LINK.c.first_seen).join(LINK).order_by(PAPER.c.id)).all()
        source = conn.execute(sa.select(SOURCE.c.name, SOURCE.c.last_fetch_count, SOURCE.c.papers_seen)).all()
    return papers, links, source


@pytest.fixture(params=["forked", "in-process"])
def mode(request, monkeypatch):
    """Which way the pieces are parsed; the forked way is checked to have been taken."""
    forks = []
    parsing_process = ingest._ParsingProcess
    monkeypatch.setattr(ingest, "_ParsingProcess", lambda *args: forks.append(1) or parsing_process(*args))
    monkeypatch.setattr(ingest, "PIECE_BYTES", 300)  # a few lines per piece
    if request.param == "in-process":
        monkeypatch.setattr(threading, "active_count", lambda: 2)
    yield request.param
    assert bool(forks) == (request.param == "forked")
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("newer_version_later", [False, True], ids=["streamed", "newer-version-later"])
def test_import_file_streams_jsonl_like_the_whole_file(engine, tmp_path, monkeypatch, mode, newer_version_later):
    path = awkward_file(tmp_path / "papers.jsonl", newer_version_later=newer_version_later)
    reference = open_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    init_db(reference)
    expected = import_whole(reference, path, NOW)
    whole = []  # a newer version of a paper already stored makes the import read the file whole
    monkeypatch.setattr(ingest, "parse_file", lambda *args: whole.append(1) or parse_file(*args))
    report = import_file(engine, path, NOW)
    assert report == expected and bool(whole) == newer_version_later
    assert stored(engine) == stored(reference)
    assert {"a1-again: listed twice, one kept", "e1-v3: listed twice, one kept", "e1-v2: listed twice, one kept",
            "... and 6 more ignored fields", "... and 5 more lines skipped"} <= set(report.warnings)
    assert report.warnings[0].startswith("not valid UTF-8 (byte ")
    again = import_file(engine, path, NOW)
    assert (again.status, again.unchanged, again.warnings) == ("unchanged", expected.entries, expected.warnings)
    reference.dispose()


def test_import_file_jsonl_without_valid_lines_writes_nothing(engine, tmp_path, mode):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"nope\n" + line("x", "no abstract")[:-20] + b"\n[1]\n")
    with pytest.raises(FeedError) as caught:
        import_file(engine, path, NOW)
    assert caught.value.args[0] == f"{path}: no valid line among 3 (line 1: not valid JSON (Expecting value))"
    assert stored(engine) == ([], [], [])


def test_import_file_store_error_midway_writes_nothing(sqlite_url, tmp_path, mode):
    engine = open_engine(sqlite_url)
    init_db(engine)
    with engine.begin() as conn:  # the database refuses one paper, pieces after the first were already stored
        conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON paper WHEN NEW.title = 'Poison' "
                             "BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b"\n".join([line(f"p{i}", f"Paper {i}") for i in range(40)] + [line("x", "Poison")] + [line("y", "After")]))
    with pytest.raises(StoreError, match="poison refused"):
        import_file(engine, path, NOW)
    assert stored(engine) == ([], [], [])
    engine.dispose()


def test_import_file_blank_jsonl_is_an_empty_file(engine, tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\xef\xbb\xbf  \n\n")
    with pytest.raises(FeedError) as caught:
        import_file(engine, path, NOW)
    assert caught.value.args[0] == f"{path}: empty file"  # as parse_file says it


def test_merge_pages_keeps_one_paper_per_key(engine):
    first, second = (parse_source("arxiv-api", (ARXIV_API / name).read_bytes()) for name in (
        "api-2026-04-search-all-testing-page1-start0.xml", "api-2026-04-search-all-testing-page2-start10.xml"))
    repeated = parse_source("arxiv-api", (ARXIV_API / "api-2026-04-search-all-testing-page1-start0.xml").read_bytes())
    merged = ingest._merge_pages([first, second, repeated])  # arXiv's paging can serve an entry twice
    keys = [p.key for p in merged.papers]
    assert len(keys) == len(set(keys)) == len(first.papers) + len(second.papers) - len({p.key for p in first.papers} & {p.key for p in second.papers})
    assert sum(w.endswith("listed twice, one kept") for w in merged.warnings) == len(first.papers) + len(second.papers) + len(repeated.papers) - len(keys)
    with session_scope(engine) as session:  # one upsert of them all: PostgreSQL would refuse a key met twice
        source = add_source(session, "api", "arxiv-api", "https://export.arxiv.org/api/query?search_query=all:testing", NOW)
        assert upsert_papers(session, source.id, merged.papers, NOW).new == len(keys)
