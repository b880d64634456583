"""Papers in the store: the deduplicating bulk upsert and the queries that list and find papers.

One row per canonical key (UNIQUE in the database); a row whose key is not stored is first looked for under its
entry's item id in the same source (a feed's guid: a corrected title is the same paper, see _found_by_item). Writes
are batched core INSERT ... ON CONFLICT statements, never one ORM object per row. A batch the database refuses
because of one row's value is written again row by row, each in its own savepoint, and only the refused rows are
skipped (UpsertReport.skipped). This module knows nothing about feeds or the network.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from ..collector import paused_collector
from ..log import log_event
from ..models import Paper, PaperSource, Source, UTCDateTime, table_of
from ..sources import ParsedPaper
from ..sources.clean import MAX_KEY, bounded_key
from . import begin_write, dialect_insert, wrap_db_error
from .search import note_changed_text

BATCH_SIZE = 2_000  # rows per statement: well under SQLite's 32,766 bound parameters for the key prefetch
PAPER = table_of(Paper)
PAPER_SOURCE = table_of(PaperSource)
# Columns the merge may change; first_seen never moves and last_seen only records the sighting.
CONTENT = (
    "ident", "arxiv_id", "version", "doi", "title", "abstract", "authors", "categories", "url", "pdf_url",
    "announce_type", "upvotes", "ai_summary", "github_repo", "published", "updated",
)
log = logging.getLogger("digest.store")
_ARXIV_IDENT = re.compile(r"^(?:arxiv:)?((?:\d{4}\.\d{4,5})|(?:[a-z][a-z.-]*/\d{7}))(?:v(\d+))?$", re.I)


@dataclass
class UpsertReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    linked: int = 0  # papers this source had not carried before (new or already stored from another source)
    skipped: list[str] = field(default_factory=list)  # "IDENT: why", one per paper the database refused

    def add(self, other: UpsertReport) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.linked += other.linked
        self.skipped += other.skipped

    @property
    def stored(self) -> int:
        return self.new + self.updated + self.unchanged


def upsert_papers(target: Engine | Session | Connection, source_id: int, parsed: list[ParsedPaper], now: datetime) -> UpsertReport:
    """Store `parsed` as seen in source `source_id` at `now`, merging with the rows already there.

    An Engine gets its own transaction; a Session or Connection writes inside the caller's transaction,
    so the caller decides what else commits (or rolls back) with the batch.
    """
    # A bulk upsert allocates a few objects per row and frees them all at the end: the cyclic collector
    # would re-scan every live row dozens of times (a third of a 100,000-paper import), so it waits.
    with paused_collector():
        try:
            if isinstance(target, Engine):
                with target.begin() as conn:
                    return _upsert(conn, source_id, parsed, now)
            conn = target.connection() if isinstance(target, Session) else target
            return _upsert(conn, source_id, parsed, now)
        except SQLAlchemyError as exc:
            engine = target if isinstance(target, Engine) else target.get_bind() if isinstance(target, Session) else target.engine
            raise wrap_db_error(exc, engine if isinstance(engine, Engine) else None) from None


@dataclass
class _Batch:
    """One upsert's rows by key, what each is called in its source (paper_source.item_id), and the item ids by which
    a row whose key is not stored may find the paper its entry was before (see _found_by_item)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    item_ids: dict[str, str] = field(default_factory=dict)
    own_items: dict[str, str] = field(default_factory=dict)  # key -> item id, for rows that may be found by it


def _batch_of(parsed: list[ParsedPaper]) -> _Batch:
    batch = _Batch()
    rows, item_ids, own = batch.rows, batch.item_ids, batch.own_items
    for paper in parsed:  # the same key twice in one batch is folded first
        row = _row_of(paper)
        key = row["key"]
        if key in rows:
            rows[key] = merge_rows(rows[key], row)
            continue
        rows[key] = row
        item = paper.item_id or paper.ident
        if len(item) > MAX_KEY:  # bounded as keys are, so that the index on (source_id, item_id) holds it
            item = bounded_key(item)
        item_ids[key] = item
        if paper.item_id and paper.arxiv_id is None:  # an arXiv id is the paper, whatever the entry
            own[key] = item
    # An item id that two rows of the batch carry identifies neither (a parser lets none through for feeds; a JSON
    # Lines file may still give one id to two records).
    if len(set(own.values())) < len(own):
        counts = Counter(own.values())
        batch.own_items = {key: item for key, item in own.items() if counts[item] == 1}
    return batch


