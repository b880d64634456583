"""Fuzz suite (issue 9): hostile RSS, Atom, arXiv listings and API answers, Hugging Face JSON and JSON Lines
(tests/fuzz_documents.py) through parse and store, on SQLite and PostgreSQL (skipped without it).

Asserted for every case: no exception but a DigestError escapes a parser, and none escapes the source boundary
(`digest fetch`, `digest import`); no parser trips on an entry ("unexpected ..." warnings or errors: a bug); a source
that errors leaves the store exactly as it was (nothing half-written); every stored row passes the validation rules.
A fixed seed (derandomize) and a bounded count keep this to about a minute; benchmarks/fuzz.py runs longer.
"""

from __future__ import annotations

import pytest
from fuzz_documents import DOCUMENTS, NOW, is_bug, parse_problems, snapshot, stored_problems
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from digest.config import load_settings
from digest.errors import DigestError
from digest.ingest import fetch_sources, import_file
from digest.sources.fetch import make_client
from digest.store import session_scope
from digest.store.sources import add_source

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
FETCHED = {"rss": "feed", "atom": "feed", "arxiv-listing": "arxiv-rss", "arxiv-api": "arxiv-api", "hf-daily": "hf-daily"}


@pytest.mark.parametrize("fmt", DOCUMENTS)
def test_parse_of_a_hostile_document_raises_nothing_but_a_digest_error(fmt):
    @settings(FUZZ, max_examples=80)
    @given(case=DOCUMENTS[fmt])
    def run(case):
        note(case.describe())
        assert parse_problems(case) == []

    run()


@pytest.fixture
def fuzz_settings(home):
    return load_settings(home, env={}).replace(fetch_timeout=5, fetch_retries=0)


@pytest.mark.parametrize("fmt", FETCHED)
def test_fetch_of_a_hostile_document_stays_inside_its_source(engine, feed_server, fuzz_settings, fmt):
    with session_scope(engine) as session:
        add_source(session, fmt, FETCHED[fmt], feed_server.url(f"doc/{fmt}"), NOW)
    client = make_client(fuzz_settings)

    @settings(FUZZ, max_examples=20)
    @given(case=DOCUMENTS[fmt])
    def run(case):
        note(case.describe())
        feed_server.documents[fmt] = case.data
        before = snapshot(engine)
        (report,) = fetch_sources(engine, fuzz_settings, NOW, only=fmt, client=client)  # nothing escapes
        note(f"{report.line()} {report.warnings[:3]}")
        event(f"fetch: {report.status}")
        assert not is_bug(report.error or "")
        if report.status == "error":
            assert snapshot(engine) == before  # nothing half-written
        else:
            assert stored_problems(engine, fmt) == []

    try:
        run()
    finally:
        client.close()


@pytest.mark.parametrize("fmt", DOCUMENTS)
def test_import_of_a_hostile_file_stays_inside_the_file(engine, tmp_path, fmt):
    @settings(FUZZ, max_examples=8)
    @given(case=DOCUMENTS[fmt], suffix=st.sampled_from(["", ".txt"]))
    def run(case, suffix):
        note(case.describe())
        path = tmp_path / (case.name + suffix)
        path.write_bytes(case.data)
        before = snapshot(engine)
        try:
            report = import_file(engine, path, NOW)
        except DigestError as exc:
            event("import: refused")
            assert not is_bug(str(exc))
            assert snapshot(engine) == before  # nothing half-written
            return
        event(f"import: {report.status}")
        assert stored_problems(engine, report.name) == []

    run()
