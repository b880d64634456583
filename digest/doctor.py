"""`digest doctor`: checks a live setup end to end, one Check per step, without sending to any subscriber.

Config, secret key and sender address; the database and its migrations (read only: nothing is created or
upgraded); each enabled source fetched once (with its stored ETag, so a quiet feed answers 304; nothing is
stored); the SMTP server step by step (connect, TLS, login: the step that fails is the one named); base_url's
/healthz from this machine; and, given an address, one test email through the configured transport. It sits at
the pipeline's level (it uses store, sources and delivery) and must not write to the database.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import Settings
from .delivery.transport import smtp_login
from .errors import DigestError
from .tokens import DEMO_SECRET, PREVIOUS_KEY_HINT, secret_key_hint, secret_key_problem

CHECK_TIMEOUT = 10.0  # seconds for base_url; sources and SMTP use fetch_timeout and smtp_timeout


@dataclass(frozen=True)
class Check:
    """One step's verdict: `ok` True, False (a problem; `detail` says what to do) or None (skipped)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        word = {True: "ok", False: "FAIL", None: "skip"}[self.ok]
        return f"{word:<5} {self.name}: {self.detail}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- settings -----------------------------------------------------------------------------------------


def check_settings(settings: Settings) -> Iterator[Check]:
    """The secret key (the rule the commands that sign links apply, not the demo's, the file holding it private)
    and the sender address."""
    origins = getattr(settings, "origins", {}) or {}
    key = settings.secret_key or ""
    origin = origins.get("secret_key", "")
    problem = secret_key_problem(key)
    file = (getattr(settings, "files", {}) or {}).get("secret_key")
    if problem:
        yield Check("secret_key", False, f"{problem} ({secret_key_hint(key)})")
    elif key == DEMO_SECRET:
        yield Check("secret_key", False, "the demo's key, known to everyone (set a random one; every link signed with it stops working)")
    elif file is not None and (private := _private_file_problem(file, origin)):
        yield Check("secret_key", False, private)
    else:
        where = origin if origin and origin != "default" else "settings"
        yield Check("secret_key", True, f"{len(key)} characters, from {where}")
    yield from _check_previous_keys(tuple(getattr(settings, "previous_secret_keys", ())))
    sender = (settings.from_address or "").strip()
    domain = sender.rpartition("@")[2].lower()
    if not sender or "@" not in sender:
        yield Check("from_address", False, "not set (set from_address to an address on your own domain, whose SPF and DKIM you control)")
    elif domain in ("example.org", "example.com", "example.net", "localhost") or domain.endswith((".example", ".invalid", ".test")):
        yield Check("from_address", False, f"{sender} is a placeholder (set from_address to an address on your own domain)")
    else:
        yield Check("from_address", True, sender)


def _check_previous_keys(keys: tuple[str, ...]) -> Iterator[Check]:
    """The older keys of a rotation, held to secret_key's rule (and not the demo's): each still verifies links. None set:
    no line. The keys are never shown, only their place in the list."""
    if not keys:
        return
    for number, key in enumerate(keys, start=1):
        problem = secret_key_problem(key) or ("the demo's key, known to everyone" if key == DEMO_SECRET else None)
        if problem:
            yield Check("previous_secret_keys", False, f"key {number} of {len(keys)} is {problem} ({PREVIOUS_KEY_HINT})")
            return
    yield Check("previous_secret_keys", True, f"{len(keys)} older key{'s' if len(keys) > 1 else ''} still verify links and forms")


