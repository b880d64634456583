"""Email addresses, checked one way everywhere: email-validator's rules for an ASCII envelope. digest does not use
SMTPUTF8, so a non-ASCII local part is refused and an internationalised domain is kept in its ASCII (IDNA) form.
The store normalises subscribers' addresses with it; delivery checks every address it writes into a message with it.

It must not look anything up (no DNS: whether mail arrives is the mail server's to say) and knows nothing of
subscribers, settings or messages.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# email-validator refuses a domain without a dot (and "localhost") for the internet. The operator's own From or
# Reply-To may be on a bare host name (the default digest@localhost, a relay on the LAN): its local part is
# checked on this stand-in domain, its host name as one RFC 1123 label.
_STAND_IN_DOMAIN = "example.org"
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def ascii_address(address: str, *, bare_host: bool = False) -> str:
    """`address` (stripped) as it goes into an ASCII envelope and header: the domain in its IDNA form, the rest as
    given. ValueError with email-validator's reason when mail cannot be sent to it. `bare_host`: a host name
    without a dot after the @ is accepted too (for the operator's own addresses, not subscribers')."""
    text = (address or "").strip()
    local, at, host = text.rpartition("@")
    if bare_host and at and "." not in host and _HOST_LABEL.fullmatch(host):
        _checked(f"{local}@{_STAND_IN_DOMAIN}")
        return text
    return _checked(text)


# A local part of letters, digits and _ + - in dot-separated runs: what nearly every address has, and what
# email-validator accepts and keeps as it is. Such an address has only its domain checked by email-validator, once per
# domain: the whole check cost 23 us an address, most of it on the domain (IDNA, UTS 46), for every message sent.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")


def _misread(text: str) -> str | None:
    """The problem with an address that email-validator would explain wrongly, or None. Its parser reads a quote
    as the start of a quoted local part and an angle bracket as the start of "Name <address>", so a"b@example.org
    was "must have an @-sign" and a<b>@example.org "anything after the email address"; neither is allowed here (no
    quoted local parts, no display names), so the character itself is named."""
    if not text:
        return "The email address is empty."
    if '"' in text:
        return 'The email address contains a quote character ("), which is not allowed here.'
    if "<" in text or ">" in text:
        return "The email address contains an angle bracket (< or >): give the bare address, without a name or brackets."
    if text.count("@") > 1:
        return f"The email address has {text.count('@')} @-signs; it must have one."
    return None


def _checked(text: str) -> str:
    local, at, domain = text.rpartition("@")
    if at and _PLAIN_LOCAL.fullmatch(local):
        address = f"{local}@{_checked_domain(domain)}"
        if len(address) <= 254:  # else the whole check says by how much it is too long
            return address
    return _validated(text)


@lru_cache(maxsize=4096)  # a failure is not cached: it raises
def _checked_domain(domain: str) -> str:
    """`domain` in its IDNA form, checked by email-validator behind a local part it accepts as it is."""
    return _validated(f"a@{domain}").rpartition("@")[2]


def _validated(text: str) -> str:
    problem = _misread(text)
    if problem:
        raise ValueError(problem)
    try:
        valid = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    assert valid.ascii_email is not None  # allow_smtputf8=False: an address needing SMTPUTF8 was refused above
    return valid.ascii_email


# Mail providers that ignore the dots of a local part (Google documents it for gmail.com and googlemail.com, which are
# one domain): a.d.a@gmail.com is ada@gmail.com's inbox.
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def canonical_address(address: str) -> str:
    """The inbox an address reaches, as the confirmation caps count it (digest.store.caps): lower-cased, the +tag cut from the
    local part (ada+news@example.org -> ada@example.org: most providers deliver every +tag to one inbox), and at Gmail
    the dots dropped. Nothing else is folded (a '-' tag or dots elsewhere may be another person's address). A local part
    that is only a tag (+x@) is kept whole."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower()
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        local, domain = local.replace(".", "") or local, DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"
