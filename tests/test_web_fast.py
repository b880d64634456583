"""`GET /` from memory (digest.web.fast) in a real `digest web` process: the first request renders through Flask,
the next ones skip it, and a browser cannot tell the two apart (body, headers, ETag/304, CSRF cookie and token)."""

from __future__ import annotations

import re

import httpx
from flask import request_started
from web_server import CSRF_INPUT, digest_web, serve_web

NONCE = re.compile(r"nonce-[A-Za-z0-9_-]+|nonce=\"[A-Za-z0-9_-]+\"")
VARYING = ("date", "etag", "set-cookie", "content-security-policy")  # per request or per visitor by design


def same_page(text: str) -> str:
    return CSRF_INPUT.sub("csrf", NONCE.sub("nonce", text))


def test_the_front_page_from_memory_answers_as_flask_does(home):
    with digest_web(home, args=("--threads", "1")) as (url, _):
        rendered = httpx.get(f"{url}/", timeout=10)  # nothing in memory yet: Flask renders it
        remembered = httpx.get(f"{url}/", timeout=10)
        assert rendered.status_code == remembered.status_code == 200
        assert same_page(rendered.text) == same_page(remembered.text)
        assert rendered.text != remembered.text  # a new nonce and a new visitor's token
        assert [(k, v) for k, v in rendered.headers.items() if k not in VARYING] == \
            [(k, v) for k, v in remembered.headers.items() if k not in VARYING]
        assert list(rendered.headers) == list(remembered.headers)  # the same headers in the same order
        assert NONCE.sub("", rendered.headers["content-security-policy"]) == NONCE.sub("", remembered.headers["content-security-policy"])
        cookie = remembered.cookies["digest_csrf"]
        assert remembered.headers["set-cookie"] == f"digest_csrf={cookie}; HttpOnly; Path=/; SameSite=Lax"
        nonce = re.search(r"nonce-([A-Za-z0-9_-]+)", remembered.headers["content-security-policy"]).group(1)
        assert f'nonce="{nonce}"' in remembered.text  # the inline style and script carry this response's nonce

        with httpx.Client(base_url=url, timeout=10) as browser:  # a returning visitor: its cookie, its ETag
            browser.cookies.set("digest_csrf", cookie)
            again = browser.get("/")
            assert "set-cookie" not in again.headers and again.headers["etag"] == remembered.headers["etag"]
            assert again.headers["cache-control"] == "private, no-cache" and again.headers["vary"] == "Cookie"
            token = CSRF_INPUT.search(again.text).group(1)
            cached = browser.get("/", headers={"If-None-Match": again.headers["etag"]})
            assert cached.status_code == 304 and cached.content == b"" and "set-cookie" not in cached.headers
            assert cached.headers["x-frame-options"] == "DENY" and "nonce-" in cached.headers["content-security-policy"]
            other = httpx.get(f"{url}/", headers={"If-None-Match": again.headers["etag"]}, timeout=10)
            assert other.status_code == 200  # another browser's ETag: a new visitor gets its own page and cookie
            # The form's token from memory is one the subscribe form accepts (CSRF checks pass: a page, not a 400).
            posted = browser.post("/subscribe", data={"csrf_token": token, "email": "ada@example.org", "interests": "sparse autoencoders"})
            assert posted.status_code == 303 and posted.headers["Location"] == "/subscribe/sent", posted.text[:300]  # taken
            refused = browser.post("/subscribe", data={"csrf_token": token[:-2] + "xx", "email": "ada@example.org", "interests": "x"})
            assert refused.status_code == 400


def test_only_get_of_the_front_page_is_answered_from_memory(home):
    with digest_web(home) as (url, _):
        assert httpx.get(f"{url}/", timeout=10).status_code == 200  # rendered and kept
        assert httpx.head(f"{url}/", timeout=10).status_code == 200
        assert httpx.post(f"{url}/", timeout=10).status_code == 405  # Flask's answer, with its Allow header
        assert httpx.get(f"{url}/?page=2", timeout=10).status_code == 200
        assert httpx.get(f"{url}/feed.xml", timeout=10).headers["content-type"].startswith("application/atom+xml")


def test_flask_renders_the_front_page_once_then_memory_answers(home):
    seen: list[str] = []

    def count(sender, **extra):  # Flask's signal: a request reached the Flask app
        from flask import request

        seen.append(f"{request.method} {request.full_path.rstrip('?')}")

    with serve_web(home) as site:
        request_started.connect(count)
        try:
            assert [site.new_client().get("/").status_code for _ in range(3)] == [200] * 3
            assert site.new_client().get("/feed.xml").status_code == 200
        finally:
            request_started.disconnect(count)
    assert seen == ["GET /", "GET /feed.xml"]