def _private_file_problem(path: Path, origin: str) -> str | None:
    """What is wrong when users other than its owner may read the file the key came from (digest.toml or
    DIGEST_SECRET_KEY_FILE's), or None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        if origin.endswith(".toml"):
            return f"{path} holds it and others can read that file (chmod 600 {path}, or move the key to DIGEST_SECRET_KEY_FILE)"
        return f"{path} ({origin}) holds it and others can read that file (chmod 600 {path})"
    return None


# --- database -----------------------------------------------------------------------------------------


def check_database(settings: Settings) -> tuple[Check, Any]:
    """Reachable, and its schema at this version's newest migration; the engine when reachable (else None).
    A SQLite file that does not exist is not created."""
    from .store import SCHEMA_REVISION, describe, newer_schema, open_engine, schema_is_current, sqlite_file
    from .store import check_database as ping

    url = settings.database_url
    path = sqlite_file(url)  # None for a URL open_engine refuses: it says why below
    if path is not None and not path.exists():
        return Check("database", False, f"{path} does not exist (run `digest init`, or check database_url and DIGEST_HOME)"), None
    try:
        engine = open_engine(url, create_dir=False)
        ping(engine)
        current = schema_is_current(engine)
        newer = None if current else newer_schema(engine)
    except DigestError as exc:
        return Check("database", False, str(exc)), None
    if newer is not None:
        return Check("database", False, f"{describe(engine)}: the schema is at revision {newer}, newer than this digest knows (up to {SCHEMA_REVISION}) "
                                        "(install the digest version that upgraded it)"), engine
    if not current:
        return Check("database", False, f"{describe(engine)}: the schema is not at this version's migrations (run `digest init`: it upgrades in place)"), engine
    return Check("database", True, f"{describe(engine)}, migrations current"), engine


def _readable_by_others(path: Path) -> bool:
    """Whether users other than the owner can read `path`: group or others may read it and enter every directory
    above it (a 0644 file in a 0700 directory is private)."""
    try:
        if not path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            return False
        return all(parent.stat().st_mode & (stat.S_IXGRP | stat.S_IXOTH) for parent in path.absolute().parents)
    except OSError:
        return False


def check_files(settings: Settings) -> Check:
    """The database file (with its -wal and -shm) and the outbox's emails readable by their owner alone: the
    database holds the subscribers' addresses, each email links that sign in as its subscriber. Files made before
    digest set its own modes (or copied in by hand) keep whatever the umask gave them."""
    from .store import sqlite_file

    database = sqlite_file(settings.database_url)
    candidates = [Path(f"{database}{suffix}") for suffix in ("", "-wal", "-shm")] if database is not None else []
    outbox = settings.outbox_dir
    emails = sorted(outbox.glob("*.eml")) if outbox is not None and outbox.is_dir() else []
    # the -wal and -shm count as the database (SQLite gives them its mode, and removes them with the last connection)
    exposed = [database.name] if database is not None and any(p.exists() and _readable_by_others(p) for p in candidates) else []
    exposed_emails = sum(1 for path in emails if _readable_by_others(path))
    if exposed_emails:
        exposed.append(f"{exposed_emails} of the outbox's emails")
    if not exposed:
        present = (["the database"] if database is not None and database.exists() else []) + ([f"the outbox's {len(emails)} emails"] if emails else [])
        if not present:
            return Check("files", None, "no SQLite database or outbox emails on this machine")
        return Check("files", True, f"{' and '.join(present)} readable by their owner alone")
    dirs = {p.parent for p in candidates if p.exists()} | ({outbox} if exposed_emails else set())
    fix = " && ".join(f"chmod -R go= {d}" for d in sorted(dirs) if not any(other in d.parents for other in dirs))
    return Check("files", False, f"other users can read {', '.join(exposed)} (subscribers' addresses and their signed links): {fix}")


# --- sources ------------------------------------------------------------------------------------------


def check_sources(engine: Any, settings: Settings, client: httpx.Client | None = None) -> Iterator[Check]:
    """Each enabled source fetched once (conditional: its stored ETag and Last-Modified) and parsed; nothing stored."""
    from .sources.fetch import fetch_feed
    from .sources.parse import parse_source
    from .store import session_scope
    from .store.sources import list_sources

    with session_scope(engine) as session:
        sources = [(s.name, s.kind, s.url, s.etag, s.last_modified) for s in list_sources(session, enabled_only=True, include_files=False)]
    if not sources:
        yield Check("sources", False, "none enabled (add one: `digest sources add arxiv:cs.LG`, `digest sources add hf-daily`)")
        return
    for name, kind, url, etag, last_modified in sources:
        try:
            fetched = fetch_feed(url, settings=settings, etag=etag, last_modified=last_modified, client=client, sleep=lambda _: None)
            if fetched.status == "gone":
                yield Check(f"source {name}", False, f"{url} is gone (HTTP 410): `digest sources remove {name}`")
                continue
            if fetched.status == "not_modified":
                yield Check(f"source {name}", True, f"reachable, not modified since the last fetch (HTTP 304) ({url})")
                continue
            result = parse_source(kind, fetched.body, source_url=fetched.url)
        except DigestError as exc:
            yield Check(f"source {name}", False, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - a wall: one source's surprise is its own FAIL line
            yield Check(f"source {name}", False, f"{type(exc).__name__}: {exc} ({url})")
            continue
        moved = f"; it moved permanently to {fetched.url} (the next fetch stores the new address)" if fetched.status == "moved" else ""
        yield Check(f"source {name}", True, f"HTTP {fetched.http_status}, {len(result.papers)} entr{'y' if len(result.papers) == 1 else 'ies'} ({url}){moved}")


# --- SMTP ---------------------------------------------------------------------------------------------


def check_smtp(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> Iterator[Check]:
    """Connect, TLS, login, as separate steps; the first that fails ends the SMTP checks (the rest are skipped)."""
    host, port, security = settings.smtp_host, int(settings.smtp_port), settings.smtp_security
    if not host:
        yield Check("smtp", False, f"smtp_host is not set: emails are written to the outbox {settings.outbox_dir} (set smtp_host, smtp_port, smtp_user, smtp_password)")
        return
    where, timeout = f"{host}:{port}", float(settings.smtp_timeout)
    context = ssl_context or ssl.create_default_context()
    smtp: smtplib.SMTP | None = None
    try:
        try:
            if security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
        except ssl.SSLError as exc:
            yield Check("smtp connect", True, f"{where} accepts connections")
            yield Check("smtp tls", False, f"TLS with {where} failed: {exc.reason or exc} (smtp_security tls is for port 465, starttls for 587; check the server's certificate)")
            return
        except (ConnectionRefusedError, TimeoutError) as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else f"no answer within {timeout:g} s"
            yield Check("smtp connect", False, f"cannot connect to {where}: {why} (check smtp_host and smtp_port, and that the server is running and not firewalled)")
            return
        except socket.gaierror as exc:
            yield Check("smtp connect", False, f"cannot resolve smtp_host {host!r}: {exc.strerror} (check smtp_host)")
            return
        except (smtplib.SMTPException, OSError) as exc:
            yield Check("smtp connect", False, f"{where}: {_smtp_text(exc)} (check smtp_host, smtp_port and smtp_security)")
            return
        code, answer = smtp.ehlo()
        first = _text(answer).splitlines()[0][:80] if answer else ""
        yield Check("smtp connect", True, f"{where} answers EHLO: {code} {first}".rstrip())
        if security == "starttls":
            if not smtp.has_extn("starttls"):
                yield Check("smtp tls", False, f"{where} does not offer STARTTLS (use smtp_security = \"tls\" for port 465)")
                return
            try:
                smtp.starttls(context=context)
                smtp.ehlo()
            except ssl.SSLError as exc:
                yield Check("smtp tls", False, f"STARTTLS with {where} failed: {exc.reason or exc} (check the server's certificate and name)")
                return
            except (smtplib.SMTPException, OSError) as exc:
                yield Check("smtp tls", False, f"STARTTLS with {where} failed: {_smtp_text(exc)}")
                return
            yield Check("smtp tls", True, f"STARTTLS, {_tls_version(smtp)}, certificate verified")
        elif security == "tls":
            yield Check("smtp tls", True, f"implicit TLS, {_tls_version(smtp)}, certificate verified")
        elif _is_loopback(host):
            yield Check("smtp tls", True, "none: a relay on this machine (smtp_security = \"none\")")
        else:
            yield Check("smtp tls", False, "smtp_security is \"none\": the password and every email cross the network in clear (set smtp_security = \"starttls\" for 587 or \"tls\" for 465)")
        if not settings.smtp_user:
            yield Check("smtp login", None, "no smtp_user: the server must accept mail from this machine without a login")
            return
        try:
            smtp_login(smtp, settings.smtp_user, settings.smtp_password)
        except smtplib.SMTPAuthenticationError as exc:
            yield Check("smtp login", False, f"{where} refused the login of {settings.smtp_user!r}: {exc.smtp_code} {_text(exc.smtp_error)} (check smtp_user and smtp_password, or DIGEST_SMTP_PASSWORD_FILE)")
            return
        except smtplib.SMTPNotSupportedError:
            yield Check("smtp login", False, f"{where} offers no AUTH on this connection (most servers allow it only after TLS: smtp_security starttls or tls)")
            return
        except (smtplib.SMTPException, OSError) as exc:
            yield Check("smtp login", False, f"{where}: {_smtp_text(exc)}")
            return
        yield Check("smtp login", True, f"logged in as {settings.smtp_user}")
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


def _smtp_text(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return str(exc) or type(exc).__name__


def _tls_version(smtp: smtplib.SMTP) -> str:
    sock = getattr(smtp, "sock", None)
    return (sock.version() if isinstance(sock, ssl.SSLSocket) else None) or "TLS"


# --- base_url -----------------------------------------------------------------------------------------


def check_base_url(settings: Settings, client: httpx.Client | None = None) -> Check:
    """base_url/healthz answers digest's own "ok" from this machine; a public base_url is https."""
    base = settings.base_url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        return Check("base_url", False, f"{base} is http: links in emails would carry tokens in clear (serve `digest web` behind a TLS reverse proxy and set base_url to https://...)")
    url = f"{base}/healthz"
    own = client is None
    client = client or httpx.Client(timeout=CHECK_TIMEOUT, follow_redirects=True)
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return Check("base_url", False, f"cannot reach {url}: {exc or type(exc).__name__} (start `digest web`, check its proxy, or fix base_url)")
    finally:
        if own:
            client.close()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "status" not in answer:
        return Check("base_url", False, f"{url} answered HTTP {response.status_code}, not digest's health check (does base_url lead to `digest web`? check the proxy's routes)")
    if response.status_code != 200 or answer.get("status") != "ok":
        detail = ", ".join(f"{k} {v}" for k, v in answer.items())
        return Check("base_url", False, f"{url} answered HTTP {response.status_code}: {detail} (see the log of `digest web`; `digest init` upgrades an outdated schema)")
    return Check("base_url", True, f"{url} answered ok")


