"""Tests for digest.tokens: the tokens are itsdangerous's own (read by it, made the same), scoped and tamper-proof."""

from __future__ import annotations

import hashlib

import pytest
from itsdangerous import URLSafeTimedSerializer

from digest.errors import TokenError
from digest.tokens import _serializer, _Signer, make_token, read_token

SECRET = "test-secret-key-0123456789"
CASES = [
    ("unsubscribe", 7, 0, {}),
    ("preferences", 123456, 3, {}),
    ("vote", 42, 1, {}),
    ("feedback", 42, 1, {"paper_id": 99, "value": -1}),
    ("edition", 8, 2, {"edition": "2026-11-27"}),
    ("confirm", 98765, 12, {}),
]


@pytest.mark.parametrize(("action", "subscriber_id", "version", "extra"), CASES, ids=[c[0] for c in CASES])
def test_make_token_is_itsdangerous_url_safe_timed_token(monkeypatch, action, subscriber_id, version, extra) -> None:
    monkeypatch.setattr("time.time", lambda: 1_764_000_000.5)  # the same second for both
    token = make_token(SECRET, action, subscriber_id, version, **extra)
    payload = [subscriber_id, version, *((extra["paper_id"], extra["value"]) if "paper_id" in extra else ()), *((extra["edition"],) if "edition" in extra else ())]
    assert token == URLSafeTimedSerializer(SECRET, salt=f"digest.{action}").dumps(payload)
    claim = read_token(SECRET, action, token)
    assert (claim.action, claim.subscriber_id, claim.version) == (action, subscriber_id, version)


def test_make_token_signs_with_digests_signer() -> None:
    make_token(SECRET, "vote", 1)
    assert isinstance(_serializer(SECRET, "vote").make_signer(), _Signer)


def test_read_token_refuses_a_changed_signature_and_another_action() -> None:
    token = make_token(SECRET, "unsubscribe", 7)
    head, signature = token.rsplit(".", 1)
    flipped = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    for action, bad in (("unsubscribe", flipped), ("preferences", token), ("unsubscribe", token[:-1])):
        with pytest.raises(TokenError):
            read_token(SECRET, action, bad)
    with pytest.raises(TokenError):
        read_token(SECRET + "x", "unsubscribe", token)


@pytest.mark.parametrize("base", ["https://digest.example.org", "https://example.org/digest/", "http://localhost:8025"])
def test_make_links_like_and_dislike_are_vote_urls_of_one_token(base) -> None:
    """make_links builds the vote links from one prefix per email: the same URLs as vote_url, and the token reads back."""
    from digest.config import load_settings
    from digest.delivery.build import make_links
    from digest.models import Subscriber
    from digest.tokens import vote_url

    settings = load_settings(None, env={}, overrides={"secret_key": SECRET, "base_url": base})
    links = make_links(settings, Subscriber(id=42, email="a@example.org", token_version=3), [5, 1234567])
    token = links.like[5].split("/feedback/")[1].split("/")[0]
    assert links.like == {5: vote_url(base, token, 5, 1), 1234567: vote_url(base, token, 1234567, 1)}
    assert links.dislike == {5: vote_url(base, token, 5, -1), 1234567: vote_url(base, token, 1234567, -1)}
    claim = read_token(SECRET, "vote", token)
    assert (claim.subscriber_id, claim.version) == (42, 3)


def test_every_secret_key_the_docs_show_is_refused():
    """A key printed in the docs or the deploy examples is known to everyone: no command may sign links with it."""
    import re
    from pathlib import Path

    from digest.tokens import secret_key_problem

    root = Path(__file__).resolve().parent.parent
    shown = set()
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "deploy").iterdir())]:
        text = path.read_text(encoding="utf-8")
        shown |= set(re.findall(r"DIGEST_SECRET_KEY=([^\s$(`'\"]+)", text)) | set(re.findall(r'secret_key = "([^"{]+)"', text))
    assert {key for key in shown if secret_key_problem(key) is None} == set()


