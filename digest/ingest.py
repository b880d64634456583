"""Sources -> store: fetch every enabled source (or import a file), parse it and upsert its papers, recording each
source's state. Used by `digest fetch` / `digest import` and by the daily pipeline.

One failing source never stops the others; each source's papers and state commit in one transaction, so an error
leaves nothing half-written. Parsing lives in digest.sources, HTTP in digest.sources.fetch, SQL in digest.store.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlencode, urlsplit

from sqlalchemy.engine import Engine

from .errors import DigestError, InputError, NotFoundError, StoreError
from .models import Source
from .sources import ParseResult
from .sources.fetch import fetch_arxiv_pages, fetch_feed, make_client
from .sources.parse import parse_file, parse_source
from .store import session_scope
from .store.papers import UpsertReport, upsert_papers
from .store.sources import ensure_source, list_sources, record_fetch_error, record_fetch_success

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
# The bundled real sample the demo imports: 237 papers (JSON Lines) and one day of arXiv cs.CL (RSS 2.0).
SAMPLE_FILES = (DATA_DIR / "sample-papers.jsonl", DATA_DIR / "sample-arxiv-cs.CL.xml")
PARSE_KIND = {"arxiv-rss": "arxiv-rss", "arxiv-api": "arxiv-api", "hf-daily": "hf-daily", "feed": "feed"}


@dataclass
class SourceReport:
    """What one source brought: status is new / updated / unchanged / error."""

    name: str
    status: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    entries: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    not_modified: bool = False

    def line(self) -> str:
        """The one line `digest fetch` and `digest import` print for this source."""
        if self.status == "error":
            return f"{self.name}: error: {self.error}"
        if self.not_modified:
            return f"{self.name}: unchanged (not modified since the last fetch)"
        counts = f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged"
        warned = f"; {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}" if self.warnings else ""
        return f"{self.name}: {self.status}: {self.entries} entries, {counts}{warned}"


def _status_of(report: UpsertReport) -> str:
    return "new" if report.new else "updated" if report.updated else "unchanged"


def fetch_sources(
    engine: Engine,
    settings: Any,
    now: datetime,
    *,
    only: str | Iterable[str] | None = None,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[SourceReport], None] | None = None,
) -> list[SourceReport]:
    """Fetch every enabled source (or only the named ones, enabled or not) and store what each brought.
    A DigestError of one source becomes that source's error report; StoreError about the database itself stops the run."""
    names = [only] if isinstance(only, str) else list(only) if only is not None else None
    with session_scope(engine) as session:
        chosen = [s for s in list_sources(session, include_files=False) if (s.name in names if names is not None else s.enabled)]
    if names is not None:
        missing = sorted(set(names) - {s.name for s in chosen})
        if missing:
            raise NotFoundError(f"no source named {missing[0]!r} to fetch", "`digest sources list` shows the names")
    own = client is None
    client = client or make_client(settings)
    reports = []
    try:
        for source in chosen:
            report = _fetch_one(engine, settings, now, source, client, sleep)
            log.info("fetched source=%s status=%s new=%d updated=%d error=%s", report.name, report.status, report.new, report.updated, report.error)
            reports.append(report)
            if progress is not None:
                progress(report)
    finally:
        if own:
            client.close()
    return reports


def _fetch_one(engine: Engine, settings: Any, now: datetime, source: Any, client: Any, sleep: Callable[[float], None]) -> SourceReport:
    source_id, name, kind, url = source.id, source.name, source.kind, source.url
    try:
        if kind == "arxiv-api":
            pages, paging_warnings = fetch_arxiv_pages(url, settings=settings, client=client, sleep=sleep)
            result = _merge_pages([parse_source("arxiv-api", page, source_url=url) for page in pages])
            result.warnings.extend(paging_warnings)
            fetched = None
        else:
            fetched = fetch_feed(url, settings=settings, etag=source.etag, last_modified=source.last_modified, client=client, sleep=sleep)
            if fetched.status == "gone":
                return _record_error(engine, source_id, name, now, f"gone (HTTP 410): source disabled, {url} no longer exists", disable=True)
            if fetched.status == "not_modified":
                with session_scope(engine) as session:
                    record_fetch_success(session, session.get(Source, source_id), now, count=None, url=fetched.url)
                return SourceReport(name, "unchanged", not_modified=True)
            result = parse_source(PARSE_KIND[kind], fetched.body, source_url=fetched.url)
        with session_scope(engine) as session:
            upserted = upsert_papers(session, source_id, result.papers, now)
            record_fetch_success(
                session, session.get(Source, source_id), now, count=len(result.papers), new_papers=upserted.linked,
                etag=fetched.etag if fetched else None, last_modified=fetched.last_modified if fetched else None,
                url=fetched.url if fetched else None,
            )
    except StoreError:
        raise  # the database itself is the problem: no other source can be stored either
    except DigestError as exc:
        return _record_error(engine, source_id, name, now, str(exc))
    report = SourceReport(name, _status_of(upserted), upserted.new, upserted.updated, upserted.unchanged,
                          len(result.papers), warnings=list(result.warnings))
    if fetched is not None and fetched.status == "moved":
        report.warnings.append(f"moved permanently: the source now points at {fetched.url}")
    return report


