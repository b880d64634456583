"""The transports that hand a message over: SMTP (one connection reused, reopened when dropped, paced by
send_rate) and the outbox directory (one .eml file per message, written atomically). transport_for picks one from
the settings. A Transport says accepted (returns), "try later" (TransientDeliveryError), "not this recipient"
(PermanentDeliveryError) or "cannot be used" (DeliveryError with a hint).

It must not build messages (it only re-encodes an 8bit part for a server without 8BITMIME), know about subscribers
or touch the database, and it never logs a password.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import secrets
import smtplib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError, UnconfirmedDeliveryError
from ..log import log_event
from .message import seven_bit

if TYPE_CHECKING:
    from _typeshed import SizedBuffer

log = logging.getLogger("digest.delivery")


class Transport(Protocol):
    """Hands one message to the world; raises a DeliveryError subclass when it is not accepted."""

    def send(self, message: bytes, *, sender: str, recipient: str) -> None: ...

    def close(self) -> None: ...


# Exceptions that mean "the connection is gone": smtplib raises OSError subclasses for a peer that
# resets, a timeout, or a read on a closed socket.
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError, socket.timeout, ssl.SSLError)


_LINE_STARTS_WITH_PERIOD = re.compile(rb"\n\.")


def quote_periods(data: bytes) -> bytes:
    """SMTP dot-stuffing (RFC 5321 4.5.2: a line that starts with "." gets another): what smtplib does with a
    multiline regex, which tries every position of a 40 KB message (a fifth of a millisecond per message, a
    tenth of an edition's CPU), done with C-level scans instead. Most messages have no such line: a search for one
    first, as bytes.replace's own search through text with a "." and a line end every few bytes took 40 us for a
    44 KB message, the regular expression's literal search 15 us."""
    if data.startswith(b"."):
        data = b"." + data
    if _LINE_STARTS_WITH_PERIOD.search(data) is None:
        return data
    return data.replace(b"\n.", b"\n..")


# A dot-atom address (RFC 5322 3.2.3), what email-validator lets through for a subscriber: smtplib.quoteaddr parses
# it back into itself with email.utils.parseaddr, character by character in Python (two addresses per message were
# half of the CPU of handing a 40 KB message to a local server); any other form still goes through quoteaddr.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def quote_address(address: str) -> str:
    """smtplib.quoteaddr(address) ("<address>" for a plain one), without parsing a dot-atom address."""
    return f"<{address}>" if _DOT_ATOM_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


# One message over an open connection as a generator: each value it yields is written (b"": nothing) and answered with
# the server's next reply, (code, text). _SMTP.sendmail drives it with blocking reads, one thread per connection;
# digest.delivery.multiplex drives many from one thread. It returns when the message is accepted and raises
# smtplib's exceptions in smtplib's cases; the driver closes the connection after a 421 and resets it (RSET) after
# any other refusal (`refusal_code`).
Exchange = Generator[bytes, tuple[int, bytes], None]


def exchange(smtp: smtplib.SMTP, from_addr: str, recipient: str, msg: bytes) -> Exchange:
    """Send `msg` from `from_addr` to `recipient` (EHLO done). With PIPELINING (RFC 2920), MAIL, RCPT and DATA go in
    one write and their three replies are read together: two round trips per message instead of four, half the
    waits (and wake-ups) per message, and half the time a distant relay takes. An 8bit message goes with
    BODY=8BITMIME (RFC 6152) when the server offers 8BITMIME, else quoted-printable (seven_bit)."""
    msg, body = _for_server(smtp, msg)
    size = f" SIZE={len(msg)}" if smtp.has_extn("size") else ""
    mail_command = f"MAIL FROM:{quote_address(from_addr)}{size}{body}\r\n".encode("ascii")
    rcpt_command = f"RCPT TO:{quote_address(recipient)}\r\n".encode("ascii")
    if smtp.has_extn("pipelining"):
        mail = yield mail_command + rcpt_command + b"DATA\r\n"
        if mail[0] == 421:  # closing the channel: the other replies will not come
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
        rcpt = yield b""
        if rcpt[0] == 421:
            raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
        data = yield b""
        if data[0] == 421:
            raise smtplib.SMTPDataError(*data)
        if (mail[0] != 250 or rcpt[0] not in (250, 251)) and data[0] == 354:
            yield b".\r\n"  # DATA taken without a sender or recipient (RFC 2920 says it is not): end it empty
    else:  # one command at a time, as smtplib's sendmail
        mail = yield mail_command
        if mail[0] == 250:
            rcpt = yield rcpt_command
            if rcpt[0] in (250, 251):
                data = yield b"DATA\r\n"
    if mail[0] != 250:
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], from_addr)
    if rcpt[0] not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
    if data[0] != 354:
        raise smtplib.SMTPDataError(*data)
    code, reply = yield MessageEnd(b"".join((quote_periods(msg), b".\r\n" if msg.endswith(b"\r\n") else b"\r\n.\r\n")))
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


