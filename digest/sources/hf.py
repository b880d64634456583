"""Hugging Face daily papers JSON (huggingface.co/api/daily_papers, also ?date= and ?limit=, and the single-paper
/api/papers/<id> answer) -> ParsedPaper, for every shape the API has served from 2024 to 2026.

Upvotes live under paper.upvotes, the AI summary and GitHub repo appear in 2025. Pure: no network, no database.
"""

from __future__ import annotations

import json

from digest.errors import FeedError
from digest.sources import ParsedPaper, ParseResult
from digest.sources.check import check_paper, unexpected
from digest.sources.clean import arxiv_id_in, arxiv_urls, clean_name, html_to_text, paper_key, parse_time, plain_to_text
from digest.sources.shape import check_json

_MAX_WARNINGS = 20


def _text(container: dict, field: str, problems: list[str]) -> str | None:
    """A text field; a value of another type (a list, a number, an object) is dropped with a warning."""
    value = container.get(field)
    if value is None or isinstance(value, str):
        return value
    problems.append(f"'{field}' is not text, dropped")
    return None


def _item_paper(item: dict, problems: list[str]) -> ParsedPaper:
    """One list item ({paper: {...}, title, summary...}) or one bare paper record. Raises ValueError."""
    nested = item.get("paper")
    paper = nested if isinstance(nested, dict) else item
    ident = paper.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise ValueError("no paper id")
    title = paper.get("title") or item.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError("'title' is not text")
    # The API's text fields are plain text (the arXiv abstract as written): "emits <swi> to enter latent mode" keeps
    # its <swi>, which html_to_text took for a tag.
    title = plain_to_text(title)
    if not title:
        raise ValueError("no title")
    found = arxiv_id_in(ident)
    arxiv_id = found[0] if found else None
    url = pdf_url = None
    if arxiv_id:
        url, pdf_url = arxiv_urls(arxiv_id)
    authors = []
    listed = paper.get("authors")
    if listed is None:
        listed = ()
    elif not isinstance(listed, list):
        problems.append("'authors' is not a list, dropped")
        listed = ()
    for author in listed:
        name = author.get("name") if isinstance(author, dict) else author
        if isinstance(name, str) and name.strip():
            authors.append(clean_name(name))
    upvotes = paper.get("upvotes")
    if upvotes is not None and (isinstance(upvotes, bool) or not isinstance(upvotes, int)):
        problems.append("'upvotes' is not a whole number, dropped")
        upvotes = None
    github = _text(paper, "githubRepo", problems)
    published = None
    when = paper.get("publishedAt") or item.get("publishedAt")
    try:
        published = parse_time(when)
    except ValueError as exc:
        problems.append(f"'publishedAt': {exc}, dropped")
    return ParsedPaper(
        key=paper_key(arxiv_id, None, title),
        ident=arxiv_id or ident.strip(),
        title=title,
        abstract=plain_to_text(_text(paper, "summary", problems) or _text(item, "summary", problems) or ""),
        authors=authors,
        arxiv_id=arxiv_id,
        version=found[1] if found else None,
        url=url,
        pdf_url=pdf_url,
        published=published,
        upvotes=upvotes,
        ai_summary=plain_to_text(_text(paper, "ai_summary", problems)) or None,
        github_repo=github.strip() if github and github.strip() else None,
        item_id=ident.strip(),
    )


def parse_hf_daily(data: bytes, *, source_url: str = "") -> ParseResult:
    """A daily-papers list (or one paper record); an item without an id or title is skipped with a warning."""
    check_json(data)
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"not valid JSON: {exc}") from None
    except RecursionError:  # [[[[... 100,000 deep: the decoder recurses once per level
        raise FeedError("JSON nested too deeply") from None
    if isinstance(document, dict):
        if "error" in document and "id" not in document:
            raise FeedError(f"Hugging Face API error: {html_to_text(str(document['error']))}")
        document = [document]
    if not isinstance(document, list):
        raise FeedError(f"expected a JSON list of daily papers, got a JSON {type(document).__name__}")
    papers: list[ParsedPaper] = []
    warnings: list[str] = []
    skipped, more, first_refusal = 0, 0, ""
    for number, item in enumerate(document, 1):
        problems: list[str] = []
        try:
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
            paper = _item_paper(item, problems)
            problems += check_paper(paper)
            papers.append(paper)
        except ValueError as exc:
            skipped += 1
            problems.append(f"{exc}, skipped")
        except Exception as exc:  # noqa: BLE001 - a wall around each item: one the parser trips on is skipped
            skipped += 1
            problems.append(f"{unexpected(exc)}, skipped")
        if problems:
            first_refusal = first_refusal or (f"item {number}: {problems[-1]}" if skipped else "")
            more += max(0, len(warnings) + len(problems) - _MAX_WARNINGS)
            warnings += [f"item {number}: {problem}" for problem in problems[:_MAX_WARNINGS - len(warnings)]]
    if document and not papers:
        raise FeedError(f"no usable paper among {len(document)} items ({first_refusal})")
    if more:  # kept short as it grows: a list of a million bad items would otherwise hold a million warnings
        warnings.append(f"... and {more} more warnings")
    return ParseResult(papers=papers, kind="hf-daily", warnings=warnings, skipped=skipped)
