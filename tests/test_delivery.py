"""Message building (digest.delivery.message) and the transports (digest.delivery.transport), against a real SMTP
server on 127.0.0.1 (tests/smtp_server.py)."""

from __future__ import annotations

import binascii
import email
import email.policy
import logging
import os
import quopri
import re
import smtplib
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from smtp_server import start_smtp_server

from digest.config import load_settings
from digest.delivery.message import (
    _too_long,
    build_message,
    encode_html,
    encode_qp,
    encode_text,
    encode_words,
    make_message_id,
    seven_bit,
)
from digest.delivery.transport import OutboxTransport, SMTPTransport, quote_address, transport_for
from digest.errors import (
    DeliveryError,
    InputError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnconfirmedDeliveryError,
)
from digest.render import RenderedEmail

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("DIGEST_UPDATE_GOLDEN") == "1"
DATE = datetime(2024, 5, 2, 7, 0, tzinfo=timezone.utc)


def make_settings(home: Path, **changes):
    base = load_settings(home, env={}, overrides={"from_address": "digest@example.org", "from_name": "Paper digest"})
    return base.replace(**changes) if changes else base


def rendered(subject: str = "Your papers for 2 May 2024: Sparse autoencoders", html: str | None = None, text: str | None = None) -> RenderedEmail:
    return RenderedEmail(
        subject=subject,
        html=html if html is not None else "<html><body><h1>Today</h1><p>Caf\u00e9 &amp; \u03bb-calculus</p></body></html>",
        text=text if text is not None else "Today\n\nCaf\u00e9 & \u03bb-calculus\n" + "a long line " * 20 + "\n.starts with a dot\n",
    )


def build(settings, **kw) -> bytes:
    args = dict(to="ada@example.org", name="Ada Lovelace", settings=settings, message_id=make_message_id(settings.from_address, 7, "2024-05-02"), unsubscribe_url="https://digest.example.org/unsubscribe/TOKEN.abc", date=DATE)
    args.update(kw)
    return build_message(kw.pop("rendered", None) or rendered(), **{k: v for k, v in args.items() if k != "rendered"})


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# --- building ---------------------------------------------------------------------------------------


def test_build_message_has_every_header_and_both_parts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, reply_to="editor@example.org")
    data = build(settings)
    msg = parse(data)
    assert msg["From"] == "Paper digest <digest@example.org>"
    assert msg["Reply-To"] == "editor@example.org"
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Subject"] == "Your papers for 2 May 2024: Sparse autoencoders"
    assert msg["Date"].datetime == DATE
    assert re.fullmatch(r"<digest\.2024-05-02\.7\.[0-9a-f]{12}@example\.org>", msg["Message-ID"])
    assert msg["List-Id"] == "Paper digest <digest.example.org>"
    assert msg["List-Unsubscribe"] == "<https://digest.example.org/unsubscribe/TOKEN.abc>"  # no mailto: nothing reads that mailbox
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered().text
    html_part = msg.get_body(("html",))
    assert html_part["Content-Transfer-Encoding"] == "7bit"  # non-ASCII as character references
    assert html_part.get_content().replace("\r\n", "\n") == rendered().html.replace("\u00e9", "&#233;").replace("\u03bb", "&#955;")
    assert not msg.defects and not any(p.defects for p in msg.iter_parts())
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF everywhere, no bare LF


def test_build_message_without_reply_to_omits_it(tmp_path: Path) -> None:
    assert parse(build(make_settings(tmp_path)))["Reply-To"] is None


@pytest.mark.parametrize(
    "subject",
    [
        "Evil\r\nBcc: victim@example.org",
        "Evil\nX-Injected: yes",
        "Evil\rContent-Type: text/plain",
        "Caf\u00e9\r\nBcc: victim@example.org",
        "Line\u2028separator\x00nul",
        "=?utf-8?b?Zm9yZ2Vk?= looks encoded",
    ],
    ids=["crlf", "lf", "cr", "crlf-non-ascii", "unicode-separators", "forged-encoded-word"],
)
def test_build_message_hostile_subject_stays_one_header(tmp_path: Path, subject: str) -> None:
    msg = parse(build(make_settings(tmp_path), rendered=rendered(subject=subject), name="Mallory\r\nCc: x@example.org"))
    assert msg["Bcc"] is None and msg["Cc"] is None and msg["X-Injected"] is None
    assert msg.get_content_type() == "multipart/alternative"
    decoded = str(msg["Subject"])
    assert "\n" not in decoded and "\r" not in decoded
    assert decoded.split()[0] == subject.split("\r")[0].split("\n")[0].split("\u2028")[0].split()[0]
    assert "Mallory" in str(msg["To"]) and msg["To"].addresses[0].addr_spec == "ada@example.org"


