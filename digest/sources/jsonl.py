"""JSON Lines files, one paper per line -> ParsedPaper.

`id`, `title`, `abstract` are required; `authors` (list or "A, B"), `url`, `published`, `categories`, `doi`,
`upvotes` are optional. A bad line is skipped with a warning naming its number. Built for speed (json.loads per
line, no feedparser): an import of 100,000 lines must not wait on the parser. JsonlReader reads a file piece by piece
(read_jsonl_pieces cuts it at line breaks), so a big import never holds it whole. Pure: no network, no database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from json import JSONDecoder, loads
from json.scanner import make_scanner

from digest.collector import paused_collector
from digest.errors import FeedError
from digest.sources import ParsedPaper, ParseResult
from digest.sources.check import check_paper, unexpected
from digest.sources.clean import (
    MAX_RAW,
    are_plain_names,
    arxiv_id_in,
    arxiv_urls,
    clean_name,
    html_to_text,
    normalise_doi,
    paper_key,
    parse_time,
    split_authors,
    whole_number,
)

_MAX_WARNINGS = 20
# The scanner json.loads runs, called straight: a line that is one JSON value and nothing else (nearly all) skips
# loads' wrappers; any other line goes through loads itself, for its error message.
_scan_json = make_scanner(JSONDecoder())  # type: ignore[arg-type]  # typeshed types the C scanner's argument as itself
PIECE_BYTES = 1 << 21  # what a streamed import reads at a time: ~1,600 papers of 1.3 kB


def _text_list(value, field: str, split) -> list[str]:
    if isinstance(value, str):
        return split(value)
    if isinstance(value, list):
        if are_plain_names(value):
            return list(value)
        names = []
        for item in value:
            if isinstance(item, dict):  # [{"name": "..."}] as Hugging Face and Semantic Scholar write it
                item = item.get("name")
            if isinstance(item, str) and item.strip():
                names.append(clean_name(item))
        return names
    raise ValueError(f"'{field}' is neither a list nor a string")


def _split_categories(value: str) -> list[str]:
    return value[:MAX_RAW].replace(",", " ").split()


def record_paper(record: dict, warnings: list[str], where: str) -> ParsedPaper:
    """One record as a paper, checked (digest.sources.check); raises ValueError when a required field is missing or
    wrong. A wrong optional field is dropped with a warning, the record kept."""
    ident = record.get("id")
    title = record.get("title")
    abstract = record.get("abstract")
    if ident is None or ident == "" or isinstance(ident, (bool, list, dict)):
        raise ValueError("missing 'id'" if ident in (None, "") else "'id' is not a string or number")
    if not isinstance(title, str):
        raise ValueError("missing 'title'" if title is None else "'title' is not a string")
    if not isinstance(abstract, str):
        raise ValueError("missing 'abstract'" if abstract is None else "'abstract' is not a string")
    ident = str(ident).strip()
    title = html_to_text(title)
    if not title:
        raise ValueError("empty 'title'")
    url = record.get("url")
    url = url.strip() or None if isinstance(url, str) else None
    doi = record.get("doi")
    doi = normalise_doi(doi) if isinstance(doi, str) else None
    found = arxiv_id_in(ident) or arxiv_id_in(url) or (arxiv_id_in(doi) if doi else None)
    arxiv_id, version = found if found else (None, None)
    pdf_url = None
    if arxiv_id:
        abs_url, pdf_url = arxiv_urls(arxiv_id)
        url = url or abs_url
    paper = ParsedPaper(
        key=paper_key(arxiv_id, doi, title),
        ident=ident,
        title=title,
        abstract=html_to_text(abstract),
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        url=url,
        pdf_url=pdf_url,
        item_id=ident,
    )
    if len(record) > 3:
        _read_optional(record, paper, warnings, where)
    for problem in check_paper(paper):
        warnings.append(f"{where}: {problem}")
    return paper


def _read_optional(record: dict, paper: ParsedPaper, warnings: list[str], where: str) -> None:
    for field in ("authors", "categories", "published", "upvotes"):
        value = record.get(field)
        if value is None:
            continue
        try:
            if field == "authors":
                paper.authors = _text_list(value, field, split_authors)
            elif field == "categories":
                paper.categories = _text_list(value, field, _split_categories)
            elif field == "published":
                paper.published = parse_time(value)
            elif isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
                raise ValueError(f"'upvotes' is not a whole number: {value!r}")
            else:
                paper.upvotes = value if isinstance(value, int) else whole_number(value.strip())
        except ValueError as exc:
            warnings.append(f"{where}: {exc}; field ignored")


class JsonlReader:
    """Reads a JSON Lines file piece by piece, so a big import never holds the whole file or all its papers.

    feed() takes bytes that end at a line break (or the file's end) and returns their papers; finish() gives the
    warnings, or raises FeedError when the file held no valid line. Line numbers and warnings are the same however
    the file was cut, and the same as one feed() of the whole file.
    """

    def __init__(self) -> None:
        self.lines = 0  # non-blank lines read
        self.papers = 0
        self.undecodable = ""  # the warning about the first bytes that are not UTF-8, once there is one
        self.ignored: list[str] = []  # ignored fields, the first _MAX_WARNINGS
        self.skipped: list[str] = []  # skipped lines, the first _MAX_WARNINGS
        self.ignored_count = self.skipped_count = 0
        self._number = 0  # lines (blank or not) before the next piece
        self._offset = 0  # bytes before the next piece, a UTF-8 byte order mark not counted
        self._started = False

    def feed(self, data: bytes) -> list[ParsedPaper]:
        codec = "utf-8" if self._started else "utf-8-sig"  # a byte order mark only opens the file
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            text = data.decode(codec, errors="replace")
            if not self.undecodable:
                self.undecodable = f"not valid UTF-8 (byte {self._offset + exc.start}): undecodable bytes replaced"
        self._offset += len(data) - (3 if not self._started and data.startswith(b"\xef\xbb\xbf") else 0)
        self._started = True
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines() would cut at.
        lines = text.split("\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # the break that ends this piece, not an empty line
        papers: list[ParsedPaper] = []
        warnings: list[str] = []
        number = self._number
        for number, line in enumerate(lines, self._number + 1):
            if not line or line.isspace():
                continue
            self.lines += 1
            try:
                record, end = _scan_json(line, 0)
                if end != len(line):
                    raise ValueError("not a whole line")
            except (StopIteration, ValueError, RecursionError):
                try:
                    record = loads(line)
                except ValueError as exc:
                    self._skip(f"line {number}: not valid JSON ({getattr(exc, 'msg', exc)})")
                    continue
                except RecursionError:  # [[[[... 100,000 deep: the decoder recurses once per level
                    self._skip(f"line {number}: JSON nested too deeply")
                    continue
            if not isinstance(record, dict):
                self._skip(f"line {number}: not a JSON object")
                continue
            try:
                papers.append(record_paper(record, warnings, f"line {number}"))
            except ValueError as exc:
                self._skip(f"line {number}: {exc}, skipped")
            except Exception as exc:  # noqa: BLE001 - a wall around each line: one the parser trips on is skipped
                self._skip(f"line {number}: {unexpected(exc)}, skipped")
        self._number = number
        self.ignored.extend(warnings[:_MAX_WARNINGS - len(self.ignored)])
        self.ignored_count += len(warnings)
        self.papers += len(papers)
        return papers

    def _skip(self, message: str) -> None:
        if len(self.skipped) < _MAX_WARNINGS:
            self.skipped.append(message)
        self.skipped_count += 1

    def finish(self) -> list[str]:
        """The warnings (undecodable bytes and ignored fields, then skipped lines, each list capped);
        FeedError when no line held a paper."""
        if not self.papers:
            if not self.lines:
                raise FeedError("empty file: no JSON lines")
            raise FeedError(f"no valid line among {self.lines} ({self.skipped[0]})")
        warnings = ([self.undecodable] if self.undecodable else []) + self.ignored
        total = len(warnings) - len(self.ignored) + self.ignored_count
        if total > _MAX_WARNINGS:
            warnings[_MAX_WARNINGS:] = [f"... and {total - _MAX_WARNINGS} more ignored fields"]
        skipped = list(self.skipped)
        if self.skipped_count > _MAX_WARNINGS:
            skipped.append(f"... and {self.skipped_count - _MAX_WARNINGS} more lines skipped")
        return warnings + skipped


def read_jsonl_pieces(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The same bytes as `blocks` (reads of a file), cut at line breaks instead: each piece ends with one, but the last."""
    rest: list[bytes] = []  # the start of a line longer than one block
    for block in blocks:
        cut = block.rfind(b"\n") + 1
        if not cut:
            rest.append(block)
            continue
        yield b"".join([*rest, block[:cut]]) if rest else block[:cut]
        rest = [block[cut:]] if cut < len(block) else []
    if rest:
        yield b"".join(rest)


def parse_jsonl(data: bytes, *, source_url: str = "") -> ParseResult:
    """Every valid line; raises FeedError when the file holds no valid line at all."""
    reader = JsonlReader()
    # The cyclic collector would re-scan every record built so far, again and again, as 100,000 of them pile
    # up (none holds a cycle): pausing it halves the time of a big import.
    with paused_collector():
        papers = reader.feed(data)
    return ParseResult(papers=papers, kind="jsonl", warnings=reader.finish(), skipped=reader.skipped_count)