def _upsert(conn: Connection, source_id: int, parsed: list[ParsedPaper], now: datetime) -> UpsertReport:
    report = UpsertReport()
    begin_write(conn)  # a SAVEPOINT outside it would commit on RELEASE
    batch = _batch_of(parsed)
    rows = batch.rows
    for keys in _chunks(list(rows), BATCH_SIZE):
        try:
            with conn.begin_nested():
                report.add(_write_chunk(conn, source_id, keys, batch, now))
            continue
        except _ROW_ERRORS as exc:
            if not refuses_a_value(exc):
                raise
        for key in keys:  # one value spoiled the batch: each row alone, so only the refused ones are lost
            try:
                with conn.begin_nested():
                    report.add(_write_chunk(conn, source_id, [key], batch, now))
            except _ROW_ERRORS as exc:
                if not refuses_a_value(exc):
                    raise
                report.skipped.append(f"{rows[key]['ident']}: the database refused it ({_reason(exc)})")
    return report


# What a write raises when the database (or its driver) refuses a value: SQLAlchemy's wrappers, and the driver's own
# conversion errors (sqlite3 raises OverflowError for an integer past 64 bits, UnicodeEncodeError for a lone surrogate).
_ROW_ERRORS = (SQLAlchemyError, ValueError, TypeError, OverflowError)
# PostgreSQL SQLSTATE classes that are about one row's values: data exception, integrity constraint violation,
# program limit exceeded (an index row too big). Anything else (a lost connection, a lock) is about the database.
_ROW_SQLSTATES = ("22", "23", "54")


def refuses_a_value(exc: BaseException) -> bool:
    """True when `exc` says the database refused a value of the rows written, not that it cannot be used at all."""
    if not isinstance(exc, SQLAlchemyError):
        return True  # a driver's conversion error
    if not isinstance(exc, sa.exc.DBAPIError):
        return isinstance(exc, sa.exc.StatementError)  # a value a column's type could not convert
    if exc.connection_invalidated:
        return False
    state = getattr(exc.orig, "sqlstate", None)
    if state:
        return state[:2] in _ROW_SQLSTATES
    return isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError))  # SQLite: a constraint, or a string too big


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _write_chunk(conn: Connection, source_id: int, keys: list[str], batch: _Batch, now: datetime) -> UpsertReport:
    report = UpsertReport()
    rows = batch.rows
    write_papers, write_links = _statements(conn.dialect)
    existing = {r["key"]: r for r in conn.execute(_ROWS_BY_KEY, {"keys": keys}).mappings()}
    found = _found_by_item(conn, source_id, [k for k in keys if k not in existing], batch, now)
    writes, seen, new_text, by_id = [], [], [], []
    for key in keys:
        old = existing.get(key)
        if old is None and key in found:
            old, alone = found[key]
            merged = merge_rows(dict(old), rows[key], corrected=alone)
            merged["key"] = _key_after(old["key"], key, alone)
            changed = merged["key"] != old["key"] or any(merged[c] != old[c] for c in CONTENT)
            by_id.append({**{c: merged[c] for c in CONTENT}, "key": merged["key"], "last_seen": now, "paper_id": old["id"]})
            if merged["title"] != old["title"]:
                log_event(log, "paper-retitled", source_id=source_id, paper=old["id"], item=batch.own_items[key],
                          old_title=old["title"], title=merged["title"])
        elif old is None:
            writes.append({**rows[key], "first_seen": now, "last_seen": now})
            report.new += 1
            continue
        else:
            merged = merge_rows(dict(old), rows[key])
            changed = any(merged[c] != old[c] for c in CONTENT)
            if changed:
                writes.append({**{c: merged[c] for c in CONTENT}, "key": key, "first_seen": old["first_seen"], "last_seen": now})
            else:
                seen.append(key)
        if changed:
            report.updated += 1
            if merged["title"] != old["title"] or merged["abstract"] != old["abstract"]:
                new_text.append(old["id"])
        else:
            report.unchanged += 1
    write_papers.run(conn, writes)
    if by_id:
        conn.execute(_UPDATE_BY_ID, by_id)
    note_changed_text(conn, new_text)  # SQLite's search index re-reads them (digest.store.search)
    if seen:
        conn.execute(sa.update(PAPER).where(PAPER.c.key.in_(seen)).values(last_seen=now))
    ids = {k: r["id"] for k, r in existing.items()}
    ids.update((k, old["id"]) for k, (old, _) in found.items())
    missing = [k for k in keys if k not in ids]
    if missing:
        ids.update(conn.execute(_IDS_BY_KEY, {"keys": missing}).all())
    item_ids = batch.item_ids
    report.linked += write_links.run(conn, [{"paper_id": ids[k], "source_id": source_id, "item_id": item_ids[k], "first_seen": now} for k in keys])
    return report


