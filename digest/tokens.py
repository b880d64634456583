"""Signed, scoped tokens for every link that acts for a reader, and the URL scheme that carries them.

A token names one subscriber and one action and is signed with `secret_key` (itsdangerous). It carries
the subscriber's `token_version`, so bumping that column revokes every outstanding link, but for unsubscribe links,
which must work in every email ever sent (RFC 8058): those also carry a tag of the address they were made for
(address_tag), by which a link older than the version still finds its own subscriber and never a newcomer given
the same id. Reading a token never touches the database: checking the version, the address and single use is the
caller's job.

Rotating the key: every token is signed with `secret_key`; one signed with a key of `previous_secret_keys` still reads
(itsdangerous's list of keys, newest last), so the links of emails already sent keep working until that key is dropped.

URL scheme, under base_url:
    /confirm/<token>        action "confirm"      valid 7 days, usable once; carries the subscribe request it confirms
                                                  (a digest.models.PendingProfile id), absent in links sent before migration 0008
    /unsubscribe/<token>    action "unsubscribe"  no expiry (RFC 8058 links live in old emails); carries the address's tag
                                                  (absent in links sent before it did), and works whatever the version
    /preferences/<token>    action "preferences"  no expiry
    /feedback/<token>       action "feedback"     carries paper id and +1 / -1 (links of older emails and web edition pages)
    /feedback/<token>/<paper id>/like|dislike
                            action "vote"         one token per email for all its like and dislike links: the paper
                                                  and the vote are in the path, outside the signature (whoever holds
                                                  the email can vote on any paper as its reader, which its reader can)
    /edition/<token>        action "edition"      carries the edition (YYYY-MM-DD): that email on the web
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from itsdangerous import BadSignature, SignatureExpired, Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode, int_to_bytes, want_bytes
from itsdangerous.signer import HMACAlgorithm

from .errors import ConfigError, TokenError

ACTIONS = ("confirm", "unsubscribe", "preferences", "feedback", "edition", "vote")
VOTES = {"like": 1, "dislike": -1}  # the last segment of a vote link
MAX_AGE = {"confirm": 7 * 24 * 3600}  # seconds; actions not listed never expire
MIN_SECRET_LENGTH = 16
# Keys printed in digest's own documentation and examples: whoever read them can sign links for any subscriber.
PLACEHOLDER_SECRETS = frozenset({"change-me-to-a-long-random-string"})
# `digest demo`'s key, in the digest.toml of a demo home: the demo signs its links with it; `digest doctor` refuses it.
DEMO_SECRET = "demo-only-secret-key-not-for-real-use"
PREVIOUS_KEY_HINT = "remove it from previous_secret_keys: the links it signed stop working, and anyone could sign links with it"
SECRET_KEY_HINT = ("set DIGEST_SECRET_KEY_FILE to a file only digest can read, holding a random key: "
                   "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
# No key at all is most often a home made without `digest init` (a first `digest web`, or `import` then `preview`).
NO_SECRET_KEY_HINT = f"`digest init` writes a random one into the digest.toml it creates; or {SECRET_KEY_HINT}"
# The EnvironmentFile= of every unit in deploy/ (tests/test_deploy.py checks the hint names theirs): root's file, which
# systemd reads before it drops to the units' dynamic user, so a DIGEST_SECRET_KEY_FILE that user could read is no use.
SYSTEMD_ENV_FILE = "/etc/digest/digest.env"
SYSTEMD_SECRET_KEY_HINT = (f"put a line DIGEST_SECRET_KEY=KEY in {SYSTEMD_ENV_FILE}, the EnvironmentFile= of digest's systemd units, "
                           "with KEY from python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; then restart the units")


def secret_key_hint(secret_key: str, environ: Mapping[str, str] = os.environ) -> str:
    """What to do about a secret_key that secret_key_problem refuses: under systemd, the line to put in the units'
    environment file; elsewhere, none at all names `digest init` first.

    Under systemd means INVOCATION_ID is set: systemd sets it for every process of every unit it starts, those of
    `systemd-run` (how the docs run admin commands) included, wherever their output goes. JOURNAL_STREAM is set only
    while stdout or stderr is the journal (not under `systemd-run --pty`), and a config under /etc/digest is read by
    cron and containers too."""
    if environ.get("INVOCATION_ID"):
        return SYSTEMD_SECRET_KEY_HINT
    return SECRET_KEY_HINT if secret_key else NO_SECRET_KEY_HINT


def verifying_keys(secret_key: str, previous_keys: Iterable[str] = ()) -> tuple[str, ...]:
    """The keys a token may be signed with, as itsdangerous takes them (newest last, and only the last signs): the
    previous keys of a rotation, then secret_key."""
    return (*(key for key in previous_keys if key != secret_key), secret_key)


def secret_key_problem(secret_key: str) -> str | None:
    """Why `secret_key` cannot sign links (it is not set, too short, or a placeholder from the docs), or None.
    The one rule: the commands that sign links refuse such a key with it, and `digest doctor` fails on it."""
    if not secret_key:
        return "not set, and the links in emails and pages need it"
    if len(secret_key) < MIN_SECRET_LENGTH:
        return f"too short: {len(secret_key)} characters, at least {MIN_SECRET_LENGTH}"
    if secret_key in PLACEHOLDER_SECRETS:
        return "the placeholder from digest's documentation, known to everyone"
    return None


@dataclass(frozen=True)
class Claim:
    action: str
    subscriber_id: int
    version: int
    paper_id: int | None = None
    value: int | None = None  # +1 like, -1 dislike
    digest: str = ""  # stable fingerprint of the token, for single-use bookkeeping
    edition: str | None = None  # YYYY-MM-DD, for "edition"
    request: int | None = None  # for "confirm": the subscribe request (PendingProfile) the link applies
    address: str | None = None  # for "unsubscribe": address_tag of the address the link was made for


_URL_SAFE = bytes.maketrans(b"+/", b"-_")
_PLAIN = re.compile(r"[0-9A-Za-z-]*")  # a string JSON writes as it is, between quotes (an edition's YYYY-MM-DD)


def _base64(data: bytes) -> bytes:
    """itsdangerous's base64_encode (URL-safe alphabet, no padding) in three C calls instead of its Python helpers."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


