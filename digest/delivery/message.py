"""Message building, pure: a rendered digest or a confirmation email in, RFC 5322 bytes with CRLF line ends out.
One MIME skeleton (multipart/alternative, text then HTML) and one header encoder serve both kinds of email, and every
address goes through digest.addresses (email-validator, ASCII envelope).

It must not send, log, read the database or know about subscribers beyond an address and a name. Building is a
precomputed skeleton filled with encoded bodies, not an EmailMessage per email: the email package's policy
machinery costs a few milliseconds per message, most of the edition budget at 10,000 subscribers (see
benchmarks/send.py).
"""

from __future__ import annotations

import binascii
import re
import secrets
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from urllib.parse import urlsplit

from ..addresses import ascii_address
from ..config import Settings
from ..errors import ConfigError, InputError
from ..render import RenderedEmail
from ..sources.clean import one_line

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters
PHRASE_MAX = 64  # characters of an ASCII display name written on one line; a longer one is folded (format_phrase)
# Control characters (and Unicode line breaks some clients honour) would end a header early: a title carrying
# "\r\nBcc: x" must stay one line of text (digest.sources.clean.one_line, the one cleaner of shown text).
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_STYLE_START = re.compile("<style", re.IGNORECASE)  # a <style> element, to its end tag or the end
_STYLE_END = re.compile("</style", re.IGNORECASE)


# --- headers ----------------------------------------------------------------------------------------


clean_header_text = one_line  # `value` on one line: control characters and line breaks become a single space


@lru_cache(maxsize=4096)  # subjects repeat across subscribers (the same top pick): encoded once
def encode_words(text: str, used: int = 0) -> str:
    """An unstructured header value: folded ASCII, or RFC 2047 base64 words when it is not plain ASCII.

    `used` is the length of what precedes it on the first line ("Subject: "). Text that merely looks
    like an encoded word ("=?utf-8?...") is encoded too, so a client never decodes a forged one.
    """
    text = clean_header_text(text)
    if text.isascii() and "=?" not in text:
        return _fold_words(text.split(" "), used)
    return _encoded_words(text, used)


def _encoded_words(text: str, used: int) -> str:
    """`text` as RFC 2047 base64 words of at most 39 bytes of UTF-8 each, folded (every line within MAX_LINE)."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:  # whole characters per word: 39 bytes of UTF-8 -> a 64-character encoded word
        width = len(char.encode("utf-8"))
        if size + width > 39:
            words.append(_b_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append(_b_word("".join(chunk)))
    return _fold_words(words, used)


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(text.encode("utf-8"), newline=False).decode("ascii") + "?="


def _fold_words(words: list[str], used: int) -> str:
    lines: list[str] = []
    line, width = "", used
    for word in words:
        if line and width + 1 + len(word) > MAX_LINE:
            lines.append(line)
            line, width = word, 1 + len(word)
        else:
            width += len(word) + (1 if line else 0)
            line = f"{line} {word}" if line else word
    lines.append(line)
    return (CRLF + " ").join(lines)


def check_address(address: str, *, bare_host: bool = False) -> str:
    """`address` as it goes into an ASCII envelope and header (digest.addresses.ascii_address); InputError naming it
    otherwise. `bare_host`: the operator's own addresses may be on a host name without a dot (digest@localhost)."""
    try:
        return ascii_address(address, bare_host=bare_host)
    except ValueError as exc:
        raise InputError(f"cannot send to {address!r}: {exc}", "check the address; digest sends to ASCII addresses only (no SMTPUTF8)") from None