def _key_after(stored: str, given: str, alone: bool) -> str:
    """The key of a paper found by its entry's item id, whose entry now has the key `given`: a DOI the entry now
    gives replaces a title key (the stronger identifier, found by any source that gives it); a new title replaces
    the old when this source alone carries the paper (another still sends the old title: moving the key to each
    source's title in turn would rename the paper back and forth at every fetch); else it stays."""
    if stored.startswith("title:") and (given.startswith("doi:") or alone and given.startswith("title:")):
        return given
    return stored


def _found_by_item(conn: Connection, source_id: int, keys: list[str], batch: _Batch, now: datetime) -> dict[str, tuple[Any, bool]]:
    """The stored paper that each of `keys` (rows whose key is not stored) was when this source last sent its entry,
    found by the entry's item id (a feed's guid, else its link), and whether this source alone carries that paper.

    A feed entry without a DOI or an arXiv id is keyed by its title: when the publisher corrects the title, the key
    is new, but the guid is the same. An item id never joins two different DOIs, nor anything to an arXiv paper (its
    id is the paper); it finds only what this source linked before this upsert's `now` (two records of one import
    are not each other's correction), and no paper whose key a row of the batch claims (the feed lists the old title
    too: that row is that paper)."""
    wanted = {batch.own_items[k]: k for k in keys if k in batch.own_items}
    linked = _linked_items(conn, source_id, list(wanted)) if wanted else []
    if not linked:  # nearly always: new entries
        return {}
    found: dict[str, tuple[Any, bool]] = {}
    for row in conn.execute(_ROWS_BY_ITEM, {"source_id": source_id, "items": linked, "now": now}).mappings():
        key = wanted[row["item"]]
        if row["arxiv_id"] is not None or row["key"] in batch.rows or key.startswith("doi:") and not row["key"].startswith("title:"):
            continue
        kept = found.get(key)
        # Several papers under one item id: copies made before entries were found by it. The one seen last is the
        # one the entry was last taken for.
        if kept is None or (row["last_seen"], row["id"]) > (kept[0]["last_seen"], kept[0]["id"]):
            found[key] = (row, row["sources"] == 1)
    return found


def _linked_items(conn: Connection, source_id: int, items: list[str]) -> list[str]:
    """Which of `items` this source carries already (ix_paper_source_item). Asked for every new entry that has an
    item id, and nearly always answered "none": one plain statement sent to the driver, as the bulk writes are (through
    SQLAlchemy's expanding IN the same query took three times as long: 1.9 against 0.6 ms for 800 ids)."""
    mark = _PLACEHOLDERS[conn.dialect.paramstyle]
    sql = f"SELECT item_id FROM paper_source WHERE source_id = {mark} AND item_id IN ({', '.join([mark] * len(items))})"
    return [item for (item,) in conn.exec_driver_sql(sql, (source_id, *items))]