class _Signer(TimestampSigner):
    """itsdangerous's signer with its derived key kept (it derived it again, one more HMAC, for every token), each
    signature a copy of one keyed HMAC (OpenSSL set a key up again for each hmac.digest: 1.5 -> 1.0 us), the
    timestamp's bytes made once a second, and sign() without the Python helpers around it: the same bytes (a token
    7.3 -> 3 us with these)."""

    def sign(self, value: str | bytes) -> bytes:
        value = want_bytes(value) + self._stamp()
        return value + self.sep + self.get_signature(value)

    def _stamp(self) -> bytes:
        """The separator and this second's timestamp (get_timestamp's), encoded once per second."""
        now = self.get_timestamp()
        stamped = self.__dict__.get("_stamped")
        if stamped is None or stamped[0] != now:
            stamped = self._stamped = (now, self.sep + _base64(int_to_bytes(now)))
        return stamped[1]

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        key = self.__dict__.get("_derived")
        if key is None:
            key = self._derived = super().derive_key()
        return key

    def get_signature(self, value: str | bytes) -> bytes:
        if type(self.algorithm) is not HMACAlgorithm:
            return super().get_signature(value)
        keyed = self.__dict__.get("_keyed")
        if keyed is None:  # "sha1", itsdangerous's default; never updated itself, only copied (threads may share it)
            keyed = self._keyed = hmac.new(self.derive_key(), digestmod=self.algorithm.digest_method().name)
        mac = keyed.copy()
        mac.update(want_bytes(value))
        return _base64(mac.digest())


