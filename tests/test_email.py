"""The whole digest email as a mail server, a spam filter and a reader's client see it: each kind of email (an
edition, a quiet day, an empty day, hostile and non-Latin text, the most picks max_papers allows, the confirmation)
built to bytes, parsed back with the email package (no defects), sent through a real SMTP server on 127.0.0.1, and,
where Debian's spamassassin is installed, scored offline with no rule of ours firing.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from datetime import datetime, timezone
from email.header import decode_header, make_header
from pathlib import Path

import lxml.html
import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape
from smtp_server import smtp_server  # noqa: F401 - the fixture
from test_render import ABSTRACT, EDITION, fixed_edition, links_for, long_picks, make_paper, pick

from digest import templates_dir
from digest.config import load_settings
from digest.delivery.message import build_confirmation, build_message, make_message_id
from digest.delivery.transport import SMTPTransport
from digest.rank import RankResult
from digest.render import DigestRenderer, render_digest

DATE = datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc)
HOSTILE_TITLES = [
    "Sub-quadratic attention in $\\mathcal{O}(n^2)$: <b>bold</b> &amp; <img src=x onerror=alert(1)>",
    "https://example.org/a/very/long/unbroken/url/that/goes/on/and/on/without/any/spaces/at/all/index.html?q=1&x=2",
    "Supercalifragilisticexpialidocious" * 6,
    "\u5927\u898f\u6a21\u8a00\u8a9e\u30e2\u30c7\u30eb\u306e\u63a8\u8ad6 \U0001f916\U0001f680 and \u4e2d\u6587\u6807\u9898",
    "\u0646\u0645\u0648\u0630\u062c \u0644\u063a\u0648\u064a \u0643\u0628\u064a\u0631: an RTL title",
    "Cafe\u0301 Ze\u0301ro-shot Z\u0337\u0328a\u0334l\u0335g\u0338o\u0336 and \u202eoverride\u202c",
]


def settings_for(home: Path, **changes):
    return load_settings(home, env={}, overrides={"from_address": "digest@example.org", "from_name": "Paper digest", "base_url": "https://digest.example.org",
                                                  "reply_to": "editor@example.org", **changes})


def hostile_edition() -> RankResult:
    picks = [pick(make_paper(400 + i, title, abstract="With $\\alpha$ and <script>x</script> " + "Unbrokenwordthatmustwrap" * 8,
                             authors=["\u674e\u534e", "Jos\u00e9 \u00d1\u00fa\u00f1ez", "\u0645\u062d\u0645\u062f \u0639\u0644\u064a"], url=f"https://example.org/{'x' * 150}"))
             for i, title in enumerate(HOSTILE_TITLES)]
    return RankResult(7, picks, [])


EDITIONS = {
    "edition": (fixed_edition, "Ada Lovelace"),
    "quiet-day": (lambda: RankResult(7, [], [pick(make_paper(300 + i, f"Trending paper {i}", upvotes=50 - i, abstract=ABSTRACT), ("hf-daily",), in_digest=False)
                                              for i in range(5)], matched=False), "Ada Lovelace"),
    "empty-day": (lambda: RankResult(7, [], []), "Ada Lovelace"),
    "hostile": (hostile_edition, "\u674e\u534e \U0001f389 O'Brien, \"Jr.\""),
    "rtl-name": (hostile_edition, "\u0645\u062d\u0645\u062f \u0639\u0644\u064a"),
    "most-picks": (lambda: RankResult(7, long_picks(100), []), "Ada Lovelace"),
}


def build_edition(settings, name: str) -> bytes:
    make, reader = EDITIONS[name]
    result = make()
    links = links_for(7, [r.paper.id for r in result.ranked], signed=True)
    rendered = render_digest(result, name=reader, email="ada@example.org", edition=EDITION, links=links, site_name=settings.from_name,
                             interests=["diffusion models", "\u5927\u898f\u6a21\u8a00\u8a9e"], renderer=RENDERER)
    return build_message(rendered, to="ada@example.org", name=reader, settings=settings, message_id=make_message_id(settings.from_address, 7, EDITION.isoformat()),
                         unsubscribe_url=links.unsubscribe, date=DATE)


def build_confirmation_email(settings) -> bytes:
    """The confirmation as digest.web.mail builds it (its templates rendered with autoescape, as Flask does)."""
    env = Environment(loader=FileSystemLoader(str(templates_dir())), autoescape=select_autoescape(["html"]))
    values = {"url": "https://digest.example.org/confirm/WzEsMTA4MjQ0MjYxNF0.awxaUw.gWryZXXfCbhSxJlCnyhPItM2Wvw", "site_name": settings.from_name}
    return build_confirmation(settings, to="ada@example.org", subject=f"Confirm your subscription to {settings.from_name}",
                              text=env.get_template("confirm_email.txt").render(values), html=env.get_template("confirm_email.html").render(values), date=DATE)


RENDERER = DigestRenderer()
KINDS = [*EDITIONS, "confirmation"]


@pytest.fixture(scope="module")
def messages(tmp_path_factory) -> dict[str, bytes]:
    settings = settings_for(tmp_path_factory.mktemp("home"))
    built = {name: build_edition(settings, name) for name in EDITIONS}
    built["confirmation"] = build_confirmation_email(settings)
    return built


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# --- RFC 5322, 2045, 2047 -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_email_parses_back_without_defects(messages, kind):
    data = messages[kind]
    msg = parse(data)
    assert not msg.defects and not any(part.defects for part in msg.walk())
    for header, value in msg.items():
        assert not getattr(value, "defects", ()), (header, value.defects)
    assert all(len(line) <= 998 for line in data.split(b"\r\n")), "RFC 5322 2.1.1: a line of more than 998 octets"
    assert b"\n" not in data.replace(b"\r\n", b""), "a bare LF"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and all(len(line) <= 78 or b"List-Unsubscribe: <" in line for line in head.split(b"\r\n"))
    assert msg["MIME-Version"] == "1.0" and msg.get_content_type() == "multipart/alternative"
    assert [(p.get_content_type(), p.get_content_charset()) for p in msg.iter_parts()] == [("text/plain", "utf-8"), ("text/html", "utf-8")]  # RFC 2046 5.1.4: the preferred last
    assert msg["Date"].datetime == DATE
    assert re.fullmatch(r"<[!-;=?-~]+@example\.org>", msg["Message-ID"])  # on the From domain, no space or angle inside
    assert msg["From"] == "Paper digest <digest@example.org>" and msg["Reply-To"] == "editor@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"  # RFC 3834: no vacation replies


@pytest.mark.parametrize("kind", list(EDITIONS))
def test_email_digest_carries_the_list_headers_of_a_newsletter(messages, kind):
    msg = parse(messages[kind])
    assert msg["List-Id"] == "Paper digest <digest.example.org>"  # RFC 2919
    assert re.fullmatch(r"<https://digest\.example\.org/unsubscribe/[\w.-]+>", msg["List-Unsubscribe"])  # RFC 8058: https, one-click
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "bulk"  # the autoresponders that predate RFC 3834 stay quiet too


def test_email_confirmation_is_not_a_list_message(messages):
    msg = parse(messages["confirmation"])
    assert msg["List-Unsubscribe"] is None and msg["List-Id"] is None and msg["Precedence"] is None


@pytest.mark.parametrize("kind", ["hostile", "rtl-name"])
def test_email_non_ascii_subject_and_names_round_trip(messages, kind):
    msg = parse(messages[kind])
    reader = EDITIONS[kind][1]
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [(reader, "ada@example.org")]
    assert msg["Subject"].startswith("Papers for Fri 27 Nov: Sub-quadratic attention in $\\mathcal{O}(n^2)$: <b>bold</b>")
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for title in HOSTILE_TITLES[3:5]:  # CJK and emoji, Arabic: whole in the text part, as references in the HTML
        assert title in text
        assert title in lxml.html.document_fromstring(html).text_content()


# --- what a spam filter reads -------------------------------------------------------------------------


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        colour = colour.lstrip("#")
        colour = "".join(c * 2 for c in colour) if len(colour) == 3 else colour
        channels = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


_COLOUR = re.compile(r"(?:^|;)\s*color\s*:\s*(#[0-9a-fA-F]{3,6})")
_BACKGROUND = re.compile(r"background-color\s*:\s*(#[0-9a-fA-F]{3,6})")


@pytest.mark.parametrize("kind", KINDS)
def test_email_html_has_no_text_in_the_colour_of_its_background(messages, kind):
    """SpamAssassin's HTML_FONT_LOW_CONTRAST (0.7) fired on every digest: the hidden preheader was written in the
    page's background colour, the spammer's trick for hidden words. Hidden text needs no colour (display: none)."""
    doc = lxml.html.document_fromstring(parse(messages[kind]).get_body(("html",)).get_content())
    low = []
    for el in doc.body.iter():
        colour = _COLOUR.search(el.get("style") or "") if isinstance(el.tag, str) else None
        if colour is None:
            continue
        background = next((m.group(1) for a in el.iterancestors() if (m := _BACKGROUND.search(a.get("style") or ""))), "#ffffff")
        own = _BACKGROUND.search(el.get("style") or "")
        if _contrast(colour.group(1), own.group(1) if own else background) < 1.5:
            low.append((el.get("class"), colour.group(1)))
    assert not low


_WORD_END = re.compile(r"[^\s\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]\Z")
_WORD_START = re.compile(r"\A[^\s\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]")


def text_runs(el) -> list[str]:
    """The text of `el` in document order, one item per text node (what an HTML tokenizer hands a filter)."""
    runs = [el.text] if el.text else []
    for child in el:
        if isinstance(child.tag, str) and child.tag not in ("style", "title"):
            runs += text_runs(child)
        if child.tail:
            runs.append(child.tail)
    return runs


@pytest.mark.parametrize("kind", KINDS)
def test_email_html_has_no_words_glued_across_tags(messages, kind):
    """SpamAssassin's HTML_OBFUSCATE_05_10 (0.6) fired on digests of ten picks: a paper's badges (arXiv, Hugging
    Face, the upvotes) were written tag to tag, so "arXiv" and "Hugging" read as one word split by a tag, the trick
    that hides a word from filters. Every text node that ends in a letter is followed by white space."""
    doc = lxml.html.document_fromstring(parse(messages[kind]).get_body(("html",)).get_content())
    runs = text_runs(doc.body)
    glued = [(a[-20:], b[:20]) for a, b in zip(runs, runs[1:]) if _WORD_END.search(a) and _WORD_START.match(b)]
    assert not glued


@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="Debian's spamassassin is not installed (apt-get install spamassassin)")
@pytest.mark.parametrize("kind", KINDS)
def test_email_spamassassin_finds_nothing_of_ours(messages, kind, tmp_path):
    """spamassassin -L (local tests only, no network) over each kind of email: no rule with a positive score fires
    (before: HTML_FONT_LOW_CONTRAST 0.7 on every digest, HTML_OBFUSCATE_05_10 0.6 on ten picks or more)."""
    home = tmp_path / "sa"
    home.mkdir()
    report = subprocess.run(["spamassassin", "-L", "-t", "-p", str(home / "user_prefs")], input=messages[kind], capture_output=True, timeout=120,
                            check=False, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}).stdout.decode("utf-8", "replace")
    details = report[report.index("Content analysis details"):]
    fired = re.findall(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", details, re.M)
    assert fired, details  # the report was read
    assert [(rule, score) for score, rule in fired if float(score) > 0] == []


# --- a real SMTP server -------------------------------------------------------------------------------


def test_email_every_kind_arrives_byte_for_byte_over_smtp(messages, smtp_server, tmp_path):  # noqa: F811 - the fixture
    settings = settings_for(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none", smtp_timeout=5)
    with SMTPTransport(settings) as transport:
        for kind in KINDS:
            transport.send(messages[kind], sender=settings.from_address, recipient="ada@example.org")
    assert [m.data.replace(b"\r\n", b"\n") for m in smtp_server.messages] == [messages[k].replace(b"\r\n", b"\n") for k in KINDS]
    assert all(not m.parsed.defects and "BODY=8BITMIME" in m.mail_options for m in smtp_server.messages if not m.data.isascii())


@pytest.mark.parametrize("name", ["word " * 300, "x" * 1500, "Zo\u00eb " * 300, "a,b " * 300, "Dr. Ada Augusta King, Countess of Lovelace (n\u00e9e Byron)"],
                         ids=["long-atoms", "one-long-word", "long-non-ascii", "long-quoted", "a-real-long-name"])
def test_email_a_name_of_any_length_stays_within_998_octets(tmp_path, name):
    """Nothing limits the name a reader types: a 1,500-character ASCII name made a 1,522-octet To: line (RFC 5322
    2.1.1: lines MUST be no longer than 998), as a single atom or quoted string cannot fold where it has no space."""
    settings = settings_for(tmp_path)
    rendered = render_digest(fixed_edition(), name=name, email="ada@example.org", edition=EDITION, links=links_for(7, [1, 2, 3, 11]), renderer=RENDERER)
    data = build_message(rendered, to="ada@example.org", name=name, settings=settings, message_id=make_message_id(settings.from_address, 7, "2026-11-27"),
                         unsubscribe_url="https://digest.example.org/unsubscribe/T", date=DATE)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78 + len(b" <ada@example.org>")
    msg = parse(data)
    assert not msg.defects and not msg["To"].defects
    [address] = msg["To"].addresses
    assert address.addr_spec == "ada@example.org"
    raw = re.search(rb"^To: (.*?) <ada@example\.org>\r\n", head, re.M | re.S).group(1).replace(b"\r\n", b"").decode("ascii")
    if "=?" in raw:  # RFC 2047 6.2: white space between encoded words is dropped (Python's address parser keeps it)
        assert str(make_header(decode_header(raw))) == " ".join(name.split())
    else:
        assert address.display_name == " ".join(name.split())


@pytest.mark.parametrize("kind", ["hostile", "most-picks", "quiet-day"])
def test_email_titles_and_abstracts_take_their_own_direction(messages, kind):
    """An Arabic or Hebrew title inside the left-to-right page read in the page's direction: its words and
    punctuation out of order. dir="auto" gives each title and abstract the direction of its first strong letter."""
    doc = lxml.html.document_fromstring(parse(messages[kind]).get_body(("html",)).get_content())
    shown = [el for name in ("title", "trend-title", "brief-title", "snippet") for el in doc.find_class(name)]
    assert shown and all(el.get("dir") == "auto" for el in shown)


def test_email_a_sender_on_an_internationalised_domain_builds_ascii_headers(tmp_path):
    """from_address on an internationalised domain is sent in its IDNA form (From), but the Message-ID and the
    default List-Id (digest.<from domain>) kept its Unicode form: every digest and confirmation failed to build
    (UnicodeEncodeError: a header is ASCII), each subscriber's delivery "cannot build the edition"."""
    settings = settings_for(tmp_path, from_address="digest@b\u00fccher.example")
    for data in (build_edition(settings, "edition"), build_confirmation_email(settings)):
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        msg = parse(data)
        assert msg["From"].addresses[0].addr_spec == "digest@xn--bcher-kva.example"
        assert msg["Message-ID"].endswith("@xn--bcher-kva.example>")
    assert parse(build_edition(settings, "edition"))["List-Id"] == "Paper digest <digest.xn--bcher-kva.example>"
