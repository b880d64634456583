"""Sources -> store: fetch every enabled source (or import a file), parse it and upsert its papers, recording each
source's state. Used by `digest fetch` / `digest import` and by the daily pipeline.

A source's fetch is a wall: whatever it raises, of any exception type, in fetching, parsing or storing, becomes
that source's recorded error (last_error, consecutive_errors) and the other sources go on; only a database that
cannot be used at all (the error cannot even be recorded) stops the run. Each source's papers and state commit in
one transaction, so an error leaves nothing half-written; an entry the database refuses is skipped with a warning
naming the source and the entry, never its whole batch (see digest.store.papers). Parsing lives in digest.sources,
HTTP in digest.sources.fetch, SQL in digest.store.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from sqlalchemy.engine import Engine

from .children import die_with_parent
from .collector import paused_collector
from .config import Settings
from .errors import DigestError, FeedError, InputError, Interrupted, NotFoundError, RefusedError
from .log import log_event
from .sources import FILE_KIND, ParsedPaper, ParseResult
from .sources.fetch import fetch_arxiv_pages, fetch_feed, make_client
from .sources.jsonl import PIECE_BYTES, JsonlReader, read_jsonl_pieces
from .sources.parse import dedupe_papers, parse_file, parse_source
from .store import session_scope
from .store.papers import UpsertReport, upsert_papers
from .store.sources import (
    ensure_source,
    error_text,
    find_source,
    list_sources,
    record_fetch_error,
    record_fetch_success,
)
from .taxonomy import TAXONOMY_URL, canonical_category, suggest_categories

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
# The bundled real sample: 237 papers from a trending-papers page (JSON Lines: title and abstract only, no links
# or authors), one day of arXiv cs.CL (RSS 2.0) and one day of Hugging Face daily papers (JSON, with upvotes).
SAMPLE_FILES = (DATA_DIR / "sample-papers.jsonl", DATA_DIR / "sample-arxiv-cs.CL.xml", DATA_DIR / "hugging-face-2026-08-21.json")
# What `digest demo` imports: the two days whose every paper has its authors and its arXiv abstract and PDF links,
# so each paper of every demo email links to it (the Hugging Face upvotes make the "Trending today" section).
DEMO_FILES = SAMPLE_FILES[1:]


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
    skipped: int = 0  # entries refused by the record check or by the database (each has a warning)

    def line(self) -> str:
        """The one line `digest fetch` and `digest import` print for this source."""
        if self.status == "error":
            return f"{self.name}: error: {self.error}"
        if self.not_modified:
            return f"{self.name}: unchanged (not modified since the last fetch)"
        counts = f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged"
        warned = f"; {len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}" if self.warnings else ""
        return f"{self.name}: {self.status}: {self.entries} entr{'y' if self.entries == 1 else 'ies'}, {counts}{warned}"

    def warning_lines(self, most: int = 5) -> list[str]:
        """The lines printed under line(): the first `most` warnings, then how many more there are. `line()` counts
        them ("; 2 warnings"), and a count alone never said what the warnings were (a 301's new URL, a cut feed)."""
        lines = [f"  warning: {warning}" for warning in self.warnings[:most]]
        if len(self.warnings) > most:
            lines.append(f"  ... and {len(self.warnings) - most} more warnings")
        return lines


def _status_of(report: UpsertReport) -> str:
    return "new" if report.new else "updated" if report.updated else "unchanged"


def fetch_sources(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    only: str | Iterable[str] | None = None,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[SourceReport], None] | None = None,
    stop_event: threading.Event | None = None,
) -> list[SourceReport]:
    """Fetch every enabled source (or only the named ones, enabled or not) and store what each brought.
    Any failure of one source becomes that source's error report; only a database where that error cannot even be
    recorded stops the run (StoreError).

    Each source is one event=fetched, at info, or at warning when it failed: alerting on the daemon's log level
    must see a broken source.

    `stop_event` (the daemon's SIGTERM): once set, the fetch ends at once, even in the middle of a source's slow
    request (fetch_deadline may be minutes, systemd's stop timeout is 2): that source is given up, nothing of it is
    stored or recorded, the sources not reached are not fetched (event=fetch-stopped), and the reports of the sources
    fetched before are returned."""
    names = [only] if isinstance(only, str) else list(only) if only is not None else None
    with session_scope(engine) as session:
        every = list_sources(session)
    chosen = [s for s in every if s.kind != FILE_KIND and (s.name in names if names is not None else s.enabled)]
    if names is not None:
        missing = sorted(set(names) - {s.name for s in chosen})
        files = [name for name in missing if any(s.name == name and s.kind == FILE_KIND for s in every)]
        if files:
            raise InputError(f"{files[0]} is an imported file, not a source that is fetched", "import the file again: `digest import FILE`")
        if missing:
            raise NotFoundError(f"no source named {missing[0]!r} to fetch", "`digest sources list` shows the names")
    own = client is None
    client = client or make_client(settings)
    reports: list[SourceReport] = []
    download: Callable[[Callable[[], Any]], Any] = _download_here
    if stop_event is not None:
        download, sleep = partial(_download_until_stopped, stop_event), _sleep_until_stopped(stop_event, sleep)
    try:
        for position, source in enumerate(chosen):
            try:
                if stop_event is not None and stop_event.is_set():
                    raise _Stopped
                report = _fetch_one(engine, settings, now, source, client, sleep, download)
            except KeyboardInterrupt:
                raise Interrupted(_fetch_interrupted(engine, source.name, now, reports)) from None
            except _Stopped:
                left = len(chosen) - position
                log_event(log, "fetch-stopped", logging.WARNING, source=source.name, not_fetched=left,
                          note=f"stop requested: nothing of {source.name} stored; {left} source{'s' if left != 1 else ''} left for the next fetch")
                break
            level = logging.WARNING if report.status == "error" else logging.INFO
            fields: dict[str, Any] = {"source": report.name, "status": report.status, "new": report.new, "updated": report.updated}
            if report.error:  # a source that worked has no error= field (it showed error=None)
                fields["error"] = report.error
            if report.warnings:  # the daemon prints nothing else: its log must say what the warnings were
                fields["warnings"], fields["warning"] = len(report.warnings), report.warnings[0]
            log_event(log, "fetched", level, **fields)
            reports.append(report)
            if progress is not None:
                progress(report)
    finally:
        if own:
            client.close()
    return reports