class _Serializer(URLSafeTimedSerializer):
    """The same tokens as URLSafeTimedSerializer (it reads them, and they read these), made with less work: one signer
    per serializer, and no zlib attempt for a payload of a few numbers, which does not compress at the sizes of real
    ids (a token of huge repetitive numbers is left uncompressed, which itsdangerous reads as well)."""

    # default_signer, not signer: Serializer.__init__ sets self.signer from default_signer, so a class attribute
    # `signer` (as this was until issue 11's fourth pass) left every token to a plain TimestampSigner.
    default_signer = _Signer

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        if salt is not None and salt != self.salt:
            return super().make_signer(salt)
        signer = self.__dict__.get("_signer")
        if signer is None:
            signer = self._signer = super().make_signer(salt)
        return signer

    def dump_payload(self, obj: object) -> bytes:
        if type(obj) is list and all(type(item) is int or (type(item) is str and _PLAIN.fullmatch(item)) for item in obj):
            # [subscriber, version, ...] and an edition's date: what json.dumps writes, without its encoder's set-up
            text = "[" + ",".join([str(item) if type(item) is int else f'"{item}"' for item in obj]) + "]"
        else:
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))  # as itsdangerous's compact JSON writes it
        if len(text) > 64:  # longer payloads may compress: itsdangerous's own way
            return super().dump_payload(obj)
        return _base64(text.encode("utf-8"))

    def dumps(self, obj: object, salt: str | bytes | None = None) -> str:
        if salt is not None and salt != self.salt:
            return super().dumps(obj, salt)
        return self.make_signer().sign(self.dump_payload(obj)).decode("ascii")


@lru_cache(maxsize=64)  # a digest run makes 3 tokens per email: build each serializer once
def _serializer(keys: str | tuple[str, ...], action: str) -> URLSafeTimedSerializer:
    """The serializer of `action` that signs with `keys` (or its last key) and verifies with each of them."""
    check_keys(keys)
    if action not in ACTIONS:
        raise ValueError(f"unknown token action {action!r}")
    # The salt scopes a token to its action: an unsubscribe token cannot confirm anyone.
    return _Serializer(list(keys) if isinstance(keys, tuple) else keys, salt=f"digest.{action}")


def check_keys(keys: str | tuple[str, ...]) -> None:
    """ConfigError when a key cannot sign or verify links: secret_key (the last, or only, one) or one of the previous
    keys before it, by secret_key_problem's rule; the error never shows a key."""
    *previous, secret_key = (keys,) if isinstance(keys, str) else keys
    if problem := secret_key_problem(secret_key):
        raise ConfigError(f"secret_key is {problem}", secret_key_hint(secret_key))
    for key in previous:
        if problem := secret_key_problem(key):
            raise ConfigError(f"previous_secret_keys holds a key that is {problem}", PREVIOUS_KEY_HINT)


def make_token(secret_key: str, action: str, subscriber_id: int, version: int = 0, *, paper_id: int | None = None, value: int | None = None,
               edition: str | None = None, request: int | None = None, address: str | None = None) -> str:
    """A signed token for `action`; `address` (the subscriber's, for "unsubscribe") is signed into it as its tag."""
    payload: list = [subscriber_id, version]
    if action == "confirm" and request is not None:
        payload.append(int(request))
    if action == "unsubscribe" and address is not None:
        payload.append(address_tag(secret_key, address))
    if action == "feedback":
        if paper_id is None or value not in (1, -1):
            raise ValueError("a feedback token needs paper_id and value +1 or -1")
        payload += [paper_id, value]
    elif action == "edition":
        payload.append(date.fromisoformat(edition or "").isoformat())  # ValueError unless YYYY-MM-DD
    return _serializer(secret_key, action).dumps(payload)


def read_token(secret_key: str, action: str, token: str, *, previous_keys: Iterable[str] = ()) -> Claim:
    """The claim inside `token`, signed with `secret_key` or one of `previous_keys`, or TokenError saying whether it
    was tampered with or expired."""
    keys = verifying_keys(secret_key, previous_keys)
    serializer = _serializer(keys if len(keys) > 1 else secret_key, action)
    try:
        payload = serializer.loads(token, max_age=MAX_AGE.get(action))
    except SignatureExpired:
        raise TokenError("this link has expired") from None
    except BadSignature:
        raise TokenError("this link is not valid (it may have been altered or cut short)") from None
    try:
        subscriber_id, version, *rest = payload
        fingerprint = _fingerprint(token)
        if action == "edition":
            claim = Claim(action, int(subscriber_id), int(version), digest=fingerprint, edition=date.fromisoformat(rest[0]).isoformat())
        elif action == "confirm":
            claim = Claim(action, int(subscriber_id), int(version), digest=fingerprint, request=int(rest[0]) if rest else None)
        elif action == "unsubscribe":
            claim = Claim(action, int(subscriber_id), int(version), digest=fingerprint, address=str(rest[0]) if rest else None)
        else:
            paper_id, value = (rest + [None, None])[:2]
            claim = Claim(action, int(subscriber_id), int(version), paper_id, value, fingerprint)
    except (TypeError, ValueError, IndexError):
        raise TokenError("this link is not valid") from None
    return claim


