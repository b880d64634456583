"""digest.ingest.import_file on JSON Lines, streamed piece by piece (in a forked parsing process, or in this one when
threads exist): the same rows, links, counts and warnings as parsing the whole file then storing it, and nothing
written when anything fails. Also: arXiv API pages merged into one paper per key, and the wall around each source
(any exception of one source is its recorded error; an entry the database refuses is skipped alone)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import digest.ingest as ingest
from digest.config import load_settings
from digest.errors import FeedError, SourceError, StoreError
from digest.ingest import import_file
from digest.models import Paper, PaperSource, Source
from digest.pipeline.job import run_job
from digest.sources.parse import parse_file, parse_source
from digest.store import init_db, open_engine, session_scope
from digest.store.papers import count_papers, upsert_papers
from digest.store.sources import add_source, ensure_source, record_fetch_success
from digest.store.subscribers import SubscriberInput, add_subscriber

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
        record_fetch_success(session, source, now, count=upserted.stored, new_papers=upserted.linked, skipped=result.skipped)
    return ingest.SourceReport(f"file:{path.name}", ingest._status_of(upserted), upserted.new, upserted.updated,
                               upserted.unchanged, len(result.papers), warnings=list(result.warnings), skipped=result.skipped)


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


def refuse_poison(engine) -> None:
    """Make the database refuse any paper titled 'Poison' (as PostgreSQL refused a too-long value)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON paper WHEN NEW.title = 'Poison' "
                                 "BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.title = 'Poison' THEN "
                                 "RAISE EXCEPTION 'poison refused' USING ERRCODE = '22000'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON paper FOR EACH ROW EXECUTE FUNCTION refuse()")


def skipped_entries(caplog) -> list[dict]:
    """The fields of each entry-skipped event logged."""
    return [r.digest_fields for r in caplog.records if getattr(r, "digest_event", "") == "entry-skipped"]


def test_import_file_skips_only_the_entry_the_database_refuses(engine, tmp_path, mode, caplog):
    refuse_poison(engine)  # pieces before and after it are stored; its own batch too, but for it
    path = tmp_path / "poison.jsonl"
    path.write_bytes(b"\n".join([line(f"p{i}", f"Paper {i}") for i in range(40)] + [line("x", "Poison")] + [line("y", "After")]))
    report = import_file(engine, path, NOW)
    assert (report.status, report.entries, report.new, report.skipped) == ("new", 42, 41, 1)
    assert report.warnings == ["entry x: the database refused it (poison refused), skipped"]
    papers, links, source = stored(engine)
    assert len(papers) == len(links) == 41 and "Poison" not in {p[5] for p in papers}
    assert source == [("file:poison.jsonl", 41, 41)]
    assert {"source": "file:poison.jsonl", "entry": "x: the database refused it (poison refused)"} in skipped_entries(caplog)


def test_import_file_refused_whole_writes_nothing(engine, tmp_path):
    refuse_poison(engine)
    path = tmp_path / "poison.jsonl"
    path.write_bytes(line("x", "Poison") + b"\n" + line("y", "Poison", url="https://arxiv.org/abs/2401.00009"))  # two keys
    with pytest.raises(SourceError) as caught:
        import_file(engine, path, NOW)
    assert caught.value.args[0] == f"{path}: no entry could be stored: the database refused all 2 (x: the database refused it (poison refused))"
    assert stored(engine) == ([], [], [])


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), OverflowError("date value out of range"),
                                   AttributeError("'list' object has no attribute 'strip'")], ids=lambda e: type(e).__name__)
def test_import_file_any_failure_is_one_error_naming_the_file(engine, tmp_path, monkeypatch, error):
    def broken(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(ingest, "parse_file", broken)
    path = tmp_path / "papers.xml"
    path.write_bytes(b"<rss/>")
    with pytest.raises(FeedError) as caught:
        import_file(engine, path, NOW)
    assert caught.value.args[0] == f"{path}: unexpected {type(error).__name__}: {error}"
    assert stored(engine) == ([], [], [])


def test_import_file_store_error_midway_writes_nothing(sqlite_url, tmp_path, mode):
    engine = open_engine(sqlite_url)
    init_db(engine)
    with engine.begin() as conn:  # not a value: the database itself fails, after pieces were already stored
        conn.exec_driver_sql("CREATE TRIGGER broken BEFORE INSERT ON paper WHEN NEW.title = 'Broken' "
                             "BEGIN SELECT * FROM no_such_table; END")
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join([line(f"p{i}", f"Paper {i}") for i in range(40)] + [line("x", "Broken")] + [line("y", "After")]))
    with pytest.raises(StoreError, match="no such table"):
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


