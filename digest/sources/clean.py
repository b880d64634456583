"""Cleaning for every parser: HTML to plain text, TeX accents in names, arXiv ids, DOIs, dates and dedupe keys.

Pure string functions over one value at a time; they never look at a whole feed, the network or the store.
Every regex is compiled once here, because the parsers call these per entry (10,000 entries, 100,000 lines).
Each runs in time linear in its input, whatever the input (a fetched feed may be 20 MB of hostile text): no regex
here has nested or overlapping quantifiers that could backtrack over unbounded input, and whitespace runs before a
fixed token are possessive (`\\s*+`). tests/test_sources_linear.py checks it by doubling hostile fields.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

# --- HTML -> plain text -------------------------------------------------------------------------------

# <script ...>...</script> and <style>: found by their opening name, then str.find for the ">" and the closing tag,
# never one regex from "<script" to its end (that one rescanned the rest of the text at every unclosed "<script").
_SCRIPT_STYLE_OPEN = re.compile(r"<(script|style)\b", re.I)
_SCRIPT_STYLE_CLOSE = {"script": re.compile(r"</script\s*+>", re.I), "style": re.compile(r"</style\s*+>", re.I)}
# A tag needs a name right after "<" and whitespace, "/" or ">" after the name, so TeX such as
# "$x<y$" or "a < b" is left alone.
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9:-]*)(?:\s[^<>]*)?/?>|<![A-Za-z][^<>]*>|<\?[^<>]*\?>")
_BLOCK_TAGS = frozenset(
    "p br div li ul ol h1 h2 h3 h4 h5 h6 tr td th table blockquote section article hr dd dt dl pre "
    "header footer title body html head figure figcaption".split()
)
# Tags are removed, text is kept as the source wrote it: an abstract that says `javascript:` or `onload="x"` in
# words is stored so. Every template escapes what it shows (Jinja2 autoescape), and links pass render's URL check.

# --- characters that are not text ------------------------------------------------------------------------
# The one table, for stored text (collapse_space, the sources' error lines) and for what is shown or put in a mail
# header (one_line: render, delivery). C0 and C1 controls: NUL, ESC, CR, LF, NEL... (PostgreSQL refuses NUL, a
# terminal obeys an escape, a header ends at a line break). Invisible ones: zero-width and bidi-control characters,
# Unicode line and paragraph separators and the BOM, which can hide or reorder what a reader sees.
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f"
INVISIBLE_CHARS = "\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
_NOT_ONE_LINE = re.compile(f"[{CONTROL_CHARS}{INVISIBLE_CHARS}\\s]+")


def one_line(value: object) -> str:
    """`value` as one line of text to show or to put in a header: each run of white space, control and invisible
    characters becomes one space; trimmed. (Render's \\x00 slot markers rely on it: no NUL survives.)

    Printable ASCII with single inner spaces (a name, an address, a URL, most titles) is already that: returned as
    it is after three C scans, not a regex pass and a copy (about ten values per email, 1.5 -> 0.3 us each)."""
    if type(value) is str and value.isascii() and value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value
    return _NOT_ONE_LINE.sub(" ", str(value or "")).strip()


def _tag_space(match: re.Match) -> str:
    name = match.group(1)
    return " " if name is None or name.lower() in _BLOCK_TAGS else ""


def _drop_scripts(value: str) -> str:
    """Each <script>/<style> element, up to its closing tag (or the end), becomes one space; an opening tag that never
    ends with ">" is not a tag, and stays as text."""
    pieces, start, end = [], 0, len(value)
    while (found := _SCRIPT_STYLE_OPEN.search(value, start)) is not None:
        opened = value.find(">", found.end())
        if opened < 0:  # no ">" after this "<script": none after any later one either
            break
        closing = _SCRIPT_STYLE_CLOSE[found.group(1).lower()].search(value, opened + 1)
        pieces += [value[start:found.start()], " "]
        start = closing.end() if closing is not None else end
    return "".join(pieces) + value[start:] if pieces else value


def _drop_comments(value: str) -> str:
    pieces, start = [], 0
    while (opened := value.find("<!--", start)) >= 0:
        closed = value.find("-->", opened + 4)
        pieces += [value[start:opened], " "]
        start = closed + 3 if closed >= 0 else len(value)
    return "".join(pieces) + value[start:] if pieces else value


def _strip_markup(value: str, tag: re.Pattern = _TAG) -> str:
    if "<" not in value:
        return value
    value = _drop_scripts(value)
    if "<!--" in value:
        value = _drop_comments(value)
    return tag.sub(_tag_space, value)


def collapse_space(value: str) -> str:
    """Every run of whitespace (CR/LF included) becomes one space; control characters go."""
    # isprintable() is False for every whitespace but " " and for control characters: the common case is one cheap scan.
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value
    value = " ".join(value.split())
    if not value.isprintable():
        value = _CONTROL.sub("", value)
    return value


# The longest raw value cleaned. The record check keeps far less (a title 2,000 characters, an abstract 50,000), and
# splitting 20 MB of words into a list took 200 MB per copy: a longer value is cut before cleaning.
MAX_RAW = 1_000_000


def html_to_text(value: str | None) -> str:
    """Plain text from HTML or text: tags, comments and scripts removed, entities decoded, spaces collapsed.

    LaTeX is left as written ($x^2$ stays). Only the first MAX_RAW characters are read."""
    return _text_of(value)


def _text_of(value: str | None, tag: re.Pattern = _TAG) -> str:
    """html_to_text and plain_to_text: the markup `tag` matches removed (every tag by default), entities decoded,
    spaces collapsed."""
    if not value:
        return ""
    value = value[:MAX_RAW]
    if "<" in value or "&" in value:
        value = html.unescape(_strip_markup(value, tag))
        if "<" in value:  # markup that was escaped twice (&lt;p&gt;) is markup all the same
            value = _strip_markup(value, tag)
    return collapse_space(value)


# The markup a text field may still hold by mistake: HTML's formatting and document elements, MathML, and any
# namespaced element (jats:p, mml:mi). Any other "tag" in plain text is words: a model's special tokens
# ("emits <swi> to enter latent mode", "<think>", "<eos>", "<s>", "<image>", "<mask>") are what the abstract says.
_HTML_NAMES = (
    "a abbr acronym address article aside b big blockquote body br caption center cite code col colgroup dd del dfn "
    "div dl dt em embed figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hr html i iframe img input "
    "ins kbd li link meta nav object ol p pre q samp script section small span strike strong style sub sup table "
    "tbody td tfoot th thead title tr tt u ul var "
    "math mi mn mo mrow ms mspace msqrt mroot mfrac msub msup msubsup mover munder munderover mtable mtr mtd mtext "
    "mstyle semantics annotation svg"
).split()
_MARKUP_TAG = re.compile(
    r"</?((?i:" + "|".join(sorted(_HTML_NAMES, key=len, reverse=True)) + r")(?=[\s/>])|[A-Za-z][\w.-]*+:[\w.-]++)(?:\s[^<>]*)?/?>"
    r"|<![A-Za-z][^<>]*>|<\?[^<>]*\?>"
)


def plain_to_text(value: str | None) -> str:
    """Text from a field that is plain text (Hugging Face's JSON, an Atom type="text" element, an RSS title with no
    HTML in it): entities decoded, spaces collapsed, HTML and namespaced tags removed as by html_to_text, but any
    other <word> kept as written (a model's <think> or <eos> token is part of the abstract)."""
    return _text_of(value, _MARKUP_TAG)


# --- TeX accents in names -----------------------------------------------------------------------------

_TEX_ACCENTS = {  # accent command -> Unicode combining mark
    "'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304", ".": "\u0307",
    "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328", "r": "\u030a", "d": "\u0323",
    "b": "\u0331",
}
_TEX_LETTERS = {
    "i": "ı", "j": "ȷ", "o": "ø", "O": "Ø", "l": "ł", "L": "Ł", "ss": "ß", "ae": "æ", "AE": "Æ",
    "oe": "œ", "OE": "Œ", "aa": "å", "AA": "Å", "dh": "ð", "DH": "Ð", "th": "þ", "TH": "Þ", "ng": "ŋ", "NG": "Ŋ",
}
# \'e  \'{e}  \' e  \'{\i}  \'\i ; letter commands need braces or a space: \u{g}  \c{C}  \c c
# One possessive run of spaces after the command (two adjacent \s* backtracked over each other: quadratic).
_TEX_ACCENT = re.compile(
    r"""\\(?:([\'`^"~=.])|([uvHckrdb])(?=[\s{]))\s*+(?:\{\s*+(\\[ij]|[A-Za-z])\s*+\}|(\\[ij](?![A-Za-z])|[A-Za-z]))"""
)
_TEX_LETTER = re.compile(r"\\(ss|ae|AE|oe|OE|aa|AA|dh|DH|th|TH|ng|NG|[ijoOlL])(?![A-Za-z])(?:\{\})?\s?")
_TEX_BRACES = re.compile(r"[{}]")


def _accent(match: re.Match) -> str:
    mark = _TEX_ACCENTS[match.group(1) or match.group(2)]
    letter = match.group(3) or match.group(4)
    if letter.startswith("\\"):  # \'{\i} is an i with an acute, not a dotless one
        letter = letter[1:]
    return letter + mark


def tex_to_unicode(name: str) -> str:
    r"""Convert TeX-escaped accents to Unicode: O\u{g}uz -> Oğuz, Jim\'enez -> Jiménez, K{\i}z{\i}ltepe -> Kızıltepe."""
    if "\\" not in name and "{" not in name:
        return name
    name = _TEX_ACCENT.sub(_accent, name)
    name = _TEX_LETTER.sub(lambda m: _TEX_LETTERS[m.group(1)], name)
    name = _TEX_BRACES.sub("", name)
    return unicodedata.normalize("NFC", name)


# --- authors ------------------------------------------------------------------------------------------

# Where names may be cut: commas and " and " (names are space-collapsed first), and the parentheses that tell
# whether one is inside an affiliation ("A (MIT, CSAIL), B").
_AUTHOR_CUT = re.compile(r",| and |[()]")
_INITIALS = re.compile(r"[A-Z]\.(?:[\s-]?[A-Z]\.)*")


def repair_mojibake(text: str) -> str:
    """UTF-8 that was read as Latin-1 once ("WÃ¼bben", served so by the arXiv API) back to "Wübben".

    Only text whose Latin-1 bytes are valid UTF-8 is changed, which real Latin-1 names ("Müller") never are."""
    if "Ã" not in text and "Â" not in text:
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def clean_name(name: str) -> str:
    """One author's name as plain Unicode text: markup stripped, TeX accents and mojibake repaired."""
    name = name[:MAX_RAW]
    if "<" in name or "&" in name:
        name = html_to_text(name)
    return collapse_space(repair_mojibake(tex_to_unicode(name)))


# What clean_name might change, in names joined by "|": markup, entities, TeX, mojibake, a space at either end of
# a name, two spaces, an empty name ("||", or "|" at either end).
_NOT_PLAIN_NAMES = re.compile(r"[<&\\{ÃÂ]|  | \||\| |\|\||^[ |]|[ |]$")


def are_plain_names(names: list) -> bool:
    """True when `names` is a non-empty list of non-blank strings that clean_name returns unchanged: the common case,
    checked in one pass over them all instead of a clean_name call per name. False says nothing (clean them)."""
    try:
        joined = "|".join(names)
    except TypeError:  # not all strings
        return False
    return bool(joined) and joined.isprintable() and _NOT_PLAIN_NAMES.search(joined) is None


def _given_first(name: str) -> str:
    """"Lapalu, N." -> "N. Lapalu" (bioRxiv); any other name is returned as it is."""
    family, sep, given = name.partition(",")
    if sep and _INITIALS.fullmatch(given.strip()):
        return f"{given.strip()} {family.strip()}"
    return name


def _cut_outside_parentheses(value: str) -> list[str]:
    """`value` cut at each comma and " and " whose next parenthesis is not a ")" (so not inside "(...)").

    One pass from the end remembers the next parenthesis: linear, where a lookahead per comma was quadratic."""
    cuts: list[tuple[int, int]] = []
    next_paren = ""
    for match in reversed(list(_AUTHOR_CUT.finditer(value))):
        text = match.group()
        if text in "()":
            next_paren = text
        elif next_paren != ")":
            cuts.append(match.span())
    if not cuts:
        return [value]
    pieces, start = [], 0
    for begin, end in reversed(cuts):
        pieces.append(value[start:begin])
        start = end
    pieces.append(value[start:])
    return pieces


def split_authors(value: str) -> list[str]:
    """Authors from one joined string: "A, B and C", bioRxiv's "Last, F., Last, F." or "Last, F.; Last, F."."""
    if not value:
        return []
    value = clean_name(value)  # cut at MAX_RAW characters
    if ";" in value:
        pieces = [_given_first(piece.strip()) for piece in value.split(";")]
    else:
        pieces = []
        for piece in _cut_outside_parentheses(value):
            piece = piece.strip()
            if pieces and _INITIALS.fullmatch(piece) and not _INITIALS.fullmatch(pieces[-1]):
                pieces[-1] = f"{piece} {pieces[-1]}"  # "LAPALU, N." was cut in two at its comma
            else:
                pieces.append(piece)
    return [piece for piece in pieces if piece]


# --- arXiv ids --------------------------------------------------------------------------------------

# Archives that had old-style identifiers (archive/YYMMNNN), so "foo/1234567" in a URL is not taken for one.
_OLD_ARCHIVES = frozenset(
    "acc-phys adap-org alg-geom ao-sci astro-ph atom-ph bayes-an chao-dyn chem-ph cmp-lg comp-gas cond-mat cs "
    "dg-ga funct-an gr-qc hep-ex hep-lat hep-ph hep-th math math-ph mtrl-th nlin nucl-ex nucl-th patt-sol "
    "physics plasm-ph q-alg q-bio q-fin quant-ph solv-int stat supr-con".split()
)
_ID = r"(\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Za-z-]+)?/\d{7})(?:v(\d+))?"
_ARXIV_IN_TEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html|format)/|arxiv:\s*|oai:arxiv\.org:|10\.48550/arxiv\.)" + _ID + r"(?!\d)",
    re.I,
)
_ARXIV_BARE = re.compile(r"(?:arxiv:\s*)?" + _ID + r"(?:\.pdf)?", re.I)
# A URL's last path segment, up to a query, a fragment or the end: matched in a short window before each of those.
_ARXIV_SEGMENT = re.compile(r"/(\d{4}\.\d{4,5})(?:v(\d{1,20}))?(?:\.pdf)?/?\Z")
_SEGMENT_WINDOW = 40  # "/" + 10 + "v" + 20 digits + ".pdf/"
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")
# int() of a long digit string is quadratic (and refused past 4,300 digits): a version or count of more digits than
# this is out of any column's range anyway, and becomes TOO_BIG for the record check to drop with a warning.
_MAX_DIGITS = 20
TOO_BIG = 10**_MAX_DIGITS