class _Stopped(Exception):  # noqa: N818 - not an error: a stop request ended the fetch of this source
    """A stop request (stop_event) came while a source was being fetched, or before it was."""


def _download_here(download: Callable[[], Any]) -> Any:
    return download()


def _download_until_stopped(stop_event: threading.Event, download: Callable[[], Any]) -> Any:
    """download() (the network part of one source's fetch), or _Stopped as soon as `stop_event` is set. It runs in a
    daemon thread, so a stop never waits for a slow server: that thread is abandoned (its request ends at the
    fetch deadline, or with the process) and what it brings is dropped; storing is done here, after it returned."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = download()
        except BaseException as exc:  # noqa: BLE001 - handed over to the fetching thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="digest-download", daemon=True).start()
    while not done.wait(0.1):
        if stop_event.is_set():
            raise _Stopped
    if stop_event.is_set():
        raise _Stopped
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _sleep_until_stopped(stop_event: threading.Event, sleep: Callable[[float], None]) -> Callable[[float], None]:
    """A wait between retries (Retry-After, arXiv's paging delay) that a stop request cuts short."""
    def wait(seconds: float) -> None:
        if sleep is time.sleep:
            stop_event.wait(seconds)
        else:  # a test's clock
            sleep(seconds)
        if stop_event.is_set():
            raise _Stopped

    return wait


def _fetch_interrupted(engine: Engine, name: str, now: datetime, done: list[SourceReport]) -> str:
    """What Ctrl-C during one source's fetch kept: each source commits alone, so those before it are stored and it
    is not, unless the interrupt came in the instant after its commit (its state then says this run's success)."""
    before = len(done)
    kept = f"; the {before} source{'s' if before != 1 else ''} fetched before it {'are' if before != 1 else 'is'} stored" if before else ""
    if _stored_now(engine, name, now):
        return f"interrupted after {name} was fetched and stored{kept}"
    return f"interrupted while fetching {name}: nothing of it was stored{kept}"


def _stored_now(engine: Engine, name: str, now: datetime) -> bool:
    """Whether source `name`'s last success is this run's (`now`): its transaction committed."""
    with session_scope(engine) as session:
        source = find_source(session, name)
        when = source.last_success_at if source is not None else None
    if when is None:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)) >= now


