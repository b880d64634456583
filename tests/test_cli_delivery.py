"""`digest preview / send / run / demo` through the real CLI, and the exactly-once guarantees as real processes:
SIGKILL in the middle of a send and a rerun; two `digest send` started together."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from html import unescape
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.delivery.loop import FIRST_WAIT
from digest.ingest import import_file
from digest.pipeline.job import run_lock
from digest.store import deliveries as ledger
from digest.store import init_db, open_engine, session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber

SECRET = "cli-test-secret-key-0123456789"
TOPICS = ("sparse autoencoders interpretability", "speech recognition audio", "robot reinforcement learning")


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def populate(home: Path, subscribers: int = 3) -> list[str]:
    """Papers first seen an hour ago and `subscribers` subscribers due since midnight UTC."""
    (home / "digest.toml").write_text(f'secret_key = "{SECRET}"\nfrom_address = "digest@example.org"\n', encoding="utf-8")
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    init_db(engine)
    now = datetime.now(timezone.utc)
    lines = [json.dumps({"id": f"p{t}-{i}", "title": f"{topic.title()} study {i}", "abstract": f"We study {topic} in depth, part {i}."}) for t, topic in enumerate(TOPICS) for i in range(4)]
    path = home / "papers.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_file(engine, path, now - timedelta(hours=1))
    emails = [f"reader{i:02d}@example.org" for i in range(subscribers)]
    with session_scope(engine) as session:
        for i, address in enumerate(emails):
            add_subscriber(session, address, SubscriberInput(name=f"Reader {i}", interests=[TOPICS[i % 3]], send_at="00:00", tz="UTC"), now=now - timedelta(days=2))
    engine.dispose()
    return emails


def no_tokens(text: str) -> str:
    return re.sub(r"/(unsubscribe|preferences|feedback|edition)/[A-Za-z0-9._-]+", r"/\1/<token>", text)


def smtp_env(server, connections: int = 1) -> dict[str, str]:
    """The server's settings; one SMTP connection unless `connections` says otherwise (the order of the messages
    and the one message in flight are what most of these tests follow)."""
    return {"DIGEST_SMTP_HOST": server.host, "DIGEST_SMTP_PORT": str(server.port), "DIGEST_SMTP_SECURITY": "none", "DIGEST_SMTP_TIMEOUT": "10",
            "DIGEST_SMTP_CONNECTIONS": str(connections)}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Any connection to somewhere other than 127.0.0.1 fails the test."""
    attempts: list = []
    real = socket.socket.connect

    def guarded(self, address):  # noqa: ANN001
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1", "localhost")):
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


# --- demo and preview -------------------------------------------------------------------------------


def test_demo_runs_offline_and_writes_emails(cli, tmp_path: Path, no_network: list) -> None:
    from digest.web import create_app

    target = tmp_path / "demo"
    result = cli("demo", "--home", str(target))
    assert result.exit_code == 0, result.output
    assert "sent 3, skipped 0, failed 0, deferred 0 in" in result.output
    assert result.output.startswith(f"demo home: {target}\n") and result.output.endswith(f"remove the demo: rm -r {target}\n")
    emls = sorted((target / "outbox").glob("*.eml"))
    assert len(emls) == 3
    messages = [parse(p.read_bytes()) for p in emls]
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == ["ada@example.org", "alan@example.org", "grace@example.org"]
    assert all(m.get_content_type() == "multipart/alternative" for m in messages)
    settings = load_settings(target, env={})
    site = create_app(settings, open_engine(settings.database_url)).test_client()
    for m in messages:  # picks from the arXiv day, trending from the Hugging Face day: every paper linked, with authors
        text, html = m.get_body(("plain",)).get_content(), m.get_body(("html",)).get_content()
        assert "TRENDING TODAY" in text and "upvotes" in text
        titles = re.findall(r'<(a|span) class="(?:trend-)?title"', html)
        assert len(titles) >= 8 and set(titles) == {"a"}, titles
        assert html.count('class="authors"') == len(titles)
        # one HTML file per subscriber, the email as sent
        page = target / f"{m['To'].addresses[0].username}.html"
        assert page.read_bytes().decode("utf-8") == html and str(page) in result.output
        # "View in your browser" shows the same picks on the demo's own web pages
        link = unescape(re.search(r'class="browser-link" href="([^"]+)"', html).group(1))
        assert link.startswith(settings.base_url.rstrip("/") + "/edition/")
        web = site.get(link.removeprefix(settings.base_url.rstrip("/"))).get_data(as_text=True)
        picks = [unescape(t) for t in re.findall(r'<a class="title" href="[^"]*"[^>]*>([^<]+)</a>', html)]
        assert [unescape(t) for t in re.findall(r'<h3 id="paper-\d+-title"><a href="[^"]*">([^<]+)', web)][: len(picks)] == picks
    # the "try:" lines name the front page and Ada's email on the web, and both are there
    tried = [line.split()[0] for line in result.output.splitlines() if line.startswith("  http")]
    assert [site.get(url.removeprefix(settings.base_url.rstrip("/")) or "/").status_code for url in tried] == [200, 200]
    assert "/edition/" in tried[1] and f"try: digest --home {target} web" in result.output
    assert no_network == []
    again = cli("demo", "--home", str(target))  # a demo home can be used again
    assert again.exit_code == 0 and "sent 0, skipped 0" in again.output and "/edition/" in again.output