class MessageEnd(bytes):
    """What `exchange` yields last: the message and its end (CRLF.CRLF). Once all of it is written the server may have
    taken the message, so its answer is waited for up to smtp_data_timeout (RFC 5321 4.5.3.2.6: 10 minutes), and a
    connection lost before it leaves the outcome unknown: the message is not sent again at once (Unanswered)."""


class Unanswered(smtplib.SMTPServerDisconnected):
    """The connection went (or smtp_data_timeout passed) after a whole message was written, before its answer."""


def _for_server(smtp: smtplib.SMTP, msg: bytes) -> tuple[bytes, str]:
    """The message as this server may take it, and MAIL's BODY parameter: an 8bit part
    (digest.delivery.message.encode_text) goes as it is with BODY=8BITMIME when the server offers 8BITMIME, else
    quoted-printable (RFC 6152: no 8bit data to a server that did not offer it)."""
    if msg.isascii():
        return msg, ""
    if smtp.has_extn("8bitmime"):
        return msg, " BODY=8BITMIME"
    return seven_bit(msg), ""


def refusal_code(exc: smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused) -> int:
    """The reply code of a refusal (421: the server is closing the connection)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return next(iter(exc.recipients.values()))[0]
    return exc.smtp_code


def smtp_login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """smtplib's login; for a user or password outside ASCII, AUTH PLAIN (else LOGIN) with their UTF-8 bytes, as
    RFC 4616 and RFC 4954 have it. smtplib encodes every mechanism's answer as ASCII: a password with an "é" raised
    UnicodeEncodeError, a traceback where a login or a refusal was due. Raises what smtplib.login raises."""
    if user.isascii() and password.isascii():
        smtp.login(user, password)
        return
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()

    def b64(text: str) -> str:
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    if "PLAIN" in offered:
        code, answer = smtp.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}"))
    elif "LOGIN" in offered:
        code, answer = smtp.docmd("AUTH", "LOGIN " + b64(user))
        if code == 334:
            code, answer = smtp.docmd(b64(password))
    else:
        raise smtplib.SMTPAuthenticationError(504, f"a user or password outside ASCII needs AUTH PLAIN or LOGIN; the server offers {' '.join(offered)}".encode())
    if code not in (235, 503):  # 503: already authenticated, as smtplib takes it
        raise smtplib.SMTPAuthenticationError(code, answer)


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP whose sendmail to one recipient is `exchange` (pipelined when the server offers PIPELINING; the
    message dot-stuffed by quote_periods and sent with its end in one write)."""

    def _reset(self) -> None:
        """RSET after a refusal, a connection already gone ignored (as smtplib's sendmail does)."""
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            self.rset()

    def sendmail(self, from_addr: str, to_addrs: str | Sequence[str], msg: SizedBuffer | str, mail_options: Sequence[str] = (),
                 rcpt_options: Sequence[str] = ()) -> dict[str, tuple[int, bytes]]:
        """`exchange` for one recipient and a bytes message; smtplib's sendmail for anything else. The connection is
        closed after a 421 and reset after any other refusal."""
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        self.ehlo_or_helo_if_needed()
        if not isinstance(msg, bytes) or len(recipients) != 1 or mail_options or rcpt_options:
            if isinstance(msg, bytes):
                msg, body = _for_server(self, msg)
                mail_options = [*mail_options, body.strip()] if body else mail_options
            return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)
        steps = exchange(self, from_addr, recipients[0], msg)
        try:
            command = next(steps)
            while True:
                if command:
                    self.send(command)
                command = steps.send(self._answer_to_end() if type(command) is MessageEnd else self.getreply())
        except StopIteration:
            return {}
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as exc:
            if refusal_code(exc) == 421:
                self.close()
            else:
                self._reset()
            raise


    def _answer_to_end(self) -> tuple[int, bytes]:
        """The reply to a whole message, waited for up to data_timeout; Unanswered if the connection goes first."""
        sock = self.sock
        if sock is not None:
            sock.settimeout(self.data_timeout)
        try:
            return self.getreply()
        except OSError as exc:  # smtplib has closed the connection
            raise Unanswered(str(exc)) from None
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)

    data_timeout: float = 600.0  # SMTPTransport sets smtp_data_timeout


class _SMTP_SSL(_SMTP, smtplib.SMTP_SSL):  # noqa: N801 - smtplib's name
    """smtplib.SMTP_SSL with _SMTP's DATA."""


class PaceLike(Protocol):
    interval: float  # seconds between two slots; 0: no send_rate

    def wait(self) -> float:
        """Seconds to sleep before the next message may go (its slot taken): Pace, or digest.delivery.pace.SharedPace."""
        ...