def test_encode_words_non_ascii_and_long_subjects_round_trip() -> None:
    text = "Mise \u00e0 jour : \u201cattention\u201d \u2014 " + "\u00e9l\u00e8ve " * 30
    folded = encode_words(text, 9)
    assert all(len(line) <= 78 for line in ("Subject: " + folded).split("\r\n"))
    assert str(parse(f"Subject: {folded}\r\n\r\n".encode())["Subject"]) == " ".join(text.split())
    plain = encode_words("word " * 40, 9)
    assert all(len(line) <= 78 for line in ("Subject: " + plain).split("\r\n"))


@pytest.mark.parametrize("name", ['Ada "the" Lovelace, Countess', "Ad\u00e0 L\u00f8velace", "A. Turing", "Paper digest (demo)"], ids=["quoted", "non-ascii", "dot", "parentheses"])
def test_build_message_display_names_round_trip(tmp_path: Path, name: str) -> None:
    msg = parse(build(make_settings(tmp_path, from_name=name), name=name))
    assert msg["To"].addresses[0].display_name == name
    assert msg["From"].addresses[0].display_name == name
    assert msg["List-Id"].endswith(" <digest.example.org>") and "(" not in msg["List-Id"].split('"')[0]


@pytest.mark.parametrize(
    "html, encoding",
    [
        ("<p>plain ascii</p>", "7bit"),
        ("<p>Caf\u00e9</p>", "7bit"),
        ("<style>p::before{content:'\u2192'}</style><p>x</p>", "base64"),
        ("<p>" + "x" * 1200 + "</p>", "base64"),
        ("<STYLE>p{}</Style><p>\u00e9</p><style>a{}</style><p>\u00e8</p>", "7bit"),
        ("<style>p{}</style><p>x</p><StYlE>a::after{content:'\u2192'}</style>", "base64"),
        ("<p>\u00e9</p><style>p{content:'\u2192'}", "base64"),
    ],
    ids=["ascii", "non-ascii-text", "non-ascii-style", "long-line", "non-ascii-between-styles", "non-ascii-second-style", "unclosed-style"],
)
def test_encode_html_picks_the_transfer_encoding(tmp_path: Path, html: str, encoding: str) -> None:
    assert encode_html(html)[0] == encoding
    msg = parse(build(make_settings(tmp_path), rendered=rendered(html=html)))
    part = msg.get_body(("html",))
    assert part["Content-Transfer-Encoding"] == encoding
    import html as html_module

    assert html_module.unescape(part.get_content().replace("\r\n", "\n")) == html_module.unescape(html)


QP_TEXTS = [
    "",
    "one line, no end",
    "Caf\u00e9 \u00b7 " + "long words " * 20 + "\nnext\n",
    "trailing space \nand tab\t\n\t\n \n",
    "equals = sign, =?utf-8?b?x?= and a dot line\n.\n..\n",
    "https://digest.example.org/feedback/" + "A" * 90 + "/like\r\nCR only\rend \u2026",
    "x" * 75 + "\u00e9\n" + "y" * 76 + "\n" + "z" * 77 + " \n",
]


@pytest.mark.parametrize("text", QP_TEXTS, ids=["empty", "no-newline", "non-ascii-long", "trailing-white", "equals-dots", "url-and-cr", "boundaries"])
def test_encode_qp_gives_the_bytes_of_b2a_qp_over_the_crlf_text(text: str) -> None:
    crlf = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("utf-8")
    assert encode_qp(text) == binascii.b2a_qp(crlf, quotetabs=False, istext=True, header=False)
    assert quopri.decodestring(encode_qp(text)) == crlf


@given(st.lists(st.text(st.sampled_from("ab =.\t\u00e9\u2026\r\n"), max_size=120), max_size=6))
def test_encode_qp_matches_b2a_qp_for_any_text(lines: list[str]) -> None:
    text = "\n".join(lines)
    crlf = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("utf-8")
    assert encode_qp(text) == binascii.b2a_qp(crlf, quotetabs=False, istext=True, header=False)