def check_sender_settings(settings: Settings) -> None:
    """ConfigError naming the setting when from_address, reply_to, bounce_address or base_url cannot go into any
    message. Checked before a run records anything: found while building, it failed every subscriber's edition."""
    hint = "set it in digest.toml or DIGEST_{} (`digest config` shows what is in effect)"
    for name in ("from_address", "reply_to", "bounce_address"):
        value = getattr(settings, name)
        if value or name == "from_address":
            try:
                ascii_address(value or "", bare_host=True)
            except ValueError as exc:
                raise ConfigError(f"{name} {value!r} is not a usable email address such as digest@example.org: {exc}", hint.format(name.upper())) from None
    base = urlsplit(settings.base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(f"base_url {settings.base_url!r} is not an absolute http(s) URL such as https://example.org/digest", hint.format("BASE_URL"))


def format_phrase(name: str) -> str:
    """A display name as an RFC 5322 phrase: bare atoms, a quoted string, or RFC 2047 words."""
    name = clean_header_text(name)
    if name.isascii() and "=?" not in name:
        phrase = name if _ATOM.fullmatch(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(phrase) <= PHRASE_MAX:
            return phrase
        # A name as long as a paragraph (nothing limits what a reader types) made a To: line past RFC 5322's 998
        # octets (2.1.1, a MUST): folded at its spaces (folding white space may go between atoms and inside a quoted
        # string), or, with a word too long for a line, as encoded words, which fold anywhere.
        words = phrase.split(" ")
        if max(map(len, words)) <= MAX_LINE - len("List-Id: "):
            return _fold_words(words, len("List-Id: "))
        return _encoded_words(name, len("List-Id: "))
    return encode_words(name, 0)


def format_address(name: str, address: str, *, bare_host: bool = False) -> str:
    """`Name <address>` with the display name quoted or RFC 2047-encoded as needed (InputError: see check_address)."""
    address = check_address(address, bare_host=bare_host)
    phrase = format_phrase(name)
    return f"{phrase} <{address}>" if phrase else address


@lru_cache(maxsize=16)
def address_domain(address: str) -> str:
    """The domain of `address` as it goes into a header: in its IDNA form (digest@b\u00fccher.example ->
    xn--bcher-kva.example), as in From. Its Unicode form in a Message-ID made every message of such a sender fail to
    build (a header is ASCII)."""
    try:
        address = ascii_address(address, bare_host=True)
    except ValueError:  # not an address check_sender_settings lets through: as it is
        pass
    return address.rpartition("@")[2].strip().lower() or "localhost"


def ascii_list_id(list_id: str) -> str:
    """`list_id` without its angle brackets, its domain labels in IDNA form: the default list_id is digest.<from
    domain>, which may be an internationalised one (RFC 2919: the list id is ASCII)."""
    list_id = clean_header_text(list_id).strip("<>")
    if list_id.isascii():
        return list_id
    try:
        return ascii_address(f"list@{list_id}").rpartition("@")[2]
    except ValueError as exc:
        raise ConfigError(f"list_id {list_id!r} is not a usable list id such as papers.example.org: {exc}", "set list_id in digest.toml or DIGEST_LIST_ID") from None


def make_message_id(from_address: str, subscriber_id: int, edition: str) -> str:
    """A unique Message-ID on the From domain; the ledger stores it so a resend reuses it."""
    return f"<digest.{edition}.{subscriber_id}.{secrets.token_hex(6)}@{address_domain(from_address)}>"


@lru_cache(maxsize=16)
def _fixed_headers(from_address: str, from_name: str, reply_to: str, list_id: str) -> tuple[str, str]:
    """(From + Reply-To lines, List-Id line): the same for every message of a run."""
    lines = [f"From: {format_address(from_name, from_address, bare_host=True)}"]
    if reply_to:
        lines.append(f"Reply-To: {check_address(reply_to, bare_host=True)}")
    list_id = ascii_list_id(list_id)
    phrase = format_phrase(from_name)
    list_line = f"List-Id: {phrase} <{list_id}>" if phrase else f"List-Id: <{list_id}>"
    return CRLF.join(lines), list_line


# --- bodies -----------------------------------------------------------------------------------------


@lru_cache(maxsize=64)  # an edition's messages share one Date (the run's start): formatted once, not 10 us per email
def date_header(date: datetime) -> str:
    """`date` as RFC 5322's date-time (email.utils.format_datetime)."""
    return format_datetime(date)


def _crlf(text: str) -> bytes:
    """`text` in UTF-8 with CRLF line ends. On the bytes, not the string: a text part with one character above U+00FF
    (an ellipsis) is a two-byte string, over which the replace cost twice as much (14 -> 9 us for a 10 KB part)."""
    body = text.encode("utf-8")
    if b"\r" in body:  # rare (templates write \n): a 40 KB email is not copied twice more for nothing
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body.replace(b"\n", b"\r\n")


def encode_qp(text: str) -> bytes:
    """Quoted-printable for the text part: readable as source, lines kept under 76 characters. (Encoding line by line
    from a cache of the cards' lines was tried: each email's own ~28 lines, its signed links, cost more to encode one
    by one than b2a_qp spends on the whole 10 KB part, 85 us.)"""
    return binascii.b2a_qp(_crlf(text), quotetabs=False, istext=True, header=False)


def encode_base64(text: str) -> bytes:
    """Base64 in 76-character CRLF lines: three times faster than quoted-printable, a third larger."""
    raw = binascii.b2a_base64(_crlf(text), newline=False)
    return b"\r\n".join([raw[i : i + 76] for i in range(0, len(raw), 76)])


def encode_html(html: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) of the HTML part: 7bit when it can be, else base64.

    Non-ASCII characters become character references (&#233;), which show the same in any HTML reader,
    so the part needs no transfer encoding at all when its lines are within RFC 5322's 998 octets:
    nothing to encode and a third fewer bytes on the wire than base64. Not inside <style>, where
    references are not decoded: such a page goes base64.
    """
    if not html.isascii() and not _styles_are_ascii(html):
        return "base64", encode_base64(html)
    body = html.encode("ascii", "xmlcharrefreplace")  # the references, and the bytes, in one pass
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    body = body.replace(b"\n", b"\r\n")  # what _crlf does, on the bytes
    if _too_long(body):
        return "base64", encode_base64(html)
    return "7bit", body


def _too_long(body: bytes) -> bool:
    """A line longer than RFC 5322's 998 octets, line ends not counted. Each step jumps to the last line end within the
    next 999 octets; none there is a long line. About 40 steps for a 40 KB part, not a split into its 800 lines (37 ->
    12 us), nor a regex (it backtracks over every line: 10 times slower still)."""
    size, end = len(body), -1  # end: where the last line checked ends
    while size - end - 1 > 998:
        end = body.rfind(b"\n", end + 1, end + 1001)  # a line end within 998 octets and its CR
        if end < 0:
            return True
    return False


def encode_text(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) of the plain-text part: its UTF-8 bytes as they are when its lines are within
    998 octets, "7bit" when ASCII and "8bit" otherwise (RFC 6152; a digest's text part has a "·" in its first line and
    often a title's "é", so most are 8bit), else quoted-printable (lines under 76).

    Quoted-printable for every message was 80 us of the edition's ~1.4 ms per email; nearly every relay offers
    8BITMIME, and the SMTP transport turns the part into quoted-printable (seven_bit) for one that does not."""
    body = _crlf(text)
    if not _too_long(body) and b"\x00" not in body:  # 8bit data has no NUL either (RFC 6152, RFC 5322 2.3); memchr on the bytes (5 us on a two-byte string)
        return ("7bit" if text.isascii() else "8bit"), body
    return "quoted-printable", encode_qp(text)


_EIGHT_BIT_PART = b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')


def seven_bit(message: bytes) -> bytes:
    """`message` (built here) with each 8bit part quoted-printable, for a server that does not offer 8BITMIME (RFC 6152
    forbids sending it 8bit data): the bytes build_message makes when the text part is encoded by encode_qp, the
    rest unchanged. A message that is all ASCII is returned as it is."""
    if message.isascii():
        return message
    found = _BOUNDARY.search(message)
    if found is None:  # not a message of ours: nothing to find a part's end by
        raise ValueError("not a multipart message built by digest.delivery.message")
    delimiter = b"\r\n--" + found.group(1)
    pieces: list[bytes] = []
    position = 0
    while (header := message.find(_EIGHT_BIT_PART, position)) >= 0:
        start = header + len(_EIGHT_BIT_PART)
        end = message.find(delimiter, start)
        if end < 0:
            raise ValueError("an 8bit part without its closing boundary")
        pieces += [message[position:header], b"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
                   binascii.b2a_qp(message[start:end], quotetabs=False, istext=True, header=False)]
        position = end
    pieces.append(message[position:])
    return b"".join(pieces)


def _styles_are_ascii(html: str) -> bool:
    """Each <style> element, to its end tag or the end, is ASCII. Found by two case-insensitive searches per element
    (a lazy `<style.*?</style` pattern stepped through the 30 KB page character by character: 39 -> 15 us)."""
    position = 0
    while (start := _STYLE_START.search(html, position)) is not None:
        end = _STYLE_END.search(html, start.end())
        if not html[start.start() : end.start() if end is not None else len(html)].isascii():
            return False
        if end is None:
            return True
        position = end.end()
    return True


def build_message(rendered: RenderedEmail, *, to: str, name: str, settings: Settings, message_id: str, unsubscribe_url: str, date: datetime) -> bytes:
    """The digest as RFC 5322 bytes with CRLF line ends: multipart/alternative, text then HTML.

    List-Unsubscribe carries the link, which List-Unsubscribe-Post makes one-click (RFC 8058) when it is https. No mailto:
    nothing reads that mailbox, and a mail client that chose it told the reader they were unsubscribed while the
    digests kept coming (listmonk sends the link alone too). Every header value from outside is cleaned and
    encoded, never trusted.
    """
    sender, list_line = _fixed_headers(settings.from_address, settings.from_name, settings.reply_to, settings.list_id)
    url = clean_header_text(unsubscribe_url).replace(" ", "%20")
    return _alternative(
        [
            sender,
            f"To: {format_address(name, to)}",
            f"Subject: {encode_words(rendered.subject, 9)}",
            f"Date: {date_header(date)}",
            f"Message-ID: {clean_header_text(message_id)}",
            list_line,
            f"List-Unsubscribe: <{url}>",
            # RFC 8058 3.1: one-click needs an HTTPS URI; with an http base_url (the demo, a test) it is not claimed.
            *(["List-Unsubscribe-Post: List-Unsubscribe=One-Click"] if url.lower().startswith("https://") else []),
            # No vacation or out-of-office replies to a newsletter: RFC 3834's header, and Precedence: bulk, which the
            # autoresponders that predate it honour.
            "Auto-Submitted: auto-generated",
            "Precedence: bulk",
        ],
        rendered.text,
        rendered.html,
    )


def build_confirmation(settings: Settings, *, to: str, subject: str, text: str, html: str, date: datetime) -> bytes:
    """The double opt-in's confirmation email (its text and HTML rendered by the web front) as RFC 5322 bytes: the
    same From, Reply-To and encoders as a digest; no List-Unsubscribe (the reader is not on the list yet)."""
    sender, _ = _fixed_headers(settings.from_address, settings.from_name, settings.reply_to, settings.list_id)
    return _alternative(
        [
            sender,
            f"To: {check_address(to)}",
            f"Subject: {encode_words(subject, 9)}",
            f"Date: {date_header(date)}",
            f"Message-ID: <confirm.{secrets.token_hex(8)}@{address_domain(settings.from_address)}>",
            "Auto-Submitted: auto-generated",  # RFC 3834: no vacation replies to a confirmation
        ],
        text,
        html,
    )


def _alternative(headers: list[str], text: str, html: str) -> bytes:
    """A multipart/alternative message from ready header lines (already cleaned and encoded), the plain
    text (7bit, 8bit or quoted-printable, see encode_text) and the HTML (7bit or base64, see encode_html), with CRLF line ends."""
    # "=_" never occurs in base64 or quoted-printable text; in a 7bit HTML part it would need "--=_digest_"
    # followed by 24 random hex digits, which no template or feed can know in advance.
    boundary = "=_digest_" + secrets.token_hex(12)
    text_encoding, text_body = encode_text(text)
    head = CRLF.join(
        (
            *headers,
            "MIME-Version: 1.0",
            "Content-Type: multipart/alternative;",  # folded: with the boundary, 80 characters (RFC 5322 2.1.1: 78)
            f' boundary="{boundary}"',
            "",
            f"--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            f"Content-Transfer-Encoding: {text_encoding}",
            "",
            "",
        )
    ).encode("ascii")
    encoding, body = encode_html(html)
    middle = f"{CRLF}--{boundary}{CRLF}Content-Type: text/html; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}".encode("ascii")
    tail = f"{CRLF}--{boundary}--{CRLF}".encode("ascii")
    return b"".join((head, text_body, middle, body, tail))