def whole_number(digits: str) -> int:
    """int(digits) for a string of ASCII digits, or TOO_BIG when it has more than 20 (never a slow conversion)."""
    return int(digits) if len(digits) <= _MAX_DIGITS else TOO_BIG


def _last_segment_id(value: str) -> re.Match | None:
    """The leftmost "/ID[vN][.pdf][/]" that ends at a "?", a "#" or the end of the value's last line."""
    line = value[value.rfind("\n") + 1:]
    ends = [found.start() for found in _QUERY_OR_FRAGMENT.finditer(line)] + [len(line)]
    for end in ends:
        match = _ARXIV_SEGMENT.search(line, max(0, end - _SEGMENT_WINDOW), end)
        if match is not None:
            return match
    return None


def _arxiv_match(match: re.Match | None) -> tuple[str, int | None] | None:
    if match is None:
        return None
    ident = match.group(1)
    if "/" in ident:
        archive, _, number = ident.partition("/")
        archive = archive.lower().split(".")[0]  # math.GT/0309136 is math/0309136
        if archive not in _OLD_ARCHIVES:
            return None
        ident = f"{archive}/{number}"
    elif not 1 <= int(ident[2:4]) <= 12:  # YYMM
        return None
    return ident, whole_number(match.group(2)) if match.group(2) else None