# --- the wall around each fetched source ------------------------------------------------------------

REAL = Path(__file__).parent / "fixtures" / "real"
LONG_LINK = "https://example.org/articles/" + "a" * 642  # 671 characters, and no guid: the link is the identifier
LONG_DOI = "10.1234/" + "d" * 300  # 308 characters


def long_identifiers_feed() -> bytes:
    """The PostgreSQL cases of issue 9: VARCHAR(512) and VARCHAR(255) refused these, and stopped every fetch."""
    return ('<?xml version="1.0"?><rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">'
            "<channel><title>A journal</title><link>https://example.org/</link>"
            f"<item><title>Sparse autoencoders with a long link</title><link>{LONG_LINK}</link>"
            "<description>Sparse autoencoders find interpretable features in language models.</description></item>"
            f"<item><title>Sparse autoencoders with a long DOI</title><link>https://example.org/b</link><prism:doi>{LONG_DOI}</prism:doi>"
            "<description>Interpretability of sparse autoencoder features.</description></item>"
            "</channel></rss>").encode()


def add_feed(engine, name: str, url: str, kind: str = "feed") -> int:
    with session_scope(engine) as session:
        return add_source(session, name, kind, url, NOW).id


def source_state(engine, name: str) -> tuple:
    with engine.connect() as conn:
        return conn.execute(sa.select(SOURCE.c.consecutive_errors, SOURCE.c.last_error, SOURCE.c.last_fetch_count,
                                      SOURCE.c.last_fetch_skipped).where(SOURCE.c.name == name)).one()


def papers_of(engine, name: str) -> int:
    with session_scope(engine) as session:
        return count_papers(session, name)


@pytest.fixture
def settings(home):
    return load_settings(home, env={}).replace(fetch_timeout=5, retry_after_max=0)


@pytest.mark.parametrize("phase,error", [
    ("fetch", OverflowError("Python int too large to convert to SQLite INTEGER")),
    ("parse", RecursionError("maximum recursion depth exceeded")),
    ("parse", AttributeError("'list' object has no attribute 'strip'")),
    ("store", TypeError("unhashable type: 'dict'")),
    ("store", KeyError("title")),
], ids=["fetch-OverflowError", "parse-RecursionError", "parse-AttributeError", "store-TypeError", "store-KeyError"])
def test_fetch_sources_any_failure_of_one_source_is_its_error(engine, settings, feed_server, monkeypatch, phase, error):
    add_feed(engine, "sd", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "arxiv-rss")
    poisoned = add_feed(engine, "poisoned", feed_server.url("files/real/hf-daily/daily_papers-date-2024-05-27-reindented.json"), "hf-daily")
    add_feed(engine, "biorxiv", feed_server.url("files/real/other-feeds/biorxiv-rss1-genomics-2023-12-trimmed.xml"))
    real = {"fetch": ingest.fetch_feed, "parse": ingest.parse_source, "store": ingest.upsert_papers}[phase]

    def failing(*args, **kwargs):
        if phase == "store":
            result = real(*args, **kwargs)  # the papers are written, then the failure: the rollback must undo them
            if args[1] == poisoned:
                raise error
            return result
        if "daily_papers" in str(args[-1]) or "daily_papers" in kwargs.get("source_url", ""):
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, {"fetch": "fetch_feed", "parse": "parse_source", "store": "upsert_papers"}[phase], failing)
    reports = ingest.fetch_sources(engine, settings, NOW)
    assert [(r.name, r.status) for r in reports] == [("sd", "new"), ("poisoned", "error"), ("biorxiv", "new")]
    expected = f"unexpected {type(error).__name__}: {error} (a bug in digest: `digest -v fetch` logs the traceback)"
    assert reports[1].error == expected
    assert source_state(engine, "poisoned") == (1, expected, 0, 0)
    assert (papers_of(engine, "sd"), papers_of(engine, "poisoned"), papers_of(engine, "biorxiv")) == (23, 0, 1)


def test_fetch_sources_stops_only_when_the_error_cannot_be_recorded(engine, settings, feed_server, monkeypatch):
    add_feed(engine, "a", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "arxiv-rss")
    add_feed(engine, "b", feed_server.url("files/real/other-feeds/biorxiv-rss1-genomics-2023-12-trimmed.xml"))
    monkeypatch.setattr(ingest, "parse_source", lambda *a, **k: (_ for _ in ()).throw(OverflowError("too big")))

    def unreachable(*_args, **_kwargs):
        raise StoreError("cannot open the database: connection refused")

    monkeypatch.setattr(ingest, "record_fetch_error", unreachable)
    with pytest.raises(StoreError, match="cannot open the database"):
        ingest.fetch_sources(engine, settings, NOW)


