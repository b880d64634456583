"""Message building (headers and MIME) and the transports that hand a message over (SMTP, outbox directory).

It turns a RenderedEmail into RFC 5322 bytes and bytes into an accepted message. It must not know about
subscribers, ranking or the database, and it never logs a password.

Building is a precomputed MIME skeleton filled with encoded bodies, not an EmailMessage per email: the
email package's policy machinery costs a few milliseconds per message, which is most of the edition
budget at 10,000 subscribers (see benchmarks/send.py).
"""

from __future__ import annotations

import binascii
import logging
import os
import re
import secrets
import smtplib
import socket
import ssl
import tempfile
import time
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import urlsplit

from .config import Settings
from .errors import ConfigError, DeliveryError, InputError, PermanentDeliveryError, TransientDeliveryError
from .render import RenderedEmail

log = logging.getLogger("digest.deliver")

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters
# Control characters (and Unicode line breaks some clients honour) would end a header early: a title
# carrying "\r\nBcc: x" must stay one line of text.
_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]+")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
_ADDRESS = re.compile(r"[^\s<>(),;:\"\[\]\\@]+@[A-Za-z0-9.-]+")


# --- headers ----------------------------------------------------------------------------------------


def clean_header_text(value: str) -> str:
    """`value` on one line: control characters and line breaks become a single space."""
    return " ".join(_UNSAFE.sub(" ", value or "").split())


def encode_words(text: str, used: int = 0) -> str:
    """An unstructured header value: folded ASCII, or RFC 2047 base64 words when it is not plain ASCII.

    `used` is the length of what precedes it on the first line ("Subject: "). Text that merely looks
    like an encoded word ("=?utf-8?...") is encoded too, so a client never decodes a forged one.
    """
    text = clean_header_text(text)
    if text.isascii() and "=?" not in text:
        return _fold_words(text.split(" "), used)
    words, chunk, size = [], [], 0
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


def check_address(address: str) -> str:
    """`address` if it can go in an ASCII envelope and header; InputError otherwise."""
    address = (address or "").strip()
    if not address.isascii() or not _ADDRESS.fullmatch(address):
        raise InputError(f"cannot send to {address!r}: not a plain ASCII address", "digest does not use SMTPUTF8; check the address")
    return address


