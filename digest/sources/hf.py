"""Hugging Face daily papers JSON (huggingface.co/api/daily_papers, also ?date= and ?limit=, and the single-paper
/api/papers/<id> answer) -> ParsedPaper, for every shape the API has served from 2024 to 2026.

Upvotes live under paper.upvotes, the AI summary and GitHub repo appear in 2025. Pure: no network, no database.
"""

from __future__ import annotations

import json

from digest.errors import FeedError
from digest.sources import ParsedPaper, ParseResult
from digest.sources.clean import arxiv_id_in, arxiv_urls, clean_name, html_to_text, paper_key, parse_time

_MAX_WARNINGS = 20


def _item_paper(item: dict) -> ParsedPaper:
    """One list item ({paper: {...}, title, summary...}) or one bare paper record. Raises ValueError."""
    paper = item.get("paper") if isinstance(item.get("paper"), dict) else item
    ident = paper.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise ValueError("no paper id")
    title = html_to_text(paper.get("title") or item.get("title") or "")
    if not title:
        raise ValueError("no title")
    found = arxiv_id_in(ident)
    arxiv_id = found[0] if found else None
    url = pdf_url = None
    if arxiv_id:
        url, pdf_url = arxiv_urls(arxiv_id)
    authors = []
    for author in paper.get("authors") or ():
        name = author.get("name") if isinstance(author, dict) else author
        if isinstance(name, str) and name.strip():
            authors.append(clean_name(name))
    upvotes = paper.get("upvotes")
    github = paper.get("githubRepo")
    published = None
    try:
        published = parse_time(paper.get("publishedAt") or item.get("publishedAt"))
    except ValueError:
        pass
    return ParsedPaper(
        key=paper_key(arxiv_id, None, title),
        ident=arxiv_id or ident.strip(),
        title=title,
        abstract=html_to_text(paper.get("summary") or item.get("summary") or ""),
        authors=authors,
        arxiv_id=arxiv_id,
        version=found[1] if found else None,
        url=url,
        pdf_url=pdf_url,
        published=published,
        upvotes=upvotes if isinstance(upvotes, int) and not isinstance(upvotes, bool) else None,
        ai_summary=html_to_text(paper.get("ai_summary")) or None,
        github_repo=github.strip() if isinstance(github, str) and github.strip() else None,
        item_id=ident.strip(),
    )


def parse_hf_daily(data: bytes, *, source_url: str = "") -> ParseResult:
    """A daily-papers list (or one paper record); an item without an id or title is skipped with a warning."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"not valid JSON: {exc}") from exc
    if isinstance(document, dict):
        if "error" in document and "id" not in document:
            raise FeedError(f"Hugging Face API error: {html_to_text(str(document['error']))}")
        document = [document]
    if not isinstance(document, list):
        raise FeedError(f"expected a JSON list of daily papers, got a JSON {type(document).__name__}")
    papers: list[ParsedPaper] = []
    warnings: list[str] = []
    for number, item in enumerate(document, 1):
        try:
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
            papers.append(_item_paper(item))
        except ValueError as exc:
            warnings.append(f"item {number}: {exc}, skipped")
    if document and not papers:
        raise FeedError(f"no usable paper among {len(document)} items ({warnings[0]})")
    if len(warnings) > _MAX_WARNINGS:
        warnings[_MAX_WARNINGS:] = [f"... and {len(warnings) - _MAX_WARNINGS} more items skipped"]
    return ParseResult(papers=papers, kind="hf-daily", warnings=warnings)