def _record_error(engine: Engine, source_id: int, name: str, now: datetime, error: str, *, disable: bool = False) -> SourceReport:
    with session_scope(engine) as session:
        record_fetch_error(session, session.get(Source, source_id), now, error, disable=disable)
    return SourceReport(name, "error", error=error)


def _merge_pages(results: list[ParseResult]) -> ParseResult:
    merged = ParseResult(papers=[], kind="arxiv-api")
    for result in results:
        merged.papers.extend(result.papers)
        merged.warnings.extend(result.warnings)
    return merged


def import_file(engine: Engine, path: str | Path, now: datetime) -> SourceReport:
    """Import a local file of papers (format detected) as the source "file:<name>". A missing or unreadable file
    is an InputError; a file nothing can be read from is a FeedError naming it. Nothing is written unless all is."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        result = parse_file(data, path.name)
    except DigestError as exc:
        raise type(exc)(f"{path}: {exc.args[0] if exc.args else exc}", exc.hint) from None
    name = f"file:{path.name}"
    with session_scope(engine) as session:
        source = ensure_source(session, name, "file", str(path.resolve()), now)
        upserted = upsert_papers(session, source.id, result.papers, now)
        record_fetch_success(session, source, now, count=len(result.papers), new_papers=upserted.linked)
    return SourceReport(name, _status_of(upserted), upserted.new, upserted.updated, upserted.unchanged,
                        len(result.papers), warnings=list(result.warnings))


# ---- what `digest sources add SPEC` means ---------------------------------------------------------

ARXIV_RSS = "https://rss.arxiv.org/rss/{}"
ARXIV_API = "https://export.arxiv.org/api/query?{}"
HF_DAILY = "https://huggingface.co/api/daily_papers"
SPEC_HELP = "arxiv:CAT[+CAT...], arxiv-api:QUERY, hf-daily, or an http(s) URL"
_CATEGORIES = re.compile(r"^[a-z-]+(\.[A-Za-z-]+)?(\+[a-z-]+(\.[A-Za-z-]+)?)*$")


def resolve_spec(spec: str, kind: str | None = None) -> tuple[str, str, str]:
    """(kind, url, default name) of a source spec; `kind` forces the kind of an http(s) URL
    (e.g. a local arXiv listing mirror). An unknown spec is an InputError."""
    spec = spec.strip()
    prefix, colon, rest = spec.partition(":")
    if prefix in ("http", "https") and colon:
        parts = urlsplit(spec)
        if not parts.netloc:
            raise InputError(f"{spec!r} is not a URL", f"a source is {SPEC_HELP}")
        return kind or "feed", spec, (parts.netloc + parts.path).rstrip("/")
    if kind is not None:
        raise InputError(f"--kind goes with an http(s) URL, not {spec!r}", f"a source is {SPEC_HELP}")
    if spec == "hf-daily":
        return "hf-daily", HF_DAILY, "hf-daily"
    if prefix == "arxiv" and colon:
        if not _CATEGORIES.match(rest):
            raise InputError(f"{rest!r} is not a list of arXiv categories", "e.g. arxiv:cs.LG+cs.CL")
        return "arxiv-rss", ARXIV_RSS.format(rest), spec
    if prefix == "arxiv-api" and colon:
        if not rest.strip():
            raise InputError("arxiv-api: needs a search query", "e.g. arxiv-api:cat:cs.LG AND abs:retrieval")
        query = urlencode({"search_query": rest.strip(), "sortBy": "submittedDate", "sortOrder": "descending"})
        return "arxiv-api", ARXIV_API.format(query), spec
    raise InputError(f"unknown source kind {(prefix if colon else spec)!r}", f"a source is {SPEC_HELP}")