def test_fetch_sources_skips_the_entry_the_database_refuses(engine, settings, feed_server, caplog):
    refuse_poison(engine)
    feed_server.documents["three.xml"] = (
        b'<rss version="2.0"><channel><title>J</title>' + b"".join(
            f"<item><title>{title}</title><link>https://example.org/{i}</link></item>".encode()
            for i, title in enumerate(["Before", "Poison", "After"])) + b"</channel></rss>")
    feed_server.documents["only-poison.xml"] = b'<rss version="2.0"><channel><title>J</title><item><title>Poison</title></item></channel></rss>'
    add_feed(engine, "three", feed_server.url("doc/three.xml"))
    add_feed(engine, "only-poison", feed_server.url("doc/only-poison.xml"))
    three, only = ingest.fetch_sources(engine, settings, NOW)
    assert (three.status, three.new, three.skipped) == ("new", 2, 1)
    assert three.warnings == ["entry https://example.org/1: the database refused it (poison refused), skipped"]
    assert {"source": "three", "entry": "https://example.org/1: the database refused it (poison refused)"} in skipped_entries(caplog)
    assert source_state(engine, "three") == (0, None, 2, 1)
    assert only.status == "error" and only.error.startswith("no entry could be stored: the database refused all 1 (Poison: ")
    assert source_state(engine, "only-poison")[:3] == (1, only.error, 0)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        self.sent.append(recipient)

    def close(self) -> None:
        pass


def test_run_job_sends_after_a_failing_source_and_long_identifiers(db_url, settings, feed_server, monkeypatch):
    """One source failing with any exception and one sending a 671-character link and a 308-character DOI (which
    PostgreSQL refused): the run still fetches the others, stores every paper and sends the edition."""
    settings = settings.replace(database_url=db_url, secret_key="test-secret-key-0123456789", from_address="digest@example.org",
                                base_url="https://digest.example.org", fetch_timeout=5)
    engine = open_engine(db_url)
    init_db(engine)
    feed_server.documents["long.xml"] = long_identifiers_feed()
    add_feed(engine, "broken", feed_server.url("files/real/hf-daily/daily_papers-date-2024-05-27-reindented.json"), "hf-daily")
    add_feed(engine, "journal", feed_server.url("doc/long.xml"))
    real_parse = ingest.parse_source
    monkeypatch.setattr(ingest, "parse_source", lambda kind, data, source_url="": (_ for _ in ()).throw(OverflowError("date value out of range"))
                        if kind == "hf-daily" else real_parse(kind, data, source_url=source_url))
    with session_scope(engine) as session:
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders"]), now=NOW - timedelta(days=3))
    transport = Recorder()
    report = run_job(engine, settings, NOW, fetch=True, transport=transport)
    assert [(r.name, r.status) for r in report.fetched] == [("broken", "error"), ("journal", "new")]
    assert report.sent == 1 and transport.sent == ["ada@example.org"]
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(PAPER.c.title, PAPER.c.ident).where(PAPER.c.title.like("Sparse%"))).all())
        doi_key = conn.execute(sa.select(PAPER.c.key).where(PAPER.c.doi == LONG_DOI)).scalar_one()
    assert stored == {"Sparse autoencoders with a long link": LONG_LINK, "Sparse autoencoders with a long DOI": LONG_DOI}
    assert doi_key == f"doi:{LONG_DOI}"
    engine.dispose()


def test_fetch_sources_records_an_error_that_quotes_control_characters(engine, settings, feed_server):
    """Found by benchmarks/fuzz.py on PostgreSQL: an error quoting the feed (here the id of an arXiv error entry, with
    a NUL byte and a terminal escape sequence) could not be recorded (PostgreSQL refuses NUL), which stopped the run."""
    feed_server.documents["error.xml"] = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>arXiv Query</title><entry>'
                                          b"<id>http://arxiv.org/api/errors#bad\x00\x1b[31mred</id><title>Error</title></entry></feed>")
    add_feed(engine, "api", feed_server.url("doc/error.xml"), "arxiv-api")
    add_feed(engine, "sd", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "arxiv-rss")
    api, sd = ingest.fetch_sources(engine, settings, NOW)
    assert (api.status, sd.status) == ("error", "new")
    assert api.error.startswith("arXiv API error: http://arxiv.org/api/errors#bad") and api.error.isprintable()
    assert source_state(engine, "api")[:2] == (1, api.error)
