"""`digest subscribers ...` through the real CLI against a real SQLite file in DIGEST_HOME."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from digest.models import Delivery, Feedback, Paper, SentPaper, Subscriber

NOW = datetime(2025, 3, 10, 6, 0, tzinfo=timezone.utc)
README = Path(__file__).resolve().parent.parent / "README.md"


def add_papers(engine) -> dict[str, int]:
    """Papers inserted directly (the CLI only reads them): two arXiv papers and one imported one."""
    rows = [
        Paper(key="arxiv:2406.04093", ident="2406.04093v2", arxiv_id="2406.04093", version=2, title="Scaling sparse autoencoders"),
        Paper(key="arxiv:2401.00001", ident="2401.00001", arxiv_id="2401.00001", version=1, title="Linear probes"),
        Paper(key="title:an imported paper", ident="s001", title="An imported paper"),
    ]
    with Session(engine) as session:
        for paper in rows:
            paper.first_seen = paper.last_seen = NOW
            session.add(paper)
        session.commit()
        return {p.ident: p.id for p in rows}


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result) -> str:
    """The single error line of a failed command."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


ADA = ["subscribers", "add", "Ada@Example.org", "--name", "Ada", "--interests", "sparse autoencoders",
       "--interests", "mechanistic interpretability of language models", "--mute-term", "survey", "--mute-author", "J. Doe",
       "--category", "cs.LG", "--max-papers", "8", "--trending-weight", "0.3", "--send-at", "07:30", "--tz", "Europe/London",
       "--frequency", "weekly:mon"]


def test_add_creates_active_subscriber_shown_as_json(cli, sqlite_engine):
    assert ok(cli(*ADA)) == "added ada@example.org (active, weekly:mon at 07:30 Europe/London, 8 papers)\n"
    record = json.loads(ok(cli("subscribers", "show", "ADA@example.org", "--json")))
    assert list(record) == ["email", "name", "status", "interests", "seed_papers", "muted_terms", "muted_authors", "categories",
                            "max_papers", "trending_weight", "send_at", "tz", "frequency", "created_at", "confirmed_at",
                            "unsubscribed_at", "feedback"]
    assert record["interests"] == ["sparse autoencoders", "mechanistic interpretability of language models"]
    assert (record["muted_terms"], record["muted_authors"], record["categories"]) == (["survey"], ["J. Doe"], ["cs.LG"])
    assert (record["max_papers"], record["trending_weight"], record["frequency"], record["status"]) == (8, 0.3, "weekly:mon", "active")
    assert record["confirmed_at"] == record["created_at"] and record["unsubscribed_at"] is None
    assert record["feedback"] == {"liked": [], "disliked": []}


def test_show_prints_one_field_a_line(cli, sqlite_engine):
    ok(cli(*ADA))
    out = ok(cli("subscribers", "show", "ada@example.org"))
    assert "interests:       sparse autoencoders; mechanistic interpretability of language models\n" in out
    assert "unsubscribed_at: -\n" in out and "feedback:        liked -; disliked -\n" in out


def test_add_same_address_in_other_case_fails(cli, sqlite_engine):
    ok(cli("subscribers", "add", "ada@example.org"))
    assert failed(cli("subscribers", "add", "ADA@EXAMPLE.ORG")).startswith("error: ada@example.org is already subscribed")
    assert count(sqlite_engine, Subscriber) == 1


@pytest.mark.parametrize("address", ["not-an-email", "a@b", "ada@@example.org"], ids=["no-at-sign", "no-dot-in-domain", "two-at-signs"])
def test_add_invalid_address_fails_with_one_line(cli, sqlite_engine, address):
    assert failed(cli("subscribers", "add", address)).startswith(f"error: invalid email address {address!r}: ")
    assert count(sqlite_engine, Subscriber) == 0


def test_add_address_with_a_quote_names_the_quote(cli, sqlite_engine):
    # email-validator said "An email address must have an @-sign." of an address that has one.
    result = cli("subscribers", "add", 'a"b@example.org')
    assert result.exit_code == 1
    assert result.output == ("error: invalid email address 'a\"b@example.org': The email address contains a quote character (\"), "
                             "which is not allowed here. (give an address such as ada@example.org)\n")
    assert count(sqlite_engine, Subscriber) == 0