# --- the test email -----------------------------------------------------------------------------------


def send_test_email(settings: Settings, to: str, now: datetime, *, ssl_context: ssl.SSLContext | None = None) -> Check:
    """One short email to `to` through the configured transport (SMTP, or the outbox without smtp_host)."""
    from .delivery.message import build_message, check_address, make_message_id
    from .delivery.transport import transport_for
    from .render import RenderedEmail

    try:
        address = check_address(to)
        text = (f"This is a test email from digest doctor, sent {now:%Y-%m-%d %H:%M} UTC to check the mail settings.\n"
                f"It went through {settings.smtp_host or 'the outbox'}; if it reached your inbox (not spam), sending works.\n")
        html = f"<!DOCTYPE html><html><body><p>{text.replace(chr(10), '<br>')}</p></body></html>"
        message = build_message(RenderedEmail("digest doctor: test email", html, text), to=address, name="", settings=settings,
                                message_id=make_message_id(settings.from_address, 0, f"doctor-{uuid.uuid4().hex[:12]}"),
                                unsubscribe_url=f"{settings.base_url.rstrip('/')}/", date=now)
        with transport_for(settings, ssl_context=ssl_context) as transport:
            transport.send(message, sender=settings.envelope_sender, recipient=address)
            where = transport.describe()
    except DigestError as exc:
        return Check("test email", False, str(exc))
    return Check("test email", True, f"sent to {address} through {where}; look for it (and in the spam folder)")


