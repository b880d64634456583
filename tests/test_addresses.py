"""One address validator (digest.addresses, email-validator with an ASCII envelope) behind the store's
validate_email and delivery's check_address: they accept and refuse the same addresses."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError
from email_validator import validate_email as email_validator
from hypothesis import example, given
from hypothesis import strategies as st

from digest.addresses import _validated, ascii_address
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
    if isinstance(expected, Exception):
        assert isinstance(got, ValueError) and str(got) == str(expected)
    else:
        assert got == expected == _validated(address.strip())