def _fetch_one(engine: Engine, settings: Settings, now: datetime, source: Any, client: Any, sleep: Callable[[float], None],
               download: Callable[[Callable[[], Any]], Any] = _download_here) -> SourceReport:
    """One source fetched, parsed and stored; `download` runs its network part (_download_until_stopped: a stop
    request gives it up, _Stopped, and nothing of it is stored)."""
    source_id, name, kind, url = source.id, source.name, source.kind, source.url
    try:
        if kind == "arxiv-api":
            pages, paging_warnings = download(lambda: fetch_arxiv_pages(url, settings=settings, client=client, sleep=sleep))
            result = _merge_pages([parse_source("arxiv-api", page, source_url=url) for page in pages])
            result.warnings.extend(paging_warnings)
            fetched = None
        else:
            fetched = download(lambda: fetch_feed(url, settings=settings, etag=source.etag, last_modified=source.last_modified, client=client, sleep=sleep))
            if fetched.status == "gone":
                return _record_error(engine, source_id, name, now, f"gone (HTTP 410): source disabled, {url} no longer exists", disable=True)
            if fetched.status == "not_modified":
                with session_scope(engine) as session:
                    record_fetch_success(session, source_id, now, count=None, url=fetched.url)
                return SourceReport(name, "unchanged", not_modified=True)
            result = parse_source(kind, fetched.body, source_url=fetched.url)
        with session_scope(engine) as session:
            upserted = upsert_papers(session, source_id, result.papers, now)
            refused = _refused(name, upserted, len(result.papers))
            record_fetch_success(
                session, source_id, now, count=upserted.stored, new_papers=upserted.linked,
                skipped=result.skipped + len(upserted.skipped),
                etag=fetched.etag if fetched else None, last_modified=fetched.last_modified if fetched else None,
                url=fetched.url if fetched else None,
            )
    except _Stopped:
        raise
    except Exception as exc:  # noqa: BLE001 - the wall around one source: any failure is this source's error
        return _record_error(engine, source_id, name, now, _error_text(name, exc))
    report = SourceReport(name, _status_of(upserted), upserted.new, upserted.updated, upserted.unchanged,
                          len(result.papers), warnings=list(result.warnings) + refused,
                          skipped=result.skipped + len(upserted.skipped))
    if fetched is not None and fetched.status == "moved":
        report.warnings.insert(0, f"moved permanently: the source now points at {fetched.url}")
    return report


def _refused(name: str, upserted: UpsertReport, papers: int) -> list[str]:
    """The warnings for the entries the database refused, each logged naming the source; RefusedError if all were."""
    for entry in upserted.skipped:
        log_event(log, "entry-skipped", logging.WARNING, source=name, entry=entry)
    if papers and not upserted.stored:
        raise RefusedError(f"no entry could be stored: the database refused all {papers} ({upserted.skipped[0]})")
    return [f"entry {entry}, skipped" for entry in upserted.skipped]


def _error_text(name: str, exc: Exception) -> str:
    """What a failed fetch records: a DigestError's own line; anything else is a bug, logged with its traceback."""
    if isinstance(exc, DigestError):
        return str(exc)
    log_event(log, "source-failed", logging.ERROR, source=name, exc_info=exc)
    return f"unexpected {type(exc).__name__}: {str(exc)[:300]} (a bug in digest: `digest -v fetch` logs the traceback)"


def _record_error(engine: Engine, source_id: int, name: str, now: datetime, error: str, *, disable: bool = False) -> SourceReport:
    """Record a failed fetch. A StoreError here means the database cannot be used at all: it stops the run."""
    error = error_text(error)  # it may quote the feed: no control character reaches the database or the terminal
    with session_scope(engine) as session:
        record_fetch_error(session, source_id, now, error, disable=disable)
    return SourceReport(name, "error", error=error)