_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # sqlite3; psycopg
# The two lookups of a batch; an expanding parameter, not a literal per key to coerce in each new statement.
_ROWS_BY_KEY = sa.select(PAPER).where(PAPER.c.key.in_(sa.bindparam("keys", expanding=True)))
_IDS_BY_KEY = sa.select(PAPER.c.key, PAPER.c.id).where(PAPER.c.key.in_(sa.bindparam("keys", expanding=True)))
# The papers this source carries under these item ids (ix_paper_source_item, then each paper by its id), with how
# many sources carry each.
_CARRIER = PAPER_SOURCE.alias("carrier")
_ROWS_BY_ITEM = (
    sa.select(PAPER, PAPER_SOURCE.c.item_id.label("item"),
              sa.select(sa.func.count()).where(_CARRIER.c.paper_id == PAPER.c.id).scalar_subquery().label("sources"))
    .join_from(PAPER_SOURCE, PAPER, PAPER.c.id == PAPER_SOURCE.c.paper_id)
    .where(PAPER_SOURCE.c.source_id == sa.bindparam("source_id"), PAPER_SOURCE.c.item_id.in_(sa.bindparam("items", expanding=True)),
           PAPER_SOURCE.c.first_seen < sa.bindparam("now"))
)
_UPDATE_BY_ID = sa.update(PAPER).where(PAPER.c.id == sa.bindparam("paper_id"))


@functools.lru_cache(maxsize=8)
def _statements(dialect: Any) -> tuple[_BulkStatement, _BulkStatement]:
    """The two writes of a batch, compiled once per database dialect (an import upserts batch after batch)."""
    insert = dialect_insert(dialect.name)
    stmt = insert(PAPER)
    # The UNIQUE key settles a concurrent insert of the same paper: the row is updated, not doubled.
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={c: stmt.excluded[c] for c in (*CONTENT, "last_seen")})
    write_papers = _BulkStatement(dialect, stmt, ("key", *CONTENT, "first_seen", "last_seen"))
    write_links = _BulkStatement(dialect, insert(PAPER_SOURCE).on_conflict_do_nothing(index_elements=["paper_id", "source_id"]),
                                 ("paper_id", "source_id", "item_id", "first_seen"))
    return write_papers, write_links


def _json_list(value: list) -> str:
    return f"[{', '.join(map(encode_basestring_ascii, value))}]"


def _utc_text(value: datetime) -> str:
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


class _BulkStatement:
    """One compiled INSERT sent straight to the driver's executemany, values converted by the columns' own types.

    conn.execute(stmt, rows) does the same conversions but spends most of a bulk import in per-row bookkeeping;
    here each column's bind processor runs once per value (once per distinct value for timestamps). Where they give
    exactly what the column's processor gives (SQLite), a list of strings for a JSON column is written by _json_list
    and an aware timestamp by _utc_text, a few times faster.
    """

    def __init__(self, dialect: Any, stmt: Any, columns: tuple[str, ...]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns), for_executemany=True)
        self.sql = compiled.string
        self.order = list(compiled.positiontup) if compiled.positional else None
        table = stmt.table
        self.columns = columns
        self.processors = {c: table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns}
        self.timestamps = {c for c in columns if isinstance(table.c[c].type, UTCDateTime)}
        probe = ["Jiménez", 'a "quoted\\ name', ""]
        self.json_lists = {c for c in columns if isinstance(table.c[c].type, sa.JSON) and self.processors[c] is not None
                           and self.processors[c](probe) == _json_list(probe)}
        moment = datetime(999, 12, 31, 23, 59, 58, 1234, tzinfo=timezone(timedelta(hours=-5)))
        self.utc_texts = {c for c in self.timestamps if self.processors[c] is not None and self.processors[c](moment) == _utc_text(moment)}

    def _column(self, column: str, rows: list[dict[str, Any]]) -> list[Any]:
        values = [row[column] for row in rows]
        process = self.processors[column]
        if process is None:
            return values
        if column in self.json_lists:
            return [_json_list(v) if type(v) is list else process(v) for v in values]  # noqa: E721 - not a subclass
        if column not in self.timestamps:
            return [None if v is None else process(v) for v in values]
        if column in self.utc_texts:  # a naive datetime goes to the processor, which refuses it
            distinct = {v: None if v is None else _utc_text(v) if v.tzinfo is not None else process(v) for v in set(values)}
        else:
            distinct = {v: None if v is None else process(v) for v in set(values)}  # a batch shares `now` and feed dates
        return [distinct[v] for v in values]

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> int:
        """Send `rows`; the number of rows the database reports written (conflicts skipped are not counted)."""
        if not rows:
            return 0
        if self.order is not None:  # converted column by column: list comprehensions, not a call per value
            params: list = list(zip(*(self._column(c, rows) for c in self.order)))
        else:
            columns = {c: self._column(c, rows) for c in self.columns}
            params = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return max(conn.exec_driver_sql(self.sql, params).rowcount, 0)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _row_of(p: ParsedPaper) -> dict[str, Any]:
    return {
        "key": p.key, "ident": p.ident, "arxiv_id": p.arxiv_id, "version": p.version, "doi": p.doi,
        "title": p.title, "abstract": p.abstract or "", "authors": list(p.authors), "categories": list(p.categories),
        "url": p.url, "pdf_url": p.pdf_url, "announce_type": p.announce_type, "upvotes": p.upvotes or 0,
        "ai_summary": p.ai_summary or None, "github_repo": p.github_repo or None,
        "published": p.published, "updated": p.updated,
    }