def check_sender_settings(settings: Settings) -> None:
    """ConfigError naming the setting when from_address, reply_to or base_url cannot go into any message.
    Checked before a run records anything: found while building, it failed every subscriber's edition."""
    hint = "set it in digest.toml or DIGEST_{} (`digest config` shows what is in effect)"
    for name in ("from_address", "reply_to"):
        value = settings.values[name]
        if value or name == "from_address":
            address = (value or "").strip()
            if not (address.isascii() and _ADDRESS.fullmatch(address)):
                raise ConfigError(f"{name} {value!r} is not a plain ASCII email address such as digest@example.org", hint.format(name.upper()))
    base = urlsplit(settings.base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(f"base_url {settings.base_url!r} is not an absolute http(s) URL such as https://example.org/digest", hint.format("BASE_URL"))


def format_phrase(name: str) -> str:
    """A display name as an RFC 5322 phrase: bare atoms, a quoted string, or RFC 2047 words."""
    name = clean_header_text(name)
    if name.isascii() and "=?" not in name:
        return name if _ATOM.fullmatch(name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return encode_words(name, 0)


def format_address(name: str, address: str) -> str:
    """`Name <address>` with the display name quoted or RFC 2047-encoded as needed."""
    address = check_address(address)
    phrase = format_phrase(name)
    return f"{phrase} <{address}>" if phrase else address


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower() or "localhost"


def make_message_id(from_address: str, subscriber_id: int, edition: str) -> str:
    """A unique Message-ID on the From domain; the ledger stores it so a resend reuses it."""
    return f"<digest.{edition}.{subscriber_id}.{secrets.token_hex(6)}@{address_domain(from_address)}>"


@lru_cache(maxsize=16)
def _fixed_headers(from_address: str, from_name: str, reply_to: str, list_id: str) -> tuple[str, str, str]:
    """(From + Reply-To lines, List-Id line, unsubscribe mailto): the same for every message of a run."""
    lines = [f"From: {format_address(from_name, from_address)}"]
    if reply_to:
        lines.append(f"Reply-To: {check_address(reply_to)}")
    list_id = clean_header_text(list_id).strip("<>")
    phrase = format_phrase(from_name)
    list_line = f"List-Id: {phrase} <{list_id}>" if phrase else f"List-Id: <{list_id}>"
    return CRLF.join(lines), list_line, f"mailto:{check_address(from_address)}?subject=unsubscribe"


# --- bodies -----------------------------------------------------------------------------------------


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("utf-8")


def encode_qp(text: str) -> bytes:
    """Quoted-printable for the text part: readable as source, lines kept under 76 characters."""
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
    if not html.isascii():
        if not _styles_are_ascii(html):
            return "base64", encode_base64(html)
        html = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
    body = _crlf(html)
    if max(map(len, body.split(b"\r\n"))) > 998:
        return "base64", encode_base64(html)
    return "7bit", body


def _styles_are_ascii(html: str) -> bool:
    lower = html.lower()
    start = lower.find("<style")
    while start >= 0:
        end = lower.find("</style", start)
        if not html[start : end if end >= 0 else len(html)].isascii():
            return False
        start = lower.find("<style", end) if end >= 0 else -1
    return True


def build_message(rendered: RenderedEmail, *, to: str, name: str, settings: Settings, message_id: str, unsubscribe_url: str, date: datetime) -> bytes:
    """The digest as RFC 5322 bytes with CRLF line ends: multipart/alternative, text then HTML.

    List-Unsubscribe carries the https link and a mailto; List-Unsubscribe-Post makes the link
    one-click (RFC 8058). Every header value from outside is cleaned and encoded, never trusted.
    """
    sender, list_line, mailto = _fixed_headers(settings.from_address, settings.from_name, settings.reply_to, settings.list_id)
    url = clean_header_text(unsubscribe_url).replace(" ", "%20")
    return assemble_alternative(
        [
            sender,
            f"To: {format_address(name, to)}",
            f"Subject: {encode_words(rendered.subject, 9)}",
            f"Date: {format_datetime(date)}",
            f"Message-ID: {clean_header_text(message_id)}",
            list_line,
            f"List-Unsubscribe: <{url}>,{CRLF} <{mailto}>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        ],
        rendered.text,
        rendered.html,
    )


def assemble_alternative(headers: list[str], text: str, html: str) -> bytes:
    """A multipart/alternative message from ready header lines (already cleaned and encoded), the plain
    text (quoted-printable) and the HTML (7bit or base64, see encode_html), with CRLF line ends."""
    # "=_" never occurs in base64 or quoted-printable text; in a 7bit HTML part it would need "--=_digest_"
    # followed by 24 random hex digits, which no template or feed can know in advance.
    boundary = "=_digest_" + secrets.token_hex(12)
    head = CRLF.join(
        (
            *headers,
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
            "",
            f"--{boundary}",
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            "",
        )
    ).encode("ascii")
    encoding, body = encode_html(html)
    middle = f"{CRLF}--{boundary}{CRLF}Content-Type: text/html; charset=\"utf-8\"{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}".encode("ascii")
    tail = f"{CRLF}--{boundary}--{CRLF}".encode("ascii")
    return b"".join((head, encode_qp(text), middle, body, tail))


# --- transports -------------------------------------------------------------------------------------


class Transport(Protocol):
    """Hands one message to the world; raises a DeliveryError subclass when it is not accepted."""

    def send(self, message: bytes, *, sender: str, recipient: str) -> None: ...

    def close(self) -> None: ...


# Exceptions that mean "the connection is gone": smtplib raises OSError subclasses for a peer that
# resets, a timeout, or a read on a closed socket.
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError, socket.timeout, ssl.SSLError)


class SMTPTransport:
    """One SMTP connection reused for many messages, reopened when the server drops it, paced by send_rate."""

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.host, self.port = settings.smtp_host, int(settings.smtp_port)
        self.security, self.user, self._password = settings.smtp_security, settings.smtp_user, settings.smtp_password
        self.timeout = float(settings.smtp_timeout)
        self.interval = 1.0 / settings.send_rate if settings.send_rate else 0.0
        self._ssl_context = ssl_context
        self._sleep, self._clock = sleep, clock
        self._smtp: smtplib.SMTP | None = None
        self._next_slot = 0.0
        self.connections = 0  # opened so far, for tests and logs

    def __repr__(self) -> str:  # never shows the password
        return f"SMTPTransport({self.where}, {self.security}, user={self.user or '-'})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"smtp://{self.where} ({self.security}{', as ' + self.user if self.user else ''})"

    def __enter__(self) -> "SMTPTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def connect(self) -> None:
        """Open, secure and log in; DeliveryError with a hint when the settings are wrong."""
        smtp: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{self.where} does not offer STARTTLS", 'use smtp_security = "tls" for port 465, or "none" for a local relay')
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self._password)
        except DeliveryError:
            _quietly_close(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(smtp)
            raise DeliveryError(f"{self.where} refused the login of {self.user!r}: {exc.smtp_code} {_text(exc.smtp_error)}", "check smtp_user and smtp_password (or DIGEST_SMTP_PASSWORD_FILE)") from None
        except smtplib.SMTPNotSupportedError:
            _quietly_close(smtp)
            raise DeliveryError(f"{self.where} offers no AUTH on this connection", "most servers only allow AUTH after TLS: use smtp_security starttls or tls") from None
        except smtplib.SMTPResponseException as exc:  # greeting or EHLO refused
            _quietly_close(smtp)
            if 400 <= exc.smtp_code < 500:
                raise TransientDeliveryError(f"{self.where} is not accepting connections: {exc.smtp_code} {_text(exc.smtp_error)}") from None
            raise DeliveryError(f"{self.where} refused the connection: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except ConnectionRefusedError:
            _quietly_close(smtp)
            raise DeliveryError(f"cannot connect to {self.where}: connection refused", "check smtp_host and smtp_port, and that the mail server is running") from None
        except socket.gaierror as exc:
            _quietly_close(smtp)
            raise DeliveryError(f"cannot resolve smtp_host {self.host!r}: {exc.strerror}", "check smtp_host") from None
        except ssl.SSLError as exc:
            _quietly_close(smtp)
            raise DeliveryError(f"TLS with {self.where} failed: {exc.reason or exc}", "smtp_security tls is for port 465, starttls for 587; check the server's certificate") from None
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            _quietly_close(smtp)
            raise TransientDeliveryError(f"{self.where} dropped the connection while connecting: {exc or type(exc).__name__}") from None
        self._smtp = smtp
        self.connections += 1
        log.debug("event=smtp-connected server=%s security=%s", self.where, self.security)

    def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        """Hand one message over: TransientDeliveryError (try later), PermanentDeliveryError (this recipient)."""
        self._pace()
        for attempt in (1, 2):
            fresh = self._smtp is None
            if fresh:
                self.connect()
            try:
                self._smtp.sendmail(sender, [recipient], message)  # type: ignore[union-attr]
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients.get(recipient) or next(iter(exc.recipients.values()))
                raise self._refused(code, text, f"refused {recipient}") from None
            except smtplib.SMTPSenderRefused as exc:
                if exc.smtp_code >= 500:
                    raise DeliveryError(f"{self.where} refuses to send as {sender}: {exc.smtp_code} {_text(exc.smtp_error)}", "check from_address: the server must accept it as a sender") from None
                raise self._refused(exc.smtp_code, exc.smtp_error, f"deferred the message to {recipient}") from None
            except smtplib.SMTPResponseException as exc:  # DATA refused, or any other reply
                raise self._refused(exc.smtp_code, exc.smtp_error, f"refused the message to {recipient}") from None
            except (*_DROPPED, OSError) as exc:
                self._drop()
                # A server may close an idle or busy connection between messages: reopen once, at once.
                if fresh or attempt == 2:
                    raise TransientDeliveryError(f"{self.where} dropped the connection while sending to {recipient}: {exc or type(exc).__name__}") from None
                log.debug("event=smtp-reconnect server=%s", self.where)

    def _refused(self, code: int, text: bytes | str, what: str) -> DeliveryError:
        if code == 421:  # "service not available, closing channel": smtplib may already have closed it
            self._drop()
        message = f"{self.where} {what}: {code} {_text(text)}"
        return PermanentDeliveryError(message) if code >= 500 else TransientDeliveryError(message)

    def _pace(self) -> None:
        if not self.interval:
            return
        now = self._clock()
        if now < self._next_slot:
            self._sleep(self._next_slot - now)
        self._next_slot = max(now, self._next_slot) + self.interval

    def _drop(self) -> None:
        _quietly_close(self._smtp, polite=False)
        self._smtp = None

    def close(self) -> None:
        _quietly_close(self._smtp)
        self._smtp = None


def _quietly_close(smtp: smtplib.SMTP | None, polite: bool = True) -> None:
    if smtp is None:
        return
    try:
        if polite and smtp.sock is not None:
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())


class OutboxTransport:
    """Writes each message as a .eml file: temp file in the same directory, fsync, atomic rename.

    A reader never sees half a message: files that are still being written start with "." and do not
    end in .eml.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.count = 0

    def describe(self) -> str:
        return f"outbox {self.directory}"

    def __enter__(self) -> "OutboxTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: bytes, *, sender: str, recipient: str) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.count += 1
            safe = re.sub(r"[^A-Za-z0-9@._-]", "_", recipient)[:100]
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.count:05d}-{secrets.token_hex(3)}-{safe}.eml"
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(message)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(self.directory)
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox {self.directory}: {exc.strerror or exc}", "check outbox_dir and its permissions") from None

    def close(self) -> None:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def transport_for(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> SMTPTransport | OutboxTransport:
    """SMTP when smtp_host is set, else the outbox directory."""
    if settings.smtp_host:
        return SMTPTransport(settings, ssl_context=ssl_context)
    return OutboxTransport(settings.outbox_dir)