# --- all of it ----------------------------------------------------------------------------------------


def run_checks(load: Callable[[list[DigestError]], Settings], *, to: str | None, now: datetime, ssl_context: ssl.SSLContext | None = None,
               http: httpx.Client | None = None) -> Iterator[Check]:
    """Every check in order, each yielded as it finishes. `load(problems)` loads the settings, appending each bad
    setting to `problems` (one FAIL line each); nothing else runs on settings that did not load."""
    problems: list[DigestError] = []
    try:
        settings = load(problems)
    except DigestError as exc:
        yield Check("config", False, str(exc))
        return
    if problems:
        for problem in problems:
            yield Check("config", False, str(problem))
        return
    origins = getattr(settings, "origins", {}) or {}
    env = sum(1 for o in origins.values() if o.startswith("DIGEST_"))
    # The file read, though it sets nothing (the units' DIGEST_CONFIG, installed from the example: every key commented).
    shown = str(settings.config_file) if settings.config_file else f"no config file ({settings.config_path} does not exist), defaults"
    yield Check("config", True, shown + (f" and {env} DIGEST_* variable{'s' if env != 1 else ''}" if env else ""))
    yield from check_settings(settings)
    database, engine = check_database(settings)
    yield database
    yield check_files(settings)
    if engine is not None:
        try:
            yield from check_sources(engine, settings, http)
        finally:
            engine.dispose()
    else:
        yield Check("sources", None, "the database cannot be read")
    yield from check_smtp(settings, ssl_context=ssl_context)
    yield check_base_url(settings, http)
    if to:
        yield send_test_email(settings, to, now, ssl_context=ssl_context)
    else:
        yield Check("test email", None, "give --to ADDRESS to send one through the settings above")