class Pace:
    """send_rate for one process: the next free slot, shared by every connection (thread-safe). The sleeping is
    done by the caller, outside the lock, so the other connections keep taking their own slots."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Seconds to sleep before the next message may go (its slot taken)."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        return slot - now


class SMTPTransport:
    """One SMTP connection reused for many messages, reopened when the server drops it, paced by send_rate (a
    `pace` shared by several transports paces them together)."""

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 pace: PaceLike | None = None):
        self.host, self.port = settings.smtp_host, int(settings.smtp_port)
        self.security, self.user, self._password = settings.smtp_security, settings.smtp_user, settings.smtp_password
        self.timeout = float(settings.smtp_timeout)
        self.data_timeout = max(float(settings.smtp_data_timeout), self.timeout)
        self.pace = pace or Pace(settings.send_rate, clock)
        self._ssl_context = ssl_context
        self._sleep = sleep
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0  # opened so far, for tests and logs

    def __repr__(self) -> str:  # never shows the password
        return f"SMTPTransport({self.where}, {self.security}, user={self.user or '-'})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"smtp://{self.where} ({self.security}{', as ' + self.user if self.user else ''})"

    def __enter__(self) -> SMTPTransport:
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
                smtp = _SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
            else:
                smtp = _SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{self.where} does not offer STARTTLS", 'use smtp_security = "tls" for port 465, or "none" for a local relay')
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if self.user:
                smtp_login(smtp, self.user, self._password)
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
        smtp.data_timeout = self.data_timeout
        self._smtp = smtp
        self.connections += 1
        log_event(log, "smtp-connected", logging.DEBUG, server=self.where, security=self.security)

    @property
    def smtp(self) -> smtplib.SMTP | None:
        """The open connection, if any."""
        return self._smtp

    def open(self) -> smtplib.SMTP:
        """connect() and EHLO: the open connection, for a caller that runs `exchange` over it itself
        (digest.delivery.multiplex); `drop` forgets it."""
        self.connect()
        assert self._smtp is not None
        self._smtp.ehlo_or_helo_if_needed()
        return self._smtp

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
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as exc:
                if refusal_code(exc) == 421:  # "service not available, closing channel": smtplib has closed it
                    self.drop()
                raise self.refusal(exc, sender=sender, recipient=recipient) from None
            except Unanswered as exc:
                self.drop()
                raise self.unanswered(exc, recipient) from None
            except (*_DROPPED, OSError) as exc:
                self.drop()
                # A server may close an idle or busy connection between messages: reopen once, at once (the message
                # had not all gone: a connection lost after it is Unanswered, above).
                if fresh or attempt == 2:
                    raise self.dropped(exc, recipient) from None
                log_event(log, "smtp-reconnect", logging.DEBUG, server=self.where)

    def refusal(self, exc: smtplib.SMTPRecipientsRefused | smtplib.SMTPResponseException, *, sender: str, recipient: str) -> DeliveryError:
        """What `send` raises for a refusal of `exchange`: the sender refused for good means the settings are wrong."""
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = exc.recipients.get(recipient) or next(iter(exc.recipients.values()))
            return self._refused(code, text, f"refused {recipient}")
        if isinstance(exc, smtplib.SMTPSenderRefused):
            if exc.smtp_code >= 500:
                return DeliveryError(f"{self.where} refuses to send as {sender}: {exc.smtp_code} {_text(exc.smtp_error)}", "check from_address: the server must accept it as a sender")
            return self._refused(exc.smtp_code, exc.smtp_error, f"deferred the message to {recipient}")
        return self._refused(exc.smtp_code, exc.smtp_error, f"refused the message to {recipient}")  # DATA refused, or any other reply

    def dropped(self, exc: BaseException, recipient: str) -> TransientDeliveryError:
        """What `send` raises when the connection went away during a message and reopening it did not help."""
        return TransientDeliveryError(f"{self.where} dropped the connection while sending to {recipient}: {exc or type(exc).__name__}")

    def unanswered(self, exc: BaseException, recipient: str) -> UnconfirmedDeliveryError:
        """What `send` raises when the whole message went and its answer never came: not sent again in this run."""
        why = f"gave no answer within smtp_data_timeout ({self.data_timeout:g}s)" if "timed out" in str(exc) else f"dropped the connection ({exc or type(exc).__name__})"
        return UnconfirmedDeliveryError(f"{self.where} {why} after the whole message to {recipient} was sent; it may have been accepted")

    def _refused(self, code: int, text: bytes | str, what: str) -> DeliveryError:
        message = f"{self.where} {what}: {code} {_text(text)}"
        return PermanentDeliveryError(message) if code >= 500 else TransientDeliveryError(message)

    def _pace(self) -> None:
        delay = self.pace.wait()
        if delay > 0:
            self._sleep(delay)

    def drop(self) -> None:
        """Close the connection without a QUIT (it is gone, or closing)."""
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

    def __enter__(self) -> OutboxTransport:
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


def transport_for(settings: Settings, *, ssl_context: ssl.SSLContext | None = None, pace: PaceLike | None = None) -> SMTPTransport | OutboxTransport:
    """SMTP when smtp_host is set (paced by `pace`, or by send_rate in this process), else the outbox directory."""
    if settings.smtp_host:
        return SMTPTransport(settings, ssl_context=ssl_context, pace=pace)
    return OutboxTransport(settings.outbox_dir)