def _merge_pages(results: list[ParseResult]) -> ParseResult:
    merged = ParseResult(papers=[], kind="arxiv-api")
    for result in results:
        merged.papers.extend(result.papers)
        merged.warnings.extend(result.warnings)
        merged.skipped += result.skipped
    # arXiv's paging can repeat an entry across pages; one upsert must not meet a key twice (PostgreSQL refuses it).
    return dedupe_papers(merged)


def file_source_name(path: Path) -> str:
    """The source an imported file's papers are stored under: "file:<its name>"."""
    return f"file:{path.name}"


def import_file(engine: Engine, path: str | Path, now: datetime) -> SourceReport:
    """Import a local file of papers (format detected) as the source "file:<name>". A missing or unreadable file
    is an InputError; a file nothing can be read from is a FeedError naming it. Nothing is written unless all is.

    A JSON Lines file is streamed: read, parsed and stored piece by piece in one transaction (parsed in a forked
    process while this one stores, when this process has a single thread), never held whole in memory.

    Whatever fails, of any exception type, is one DigestError naming the file, and nothing is written; an entry the
    database refuses is skipped with a warning (RefusedError when that leaves none)."""
    path = Path(path)
    try:
        return _import(engine, path, now)
    except KeyboardInterrupt:  # Ctrl-C: the one transaction was rolled back, unless it came just after the commit
        if _stored_now(engine, file_source_name(path), now):
            raise Interrupted(f"interrupted after {path} was imported: all of it is stored") from None
        raise Interrupted("interrupted: nothing of this import was stored") from None
    except DigestError:
        raise
    except Exception as exc:  # noqa: BLE001 - the wall around one file, as around one fetched source
        log_event(log, "import-failed", logging.ERROR, file=str(path), exc_info=exc)
        raise FeedError(f"{path}: unexpected {type(exc).__name__}: {str(exc)[:300]}",
                        "a bug in digest: `digest -v import FILE` logs the traceback") from None


def _import(engine: Engine, path: Path, now: datetime) -> SourceReport:
    with _open(path) as stream:
        head = _read(path, stream, 4096)
        if path.name.lower().endswith(JSONL_SUFFIXES) and head.removeprefix(UTF8_BOM).strip():
            try:
                return _import_jsonl(engine, path, head, stream, now)
            except _Restart:  # a later line brings a newer version of a paper already stored: read the file whole
                stream.seek(0)
                head = b""
        data = head + _read(path, stream, -1)
    try:
        result = parse_file(data, path.name)
    except DigestError as exc:
        raise _naming(path, exc) from None
    return _store_batches(engine, path, now, [result.papers], lambda: (len(result.papers), result.warnings, result.skipped))