@given(st.lists(st.integers(0, 1100) | st.sampled_from([997, 998, 999]), max_size=8))
@example([998]).via("the longest line allowed")
@example([999])
@example([998, 998, 0, 998])
@example([0, 999, 0])
def test_too_long_finds_a_line_over_998_octets(sizes: list[int]) -> None:
    body = b"\r\n".join(b"x" * n for n in sizes)
    assert _too_long(body) == any(n > 998 for n in sizes)


def test_encode_html_line_ends_become_crlf_and_non_ascii_references() -> None:
    assert encode_html("<p>Caf\u00e9</p>\r\n<p>two</p>\r<p>three</p>\n") == ("7bit", b"<p>Caf&#233;</p>\r\n<p>two</p>\r\n<p>three</p>\r\n")


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("plain ascii\n", "7bit"),
        ("Paper digest \u00b7 Friday\nCaf\u00e9 \u2026\n", "8bit"),
        ("x" * 997 + "\u00e9\n", "quoted-printable"),  # 999 octets: over RFC 5322's 998
        ("x" * 996 + "\u00e9\n", "8bit"),  # 998 octets
        ("nul \x00 byte \u00e9\n", "quoted-printable"),
        ("nul \x00 byte\n", "quoted-printable"),
    ],
    ids=["ascii", "non-ascii", "long-line", "longest-line", "nul-non-ascii", "nul-ascii"],
)
def test_encode_text_picks_the_transfer_encoding(tmp_path: Path, text: str, encoding: str) -> None:
    assert encode_text(text)[0] == encoding
    msg = parse(build(make_settings(tmp_path), rendered=rendered(text=text)))
    part = msg.get_body(("plain",))
    assert part["Content-Transfer-Encoding"] == encoding
    assert part.get_content().replace("\r\n", "\n") == text


@given(st.lists(st.text(st.sampled_from("ab =.\t\u00e9\u2026\r\n-"), max_size=120), max_size=6))
@example(["--=_digest_ in the text", "\u00e9"])
def test_seven_bit_gives_the_bytes_of_a_quoted_printable_build(lines: list[str]) -> None:
    """seven_bit, for a server without 8BITMIME, turns an 8bit message into the one build_message makes with
    encode_qp: the same bytes but for the text part's encoding, all ASCII, the same text when parsed."""
    text = "\n".join(lines)
    settings = make_settings(Path("/nonexistent"))
    data = build(settings, rendered=rendered(text=text))
    encoding, body = encode_text(text)
    downgraded = seven_bit(data)
    assert downgraded.isascii()
    if encoding == "8bit":
        assert downgraded == data.replace(b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body, b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encode_qp(text), 1)
    else:
        assert downgraded == data
    part = parse(downgraded).get_body(("plain",))
    assert part.get_content().replace("\r\n", "\n") == text.replace("\r\n", "\n").replace("\r", "\n")


def test_seven_bit_refuses_what_it_cannot_take_apart() -> None:
    with pytest.raises(ValueError, match="not a multipart message"):
        seven_bit("Subject: caf\u00e9\r\n\r\nbody\r\n".encode())


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
@pytest.mark.parametrize("eightbitmime", [True, False], ids=["8bitmime", "7bit-only-server"])
def test_smtp_transport_sends_8bit_only_to_a_server_that_offers_8bitmime(tmp_path: Path, pipelining: bool, eightbitmime: bool) -> None:
    """RFC 6152: an 8bit text part goes with BODY=8BITMIME to a server that offers 8BITMIME; to one that does not,
    as quoted-printable (seven_bit). An ASCII message goes as it is, without BODY, either way."""
    with start_smtp_server(pipelining=pipelining, eightbitmime=eightbitmime) as server:
        settings = smtp_settings(tmp_path, server)
        eight = build(settings)
        ascii_only = build(settings, rendered=rendered(text="plain\n", html="<p>plain</p>"))
        with SMTPTransport(settings) as transport:
            transport.send(eight, sender=settings.from_address, recipient="ada@example.org")
            transport.send(ascii_only, sender=settings.from_address, recipient="bob@example.org")
    first, second = server.messages
    assert ("BODY=8BITMIME" in first.mail_options) == eightbitmime
    assert first.data == (eight if eightbitmime else seven_bit(eight))
    assert first.parsed.get_body(("plain",))["Content-Transfer-Encoding"] == ("8bit" if eightbitmime else "quoted-printable")
    assert first.parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered().text
    assert "BODY=8BITMIME" not in second.mail_options and second.data == ascii_only


