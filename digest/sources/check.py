"""The record check at the parse boundary: every parser passes each ParsedPaper through check_paper before handing it
on, so what reaches the store has the right types, integers that fit a 4-byte INTEGER, dates in a plausible range,
bounded lengths and text that both SQLite and PostgreSQL accept (no NUL, no lone surrogate).

A bad optional value is dropped (or a long text cut) with a warning; a record without a usable key, identifier or
title is refused (ValueError), and the parser skips it with a warning naming the entry. Pure: one record at a time,
no network, no database, no clock (the date bounds are fixed).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from digest.sources import ParsedPaper
from digest.sources.clean import MAX_KEY

MAX_INT = 2**31 - 1  # INTEGER is 4 bytes on PostgreSQL (SQLite holds 8)
# Dates outside these are typos or hostile (year 9999), and would sort a paper first or last forever.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)

# Longest value kept, in characters. Far above any real paper (arXiv caps abstracts at 1,920 characters; titles
# run to ~300; DOIs to ~300), low enough that a hostile feed cannot fill the database or a digest with one entry.
MAX_TITLE = 2_000
MAX_ABSTRACT = 50_000
MAX_AI_SUMMARY = 10_000
MAX_AUTHOR = 300  # one name; a longer "name" is an affiliation blob or junk, and is dropped
MAX_AUTHORS = 5_000  # big-collaboration papers list ~3,000
MAX_CATEGORY = 200
MAX_CATEGORIES = 200
MAX_IDENTIFIER = 2_000  # ident and item_id (a guid may be a long URL)
MAX_URL = 8_192  # url, pdf_url, github_repo: the common server limit for a request line
MAX_DOI = 1_000
MAX_ARXIV_ID = 64
MAX_ANNOUNCE_TYPE = 32  # the column is VARCHAR(32); arXiv's values are new, cross, replace, replace-cross

# NUL (PostgreSQL text refuses it) and the other control characters but tab and line breaks (junk in any field) go;
# a lone surrogate (no UTF-8 for it: both databases refuse it) becomes U+FFFD.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _storable(text: str) -> str:
    # isprintable() is False for all of them, and True for nearly every value: one C scan in the common case.
    if text.isprintable() or _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", text)


def _cut(text: str, limit: int) -> str:
    return text[: limit - 1] + "…"


def _required(value, name: str, limit: int, problems: list[str]) -> str:
    if type(value) is not str:
        raise ValueError(f"{name} is not text")
    value = _storable(value)
    if len(value) > limit:
        problems.append(f"{name} longer than {limit:,} characters, cut")
        value = _cut(value, limit)
    if not value.strip():
        raise ValueError(f"empty {name}")
    return value


def _optional_text(value, name: str, limit: int, problems: list[str], *, cut: bool) -> str | None:
    """`value` as storable text; None when it is missing, not text, or too long (unless `cut`)."""
    if value is None:
        return None
    if type(value) is not str:
        problems.append(f"{name} is not text, dropped")
        return None
    value = _storable(value)
    if len(value) > limit:
        if not cut:
            problems.append(f"{name} longer than {limit:,} characters, dropped")
            return None
        problems.append(f"{name} longer than {limit:,} characters, cut")
        value = _cut(value, limit)
    return value or None


def _names(values, name: str, each: int, most: int, problems: list[str]) -> list[str]:
    if type(values) is not list:
        problems.append(f"{name} is not a list, dropped")
        return []
    kept = [v for v in (_storable(v) for v in values if type(v) is str and len(v) <= each) if v.strip()]
    if len(kept) != len(values):
        problems.append(f"{len(values) - len(kept):,} {name} dropped (empty, not text, or longer than {each:,} characters)")
    if len(kept) > most:
        problems.append(f"{len(kept):,} {name}, only the first {most:,} kept")
        del kept[most:]
    return kept


def _count(value, name: str, lowest: int, problems: list[str]) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        problems.append(f"{name} is not a whole number, dropped")
        return None
    if not lowest <= value <= MAX_INT:
        shown = f"{value:,}" if abs(value) < 10**12 else "a number of more than 12 digits"
        problems.append(f"{name} {shown} is out of range ({lowest} to {MAX_INT:,}), dropped")
        return None
    return value


def _moment(value, name: str, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        problems.append(f"{name} is not a date with a time zone, dropped")
        return None
    if not EARLIEST <= value < LATEST:
        problems.append(f"{name} {value.date().isoformat()} is out of range ({EARLIEST.year} to {LATEST.year - 1}), dropped")
        return None
    return value


# The optional text fields: (field, name in a problem, limit, cut when longer rather than dropped). Both the one-pass
# check of an ordinary record and the full check read them here, so the two cannot disagree on a limit.
_OPTIONAL_TEXTS = (("arxiv_id", "arXiv id", MAX_ARXIV_ID, False), ("doi", "DOI", MAX_DOI, False), ("url", "link", MAX_URL, False),
                   ("pdf_url", "PDF link", MAX_URL, False), ("announce_type", "announce type", MAX_ANNOUNCE_TYPE, False),
                   ("ai_summary", "AI summary", MAX_AI_SUMMARY, True), ("github_repo", "GitHub link", MAX_URL, False),
                   ("item_id", "item id", MAX_IDENTIFIER, True))


def _ordinary(paper: ParsedPaper) -> bool:
    """True when check_paper would change nothing and find nothing: every text printable (one C scan of them all),
    every value of its type and within its limit. Nearly every real paper is; it then costs one pass, not a function
    call per field (the check made parse_file 20% slower). Anything unusual takes the full check, which decides."""
    key, ident, title, abstract, authors, categories = paper.key, paper.ident, paper.title, paper.abstract, paper.authors, paper.categories
    if not (type(key) is str and type(ident) is str and type(title) is str and type(abstract) is str):
        return False
    if not (0 < len(key) <= MAX_KEY and len(ident) <= MAX_IDENTIFIER and len(title) <= MAX_TITLE and len(abstract) <= MAX_ABSTRACT):
        return False
    if not (ident.strip() and title.strip()):
        return False
    texts = [key, ident, title, abstract]
    for names, each, most in ((authors, MAX_AUTHOR, MAX_AUTHORS), (categories, MAX_CATEGORY, MAX_CATEGORIES)):
        if names:
            if type(names) is not list or len(names) > most:
                return False
            for name in names:
                if type(name) is not str or len(name) > each or not name.strip():
                    return False
            texts += names
    for field, _, limit, _ in _OPTIONAL_TEXTS:
        value = getattr(paper, field)
        if value is not None:
            if type(value) is not str or not 0 < len(value) <= limit:
                return False
            texts.append(value)
    for count, lowest in ((paper.version, 1), (paper.upvotes, 0)):
        if count is not None and (type(count) is not int or not lowest <= count <= MAX_INT):
            return False
    for moment in (paper.published, paper.updated):
        if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None or not EARLIEST <= moment < LATEST):
            return False
    return "".join(texts).isprintable()


def check_paper(paper: ParsedPaper) -> list[str]:
    """Bring `paper` in range, in place; the problems found (each says what was dropped or cut).

    Raises ValueError when the record cannot be stored at all: no key, identifier or title."""
    if _ordinary(paper):
        return []
    return _check_in_full(paper)


def _check_in_full(paper: ParsedPaper) -> list[str]:
    problems: list[str] = []
    # The dedupe key is never cut (a cut key could merge two papers): paper_key bounds every key it makes.
    if type(paper.key) is not str or not paper.key or len(paper.key) > MAX_KEY:
        raise ValueError("no usable dedupe key")
    paper.key = _storable(paper.key)
    paper.ident = _required(paper.ident, "identifier", MAX_IDENTIFIER, problems)
    paper.title = _required(paper.title, "title", MAX_TITLE, problems)
    paper.abstract = _optional_text(paper.abstract, "abstract", MAX_ABSTRACT, problems, cut=True) or ""
    if paper.authors:
        paper.authors = _names(paper.authors, "authors", MAX_AUTHOR, MAX_AUTHORS, problems)
    if paper.categories:
        paper.categories = _names(paper.categories, "categories", MAX_CATEGORY, MAX_CATEGORIES, problems)
    for field, name, limit, cut in _OPTIONAL_TEXTS:
        setattr(paper, field, _optional_text(getattr(paper, field), name, limit, problems, cut=cut))
    paper.version = _count(paper.version, "version", 1, problems)
    paper.upvotes = _count(paper.upvotes, "upvotes", 0, problems)
    paper.published = _moment(paper.published, "publication date", problems)
    paper.updated = _moment(paper.updated, "update date", problems)
    return problems


UNEXPECTED = "unexpected"


def unexpected(exc: BaseException) -> str:
    """How a parser reports an entry it tripped on (a bug, skipped so the rest is read): the fuzz suite looks for it."""
    return f"{UNEXPECTED} {type(exc).__name__}: {str(exc)[:200]}"
