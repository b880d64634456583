"""digest.store.candidates: the rows behind profiles, for one subscriber and for many at once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from digest.models import Paper
from digest.store import session_scope
from digest.store.candidates import profile_rows, profile_rows_for
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber, record_feedback

NOW = datetime(2025, 3, 10, 6, 0, tzinfo=timezone.utc)


def test_profile_rows_for_many_subscribers_matches_one_at_a_time(engine):
    with session_scope(engine) as session:
        papers = []
        for i in range(4):
            paper = Paper(key=f"arxiv:2401.0000{i}", ident=f"2401.0000{i}", arxiv_id=f"2401.0000{i}", title=f"Paper {i}", first_seen=NOW, last_seen=NOW)
            session.add(paper)
            papers.append(paper)
        session.flush()
        ada = add_subscriber(session, "ada@example.org", SubscriberInput(seed_papers=["2401.00000", "2401.00001"]), now=NOW)
        bob = add_subscriber(session, "bob@example.org", SubscriberInput(seed_papers=["2401.00000"]), now=NOW)
        add_subscriber(session, "cy@example.org", SubscriberInput(), now=NOW)
        record_feedback(session, ada, papers[2], 1, NOW)
        record_feedback(session, ada, papers[3], -1, NOW + timedelta(minutes=1))
        record_feedback(session, bob, papers[3], 1, NOW)
        session.delete(papers[1])  # a seed pruned from the store since it was named: skipped, not an error
    with session_scope(engine) as session:
        subs = [get_subscriber(session, e) for e in ("ada@example.org", "bob@example.org", "cy@example.org")]
        many = profile_rows_for(session, subs)
        titles = {s.email: tuple([p.title for p in getattr(many[s.id], f)] for f in ("seed_papers", "liked", "disliked")) for s in subs}
        assert titles == {
            "ada@example.org": (["Paper 0"], ["Paper 2"], ["Paper 3"]),
            "bob@example.org": (["Paper 0"], ["Paper 3"], []),
            "cy@example.org": ([], [], []),
        }
        for sub in subs:
            one = profile_rows(session, sub)
            assert [p.id for p in one.seed_papers + one.liked + one.disliked] == [p.id for p in many[sub.id].seed_papers + many[sub.id].liked + many[sub.id].disliked]


def test_profile_rows_sent_papers_without_a_vote_are_no_dislikes(engine):
    # Opened (or ignored) and never voted on: excluded from the next digests, never a training example.
    from digest.models import SentPaper
    from digest.rank import build_profile

    with session_scope(engine) as session:
        papers = [Paper(key=f"arxiv:2401.1000{i}", ident=f"2401.1000{i}", arxiv_id=f"2401.1000{i}", title=f"Paper {i}", first_seen=NOW, last_seen=NOW) for i in range(3)]
        session.add_all(papers)
        session.flush()
        ada = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["robots"]), now=NOW)
        session.add_all(SentPaper(subscriber_id=ada.id, paper_id=p.id, sent_at=NOW) for p in papers)
        record_feedback(session, ada, papers[0], 1, NOW)
    with session_scope(engine) as session:
        ada = get_subscriber(session, "ada@example.org")
        rows = profile_rows(session, ada)
        profile = build_profile(ada, rows.seed_papers, rows.liked, rows.disliked, rows.sent_ids)
    assert [p.title for p in rows.liked] == ["Paper 0"] and rows.disliked == []
    assert profile.disliked_texts == () and len(profile.exclude_paper_ids) == 3