def arxiv_id_in(value: str | None) -> tuple[str, int | None] | None:
    """(versionless arXiv id, version or None) from an id, URL, guid or DOI that holds one, else None.

    Accepts arxiv.org/abs|pdf links, "arXiv:..." and "oai:arXiv.org:..." guids, DOIs 10.48550/arXiv.X,
    a bare id, and a URL whose last path segment is a new-style id (huggingface.co/papers/2401.01234)."""
    if not value:
        return None
    value = value.strip()
    found = _arxiv_match(_ARXIV_BARE.fullmatch(value))
    if found is None and ("arxiv" in value or "arXiv" in value or "ARXIV" in value):
        found = _arxiv_match(_ARXIV_IN_TEXT.search(value))
    if found is None and "/" in value:
        found = _arxiv_match(_last_segment_id(value))
    return found


def arxiv_urls(arxiv_id: str) -> tuple[str, str]:
    """The abstract page and the PDF of the latest version."""
    return f"https://arxiv.org/abs/{arxiv_id}", f"https://arxiv.org/pdf/{arxiv_id}"


# --- DOIs -------------------------------------------------------------------------------------------

_DOI = re.compile(r"10\.\d{4,9}/\S+")


def normalise_doi(value: str | None) -> str | None:
    """"https://doi.org/10.1038/ABC." -> "10.1038/abc"; None when the value holds no DOI."""
    if not value:
        return None
    if "%" in value:
        value = unquote(value)
    match = _DOI.search(value)
    if match is None:
        return None
    doi = match.group(0).rstrip(".,;:'\"")
    # A ")" that closes nothing is the prose around the DOI ("(see 10.1/x)"): trimmed by counting once, not per ")".
    unbalanced = doi.count(")") - doi.count("(")
    if unbalanced > 0 and doi.endswith(")"):
        doi = doi[: len(doi) - min(unbalanced, len(doi) - len(doi.rstrip(")")))]
    return doi.lower()