def merge_rows(old: dict[str, Any], new: dict[str, Any], *, corrected: bool = False) -> dict[str, Any]:
    """The row that results from seeing `new` after `old` (same key, or the same entry of a source: `corrected`).
    Pure; the dedupe rules live here.

    - a newer arXiv version brings its version, updated date, title, authors and abstract;
    - an older version only fills in what is missing; a revision (v2 or later) beats a copy without a version (Hugging
      Face's) both ways; otherwise the longest real abstract wins and the first title and authors stay;
    - upvotes only grow; Hugging Face's AI summary and GitHub repo fill in or refresh;
    - categories are united (a cross-list adds its category); identifiers fill in when missing;
    - the first announce type stays, so a paper first seen in a "replace" announcement says so;
    - `corrected`: `new` is the entry `old` was (the same item id), sent again with another title or DOI by the one
      source carrying it (the publisher corrected it): its title, authors, abstract (unless a placeholder) and link
      replace the stored ones.
    """
    # Only a known version replacing a known older one counts: Hugging Face gives no version at all.
    both = old["version"] is not None and new["version"] is not None
    newer, older = both and new["version"] > old["version"], both and new["version"] < old["version"]
    merged = dict(old)
    for column in ("ident", "arxiv_id", "doi", "url", "pdf_url", "announce_type", "published"):
        merged[column] = old[column] if old[column] is not None else new[column]
    if new["published"] is not None and old["published"] is not None:
        merged["published"] = min(old["published"], new["published"])
    merged["version"] = max(filter(None, (old["version"], new["version"])), default=None)
    dates = [d for d in (old["updated"], new["updated"]) if d is not None]
    merged["updated"] = max(dates) if dates else None
    # A revision's text (arXiv v2 or later) is newer than a copy without a version (Hugging Face's, taken from an
    # earlier version): it replaces that copy's, and such a copy never replaces it, however long its abstract.
    revised_after_copy = (new["version"] or 0) > 1 and old["version"] is None
    copy_after_revision = (old["version"] or 0) > 1 and new["version"] is None
    if newer:
        merged["title"] = new["title"] or old["title"]
        merged["authors"] = new["authors"] or old["authors"]
        merged["abstract"] = new["abstract"] if _is_real(new["abstract"]) else old["abstract"]
        merged["url"] = new["url"] or old["url"]
        merged["pdf_url"] = new["pdf_url"] or old["pdf_url"]
        if new["updated"] is None and new["published"] is not None:
            merged["updated"] = max(filter(None, (old["updated"], new["published"])))
    elif revised_after_copy:
        merged["title"] = new["title"] or old["title"]
        merged["authors"] = new["authors"] or old["authors"]
        merged["abstract"] = new["abstract"] if _is_real(new["abstract"]) else old["abstract"]
    elif copy_after_revision:
        merged["abstract"] = old["abstract"] if _is_real(old["abstract"]) else new["abstract"]
    else:
        merged["title"] = old["title"] or new["title"]
        merged["authors"] = old["authors"] or new["authors"]
        # An older version's text never replaces the newer one's, however long it is.
        merged["abstract"] = old["abstract"] or new["abstract"] if older else best_abstract(old["abstract"], new["abstract"])
    merged["categories"] = list(dict.fromkeys([*old["categories"], *new["categories"]]))
    merged["upvotes"] = max(old["upvotes"] or 0, new["upvotes"] or 0)
    merged["ai_summary"] = new["ai_summary"] or old["ai_summary"]
    merged["github_repo"] = new["github_repo"] or old["github_repo"]
    if corrected:
        merged["title"] = new["title"] or old["title"]
        merged["authors"] = new["authors"] or old["authors"]
        merged["abstract"] = new["abstract"] if _is_real(new["abstract"]) else old["abstract"]
        merged["url"] = new["url"] or old["url"]
    return merged


