"""The web front as a Flask app: `create_app(settings, engine)` wires the public pages (digest.web.front), the
reader's pages (digest.web.pages), the defences (digest.web.security), the shared context (digest.web.context)
and the error pages.

It must not render digests or open the database itself: the pages read and write through digest.store, order
papers with digest.rank's trending score, and mail leaves through the configured transport (digest.delivery).
No page ever shows a traceback or says whether an address is subscribed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from flask import Flask, request, url_for
from itsdangerous import SignatureExpired
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .. import templates_dir
from ..config import Settings
from ..errors import DigestError, NotFoundError, StoreError, TokenError
from ..log import log_event
from ..tokens import check_keys, verifying_keys
from .cache import Recent
from .context import LinkGone, WebContext, message_page
from .fast import FrontFromMemory
from .front import front
from .pages import pages
from .security import Csrf, csp_nonce, is_https, limit_storage, make_limiter, set_security_headers

log = logging.getLogger("digest.web")
MAX_FORM_BYTES = 64 * 1024


def create_app(settings: Settings, engine: Any, *, transport: Any = None, now: Callable[[], datetime] | None = None, version_ttl: float = 1.0) -> Flask:
    """The WSGI app of the web front; ConfigError when secret_key is missing or too short. The public pages look
    for new papers at most every `version_ttl` seconds (tests: 0, every request)."""
    keys = verifying_keys(settings.secret_key, settings.previous_secret_keys)
    check_keys(keys)  # fails now, not on the first request, if a key is missing or too short
    app = Flask("digest.web", template_folder=str(templates_dir()), static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_FORM_BYTES, TEMPLATES_AUTO_RELOAD=False)
    # Flask autoescapes every .html template (all the pages); the .txt email body is plain text.
    app.jinja_env.globals.update(csp_nonce=csp_nonce, site_name=settings.from_name or "Paper digest")
    csrf = Csrf(keys, settings.base_url)
    csrf.install(app)
    storage, named_by = limit_storage(settings)
    ctx = app.extensions["digest"] = WebContext(
        settings=settings,
        engine=engine,
        now=now or (lambda: datetime.now(timezone.utc)),
        limiter=make_limiter(storage, settings.subscribe_limit, settings.subscribe_window, setting=named_by),
        csrf=csrf,
        transport=transport,
        version=Recent(version_ttl),
    )
    app.register_blueprint(front)
    app.wsgi_app = FrontFromMemory(app.wsgi_app, ctx)  # type: ignore[method-assign]  # `/` once rendered: digest.web.fast
    app.register_blueprint(pages)
    https = is_https(settings.base_url)
    app.after_request(lambda response: set_security_headers(response, https))
    _install_error_pages(app)
    return app


def logged_path() -> str:
    """This request's path for a log line, its link's token replaced by <token>: a token acts for its subscriber (most
    never expire), and logs are kept, shipped and read by more people than the links' owners."""
    token = (request.view_args or {}).get("token")
    return request.path.replace(token, "<token>") if token else request.path


def _install_error_pages(app: Flask) -> None:
    @app.errorhandler(TokenError)
    def token_error(exc: TokenError):
        # Tampered (bad signature) -> 400; expired or no longer usable -> 410 Gone.
        gone = isinstance(exc, LinkGone) or isinstance(exc.__context__, SignatureExpired)
        message = exc.args[0] if exc.args else "this link is not valid"
        return _link_page(f"{message[:1].upper()}{message[1:]}.", 410 if gone else 400)

    @app.errorhandler(NotFoundError)
    def not_found(exc: NotFoundError):
        return _link_page("This link is no longer valid.", 410)

    def _link_page(message: str, status: int):
        """A link that does not work, and how to get one that does: a confirmation link from the subscribe page,
        the others from the newest email."""
        if request.path.startswith("/confirm/"):
            return message_page("This link does not work", message, status, hint="subscribe again for a new confirmation link",
                                link=(url_for("pages.subscribe"), "Subscribe again"))
        return message_page("This link does not work", message, status, hint="use the links in your latest digest email")

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError):
        log_event(log, "request-failed", logging.ERROR, method=request.method, path=logged_path(), error=str(exc))
        return message_page("Please try again", "The service is busy or briefly unavailable. Please try again in a minute.", 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        title, words = ERROR_WORDS.get(code, ERROR_WORDS[500] if code >= 500 else (exc.name, ERROR_WORDS[400][1]))
        # A page's own description (the rate limit's, a form's) says more than ours; werkzeug's generic one never does.
        own = exc.description if "description" in vars(exc) and exc.description else words
        page = message_page(title, own, code, link=(url_for("front.index"), "Go to the front page") if code in FRONT_LINK else None)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            return (*page, {"Allow": ", ".join(exc.valid_methods)})
        retry_after = getattr(exc, "retry_after", None)  # TooManyRequests, ServiceUnavailable
        if retry_after:
            return (*page, {"Retry-After": str(retry_after)})
        return page

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, DigestError):
            log_event(log, "request-failed", logging.ERROR, method=request.method, path=logged_path(), error=str(exc))
        else:
            log_event(log, "request-crashed", logging.ERROR, method=request.method, path=logged_path(), exc_info=exc)
        return message_page(*ERROR_WORDS[500], 500, link=(url_for("front.index"), "Go to the front page"))


# digest's words for the errors werkzeug would word ("The requested URL was not found on the server. If you entered the
# URL manually..."): what happened and what to do, for a reader who came from an email. A 404 is mostly a link cut short
# by a mail program or from an old email (a token that is merely old answers 410 with its own page).
ERROR_WORDS = {
    400: ("Please try again", "This request could not be understood. Go back, reload the page and try again."),
    404: ("Page not found", "This page does not exist. If a link in an email brought you here, it may have been cut short or "
                            "be from an old email: the links in your newest email work."),
    405: ("Not allowed", "This page cannot be used that way. Open it from a link, or start from the front page."),
    413: ("Too much data", "The form sent more than this site takes. Shorten what you typed and try again."),
    429: ("Too many attempts", "Too many attempts. Please wait a few minutes and try again."),
    500: ("Something went wrong", "Something went wrong on our side. Please try again later."),
}
FRONT_LINK = (404, 405, 500)  # where the front page is the way on (a form's error says what to correct instead)