# --- titles and keys -------------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[\W_]+")
_ASCII_PUNCTUATION = str.maketrans({char: " " for char in map(chr, range(128)) if not char.isalnum()})
_MAX_TITLE_KEY = 400
# A key longer than this is cut and ends with a hash of the whole key: a unique btree index on PostgreSQL refuses
# entries over ~2,700 bytes, and 512 characters of UTF-8 stay below that. Shorter keys are never changed, so rows
# stored by older versions (whose key column held 512 characters) keep matching.
MAX_KEY = 512
_KEY_HASH = 64  # hex digits of SHA-256


def normalise_title(title: str) -> str:
    """Lower-case words without accents or punctuation, for matching one paper's title across sources.

    At most 400 characters; only the first 8,000 of `title` are read (the same key for any title up to that)."""
    title = title[:20 * _MAX_TITLE_KEY]
    if title.isascii():  # str.translate is several times faster than the Unicode regex below
        words = title.lower().translate(_ASCII_PUNCTUATION).split()
    else:
        decomposed = unicodedata.normalize("NFKD", title)
        title = "".join(char for char in decomposed if not unicodedata.combining(char))
        words = _NOT_WORD.sub(" ", title.casefold()).split()
    return " ".join(words)[:_MAX_TITLE_KEY].rstrip()