@pytest.mark.parametrize(
    "option, value, message",
    [("--tz", "Mars/Base", "tz: unknown time zone 'Mars/Base'"), ("--send-at", "7pm", "send_at: send time '7pm' is not HH:MM"),
     ("--frequency", "monthly", "frequency: 'monthly' is not daily or weekly:mon ... weekly:sun"), ("--max-papers", "500", "max_papers: 500 is not between 1 and 100"),
     ("--trending-weight", "2", "trending_weight: '2' is not between 0 and 1"), ("--seed-paper", "2499.99999", "seed_papers: no paper '2499.99999' in the store"),
     ("--frequency", "weekly", "frequency: 'weekly' names no day: weekly:mon ... weekly:sun (did you mean weekly:mon?)"),
     ("--frequency", "Weekly:Friday", "frequency: 'weekly:friday' is not daily or weekly:mon ... weekly:sun (did you mean weekly:fri?)")],
    ids=["bad-tz", "bad-send-at", "bad-frequency", "too-many-papers", "weight-above-one", "unknown-seed-paper", "weekly-without-a-day", "weekly-day-in-full"],
)
def test_add_bad_option_fails_and_writes_nothing(cli, sqlite_engine, option, value, message):
    assert failed(cli("subscribers", "add", "ada@example.org", option, value)).startswith(f"error: {message}")
    assert count(sqlite_engine, Subscriber) == 0


@pytest.mark.parametrize("value, meant", [("machine learning", "cs.LG or stat.ML"), ("cs.ML", "stat.ML"), ("robotics", "cs.RO")],
                         ids=["a-name", "wrong-archive", "lower-case-name"])
def test_add_unknown_category_fails_with_a_guess_and_writes_nothing(cli, sqlite_engine, value, meant):
    line = failed(cli("subscribers", "add", "ada@example.org", "--category", value))
    assert line.startswith(f"error: categories: {value!r} is not an arXiv category (did you mean {meant}")
    assert line.endswith("https://arxiv.org/category_taxonomy)")
    assert count(sqlite_engine, Subscriber) == 0


def test_add_category_is_kept_as_arxiv_writes_it(cli, sqlite_engine):
    ok(cli("subscribers", "add", "ada@example.org", "--category", "CS.lg", "--category", "eess"))
    assert json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))["categories"] == ["cs.LG", "eess"]


def test_add_resolves_seed_papers(cli, sqlite_engine):
    add_papers(sqlite_engine)
    ok(cli("subscribers", "add", "ada@example.org", "--seed-paper", "arXiv:2406.04093", "--seed-paper", "s001"))
    assert json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))["seed_papers"] == ["2406.04093", "s001"]


def test_list_filters_by_status_and_prints_json(cli, sqlite_engine):
    ok(cli(*ADA))
    ok(cli("subscribers", "add", "bob@example.org"))
    ok(cli("subscribers", "pause", "bob@example.org"))
    out = ok(cli("subscribers", "list"))
    assert re.search(r"^ada@example.org +active +weekly:mon +07:30 Europe/London +sparse autoencoders; mech", out, re.M)
    assert re.search(r"^bob@example.org +paused +daily +07:00 UTC +-$", out, re.M)
    assert out.endswith("2 subscribers\n")
    assert [r["email"] for r in json.loads(ok(cli("subscribers", "list", "--status", "paused", "--json")))] == ["bob@example.org"]
    assert ok(cli("subscribers", "list", "--status", "bounced")) == "0 subscribers\n"


def test_update_replaces_given_options_and_edits_interests(cli, sqlite_engine):
    ok(cli(*ADA))
    out = ok(cli("subscribers", "update", "ada@example.org", "--max-papers", "5", "--tz", "Asia/Tokyo",
                 "--add-interests", "steering vectors", "--remove-interests", "sparse autoencoders", "--category", "cs.CL"))
    assert out == "updated ada@example.org (active, weekly:mon at 07:30 Asia/Tokyo, 5 papers)\n"
    record = json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))
    assert record["interests"] == ["mechanistic interpretability of language models", "steering vectors"]
    assert (record["categories"], record["muted_terms"], record["name"]) == (["cs.CL"], ["survey"], "Ada")