_PLACEHOLDER = re.compile(r"^(n/?a|none|null|no abstract( available)?|abstract( not available)?|tbd|\W*)\.?$", re.I)


def _is_real(text: str | None) -> bool:
    return bool(text and text.strip() and not _PLACEHOLDER.match(text.strip()))


def best_abstract(first: str, second: str) -> str:
    """The longer real abstract (a placeholder such as "No abstract available" is never real); ties keep `first`."""
    candidates = [t for t in (first, second) if _is_real(t)]
    if not candidates:
        return first or second or ""
    return max(candidates, key=lambda t: len(t.strip()))


# ---- queries -------------------------------------------------------------------------------------


def papers_since(session: Session, since: datetime | None = None, source: str | None = None, limit: int | None = None) -> list[Paper]:
    """Papers first stored at or after `since` (all when None), newest first, optionally only those `source` carries."""
    query = sa.select(Paper)
    if since is not None:
        query = query.where(col(Paper.first_seen) >= since)
    if source is not None:
        query = query.where(col(Paper.id).in_(_ids_in_source(source)))
    query = query.order_by(col(Paper.first_seen).desc(), col(Paper.id).desc())
    if limit is not None:
        query = query.limit(limit)
    return list(_run(session, query).scalars())


def count_papers(session: Session, source: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(PAPER)
    if source is not None:
        query = query.where(PAPER.c.id.in_(_ids_in_source(source)))
    return int(_run(session, query).scalar_one())


def sources_of(session: Session, paper_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """For each paper id, (name, kind) of the sources carrying it, in the order they first brought it."""
    ids = list(paper_ids)
    out: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
    for chunk in _chunks(ids, BATCH_SIZE):
        query = (
            sa.select(PAPER_SOURCE.c.paper_id, col(Source.name), col(Source.kind))
            .join(Source, col(Source.id) == PAPER_SOURCE.c.source_id)
            .where(PAPER_SOURCE.c.paper_id.in_(chunk))
            .order_by(PAPER_SOURCE.c.first_seen, PAPER_SOURCE.c.id)
        )
        for paper_id, name, kind in _run(session, query):
            out[paper_id].append((name, kind))
    return out


def source_names_of(session: Session, paper_ids: Iterable[int]) -> dict[int, list[str]]:
    """For each paper id, the names of the sources carrying it (in the order they first brought it)."""
    return {pid: [name for name, _ in pairs] for pid, pairs in sources_of(session, paper_ids).items()}


def get_paper(session: Session, paper_id: int | None) -> Paper | None:
    """The paper with this id, or None."""
    return session.get(Paper, paper_id) if paper_id is not None else None


def get_paper_by_ident(session: Session, ident: str) -> Paper | None:
    """The paper an identifier names: an arXiv id (with or without version or `arXiv:`), a DOI, or an imported id."""
    text = ident.strip()
    if not text:
        return None
    found = _ARXIV_IDENT.match(text)
    if found:
        paper = _first(session, sa.select(Paper).where(col(Paper.arxiv_id) == found.group(1)))
        if paper is not None:
            return paper
    doi = re.sub(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", "", text, flags=re.I).lower()
    if doi.startswith("10."):
        paper = _first(session, sa.select(Paper).where(col(Paper.doi) == doi))
        if paper is not None:
            return paper
    paper = _first(session, sa.select(Paper).where(col(Paper.ident) == text).order_by(col(Paper.id)))
    if paper is not None:
        return paper
    by_item = sa.select(PAPER_SOURCE.c.paper_id).where(PAPER_SOURCE.c.item_id == bounded_key(text))
    return _first(session, sa.select(Paper).where(col(Paper.id).in_(by_item)).order_by(col(Paper.id)))


def _ids_in_source(name: str):
    return sa.select(PAPER_SOURCE.c.paper_id).join(Source, col(Source.id) == PAPER_SOURCE.c.source_id).where(col(Source.name) == name)


def _first(session: Session, query) -> Paper | None:
    return _run(session, query.limit(1)).scalars().first()


def _run(session: Session, query):
    try:
        return session.execute(query)
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc) from None