def paper_key(arxiv_id: str | None, doi: str | None, title: str) -> str:
    """The canonical dedupe key: versionless arXiv id, else normalised DOI, else normalised title; at most MAX_KEY
    characters (see bounded_key)."""
    if arxiv_id:
        return bounded_key(f"arxiv:{arxiv_id}")
    if doi:
        return bounded_key(f"doi:{doi}")
    return f"title:{normalise_title(title)}"


def bounded_key(key: str) -> str:
    """`key` itself when it has at most MAX_KEY characters, else its start, "#" and the SHA-256 of the whole."""
    if len(key) <= MAX_KEY:
        return key
    return f"{key[:MAX_KEY - _KEY_HASH - 1]}#{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


# --- times ------------------------------------------------------------------------------------------


def time_from_struct(value) -> datetime | None:
    """feedparser's *_parsed struct_time (already UTC) as an aware datetime."""
    if not value:
        return None
    try:
        year, month, day, hour, minute, second = value[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def parse_time(value) -> datetime | None:
    """ISO 8601 ("2024-05-24T17:34:15.000Z", "2024-05-24") or RFC 822 text as an aware UTC datetime.

    A time without a zone is taken as UTC. Raises ValueError when the text is not a date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 100:  # no date is written in more; a long text would only be read to be refused
            raise ValueError(f"not a date: {text[:40]!r}")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            try:
                moment = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                raise ValueError(f"not a date: {text[:40]!r}") from None
    else:
        raise ValueError(f"not a date: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise ValueError(f"date out of range: {value!s:.40}") from None