def signature_spellings(token: str) -> list[str]:
    """The same token with the last character of its signature changed in the bits base64 does not use: every
    spelling itsdangerous accepts (the 27th character of a 20-byte signature carries 2 bits, 4 are padding)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spellings = []
    for char in alphabet:
        try:
            read_token(SECRET, "confirm", token[:-1] + char)
        except TokenError:
            continue
        spellings.append(token[:-1] + char)
    return spellings


def test_read_token_fingerprint_is_the_same_for_every_spelling_of_one_token() -> None:
    """A single-use link is remembered by its fingerprint: another spelling of the same signature must not pass as a
    new link."""
    token = make_token(SECRET, "confirm", 5, 77, request=3)
    spellings = signature_spellings(token)
    assert len(spellings) == 4 and token in spellings  # itsdangerous reads all four
    assert {read_token(SECRET, "confirm", spelled).digest for spelled in spellings} == {read_token(SECRET, "confirm", token).digest}
    assert read_token(SECRET, "confirm", make_token(SECRET, "confirm", 5, 77, request=4)).digest != read_token(SECRET, "confirm", token).digest
    # The links already spent keep their fingerprint: a token as we write it is fingerprinted as it was.
    assert read_token(SECRET, "confirm", token).digest == hashlib.sha256(token.encode()).hexdigest()


def test_unsubscribe_token_names_its_address_without_showing_it() -> None:
    """The address is signed into an unsubscribe token as a keyed tag: it says whose link it is after the token
    version moved on, the address cannot be read (or guessed and checked) from the URL, and an old token has none."""
    import base64

    from digest.tokens import names_address

    token = make_token(SECRET, "unsubscribe", 7, 3, address="Ada@Example.org")
    claim = read_token(SECRET, "unsubscribe", token)
    assert (claim.subscriber_id, claim.version) == (7, 3) and claim.address is not None
    assert names_address(SECRET, claim, "ada@example.org") and not names_address(SECRET, claim, "eve@example.org")
    assert not names_address(SECRET + "x", claim, "ada@example.org")  # keyed: only the key tells
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert b"ada" not in payload.lower() and hashlib.sha256(b"ada@example.org").hexdigest()[:16].encode() not in payload
    old = read_token(SECRET, "unsubscribe", make_token(SECRET, "unsubscribe", 7, 3))  # made before tokens carried it
    assert old.address is None and not names_address(SECRET, old, "ada@example.org")


OLD = "an-older-secret-key-0123456789"


def test_read_token_verifies_with_the_previous_keys_and_nothing_else() -> None:
    """Rotation: a token signed with a key of previous_keys still reads; a new one is signed with secret_key alone; a key
    in neither list reads nothing."""
    old = make_token(OLD, "preferences", 7, 3)
    claim = read_token(SECRET, "preferences", old, previous_keys=(OLD,))
    assert (claim.subscriber_id, claim.version) == (7, 3)
    with pytest.raises(TokenError):
        read_token(SECRET, "preferences", old)  # the old key dropped from the list: its links stop working
    with pytest.raises(TokenError):
        read_token(SECRET, "preferences", make_token("a-third-key-in-neither-list-0123", "preferences", 7, 3), previous_keys=(OLD,))
    new = make_token(SECRET, "preferences", 7, 3)
    assert read_token(SECRET, "preferences", new).version == 3
    with pytest.raises(TokenError):
        read_token(OLD, "preferences", new)


@pytest.mark.parametrize(("key", "words"), [("abcde", "too short: 5 characters"), ("change-me-to-a-long-random-string", "the placeholder")],
                         ids=["short", "placeholder"])
def test_read_token_refuses_a_previous_key_that_could_not_be_a_secret(key, words) -> None:
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match=f"previous_secret_keys holds a key that is {words}") as info:
        read_token(SECRET, "preferences", make_token(SECRET, "preferences", 1), previous_keys=(OLD, key))
    assert key not in str(info.value).replace("previous_secret_keys", "")
