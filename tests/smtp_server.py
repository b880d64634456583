"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd in a thread), with programmable failures.

Use the fixtures (`smtp_server`, `smtp_tls_server`) or `start_smtp_server(...)` as a context manager:

    with start_smtp_server(starttls=True, auth=("user", "secret")) as server:
        ... settings.replace(smtp_host=server.host, smtp_port=server.port, ...)
        server.messages        # every accepted message: Received(mail_from, rcpt_tos, data, .parsed)
        server.connections     # connections opened so far
        server.rcpt_replies["bob@example.org"] = ["451 4.7.1 try later"]  # a list: one reply per RCPT, then accept
        server.rcpt_replies["eve@example.org"] = "550 5.1.1 no such user"   # a string: every time
        server.default_rcpt_reply = "421 4.3.2 shutting down"              # for every recipient
        server.drop_data = 1   # drop the connection after the next message body, before replying
        server.drop_stored = 1 # store the next message, then drop the connection instead of replying
        server.max_per_connection = 2   # close the connection after every 2nd accepted message
        server.data_delay = 0.2         # seconds before answering each DATA (a slow server)
        server.rcpt_delay = 0.2         # seconds before answering each RCPT
        start_smtp_server(reply_delay=0.05)  # every reply 50 ms late: a relay across the internet (benchmarks/send.py)
        start_smtp_server(keep=False)        # count messages (server.accepted, server.bytes) without keeping them
        start_smtp_server(pipelining=False)  # no PIPELINING in the EHLO reply (offered by default, as most relays do)

