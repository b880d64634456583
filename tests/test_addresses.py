"""One address validator (digest.addresses, email-validator with an ASCII envelope) behind the store's
validate_email and delivery's check_address: they accept and refuse the same addresses."""

from __future__ import annotations

import pytest

from digest.addresses import ascii_address
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
    with pytest.raises(InputError, match="not a plain ASCII address"):
        check_address(address)
    with pytest.raises(InputError, match="invalid email address"):
        validate_email(address)


def test_the_operators_own_address_may_be_on_a_bare_host_name() -> None:
    assert ascii_address("digest@localhost", bare_host=True) == "digest@localhost"
    assert check_address("digest@relay", bare_host=True) == "digest@relay"
    for bad in ("dig est@localhost", "digest@-localhost", "\u00e4@localhost"):
        with pytest.raises(ValueError):
            ascii_address(bad, bare_host=True)