def test_build_message_rejects_non_ascii_address(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot send to .*Internationalized characters"):
        build(make_settings(tmp_path), to="\u00e4da@example.org")


def normalise_headers(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    head = re.sub(r"^Date: .*$", "Date: <date>", head, flags=re.M)
    head = re.sub(r"<digest\.([0-9-]+)\.(\d+)\.[0-9a-f]{12}@", r"<digest.\1.\2.<random>@", head)
    head = re.sub(r'boundary="=_digest_[0-9a-f]+"', 'boundary="<boundary>"', head)
    return head.replace("\r\n", "\n") + "\n"


def test_build_message_headers_match_golden_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, reply_to="editor@example.org")
    data = build(settings, rendered=rendered(subject="Your papers for 2 May 2024: \u201cScaling monosemanticity\u201d and 9 more"))
    actual = normalise_headers(data)
    golden = GOLDEN / "headers.txt"
    if UPDATE_GOLDEN:
        golden.write_text(actual, encoding="utf-8")
    assert actual == golden.read_text(encoding="utf-8"), "headers changed: review, then rerun with DIGEST_UPDATE_GOLDEN=1"


# --- SMTP -------------------------------------------------------------------------------------------


def smtp_settings(tmp_path: Path, server, **changes):
    return make_settings(tmp_path, **{"smtp_host": server.host, "smtp_port": server.port, "smtp_security": "none", "smtp_timeout": 5, **changes})


def test_smtp_transport_reuses_one_connection(tmp_path: Path, smtp_server) -> None:
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport:
        for i in range(5):
            transport.send(build(settings, to=f"r{i}@example.org"), sender=settings.from_address, recipient=f"r{i}@example.org")
    assert smtp_server.connections == 1
    assert smtp_server.recipients() == [f"r{i}@example.org" for i in range(5)]
    msg = smtp_server.messages[0].parsed
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_body(("plain",)).get_content().splitlines()[-1] == ".starts with a dot"  # dot-stuffing undone


@pytest.mark.parametrize("message", [
    b".first line\r\n.\r\n..two dots\r\nmiddle.\r\n\r\n.\r\nend\r\n",
    b"no line end at the end\r\n.",
    b"x" * 900 + b"\r\n." + b"y" * 900 + b"\r\n" + b".\r\n" * 50,
], ids=["dots-at-line-starts", "no-final-crlf", "many-lines"])
def test_smtp_transport_dot_stuffing_arrives_byte_for_byte(tmp_path: Path, smtp_server, message: bytes) -> None:
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport:
        transport.send(message, sender=settings.from_address, recipient="ada@example.org")
        transport.send(message, sender=settings.from_address, recipient="bob@example.org")  # the connection is still in step
    expected = message if message.endswith(b"\r\n") else message + b"\r\n"  # SMTP ends the data with CRLF "." CRLF
    assert [m.data for m in smtp_server.messages] == [expected, expected]


def test_smtp_transport_starttls_and_auth(tmp_path: Path, smtp_tls_server) -> None:
    settings = smtp_settings(tmp_path, smtp_tls_server, smtp_security="starttls", smtp_user="user", smtp_password="secret-pass")
    with SMTPTransport(settings, ssl_context=smtp_tls_server.client_context()) as transport:
        transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        transport.send(build(settings), sender=settings.from_address, recipient="bob@example.org")
    assert smtp_tls_server.logins == ["user"]
    assert smtp_tls_server.recipients() == ["ada@example.org", "bob@example.org"]
    assert smtp_tls_server.connections == 1


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("user, password", [("user", "pässwörd-€"), ("josé", "secret-pass")], ids=["password", "user"])
def test_smtp_transport_logs_in_with_a_password_outside_ascii(tmp_path: Path, tmp_path_factory, mechanism, user, password) -> None:
    """smtplib encodes the login as ASCII: a password with an "ä" raised UnicodeEncodeError, a traceback in place of
    a login. AUTH PLAIN and LOGIN carry UTF-8 (RFC 4616, RFC 4954); a wrong one of them is still a refusal."""
    with start_smtp_server(starttls=True, auth=(user, password), cert_dir=tmp_path_factory.getbasetemp() / "smtp-cert",
                           auth_mechanisms=[mechanism]) as server:
        settings = smtp_settings(tmp_path, server, smtp_security="starttls", smtp_user=user, smtp_password=password)
        with SMTPTransport(settings, ssl_context=server.client_context()) as transport:
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        assert server.logins == [user] and server.recipients() == ["ada@example.org"]
        wrong = settings.replace(smtp_password=password + "x")
        with pytest.raises(DeliveryError, match=f"refused the login of '{user}': 535"):
            SMTPTransport(wrong, ssl_context=server.client_context()).send(build(wrong), sender=wrong.from_address, recipient="bob@example.org")


def test_smtp_transport_implicit_tls(tmp_path: Path, tmp_path_factory) -> None:
    with start_smtp_server(implicit_tls=True, cert_dir=tmp_path_factory.getbasetemp() / "smtp-cert") as server:
        settings = smtp_settings(tmp_path, server, smtp_security="tls")
        with SMTPTransport(settings, ssl_context=server.client_context()) as transport:
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        assert server.recipients() == ["ada@example.org"]


def test_smtp_transport_wrong_password_is_a_hinted_error_without_the_password(tmp_path: Path, smtp_tls_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    settings = smtp_settings(tmp_path, smtp_tls_server, smtp_security="starttls", smtp_user="user", smtp_password="wrong-horse-battery")
    transport = SMTPTransport(settings, ssl_context=smtp_tls_server.client_context())
    with pytest.raises(DeliveryError) as info:
        transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
    assert type(info.value) is DeliveryError
    assert "refused the login of 'user'" in str(info.value) and "smtp_password" in str(info.value)
    assert "wrong-horse-battery" not in str(info.value) + caplog.text + repr(transport)
    assert smtp_tls_server.messages == []


def test_smtp_transport_untrusted_certificate_is_a_tls_error(tmp_path: Path, smtp_tls_server) -> None:
    settings = smtp_settings(tmp_path, smtp_tls_server, smtp_security="starttls", smtp_user="user", smtp_password="secret-pass")
    with pytest.raises(DeliveryError, match="TLS with 127.0.0.1"):
        SMTPTransport(settings).send(build(settings), sender=settings.from_address, recipient="ada@example.org")


def test_smtp_transport_connection_refused_names_host_and_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
    with pytest.raises(DeliveryError, match=f"cannot connect to 127.0.0.1:{port}: connection refused.*smtp_host"):
        SMTPTransport(settings).send(b"x", sender="a@example.org", recipient="b@example.org")


@pytest.mark.parametrize(
    "reply, error",
    [("451 4.7.1 greylisted, try later", TransientDeliveryError), ("421 4.3.2 closing", TransientDeliveryError), ("550 5.1.1 no such user", PermanentDeliveryError), ("552 5.2.2 mailbox full", PermanentDeliveryError)],
    ids=["451", "421", "550", "552"],
)
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_smtp_transport_maps_recipient_replies(tmp_path: Path, reply: str, error: type, pipelining: bool) -> None:
    with start_smtp_server(pipelining=pipelining) as smtp_server:
        smtp_server.rcpt_replies["bad@example.org"] = reply
        settings = smtp_settings(tmp_path, smtp_server)
        with SMTPTransport(settings) as transport:
            with pytest.raises(error, match=reply.split()[0]) as info:
                transport.send(build(settings, to="bad@example.org"), sender=settings.from_address, recipient="bad@example.org")
            assert type(info.value) is error
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")  # still usable
    assert smtp_server.recipients() == ["ada@example.org"]
    assert smtp_server.connections == (2 if reply.startswith("421") else 1)


@pytest.mark.parametrize("address", [
    "ann@example.org", "first.last+tag@mail.example.co.uk", "o'brien{x}@example.ie", "a@b",
    "Ann <ann@example.org>", '"two words"@example.org', "a..b@example.org", ".a@example.org", "ann@[127.0.0.1]",
    "\u00e4nn@example.org", "ann@example.org ", "<ann@example.org>", "a(comment)@example.org", "",
], ids=lambda a: repr(a))
def test_quote_address_is_smtplibs_quoteaddr(address: str) -> None:
    """The dot-atom fast path gives what smtplib.quoteaddr gives; other forms go through quoteaddr itself."""
    assert quote_address(address) == smtplib.quoteaddr(address)


@pytest.mark.parametrize("replies, error", [
    ((b"250 ok", b"250 ok", b"354 go"), None),
    ((b"451 4.3.0 sender deferred", b"503 5.5.1 no sender", b"503 5.5.1 no recipients"), TransientDeliveryError),
    ((b"250 ok", b"550 5.1.1 no such user", b"554 5.5.1 no valid recipients"), PermanentDeliveryError),
    ((b"250 ok", b"550 5.1.1 no such user", b"354 go"), PermanentDeliveryError),  # DATA taken all the same: ended empty
    ((b"250 ok", b"250 ok", b"421 4.3.2 closing"), TransientDeliveryError),
], ids=["accepted", "mail-451", "rcpt-550", "rcpt-550-data-354", "data-421"])
def test_smtp_transport_pipelines_mail_rcpt_and_data_when_offered(tmp_path: Path, replies: tuple[bytes, ...], error: type | None) -> None:
    """A server that offers PIPELINING gets MAIL, RCPT and DATA before it answers any of them (this one answers
    nothing until it has all three: a client that waited for each reply would time out), and its three replies
    map as smtplib's one by one do."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(5)
            conn.sendall(b"220 test ESMTP\r\n")
            lines.readline()  # EHLO
            conn.sendall(b"250-test\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
            seen["commands"] = [lines.readline() for _ in range(3)]
            conn.sendall(b"".join(reply + b"\r\n" for reply in replies))
            if replies[2].startswith(b"354"):
                body = [lines.readline()]
                while body[-1] not in (b".\r\n", b""):
                    body.append(lines.readline())
                seen["body"] = b"".join(body)
                conn.sendall(b"250 queued\r\n")
            while line := lines.readline():  # RSET, QUIT: whatever comes, until the client closes
                conn.sendall(b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    settings = make_settings(tmp_path, smtp_host="127.0.0.1", smtp_port=listener.getsockname()[1], smtp_security="none", smtp_timeout=3)
    message = b"Subject: x\r\n\r\n.one line\r\n"
    with SMTPTransport(settings) as transport:
        if error is None:
            transport.send(message, sender="digest@example.org", recipient="ada@example.org")
        else:
            with pytest.raises(error, match=replies[2 if b"421" in replies[2] else 0 if not replies[0].startswith(b"250") else 1].split()[0].decode()):
                transport.send(message, sender="digest@example.org", recipient="ada@example.org")
    server.join(5)
    listener.close()
    assert seen["commands"] == [f"MAIL FROM:<digest@example.org> SIZE={len(message)}\r\n".encode(), b"RCPT TO:<ada@example.org>\r\n", b"DATA\r\n"]
    if error is None:
        assert seen["body"] == b"Subject: x\r\n\r\n..one line\r\n.\r\n"
    elif replies[2].startswith(b"354"):
        assert seen["body"] == b".\r\n"  # the message was never sent


def test_smtp_transport_data_refusal_5xx_is_permanent(tmp_path: Path, smtp_server) -> None:
    smtp_server.data_reply = "554 5.6.0 message rejected"
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport, pytest.raises(PermanentDeliveryError, match="554"):
        transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")


def test_smtp_transport_drop_mid_data_is_transient_then_reconnects(tmp_path: Path, smtp_server) -> None:
    smtp_server.drop_data = 1
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport:
        with pytest.raises(TransientDeliveryError, match="dropped the connection"):
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
    assert smtp_server.recipients() == ["ada@example.org"]
    assert smtp_server.connections == 2


@pytest.mark.parametrize("first", [True, False], ids=["on-a-new-connection", "on-a-used-connection"])
def test_smtp_transport_a_drop_after_the_whole_message_is_not_sent_again_at_once(tmp_path: Path, smtp_server, first: bool) -> None:
    """The server stored the message and the connection went before its answer: the client cannot tell that from a
    message lost, so it is deferred (the next run sends it) and not sent again over a new connection at once, which
    gave the recipient two copies within a second (and two more in the retry rounds)."""
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport:
        if not first:
            transport.send(build(settings, to="bob@example.org"), sender=settings.from_address, recipient="bob@example.org")
        smtp_server.drop_stored = 1
        with pytest.raises(UnconfirmedDeliveryError, match="dropped the connection .* after the whole message to ada@example.org was sent; it may have been accepted"):
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        transport.send(build(settings, to="cy@example.org"), sender=settings.from_address, recipient="cy@example.org")  # a new connection
    assert smtp_server.recipients() == ([] if first else ["bob@example.org"]) + ["ada@example.org", "cy@example.org"]
    assert smtp_server.connections == 2


@pytest.mark.parametrize(("data_timeout", "sent"), [(600.0, True), (1.0, False)], ids=["within-smtp_data_timeout", "past-smtp_data_timeout"])
def test_smtp_transport_waits_smtp_data_timeout_for_the_answer_to_a_whole_message(tmp_path: Path, smtp_server, data_timeout: float, sent: bool) -> None:
    """A relay that scans a message before answering takes longer than a command's smtp_timeout: its answer is
    waited for up to smtp_data_timeout (RFC 5321 4.5.3.2.6), and past that the message is unconfirmed, not resent."""
    smtp_server.data_delay = 2.5
    settings = smtp_settings(tmp_path, smtp_server, smtp_timeout=1, smtp_data_timeout=data_timeout)
    with SMTPTransport(settings) as transport:
        if sent:
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
        else:
            with pytest.raises(UnconfirmedDeliveryError, match=r"gave no answer within smtp_data_timeout \(1s\) after the whole message"):
                transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
    # Past the timeout the client hangs up (aiosmtpd then drops the message; a real relay may deliver it): never resent.
    assert smtp_server.recipients() == (["ada@example.org"] if sent else [])
    assert smtp_server.connections == 1


def test_smtp_transport_reconnects_when_server_closes_between_messages(tmp_path: Path, smtp_server) -> None:
    smtp_server.max_per_connection = 2
    settings = smtp_settings(tmp_path, smtp_server)
    with SMTPTransport(settings) as transport:
        for i in range(5):
            transport.send(build(settings, to=f"r{i}@example.org"), sender=settings.from_address, recipient=f"r{i}@example.org")
    assert smtp_server.recipients() == [f"r{i}@example.org" for i in range(5)]
    assert smtp_server.connections == 3


def test_smtp_transport_paces_at_send_rate(tmp_path: Path, smtp_server) -> None:
    slept: list[float] = []
    clock = [100.0]

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    settings = smtp_settings(tmp_path, smtp_server, send_rate=4)
    with SMTPTransport(settings, sleep=sleep, clock=lambda: clock[0]) as transport:
        for _ in range(3):
            transport.send(build(settings), sender=settings.from_address, recipient="ada@example.org")
    assert slept == [0.25, 0.25]
    assert len(smtp_server.messages) == 3


# --- outbox -----------------------------------------------------------------------------------------


def test_outbox_transport_writes_parseable_files_atomically(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    outbox = tmp_path / "outbox"
    transport = transport_for(settings.replace(outbox_dir=str(outbox)))
    assert isinstance(transport, OutboxTransport)
    with transport:
        for i in range(3):
            transport.send(build(settings, to=f"r{i}@example.org"), sender=settings.from_address, recipient=f"r{i}@example.org")
    files = sorted(outbox.iterdir())
    assert len(files) == 3 and all(f.suffix == ".eml" for f in files)  # no temp file left behind
    assert sorted(parse(f.read_bytes())["To"].addresses[0].addr_spec for f in files) == [f"r{i}@example.org" for i in range(3)]


def test_outbox_transport_unwritable_directory_is_a_delivery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DeliveryError, match="cannot write to the outbox"):
        OutboxTransport(blocker / "outbox").send(b"x", sender="a@example.org", recipient="b@example.org")


def test_transport_for_uses_smtp_when_host_is_set(tmp_path: Path) -> None:
    transport = transport_for(make_settings(tmp_path, smtp_host="mail.example.org", smtp_password="hunter22"))
    assert isinstance(transport, SMTPTransport)
    assert "hunter22" not in repr(transport) + transport.describe()