Other test modules reuse it with `from smtp_server import start_smtp_server, smtp_server  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM's parameters (SIZE=..., BODY=8BITMIME)
    at: float = field(default_factory=time.monotonic)  # when the server accepted it (the send_rate tests measure it)

    @property
    def parsed(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SMTPServer:
    """The server's state; tests read and program it while it runs."""

    host: str = "127.0.0.1"
    port: int = 0
    cert_path: Path | None = None
    auth: tuple[str, str] | None = None
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    logins: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, object] = field(default_factory=dict)
    default_rcpt_reply: str | None = None
    data_reply: str | None = None
    drop_data: int = 0
    drop_stored: int = 0
    max_per_connection: int = 0
    data_delay: float = 0.0
    rcpt_delay: float = 0.0
    reply_delay: float = 0.0  # seconds before every reply, the greeting included
    keep: bool = True  # keep each message in `messages`; False: only count them (a 10,000-message benchmark)
    pipelining: bool = True  # offer PIPELINING (RFC 2920) after EHLO: aiosmtpd reads commands in order either way
    eightbitmime: bool = True  # offer 8BITMIME (RFC 6152), as aiosmtpd does; False: a server that takes only 7bit data
    accepted: int = 0
    bytes: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (monotonic at its end, seconds): the loop ran late
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server's self-signed certificate."""
        assert self.cert_path is not None, "this server has no TLS"
        return ssl.create_default_context(cafile=str(self.cert_path))

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]

    # -- aiosmtpd handler hooks --

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001
        session.host_name = hostname  # this hook's duty when it is defined
        if not self.eightbitmime:
            responses = [r for r in responses[:-1] if r != "250-8BITMIME"] + responses[-1:]
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        with self.lock:
            reply = self.rcpt_replies.get(address, self.default_rcpt_reply)
            if isinstance(reply, list):
                reply = reply.pop(0) if reply else None
        if reply:
            if reply.startswith("421"):  # "closing the channel": close right after the reply went out
                asyncio.get_running_loop().call_soon(server.transport.close)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        with self.lock:
            if self.drop_data > 0:
                self.drop_data -= 1
                server.transport.abort()  # the body arrived, the reply never will
                return "451 dropped"
            if self.data_reply:
                return self.data_reply
            self.accepted += 1
            self.bytes += len(envelope.content)
            if self.keep:
                self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content), list(envelope.mail_options)))
            if self.drop_stored > 0:  # stored, and the answer lost: the client cannot know which
                self.drop_stored -= 1
                server.transport.abort()
                return "250 never heard"
            session.accepted = getattr(session, "accepted", 0) + 1
            close = self.max_per_connection and session.accepted % self.max_per_connection == 0
        if close:
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted"

    def authenticate(self, server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        ok = isinstance(auth_data, LoginPassword) and self.auth == (auth_data.login.decode(), auth_data.password.decode())
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)


class _SlowSMTP(SMTP):
    """aiosmtpd's server with every reply `reply_delay` seconds late (the network of a distant relay)."""

    async def push(self, status: str) -> None:
        await asyncio.sleep(self.event_handler.reply_delay)
        await super().push(status)


def _new_connection(state: SMTPServer, kwargs: dict) -> SMTP:
    with state.lock:
        state.connections += 1  # one protocol per TCP connection (STARTTLS reuses it)
    return (_SlowSMTP if state.reply_delay else SMTP)(state, **kwargs)


_CERT_CACHE: dict[str, tuple[Path, Path]] = {}


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, made with `cryptography` (cached per process)."""
    key_dir = str(directory)
    if key_dir in _CERT_CACHE:
        return _CERT_CACHE[key_dir]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _CERT_CACHE[key_dir] = (cert_path, key_path)
    return cert_path, key_path


async def _heartbeat(state: SMTPServer, tick: float = 0.01) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(tick)
        late = time.monotonic() - before - tick
        if late > 0.02:
            state.stalls.append((time.monotonic(), late))


@contextlib.contextmanager
def start_smtp_server(*, starttls: bool = False, implicit_tls: bool = False, auth: tuple[str, str] | None = None, cert_dir: Path | None = None,
                      reply_delay: float = 0.0, keep: bool = True, pipelining: bool = True, eightbitmime: bool = True,
                      watch_stalls: bool = False, auth_mechanisms: Sequence[str] | None = None) -> Iterator[SMTPServer]:
    """Run an SMTP server on 127.0.0.1 (a free port) in a thread for the duration of the block. `watch_stalls`: a
    10 ms heartbeat in the server's loop records in `stalls` each time it ran more than 20 ms late (the test process
    descheduled or its GIL held): messages the clients sent meanwhile are stamped together when it resumes.
    `auth_mechanisms`: the AUTH mechanisms offered (aiosmtpd's LOGIN and PLAIN by default)."""
    state = SMTPServer(auth=auth, reply_delay=reply_delay, keep=keep, pipelining=pipelining, eightbitmime=eightbitmime)
    tls_context = None
    if starttls or implicit_tls:
        import tempfile

        state.cert_path, key_path = make_self_signed_cert(cert_dir or Path(tempfile.gettempdir()) / "digest-test-smtp-cert")
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(state.cert_path, key_path)
    kwargs = dict(hostname="digest-test", enable_SMTPUTF8=True, decode_data=False)
    if starttls:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if auth:
        kwargs.update(authenticator=state.authenticate, auth_required=True, auth_require_tls=starttls or implicit_tls)
        if auth_mechanisms is not None:
            kwargs.update(auth_exclude_mechanism={"LOGIN", "PLAIN"} - set(auth_mechanisms))

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: _new_connection(state, kwargs), "127.0.0.1", 0, ssl=tls_context if implicit_tls else None)
        )
        holder["server"] = server
        state.port = server.sockets[0].getsockname()[1]
        if watch_stalls:
            holder["heartbeat"] = loop.create_task(_heartbeat(state))
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=run, name="smtp-test-server", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the test SMTP server did not start")
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A plain SMTP server (no TLS, no AUTH) on 127.0.0.1."""
    with start_smtp_server() as server:
        yield server


@pytest.fixture
def smtp_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SMTPServer]:
    """STARTTLS required, then AUTH LOGIN/PLAIN as user / secret-pass."""
    with start_smtp_server(starttls=True, auth=("user", "secret-pass"), cert_dir=tmp_path_factory.getbasetemp() / "smtp-cert") as server:
        yield server