def address_tag(secret_key: str, address: str) -> str:
    """Which address an unsubscribe link was made for, without naming it: the first 8 bytes (hex) of an HMAC-SHA256 of
    the address, keyed by `secret_key` (a plain hash would let whoever sees the URL test a guess of the address).
    SQLite may give a deleted subscriber's id to a newcomer, so the id alone does not say whose link it is."""
    mac = _address_mac(secret_key).copy()
    mac.update(address.strip().lower().encode("utf-8"))
    return mac.hexdigest()[:16]


@lru_cache(maxsize=8)
def _address_mac(secret_key: str) -> hmac.HMAC:
    """The keyed HMAC of address_tag, set up once per key and copied for each address (never updated itself)."""
    return hmac.new(secret_key.encode("utf-8"), b"digest.address\x00", hashlib.sha256)


def names_address(keys: str | Iterable[str], claim: Claim, address: str) -> bool:
    """Whether an unsubscribe claim was made for `address` (False for a link without a tag); its tag was made with the
    key that signed it: secret_key, or one of verifying_keys'."""
    tag = claim.address
    return tag is not None and any(hmac.compare_digest(tag, address_tag(key, address)) for key in ((keys,) if isinstance(keys, str) else keys))


def _fingerprint(token: str) -> str:
    """SHA-256 of the token with its signature spelled as we write it. base64 leaves 4 spare bits in the last character
    of a 20-byte signature, which itsdangerous ignores: one token had four spellings that verify, and a single-use
    link spent under one passed as new under the others. Only a token that verified is fingerprinted."""
    value, _, signature = token.rpartition(".")
    canonical = base64_encode(base64_decode(signature)).decode("ascii")
    return hashlib.sha256(f"{value}.{canonical}".encode()).hexdigest()


# The token of a link's path, under any prefix (/preferences/<token>, /digest/feedback/<token>/12/like): what a log
# line must not hold, since a token acts for its subscriber and most never expire. "vote" links live under /feedback/.
_LINK_TOKEN = re.compile(r"(/(?:confirm|unsubscribe|preferences|feedback|edition)/)[A-Za-z0-9_.-]+")


def hide_link_tokens(text: str) -> str:
    """`text` with the token of every link path in it written <token> (as digest.web.app.logged_path writes the path of
    a failed request): for the lines of libraries (waitress names the path it was serving) and anything else logged."""
    return _LINK_TOKEN.sub(r"\1<token>", text) if "/" in text else text


def action_url(base_url: str, action: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/{action}/{token}"


def vote_url(base_url: str, token: str, paper_id: int, value: int) -> str:
    """A like (value 1) or dislike (-1) link of one email: its "vote" token, then the paper and the vote in the path.
    One signature per email instead of one per link: the signatures were a sixth of the CPU of building an email."""
    return f"{_vote_start(base_url, token)}{int(paper_id)}/{'like' if value > 0 else 'dislike'}"


def vote_urls(base_url: str, token: str, paper_ids: Iterable[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Every like and every dislike link of one email (vote_url's), their common start made once."""
    start = _vote_start(base_url, token)
    ids = [int(p) for p in paper_ids]
    return {p: f"{start}{p}/like" for p in ids}, {p: f"{start}{p}/dislike" for p in ids}


def _vote_start(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/feedback/{token}/"


def edition_url(base_url: str, secret_key: str, subscriber_id: int, version: int, edition: str) -> str:
    """The "view in your browser" link of one subscriber's edition (YYYY-MM-DD): /edition/<token> under base_url.
    Pure; no expiry (old emails keep it); bumping the subscriber's token_version revokes it like every link."""
    return action_url(base_url, "edition", make_token(secret_key, "edition", subscriber_id, version, edition=edition))
