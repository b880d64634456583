"""One address validator (digest.addresses, email-validator with an ASCII envelope) behind the store's
validate_email and delivery's check_address: they accept and refuse the same addresses."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError
from email_validator import validate_email as email_validator
from hypothesis import example, given
from hypothesis import strategies as st

from digest.addresses import _misread, _validated, ascii_address
from digest.delivery.message import check_address
from digest.errors import InputError
from digest.store.subscribers import validate_email


@pytest.mark.parametrize("address, ascii_form", [
    ("ada@example.org", "ada@example.org"),
    ("  Ada.Lovelace+digest@Example.ORG ", "Ada.Lovelace+digest@example.org"),
    ("carol@ex\u00e4mple.org", "carol@xn--exmple-cua.org"),  # an IDN domain in its IDNA form
], ids=["plain", "case-and-spaces", "idn-domain"])
def test_ascii_address_gives_the_envelope_form(address, ascii_form) -> None:
    assert ascii_address(address) == ascii_form
    assert check_address(address) == ascii_form
    assert validate_email(address) == ascii_form.lower()  # the store keeps it lower-cased


@pytest.mark.parametrize("address", ["\u00e4da@example.org", "ada@", "ada", "a b@example.org", "ada@example..org", "ada@localhost", "x\r\nBcc: y@example.org"],
                         ids=["non-ascii-local", "no-domain", "no-at", "space", "empty-label", "bare-host", "header-injection"])
def test_every_caller_refuses_what_the_validator_refuses(address) -> None:
    with pytest.raises(ValueError):
        ascii_address(address)
    with pytest.raises(InputError, match="cannot send to "):
        check_address(address)
    with pytest.raises(InputError, match="invalid email address"):
        validate_email(address)


@pytest.mark.parametrize("address, reason", [
    ('a"b@example.org', 'The email address contains a quote character ("), which is not allowed here.'),
    ('"ada"@example.org', 'The email address contains a quote character ("), which is not allowed here.'),
    ("a<b>@example.org", "The email address contains an angle bracket (< or >): give the bare address, without a name or brackets."),
    ("Ada <ada@example.org>", "The email address contains an angle bracket (< or >): give the bare address, without a name or brackets."),
    ("ada@@example.org", "The email address has 2 @-signs; it must have one."),
    ("a@b@example.org", "The email address has 2 @-signs; it must have one."),
    ("  ", "The email address is empty."),
    ("ada lovelace@example.org", "The email address contains invalid characters before the @-sign: SPACE."),
    ("ada@example.org.", "An email address cannot end with a period."),
    ("\u00e4da@example.org", "Internationalized characters before the @-sign are not supported: '\u00e4'."),
    ("ada", "An email address must have an @-sign."),
], ids=["quote-inside", "quoted-local-part", "angle-brackets-inside", "display-name", "two-at-signs", "at-inside", "blank",
        "space", "trailing-dot", "non-ascii-local", "no-at"])
def test_ascii_address_names_the_actual_problem(address, reason) -> None:
    """email-validator read a"b@example.org as an unclosed quoted local part and said "must have an @-sign": the reason
    given is the character that is wrong, in one line."""
    with pytest.raises(ValueError) as caught:
        ascii_address(address)
    assert str(caught.value) == reason
    with pytest.raises(InputError) as refused:
        validate_email(address)
    assert str(refused.value) == f"invalid email address {address!r}: {reason} (give an address such as ada@example.org)"


def test_the_operators_own_address_may_be_on_a_bare_host_name() -> None:
    assert ascii_address("digest@localhost", bare_host=True) == "digest@localhost"
    assert check_address("digest@relay", bare_host=True) == "digest@relay"
    for bad in ("dig est@localhost", "digest@-localhost", "\u00e4@localhost"):
        with pytest.raises(ValueError):
            ascii_address(bad, bare_host=True)


def whole_check(address: str) -> str | Exception:
    try:
        return email_validator(address, check_deliverability=False, allow_smtputf8=False).ascii_email or ""
    except EmailNotValidError as exc:
        return ValueError(str(exc))


@given(st.text(st.sampled_from("aZ09._+-@\"( \u00e4"), max_size=80), st.sampled_from(["example.org", "Example.ORG", "ex\u00e4mple.org", "x.test", "localhost", "a..b.org", "-x.org",
                                                                                      "xn--abc.org", "a_b.org", "1.2.3.4", "example.org.", "l" * 64 + ".org", ""]))
@example("a" * 64, "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".org").via("254 characters: the longest address")
@example("a" * 64, "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".org").via("255 characters")
@example("a" * 65, "example.org")
@example("a.", "example.org")
@example(".a", "example.org")
@example("a..b", "example.org")
def test_ascii_address_gives_what_the_whole_check_gives(local: str, domain: str) -> None:
    """Plain local parts have only their domain checked by email-validator: the same answers as the whole address."""
    address = f"{local}@{domain}"
    expected = whole_check(address.strip())  # ascii_address strips what it is given
    try:
        got: str | Exception = ascii_address(address)
    except ValueError as exc:
        got = exc
    if isinstance(expected, Exception):  # refused alike; a reason email-validator gives wrongly is digest's own
        assert isinstance(got, ValueError) and str(got) == (_misread(address.strip()) or str(expected))
    else:
        assert got == expected == _validated(address.strip())