def test_update_that_changes_no_ranking_field_leaves_profile_changed_at(cli, sqlite_engine):
    """`subscribers update` stamped profile_changed_at on every call, even one that changed nothing (a prune then read
    the seed list again); a new send time is saved without moving it, a new interest moves it."""
    import time_machine

    def stamp() -> datetime:
        with Session(sqlite_engine) as session:
            sub = session.execute(sa.select(Subscriber)).scalar_one()
            return sub.profile_changed_at.replace(tzinfo=timezone.utc)

    with time_machine.travel(NOW, tick=False):
        ok(cli(*ADA))
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        ok(cli("subscribers", "update", "ada@example.org", "--interests", "sparse autoencoders", "--interests",
               "mechanistic interpretability of language models", "--max-papers", "8", "--add-interests", "SPARSE AUTOENCODERS"))
        assert stamp() == NOW
        assert ok(cli("subscribers", "update", "ada@example.org", "--send-at", "09:00", "--name", "Ada L.")).startswith(
            "updated ada@example.org (active, weekly:mon at 09:00 Europe/London")
        assert stamp() == NOW
        ok(cli("subscribers", "update", "ada@example.org", "--add-interests", "steering vectors"))
        assert stamp() == NOW + timedelta(days=1)


def test_interests_have_the_stores_limits(cli, sqlite_engine):
    """One rule in the store for the CLI and the web pages: at most 20 interests of at most 200 characters."""
    assert "200 characters" in failed(cli("subscribers", "add", "ada@example.org", "--interests", "x" * 201))
    many = [arg for n in range(21) for arg in ("--interests", f"topic {n}")]
    assert "at most 20" in failed(cli("subscribers", "add", "ada@example.org", *many))
    assert count(sqlite_engine, Subscriber) == 0
    ok(cli("subscribers", "add", "ada@example.org", *many[:40]))
    assert "at most 20" in failed(cli("subscribers", "update", "ada@example.org", "--add-interests", "one more"))


def test_update_unknown_subscriber_fails(cli, sqlite_engine):
    assert failed(cli("subscribers", "update", "nobody@example.org", "--max-papers", "5")).startswith("error: no subscriber nobody@example.org")


def test_pause_and_resume_change_status(cli, sqlite_engine):
    ok(cli(*ADA))
    assert ok(cli("subscribers", "pause", "ada@example.org")) == "ada@example.org is now paused\n"
    assert ok(cli("subscribers", "resume", "ada@example.org")) == "ada@example.org is now active\n"
    assert json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))["status"] == "active"


def test_remove_asks_first_and_deletes_feedback_and_deliveries(cli, sqlite_engine):
    ids = add_papers(sqlite_engine)
    ok(cli(*ADA))
    ok(cli("subscribers", "feedback", "ada@example.org", "--like", "2406.04093"))
    with Session(sqlite_engine) as session:
        sub_id = session.execute(sa.select(Subscriber.id)).scalar_one()
        delivery = Delivery(subscriber_id=sub_id, edition="2025-03-10", state="sent", papers=[ids["2406.04093v2"]], created_at=NOW)
        session.add(delivery)
        session.flush()
        session.add(SentPaper(subscriber_id=sub_id, paper_id=ids["2406.04093v2"], delivery_id=delivery.id, sent_at=NOW))
        session.commit()
    declined = cli("subscribers", "remove", "ada@example.org", input="n\n")
    assert declined.exit_code == 1 and count(sqlite_engine, Subscriber) == 1
    assert "error: ada@example.org not removed (answer y, or pass --yes)" in declined.output.splitlines()
    unasked = cli("subscribers", "remove", "ada@example.org")  # no terminal to answer (cron, a script): click said "Aborted!"
    assert unasked.exit_code == 1 and count(sqlite_engine, Subscriber) == 1
    assert "error: ada@example.org not removed (answer y, or pass --yes)" in unasked.output.splitlines() and "Aborted" not in unasked.output
    assert ok(cli("subscribers", "remove", "ada@example.org", "--yes")) == "removed ada@example.org and their data\n"
    assert [count(sqlite_engine, t) for t in (Subscriber, Feedback, Delivery, SentPaper, Paper)] == [0, 0, 0, 0, 3]