def _open(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        where = "check the path" if path.is_absolute() else f"a relative path is read from the current directory, {Path.cwd()}"
        raise InputError(f"{path}: no such file", where) from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _read(path: Path, stream: BinaryIO, size: int) -> bytes:
    try:
        return stream.read(size)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


FILE_HINT = "the file is not valid RSS, Atom, JSON or JSON Lines"


def _naming(path: Path, exc: DigestError) -> DigestError:
    hint = FILE_HINT if isinstance(exc, FeedError) else exc.hint  # FeedError's own hint is about a URL
    return type(exc)(f"{path}: {exc.args[0] if exc.args else exc}", hint)


def _store_batches(engine: Engine, path: Path, now: datetime, batches: Iterable[list[ParsedPaper]],
                   ending: Callable[[], tuple[int, list[str], int]]) -> SourceReport:
    """Store each batch of papers as the source "file:<name>", all in one transaction; `ending`, called after the
    last batch, says how many papers the file held, its warnings and how many entries its parser skipped."""
    name = file_source_name(path)
    upserted = UpsertReport()
    with session_scope(engine) as session:
        source = ensure_source(session, name, FILE_KIND, str(path.resolve()), now)
        for papers in batches:
            upserted.add(upsert_papers(session, source.id, papers, now))
        count, warnings, skipped = ending()
        try:
            refused = _refused(name, upserted, count)
        except RefusedError as exc:
            raise _naming(path, exc) from None
        record_fetch_success(session, source, now, count=upserted.stored, new_papers=upserted.linked,
                             skipped=skipped + len(upserted.skipped))
    return SourceReport(name, _status_of(upserted), upserted.new, upserted.updated, upserted.unchanged,
                        count, warnings=list(warnings) + refused, skipped=skipped + len(upserted.skipped))


# ---- JSON Lines, streamed ----------------------------------------------------------------------------

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.txt")  # the names parse_file reads as JSON Lines whatever they hold
UTF8_BOM = b"\xef\xbb\xbf"
_FIELDS = attrgetter(*(f.name for f in fields(ParsedPaper)))  # a paper as a tuple: a third cheaper to pickle


class _Restart(Exception):
    """The stream cannot give what reading the file whole gives (see _deduped_batches)."""


def _import_jsonl(engine: Engine, path: Path, head: bytes, stream: BinaryIO, now: datetime) -> SourceReport:
    # Nothing built during an import holds a cycle: the cyclic collector would only re-scan live rows, again and again.
    with paused_collector():
        # Forked before the database is opened; not from a process with threads (a forked copy of a lock another
        # thread holds would never be released).
        ending: list[tuple[int, list[str], int]] = []  # (papers kept, warnings, lines skipped) once the whole file is read
        if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            batches: Any = _ParsingProcess(path, head, stream, ending)
        else:
            batches = _deduped_batches(path, head, stream, ending)
        with contextlib.closing(batches):  # an error while storing ends the parsing at once
            return _store_batches(engine, path, now, batches, lambda: ending[0])


def _deduped_batches(path: Path, head: bytes, stream: BinaryIO, ending: list) -> Iterator[list[ParsedPaper]]:
    """The file's papers in batches of one piece each, deduplicated across the whole file exactly as parse_file
    does; then `ending` gets (papers kept, warnings, lines skipped). Raises _Restart when that cannot be done piece by piece."""
    reader = JsonlReader()
    kept: dict[str, int | None] = {}  # key -> version of every paper already handed on
    warnings: list[str] = []
    try:
        for piece in read_jsonl_pieces(chain([head], iter(partial(stream.read, PIECE_BYTES), b""))):
            papers = reader.feed(piece)
            # Papers standing in for those handed on before go first, so dedupe_papers applies its one rule (the
            # highest version wins, else the first seen) and warns in the order reading the whole file would.
            earlier = {p.key: ParsedPaper(p.key, "", "", version=kept[p.key]) for p in papers if p.key in kept}
            result = dedupe_papers(ParseResult([*earlier.values(), *papers], "jsonl"))
            if any(a is not b for a, b in zip(earlier.values(), result.papers)):
                raise _Restart()  # a newer version of a paper already stored
            batch = result.papers[len(earlier):]
            kept.update((p.key, p.version) for p in batch)
            warnings.extend(result.warnings)
            yield batch
        warnings[:0] = reader.finish()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except DigestError as exc:
        raise _naming(path, exc) from None
    ending.append((len(kept), warnings, reader.skipped_count))


class _ParsingProcess:
    """_deduped_batches run in a forked process, so parsing (one core) overlaps storing (the other): iterating
    gives the batches it sends; close() ends it (a process still sending gets a broken pipe)."""

    def __init__(self, path: Path, head: bytes, stream: BinaryIO, ending: list) -> None:
        self.path, self.ending = path, ending
        context = multiprocessing.get_context("fork")
        self.receiving, sending = context.Pipe(duplex=False)
        self.child = context.Process(target=_send_batches, args=(path, head, stream, self.receiving, sending, os.getpid()), daemon=True)
        self.child.start()
        sending.close()

    def __iter__(self) -> Iterator[list[ParsedPaper]]:
        while True:
            try:
                kind, payload = pickle.loads(self.receiving.recv_bytes())
            except EOFError:
                self.child.join(5)
                raise DigestError(f"{self.path}: the parsing process ended early (exit code {self.child.exitcode})") from None
            if kind == "papers":
                yield [ParsedPaper(*values) for values in payload]
            elif kind == "error":
                raise payload
            else:
                self.ending.append(payload)
                return

    def close(self) -> None:
        self.receiving.close()
        self.child.join(5)
        if self.child.exitcode is None:
            self.child.kill()
            self.child.join()


def _send_batches(path: Path, head: bytes, stream: BinaryIO, receiving: Any, sending: Any, parent_pid: int) -> None:
    die_with_parent(parent_pid)  # a SIGKILLed `digest import` must not leave this process blocked on the pipe
    # The fork copied the pipe's reading end too. Held open here, it kept a send to a parent that stopped listening
    # (Ctrl-C) blocked on a full pipe instead of failing at once, and close() waited its 5 s before killing this.
    receiving.close()
    ending: list = []
    try:
        for batch in _deduped_batches(path, head, stream, ending):
            sending.send_bytes(pickle.dumps(("papers", [_FIELDS(p) for p in batch]), pickle.HIGHEST_PROTOCOL))
        sending.send_bytes(pickle.dumps(("ending", ending[0]), pickle.HIGHEST_PROTOCOL))
    except BrokenPipeError:
        pass  # the importing process stopped listening
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the importing process, which raises it
        try:
            message = pickle.dumps(("error", exc), pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            message = pickle.dumps(("error", DigestError(f"{path}: {type(exc).__name__}: {exc}")))
        try:
            sending.send_bytes(message)
        except OSError:
            pass
    finally:
        sending.close()


# ---- what `digest sources add SPEC` means ---------------------------------------------------------

ARXIV_RSS = "https://rss.arxiv.org/rss/{}"
ARXIV_API = "https://export.arxiv.org/api/query?{}"
HF_DAILY = "https://huggingface.co/api/daily_papers"
SPEC_HELP = "arxiv:CAT[+CAT...], arxiv-api:QUERY, hf-daily, or an http(s) URL"


def _arxiv_category(value: str) -> str:
    """A category of an arxiv: spec as arXiv writes it; a typo or a name is refused with a guess (the feed of a
    category that does not exist is empty, every day, without an error)."""
    code = canonical_category(value)
    if code is None:
        guesses = suggest_categories(value)
        meant = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        raise InputError(f"{value!r} is not an arXiv category", f"{meant}the codes are listed at {TAXONOMY_URL}")
    return code


def resolve_spec(spec: str, kind: str | None = None) -> tuple[str, str, str]:
    """(kind, url, default name) of a source spec; `kind` forces the kind of an http(s) URL
    (e.g. a local arXiv listing mirror). An unknown spec is an InputError."""
    spec = spec.strip()
    prefix, colon, rest = spec.partition(":")
    if prefix.lower() in ("http", "https") and colon:  # a scheme is case-insensitive (RFC 3986): HTTPS://... too
        spec = prefix.lower() + colon + rest
        parts = urlsplit(spec)
        if not parts.netloc:
            raise InputError(f"{spec!r} is not a URL", f"a source is {SPEC_HELP}")
        return kind or "feed", spec, (parts.netloc + parts.path).rstrip("/")
    if kind is not None:
        raise InputError(f"--kind goes with an http(s) URL, not {spec!r}", f"a source is {SPEC_HELP}")
    if spec == "hf-daily":
        return "hf-daily", HF_DAILY, "hf-daily"
    if prefix == "arxiv" and colon:
        if not rest.strip("+ "):
            raise InputError(f"{rest!r} is not a list of arXiv categories", "e.g. arxiv:cs.LG+cs.CL")
        rest = "+".join(_arxiv_category(part) for part in rest.split("+"))
        return "arxiv-rss", ARXIV_RSS.format(rest), f"arxiv:{rest}"
    if prefix == "arxiv-api" and colon:
        if not rest.strip():
            raise InputError("arxiv-api: needs a search query", "e.g. arxiv-api:cat:cs.LG AND abs:retrieval")
        query = urlencode({"search_query": rest.strip(), "sortBy": "submittedDate", "sortOrder": "descending"})
        return "arxiv-api", ARXIV_API.format(query), spec
    raise InputError(f"unknown source kind {(prefix if colon else spec)!r}", f"a source is {SPEC_HELP}")