def test_demo_refuses_a_real_home(cli, home: Path) -> None:
    emails = populate(home)  # a working home: its own digest.toml, database and due subscribers
    before = sorted(home.iterdir())
    result = cli("demo", "--home", str(home))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: {home} is not a demo home")
    assert sorted(home.iterdir()) == before and not (home / "outbox").exists()
    engine = open_engine(load_settings(home, env={}).database_url)
    with session_scope(engine) as session:
        from digest.store.subscribers import list_subscribers

        assert sorted(s.email for s in list_subscribers(session)) == emails  # no demo subscribers added
    assert ledger.deliveries_for(engine) == []  # nobody's edition spent on the demo


def test_preview_writes_html_and_eml_without_sending_or_recording(cli, home: Path, tmp_path: Path) -> None:
    populate(home)
    html, eml = tmp_path / "ada.html", tmp_path / "ada.eml"
    result = cli("preview", "reader00@example.org", "--out", str(html), "--eml", str(eml))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("To: reader00@example.org\nSubject: ")
    message = parse(eml.read_bytes())
    # the default base_url is http: one-click (RFC 8058) needs https, so it is not claimed; with https it is
    assert message["List-Unsubscribe"].startswith("<http://") and message["List-Unsubscribe-Post"] is None
    assert cli("preview", "reader00@example.org", "--eml", str(eml), env={"DIGEST_BASE_URL": "https://digest.example.org"}).exit_code == 0
    assert parse(eml.read_bytes())["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unescape(message.get_body(("html",)).get_content().replace("\r\n", "\n")) == unescape(html.read_text(encoding="utf-8"))
    assert "Sparse Autoencoders Interpretability study" in html.read_text(encoding="utf-8")
    text = cli("preview", "reader00@example.org", "--text")
    assert text.exit_code == 0
    assert no_tokens(text.output) == no_tokens(message.get_body(("plain",)).get_content().replace("\r\n", "\n"))  # tokens carry a timestamp
    engine = open_engine(load_settings(home, env={}).database_url)
    assert ledger.deliveries_for(engine) == [] and not list((home / "outbox").glob("*"))


@pytest.mark.parametrize("interests, picks", [("coding agents", 5), ("sparse autoencoders", 0)], ids=["a-pick-trends", "nothing-matched"])
def test_preview_counts_the_trending_papers_the_email_shows(cli, home: Path, interests: str, picks: int) -> None:
    # The README's first edition: the bundled arXiv and Hugging Face days. A pick that also trends is shown once, and
    # the trending section still lists five upvoted papers, each linked; preview's count is what the email shows.
    assert cli("init").exit_code == 0
    for name in ("sample-arxiv-cs.CL.xml", "hugging-face-2026-08-21.json"):
        assert cli("import", str(Path("digest/data") / name)).exit_code == 0
    assert cli("subscribers", "add", "ada@example.org", "--interests", interests).exit_code == 0
    result = cli("preview", "ada@example.org", "--out", str(home / "ada.html"))
    assert result.exit_code == 0, result.output
    assert f"\n{picks} picks, 5 trending; " in result.output
    html = (home / "ada.html").read_text(encoding="utf-8")
    trending = html[html.index("Trending today"):]
    assert len(re.findall(r'<a class="trend-title" href="https://arxiv.org/abs/', trending)) == 5
    assert trending.count('class="votes"') == 5


def test_preview_without_trending_papers_has_no_trending_section(cli, home: Path) -> None:
    # JSON Lines rows carry no upvotes and each paper one source: nothing trends, and the email says nothing of it.
    populate(home)
    result = cli("preview", "reader00@example.org", "--text")
    assert "TRENDING" not in result.output.upper()
    assert ", 0 trending; " in cli("preview", "reader00@example.org").output


@pytest.mark.parametrize(("variable", "value", "error"), [
    ("DIGEST_FROM_ADDRESS", "bad address", "error: from_address 'bad address' is not a usable email address such as digest@example.org"),
    ("DIGEST_REPLY_TO", "nope", "error: reply_to 'nope' is not a usable email address"),
    ("DIGEST_BASE_URL", "not a url", "error: base_url 'not a url' is not an absolute http(s) URL"),
], ids=["from_address", "reply_to", "base_url"])
def test_preview_names_the_sender_setting_it_cannot_use(cli, home: Path, variable: str, value: str, error: str) -> None:
    """As `send` does: a bad From, Reply-To or base_url is the setting's error (preview said "cannot send to 'bad
    address'", as if the recipient were wrong, and for base_url spoke of like/dislike links)."""
    populate(home)
    result = cli("preview", "reader00@example.org", env={variable: value})
    assert result.exit_code == 1 and result.output.startswith(error), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_preview_unknown_subscriber_is_one_line_error(cli, home: Path) -> None:
    populate(home)
    result = cli("preview", "nobody@example.org")
    assert result.exit_code == 1 and result.output.startswith("error: no subscriber nobody@example.org")


# --- send and run -----------------------------------------------------------------------------------


def test_send_delivers_and_prints_the_summary(cli, home: Path, smtp_server) -> None:
    populate(home)
    result = cli("send", env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("sent 3, skipped 0, failed 0, deferred 0 in ")
    assert sorted(smtp_server.recipients()) == ["reader00@example.org", "reader01@example.org", "reader02@example.org"]
    again = cli("send", env=smtp_env(smtp_server))
    assert again.exit_code == 0 and "nothing due" in again.output and len(smtp_server.messages) == 3


@pytest.mark.parametrize("connections", [1, 4], ids=["inline", "multiplexed"])
def test_send_uses_bounce_address_as_the_envelope_sender(cli, home: Path, smtp_server, connections: int) -> None:
    """Bounce reports go to the envelope sender: bounce_address lets them reach a mailbox `digest bounces read` reads,
    apart from from_address, where readers' replies go."""
    populate(home)
    assert cli("send", env={**smtp_env(smtp_server, connections), "DIGEST_BOUNCE_ADDRESS": "bounces@digest-lab.net"}).exit_code == 0
    assert {m.mail_from for m in smtp_server.messages} == {"bounces@digest-lab.net"} and len(smtp_server.messages) == 3
    assert {m.parsed["From"].addresses[0].addr_spec for m in smtp_server.messages} == {"digest@example.org"}
    for command in ("config", "preview"):  # refused as from_address is, by the commands that check settings
        bad = cli(command, *(["reader00@example.org"] if command == "preview" else []), env={"DIGEST_BOUNCE_ADDRESS": "bounces at digest-lab.net"})
        assert bad.exit_code == 1 and "error: bounce_address 'bounces at digest-lab.net' is not a usable email address" in bad.output


def test_send_with_no_subscribers_says_so_and_how_to_add_one(cli, home: Path) -> None:
    result = cli("send")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "nothing due: no active subscribers (add one with `digest subscribers add EMAIL --interests TOPIC`)"


def test_send_with_only_paused_subscribers_says_who_is_there(cli, home: Path) -> None:
    emails = populate(home, subscribers=2)
    for address in emails:
        assert cli("subscribers", "pause", address).exit_code == 0
    result = cli("send")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "nothing due: no active subscribers (2 paused; `digest subscribers list` shows them)"


def test_run_with_no_sources_says_so_and_still_sends_what_is_stored(cli, home: Path, smtp_server) -> None:
    populate(home, subscribers=1)
    result = cli("run", env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "no sources to fetch: add one with `digest sources add` (the papers already stored are sent)"
    assert "sent 1, skipped 0" in result.output


def test_send_over_starttls_with_auth_and_a_password_file(cli, home: Path, smtp_tls_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(home)
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_server.cert_path))  # trust the test server's own certificate
    secret = tmp_path / "smtp-password"
    secret.write_text("secret-pass\n", encoding="utf-8")
    env = {**smtp_env(smtp_tls_server), "DIGEST_SMTP_SECURITY": "starttls", "DIGEST_SMTP_USER": "user", "DIGEST_SMTP_PASSWORD_FILE": str(secret)}
    result = cli("send", env=env)
    assert result.exit_code == 0, result.output
    assert "sent 3, skipped 0, failed 0, deferred 0 in " in result.output
    assert smtp_tls_server.logins == ["user"] and smtp_tls_server.connections == 1
    assert "secret-pass" not in result.output


def test_send_exits_non_zero_when_a_due_subscriber_is_not_served(cli, home: Path, smtp_server) -> None:
    populate(home)
    smtp_server.rcpt_replies["reader01@example.org"] = "550 5.1.1 no such user"
    result = cli("send", env=smtp_env(smtp_server))
    assert result.exit_code == 1
    assert "sent 2, skipped 0, failed 1, deferred 0 in " in result.output
    assert "1 due subscriber was not served" in result.output


def test_send_leaves_a_deferred_delivery_alone_until_its_retry_time_and_exits_zero(cli, home: Path, smtp_server) -> None:
    """A run every few minutes (cron, the daemon) does not knock on a deferring server each time: the delivery waits
    for its retry time, which the summary gives; that is not a failure of this run (the run that deferred it failed)."""
    emails = populate(home)
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        sub = get_subscriber(session, emails[1])
    [row] = ledger.open_deliveries(engine, [(sub.id, now.date().isoformat())], now, lambda s, e: "<d@example.org>").values()
    ledger.write(engine, lambda conn: ledger.record_deferred(conn, row.id, "451 4.7.1 greylisted", 3, now))
    engine.dispose()
    result = cli("send", env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    retry = (now + FIRST_WAIT).strftime("%H:%M UTC")
    assert "sent 2, skipped 0, failed 0, deferred 0 in " in result.output and f"; 1 deferred delivery waits for its retry at {retry}" in result.output
    assert sorted(smtp_server.recipients()) == [emails[0], emails[2]]
    again = cli("send", env=smtp_env(smtp_server))
    assert again.exit_code == 0 and again.output.startswith("nothing due now: the mail servers of the rest deferred them")
    only = cli("send", "--only", emails[1], env=smtp_env(smtp_server))
    assert only.exit_code == 0 and "sent 1," in only.output and smtp_server.recipients()[-1] == emails[1]


def test_send_only_and_dry_run(cli, home: Path, smtp_server) -> None:
    populate(home)
    dry = cli("send", "--dry-run", env=smtp_env(smtp_server))
    assert dry.exit_code == 0 and "dry run: would send 3, skip 0" in dry.output and smtp_server.messages == []
    only = cli("send", "--only", "reader02@example.org", env=smtp_env(smtp_server))
    assert only.exit_code == 0 and "sent 1," in only.output and smtp_server.recipients() == ["reader02@example.org"]


def test_send_bad_date_is_a_usage_error(cli, home: Path) -> None:
    result = cli("send", "--date", "2024-02-30")
    assert result.exit_code == 2 and "is not a date YYYY-MM-DD" in result.output


def test_send_refuses_an_edition_in_the_future_and_the_daily_edition_still_goes(cli, home: Path, smtp_server) -> None:
    """The walkthrough: `send --only bob --date 2027-01-05` said `sent 1`, and every daily send then said `nothing due
    for bob` until 2027. Now: one error line, exit 1, nothing recorded, and today's edition goes as usual."""
    populate(home, subscribers=1)
    address = "reader00@example.org"
    today = datetime.now(timezone.utc).date()
    future = (today + timedelta(days=2)).isoformat()
    for args in (("send", "--only", address, "--date", future), ("send", "--date", future)):
        refused = cli(*args, env=smtp_env(smtp_server))
        assert refused.exit_code == 1, refused.output
        assert refused.output.splitlines() == [f"error: edition {future} is in the future for {address} (their local date is {today.isoformat()}): sent now, "
                                               f"it would stop their daily editions until that day (send it on its day; `digest preview EMAIL --date {future}` "
                                               "shows it now without sending or recording anything)"]
    engine = open_engine(load_settings(home, env={}).database_url)
    assert ledger.deliveries_for(engine) == [] and smtp_server.messages == []
    engine.dispose()
    assert cli("preview", address, "--date", future).exit_code == 0  # records nothing: any date
    daily = cli("send", env=smtp_env(smtp_server))
    assert daily.exit_code == 0 and "sent 1," in daily.output, daily.output
    assert smtp_server.recipients() == [address]


def test_send_while_locked_says_so_and_exits_75(cli, home: Path, smtp_server) -> None:
    """Another run doing the work is not a failure: one line on stdout (cron mails nothing) and EX_TEMPFAIL, which
    the units count as success; the hint never says to delete the lock file (it is never stale)."""
    populate(home)
    settings = load_settings(home, env={})
    with run_lock(settings):
        result = cli("send", env=smtp_env(smtp_server))
    assert result.exit_code == 75, result.output
    assert result.stderr == "" and result.output.splitlines() == [
        f"another digest run holds the lock {settings.lock_path}: nothing done (it is in progress (cron, the timer, `digest serve` or a terminal) "
        "and the next run does what is left; the lock goes when that process ends, even by a crash, so never delete the file)"]
    assert smtp_server.messages == []


def test_send_while_locked_and_the_lock_file_deleted_is_still_locked(cli, home: Path, smtp_server) -> None:
    """An admin who took the lock file for a stale one and deleted it during a run let the next `send` lock a new file
    of the same name and run alongside."""
    populate(home)
    settings = load_settings(home, env={})
    with run_lock(settings):
        settings.lock_path.unlink()
        result = cli("send", env=smtp_env(smtp_server))
        assert result.exit_code == 75 and "another digest run holds the lock" in result.output, result.output
    assert smtp_server.messages == []
    after = cli("send", env=smtp_env(smtp_server))
    assert after.exit_code == 0 and "sent 3," in after.output, after.output


def test_run_as_in_the_crontab_while_locked_prints_nothing_cron_would_mail(home: Path) -> None:
    """deploy/crontab.example sends `digest run`'s stdout to /dev/null, and cron mails whatever is left: a run that
    meets the lock writes nothing to stderr."""
    populate(home, subscribers=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")} | {"DIGEST_HOME": str(home)}
    with run_lock(load_settings(home, env={})):
        done = subprocess.run([sys.executable, "-c", "from digest.cli import main; main()", "run"], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (75, ""), done
    assert "another digest run holds the lock" in done.stdout


def test_send_with_server_down_prints_summary_and_error(cli, home: Path) -> None:
    populate(home)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("send", env={"DIGEST_SMTP_HOST": "127.0.0.1", "DIGEST_SMTP_PORT": str(port), "DIGEST_SMTP_SECURITY": "none"})
    assert result.exit_code == 1
    assert f"error: cannot connect to 127.0.0.1:{port}: connection refused" in result.output


def test_run_fetches_every_source_then_sends(cli, home: Path, smtp_server, feed_server) -> None:
    populate(home)
    added = cli("sources", "add", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "cs.SD")
    assert added.exit_code == 0, added.output
    result = cli("run", env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("cs.SD: new:")
    assert "sent 3, skipped 0, failed 0, deferred 0 in " in result.output
    assert feed_server.requests_to("/files/real/arxiv-rss/rss-cs.SD")


def test_run_prints_each_sources_warnings_as_fetch_does(cli, home: Path, smtp_server, feed_server) -> None:
    # `digest run` (what cron and the timer call) printed "; 1 warning" alone: the 301's new URL was never shown.
    populate(home)
    assert cli("sources", "add", feed_server.url("moved/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "sd").exit_code == 0
    result = cli("run", env=smtp_env(smtp_server))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "sd: new: 23 entries, 23 new, 0 updated, 0 unchanged; 1 warning",
        f"  warning: moved permanently: the source now points at {feed_server.url('files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml')}",
    ]


def test_run_fetches_on_the_fetch_schedule_not_on_every_run(cli, home: Path, smtp_server, feed_server) -> None:
    populate(home)
    cli("sources", "add", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "cs.SD")
    assert cli("run", env=smtp_env(smtp_server)).exit_code == 0  # never fetched: a fetch is due
    fetched = len(feed_server.requests_to("/files/real/arxiv-rss/rss-cs.SD"))
    second = cli("run", env=smtp_env(smtp_server))  # every 15 minutes from cron: no fetch_cron time has passed since
    assert second.exit_code == 0 and second.output.startswith("fetch not due (next: ")
    assert len(feed_server.requests_to("/files/real/arxiv-rss/rss-cs.SD")) == fetched
    forced = cli("run", "--fetch", "always", env=smtp_env(smtp_server))
    assert forced.output.startswith("cs.SD: unchanged")
    assert len(feed_server.requests_to("/files/real/arxiv-rss/rss-cs.SD")) == fetched + 1
    never = cli("run", "--fetch", "never", env={**smtp_env(smtp_server), "DIGEST_FETCH_CRON": "* * * * *"})
    assert never.exit_code == 0 and len(feed_server.requests_to("/files/real/arxiv-rss/rss-cs.SD")) == fetched + 1


def test_run_sends_what_is_stored_when_the_fetch_itself_fails(cli, home: Path, smtp_server, feed_server) -> None:
    import sqlalchemy as sa

    populate(home)
    cli("sources", "add", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "cs.SD")
    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.begin() as conn:  # the source's state cannot be written: the fetch as a whole fails
        conn.execute(sa.text("CREATE TRIGGER source_read_only BEFORE UPDATE ON source BEGIN SELECT RAISE(ABORT, 'source rows are read-only'); END"))
    engine.dispose()
    result = cli("run", env=smtp_env(smtp_server))
    assert result.exit_code == 1  # the fetch failed: a monitor must see it...
    assert "sent 3, skipped 0, failed 0, deferred 0 in " in result.output  # ...but the day's email went out
    assert "error: the fetch failed, so only papers already stored were sent: " in result.output and "source rows are read-only" in result.output
    assert len(smtp_server.messages) == 3


def test_run_retries_a_failed_fetch_on_the_next_run_until_the_source_counts_as_broken(cli, home: Path, feed_server) -> None:
    import time_machine

    # A fixed start, far from the default fetch_cron (20:30 New York, Sunday to Thursday): from the real clock, a start
    # in the 45 minutes before 20:30 put a scheduled fetch time inside the runs below, which then fetched on schedule
    # (as they should), and the test failed from 00:45 to 01:30 UTC on those days.
    start = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)  # a Wednesday, 07:00 in New York
    with time_machine.travel(start - timedelta(minutes=1), tick=False):
        cli("sources", "add", feed_server.url("status/500"), "--name", "flaky")
    lines = []
    for minutes in (0, 5, 15, 30, 45):  # cron every 15 minutes, and one manual run 5 minutes after the first
        with time_machine.travel(start + timedelta(minutes=minutes), tick=True):
            result = cli("run")
            lines.append(result.output.splitlines()[0])
            assert result.stderr.startswith("flaky: error") == lines[-1].startswith("flaky: error")  # cron's MAILTO sees it
    assert lines[0].startswith("flaky: error")
    assert lines[1].startswith("fetch not due (next: ")  # a failed fetch is retried at most every 10 minutes...
    assert lines[2].startswith("flaky: error") and lines[3].startswith("flaky: error")  # ...by the next runs...
    assert lines[4].startswith("fetch not due (next: ")  # ...until 3 failures in a row: then `digest status --check` reports it


# --- real processes ---------------------------------------------------------------------------------


def digest_process(home: Path, server, *args: str, rate: float = 0, connections: int = 1) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(smtp_env(server, connections), DIGEST_HOME=str(home), DIGEST_SEND_RATE=str(rate))
    code = "import sys; from digest.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.mark.parametrize("connections", [1, 4], ids=["one-connection", "four-connections"])
def test_send_killed_mid_run_resumes_with_nobody_missing_and_at_most_one_duplicate(home: Path, smtp_server, connections: int) -> None:
    """At most one duplicate per connection: the message each had in flight (one connection: one message)."""
    emails = populate(home, subscribers=20 * connections)
    smtp_server.data_delay = 0.05  # a slow server: the kill lands in the middle of the edition
    first = digest_process(home, smtp_server, "send", connections=connections)
    wait_for(lambda: len(smtp_server.messages) >= 6 or first.poll() is not None)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = len(smtp_server.messages)
    assert killed_at < len(emails)
    time.sleep(0.2)  # let the server finish the DATA it was answering when the client died
    second = digest_process(home, smtp_server, "send", connections=connections)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, out + err
    received = Counter(smtp_server.recipients())
    assert set(received) == set(emails)  # nobody missing
    assert sum(received.values()) - len(emails) <= connections  # at most the message in flight twice (one per connection)
    engine = open_engine(load_settings(home, env={}).database_url)
    assert {d.state for d in ledger.deliveries_for(engine)} == {"sent"}


@pytest.mark.parametrize("connections", [1, 4], ids=["one-connection", "four-connections"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_send_interrupted_finishes_the_message_in_flight_and_leaves_the_rest_pending(home: Path, smtp_server, signum, connections: int) -> None:
    emails = populate(home, subscribers=20 * connections)
    smtp_server.data_delay = 0.05
    first = digest_process(home, smtp_server, "send", connections=connections)
    wait_for(lambda: len(smtp_server.messages) >= 3 or first.poll() is not None)
    first.send_signal(signum)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1, out + err
    assert "Traceback" not in err and "stopping after the message in flight" in err
    assert "not attempted" in out and "due subscribers were not served" in err
    engine = open_engine(load_settings(home, env={}).database_url)
    states = Counter(d.state for d in ledger.deliveries_for(engine))
    assert states["sending"] == 0 and states["sent"] == len(smtp_server.messages) < len(emails)  # what arrived is recorded
    second = digest_process(home, smtp_server, "send", connections=connections)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and "event=resume" not in err, out + err
    assert Counter(smtp_server.recipients()) == Counter(emails)  # each exactly once


def test_send_interrupted_twice_says_what_the_next_run_does(home: Path, smtp_server) -> None:
    """Ctrl-C twice stops at once, the message in flight unanswered: the line says that the next run sends the rest
    and that this message may arrive twice (it was a bare "error: interrupted"), and the next run does so."""
    emails = populate(home, subscribers=10)
    smtp_server.data_delay = 2.0  # the next message is still unanswered at the second signal
    first = digest_process(home, smtp_server, "send")
    wait_for(lambda: len(smtp_server.messages) >= 1 or first.poll() is not None)
    first.send_signal(signal.SIGINT)
    said = [first.stderr.readline()]  # the second signal after the first was handled, not folded into it
    assert "stopping after the message in flight" in said[0], said
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 1 and "Traceback" not in err, out + err
    assert err.splitlines()[-1] == ("error: interrupted while sending: the next run sends what was not recorded as sent (a message in flight "
                                    "may arrive twice)")
    # The letters claimed and never handed over went back to 'pending' before the exit: only the one in flight is
    # left 'sending' (all 9 were, and the next run logged each as a message that may have gone).
    engine = open_engine(load_settings(home, env={}).database_url)
    states = Counter(d.state for d in ledger.deliveries_for(engine))
    engine.dispose()
    assert states["sending"] == 1 and states["sent"] + states["sending"] + states["pending"] == len(emails), states
    second = digest_process(home, smtp_server, "send")
    smtp_server.data_delay = 0
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, out + err
    assert re.findall(r"event=resume deliveries=(\d+)", err) in ([], ["1"]), err  # the one in flight at most, not 9
    received = Counter(smtp_server.recipients())
    assert set(received) == set(emails) and sum(received.values()) - len(emails) <= 1


@pytest.mark.parametrize("connections", [1, 4], ids=["one-connection", "four-connections"])
def test_send_interrupted_says_the_next_run_sends_those_not_attempted(home: Path, smtp_server, connections: int) -> None:
    emails = populate(home, subscribers=20 * connections)
    smtp_server.data_delay = 0.05
    first = digest_process(home, smtp_server, "send", connections=connections)
    wait_for(lambda: len(smtp_server.messages) >= 3 or first.poll() is not None)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    left = len(emails) - len(smtp_server.messages)
    assert first.returncode == 1 and f"not attempted {left} in" in out, out + err
    assert err.splitlines()[-1] == (f"error: {left} due subscribers were not served (the next run sends those not attempted; "
                                    "`digest status` shows the ledger)")


def test_two_sends_started_together_never_both_send(home: Path, smtp_server) -> None:
    emails = populate(home, subscribers=10)
    smtp_server.data_delay = 0.3  # the first run holds the lock for seconds
    runs = [digest_process(home, smtp_server, "send") for _ in range(2)]
    outputs = [run.communicate(timeout=180) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 75], outputs
    [(out, err)] = [output for run, output in zip(runs, outputs) if run.returncode == 75]
    assert out.startswith("another digest run holds the lock") and err == ""
    assert Counter(smtp_server.recipients()) == Counter(emails)  # each exactly once


@pytest.mark.timeout(300)  # before fetch_deadline the trickling source held `digest run` until the test ended
def test_run_sends_the_days_email_whatever_hostile_sources_send(cli, home: Path, smtp_server, feed_server) -> None:
    """Issue 9 through `digest run` over HTTP and SMTP: sources sending the values that stopped all mail (upvotes
    10^30, a year-10000 date, wrong JSON types, JSON nested 100,000 deep, a 20-digit arXiv version, a 671-character
    link and a 308-character DOI) and one trickling a byte every 0.2 s. The good source and the hostile values are
    stored, every subscriber gets the day's email, and the run's lines and `status --check` say what failed."""
    emails = populate(home)
    hf = lambda **fields: json.dumps([{"paper": {"id": "2401.11111", "title": "Sparse autoencoders, hostile item", "summary": "About it.", **fields}},  # noqa: E731
                                      {"paper": {"id": "2401.22222", "title": "Speech recognition, plain item", "summary": "About it.", "upvotes": 2}}])
    long_link, long_doi = "https://example.org/articles/" + "a" * 642, "10.1234/" + "d" * 300
    documents = {
        "upvotes.json": hf(upvotes=10**30),
        "published.json": hf(publishedAt="9999-12-31T23:59:59-01:00"),
        "types.json": hf(authors=5, ai_summary=5, summary={"x": 1}, title=["x"]),
        "nested.json": "[" * 100_000 + "]" * 100_000,
        "version.xml": ('<rss version="2.0"><channel><title>cs.LG updates on arXiv.org</title><item><title>Robot learning, long version</title>'
                        "<link>https://arxiv.org/abs/2401.44444v99999999999999999999</link></item></channel></rss>"),
        "long.xml": ('<rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel><title>J</title>'
                     f"<item><title>Sparse autoencoders, long link</title><link>{long_link}</link></item>"
                     f"<item><title>Sparse autoencoders, long DOI</title><link>https://example.org/b</link><prism:doi>{long_doi}</prism:doi></item>"
                     "</channel></rss>"),
    }
    for name, body in documents.items():
        feed_server.documents[name] = body.encode()
        kind = "hf-daily" if name.endswith(".json") else "arxiv-rss" if name == "version.xml" else "feed"
        assert cli("sources", "add", feed_server.url(f"doc/{name}"), "--kind", kind, "--name", name.split(".")[0]).exit_code == 0
    assert cli("sources", "add", feed_server.url("trickle?every=0.2"), "--kind", "feed", "--name", "slow").exit_code == 0
    assert cli("sources", "add", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "cs.SD").exit_code == 0
    result = cli("run", env={**smtp_env(smtp_server), "DIGEST_FETCH_TIMEOUT": "2", "DIGEST_FETCH_DEADLINE": "2", "DIGEST_FETCH_RETRIES": "0"})
    # A source's error is that source's (its line here, `status --check` below); the run did its job: exit 0.
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "  warning: item 1: upvotes a number of more than 12 digits is out of range (0 to 2,147,483,647), dropped" in result.output.splitlines()
    lines = [line for line in result.output.splitlines() if not line.startswith("  ")]  # each source's line, not its warnings
    assert [line.split(":")[0] for line in lines[:8]] == ["upvotes", "published", "types", "nested", "version", "long", "slow", "cs.SD"]
    assert lines[3].startswith("nested: error: JSON nested too deeply") and lines[6].startswith("slow: error: ") and "fetch_deadline" in lines[6]
    assert all(": error: " not in line for i, line in enumerate(lines[:8]) if i not in (3, 6)), lines
    assert "sent 3, skipped 0, failed 0, deferred 0 in " in result.output
    assert sorted(smtp_server.recipients()) == sorted(emails)
    stored = {row["title"] for row in json.loads(cli("papers", "list", "--json", "--limit", "0").output)}
    assert {"Sparse autoencoders, hostile item", "Robot learning, long version", "Sparse autoencoders, long link", "Sparse autoencoders, long DOI"} <= stored
    check = cli("status", "--check")
    assert check.exit_code == 1
    assert sorted(line.split(":")[1].strip().split()[1] for line in check.output.splitlines()) == ["nested", "slow"], check.output