def test_feedback_records_likes_and_dislikes(cli, sqlite_engine):
    add_papers(sqlite_engine)
    ok(cli(*ADA))
    out = ok(cli("subscribers", "feedback", "ada@example.org", "--like", "2406.04093v1", "--like", "s001", "--dislike", "2401.00001"))
    assert out == "ada@example.org: 2 liked, 1 disliked\n"
    ok(cli("subscribers", "feedback", "ada@example.org", "--dislike", "s001", "--clear", "2401.00001"))
    feedback = json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))["feedback"]
    assert feedback == {"liked": ["2406.04093v2"], "disliked": ["s001"]}
    assert count(sqlite_engine, Feedback) == 2


def test_feedback_unknown_paper_fails_and_writes_nothing(cli, sqlite_engine):
    add_papers(sqlite_engine)
    ok(cli(*ADA))
    line = failed(cli("subscribers", "feedback", "ada@example.org", "--like", "2406.04093", "--like", "2499.99999"))
    assert line.startswith("error: no paper '2499.99999' in the store")
    assert count(sqlite_engine, Feedback) == 0


@pytest.mark.parametrize("args,message", [
    (("--like", "2406.04093", "--dislike", "2406.04093"), "error: 2406.04093 is given to both --like and --dislike"),
    (("--like", "s001", "--dislike", "2401.00001", "--clear", "s001"), "error: s001 is given to both --like and --clear"),
    (("--dislike", "2406.04093v1", "--clear", "arXiv:2406.04093"), "error: arXiv:2406.04093 is given to both --dislike and --clear"),
], ids=["like-and-dislike", "like-and-clear", "two-names-of-one-paper"])
def test_feedback_one_paper_under_two_options_fails_and_writes_nothing(cli, sqlite_engine, args, message):
    # `--like X --dislike X` recorded a dislike, exit 0: the last option won without a word.
    add_papers(sqlite_engine)
    ok(cli(*ADA))
    ok(cli("subscribers", "feedback", "ada@example.org", "--like", "2401.00001"))
    line = failed(cli("subscribers", "feedback", "ada@example.org", *args))
    assert line == f"{message} (give each paper to one of them)"
    feedback = json.loads(ok(cli("subscribers", "show", "ada@example.org", "--json")))["feedback"]
    assert feedback == {"liked": ["2401.00001"], "disliked": []}


def test_import_then_export_round_trips_byte_identical(cli, sqlite_engine, tmp_path):
    add_papers(sqlite_engine)
    people = tmp_path / "people.csv"
    people.write_text(
        "email,name,interests,seed_papers,muted_terms,muted_authors,categories,max_papers,trending_weight,send_at,tz,frequency,status\n"
        'ada@example.org,"Lovelace, Ada",sparse autoencoders;probing,2406.04093;s001,survey,J. Doe,cs.LG,8,0.3,07:30,Europe/London,daily,active\n'
        'bob@example.org,Bob,"steering, activation",,,,,10,0.2,07:00,UTC,weekly:fri,paused\n',
        encoding="utf-8",
    )
    assert ok(cli("subscribers", "import", str(people))) == f"imported {people}: 2 added, 0 updated, 0 unchanged\n"
    exported = tmp_path / "out.csv"
    assert ok(cli("subscribers", "export", str(exported))) == f"exported 2 subscribers to {exported}\n"
    assert exported.read_bytes() == people.read_bytes()
    assert ok(cli("subscribers", "export", "-")) == people.read_text(encoding="utf-8")
    assert ok(cli("subscribers", "import", str(exported))) == f"imported {exported}: 0 added, 0 updated, 2 unchanged\n"


def test_import_bad_line_names_line_and_column_and_writes_nothing(cli, sqlite_engine, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email,name,tz\nada@example.org,Ada,UTC\nbob@example.org,Bob,Mars/Base\ncarol@example.org,Carol,UTC\n", encoding="utf-8")
    line = failed(cli("subscribers", "import", str(people)))
    assert line.startswith(f"error: {people} line 3, column tz: unknown time zone 'Mars/Base'")
    assert count(sqlite_engine, Subscriber) == 0


def test_import_missing_file_fails_with_one_line(cli, sqlite_engine, tmp_path):
    assert "No such file" in failed(cli("subscribers", "import", str(tmp_path / "absent.csv")))


def test_every_subscribers_command_has_help_and_is_in_readme(cli):
    from digest.cli.subscribers import subscribers

    readme = README.read_text(encoding="utf-8")
    for name, command in subscribers.commands.items():
        assert command.help, name
        assert f"digest subscribers {name}" in readme, name
