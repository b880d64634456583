"""The reader's pages: subscribe (double opt-in, also the front page's Subscribe box), confirm, one-click
unsubscribe, preferences, feedback, a sent edition on the web (/edition/<token>), healthz.

Each request uses one digest.store.session_scope; subscribers change only through digest.store.subscribers.
Pages never say whether an address is subscribed, and every form but the RFC 8058 one-click POST checks CSRF.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import TooManyRequests

from ..delivery.message import check_address
from ..editions import WEEKDAYS
from ..errors import DigestError, InputError, TokenError
from ..log import log_event
from ..models import Subscriber
from ..render import long_date
from ..store import check_database, schema_is_current, session_scope
from ..store.caps import release_confirmation
from ..store.days import papers_by_ids
from ..store.editions import sent_edition
from ..store.papers import get_paper, get_paper_by_ident
from ..store.subscribers import (
    LIST_SEPARATOR,
    FieldError,
    SubscriberInput,
    check_seed_papers,
    confirm_subscriber,
    feedback_value,
    find_subscriber_by_id,
    get_subscriber,
    normalise_ident,
    pending_profile,
    record_feedback,
    remove_feedback,
    remove_subscriber,
    request_confirmation,
    set_status,
    spend_token,
    token_used,
    update_subscriber,
    validate_email,
    validate_profile,
)
from ..tokens import VOTES, Claim, make_token
from .context import LinkGone, message_page, web_context
from .front import paper_card
from .mail import compose_confirmation
from .security import StorageDown, client_key

log = logging.getLogger("digest.web")
pages = Blueprint("pages", __name__)
HONEYPOT = "website"  # hidden from people by CSS; bots fill every field
FREQUENCIES = ("daily", *(f"weekly:{d}" for d in WEEKDAYS))
PROFILE_FIELDS = ("name", "interests", "seed_papers", "muted_terms", "muted_authors", "categories", "max_papers", "send_at", "tz",
                  "frequency", "trending_weight")
LINE_FIELDS = ("interests", "seed_papers", "muted_terms", "muted_authors", "categories")  # textareas, one entry per line
SEED_FIELD = "seed"  # the front page's "More like this" ticks, one value per paper
MAX_SEEDS = 20
MAX_TICKS_SHOWN = 100  # ticks shown again on an error page (the front page shows 60 papers; a form may send anything)
# Every int in a URL path is bounded by this: SQLite's INTEGER is signed 64-bit, and a larger number reached SQL as an
# OverflowError (a 500). Beyond it the route does not match: the 404 of any malformed link.
MAX_ROW_ID = 2**63 - 1


# C0 and C1 control characters, but the tab and line breaks a textarea sends. PostgreSQL refuses NUL in text (the
# form answered "Please try again" for ever; SQLite stored it), and no name, interest or paper id holds an escape.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
CONTROL_REASON = "this holds an invisible control character (such as NUL), which cannot be kept: remove it"


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    return tuple(sorted(z for z in available_timezones() if not z.startswith(("posix/", "right/")) and z != "localtime"))


def _refuse_control_characters(fields: dict[str, str]) -> None:
    """FieldError for the first form field (form name -> profile field) whose value holds a control character."""
    for name, field in fields.items():
        if any(CONTROL_CHARACTER.search(value) for value in request.form.getlist(name)):
            raise FieldError(field, CONTROL_REASON)


def _lines(field: str, text: str) -> list[str]:
    """One entry per line of a textarea (commas stay: an interest may be a sentence). The store would split an entry
    at ';' (the CLI's and CSV's separator, which also joins the lists when they are listed or exported), so a line
    holding one is refused rather than quietly split into entries the reader did not write."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if any(LIST_SEPARATOR in line for line in lines):
        raise FieldError(field, "Put each one on its own line: a ';' cannot be part of one.")
    return lines


def _load(session: Any, action: str, token: str) -> tuple[Claim, Subscriber]:
    """The claim and its subscriber; TokenError (400/410) when the link is bad, stale or its subscriber gone."""
    claim = web_context().read_claim(action, token)
    sub = find_subscriber_by_id(session, claim.subscriber_id)
    # A bumped token_version revokes old links; a missing row means the subscriber deleted their data.
    if sub is None or sub.token_version != claim.version:
        raise LinkGone("this link is no longer valid (a newer email replaced it, or the subscription was removed)")
    return claim, sub


# The store's reasons name the value for an operator ("send time '7pm' is not HH:MM"); a reader gets what to enter.
READER_ERRORS = {
    "max_papers": "Enter a number of papers from 1 to 100, such as 10.",
    "trending_weight": "Enter a number from 0 to 1, such as 0.2.",
    "send_at": "Enter a time such as 07:00.",
    "tz": "Choose a time zone from the list, such as Europe/London.",
    "frequency": "Choose every day or one day of the week.",
}
EXPIRED_FORM = "This form had expired (or was opened in another browser), so {what}. Check it and press the button again."
NO_COOKIE_FORM = ("Your browser did not send back the cookie this form needs, so {what}. Please allow cookies for this site (it "
                  "keeps only this one, for the form), then press the button again.")


def _stale_form(what: str) -> str:
    """What a page shown again after a form's CSRF check failed says: the cookie did not come (a browser that keeps no
    cookies, which "press again" alone would send round for ever), or the form was old or from another browser."""
    return (EXPIRED_FORM if request.cookies.get(web_context().csrf.cookie_name) else NO_COOKIE_FORM).format(what=what)


def _reader_error(exc: FieldError) -> str:
    """A field's error as a sentence for the reader: what to enter, or the store's reason made one (a category's guess
    kept, the operator's hints left out)."""
    if exc.field in READER_ERRORS:
        return READER_ERRORS[exc.field]
    reason = exc.reason
    if exc.field == "seed_papers":
        reason = reason.replace(" in the store", " is known here: give the arXiv id or DOI of a paper on this site")
    elif exc.field == "categories" and exc.hint:
        reason = f"{reason}: {exc.hint}"
    return f"{reason[:1].upper()}{reason[1:]}" + ("" if reason.endswith(".") else ".")


@pages.route("/subscribe", methods=["GET", "POST"])
def subscribe():
    if request.method != "POST":  # GET or HEAD
        return render_template("page_subscribe.html", form={}, errors={}, zones=zone_names())
    ctx = web_context()
    client, moment = client_key(request.remote_addr), ctx.now().timestamp()
    try:
        if not ctx.limiter.allow(client, moment):
            raise TooManyRequests("Too many attempts from your address. Please wait a few minutes and try again.", retry_after=ctx.limiter.retry_after(client, moment))
    except StorageDown as exc:  # the shared count cannot be kept: no form is taken rather than an unlimited one
        log.error("subscribe: %s", exc)
        return message_page("Please try again later", "We cannot take subscriptions just now. Please try again in a few minutes.", 503)
    if not ctx.csrf.valid():  # an old tab or a lost cookie: the form again as typed, with a fresh token
        return _subscribe_form(notice=_stale_form("nothing was sent"))
    form = request.form
    if form.get(HONEYPOT):
        log_event(log, "subscribe-ignored", reason="honeypot filled", note="nothing sent")
        return _sent()
    seeds = _ticked_seeds()
    try:
        _refuse_control_characters({"email": "email", "interests": "interests", "send_at": "send_at", "tz": "tz", SEED_FIELD: "seed_papers"})
        address = check_address(validate_email(form.get("email", "")))  # the envelope is plain ASCII
        fields = validate_profile(SubscriberInput(interests=_lines("interests", form.get("interests", "")), seed_papers=seeds or None,
                                                  send_at=form.get("send_at") or None, tz=form.get("tz") or None))
        if len(seeds) > MAX_SEEDS:
            raise FieldError("seed_papers", f"Tick at most {MAX_SEEDS} papers; {len(seeds)} are ticked. Untick some above.")
        if fields.seed_papers:
            with session_scope(ctx.engine) as session:  # each ticked paper must be stored (a form can send anything)
                fields = replace(fields, seed_papers=check_seed_papers(session, fields.seed_papers))
    except FieldError as exc:
        return _subscribe_form({exc.field: _reader_error(exc)})
    except InputError:
        return _subscribe_form({"email": "Please enter a valid email address, such as ada@example.org."})
    now, settings = ctx.now(), ctx.settings
    # Capped per inbox, whoever asks (victim+1@, victim+2@... are one; digest.store.caps, in the database every
    # process shares): many clients must not turn the form into a mail bomb.
    with session_scope(ctx.engine) as session:
        asked = request_confirmation(session, address, fields, now, interval=settings.confirm_interval, daily_limit=settings.confirm_daily_limit)
        if asked is None:
            log_event(log, "subscribe-capped", reason="this address's inbox had its confirmation emails for now", note="nothing sent")
            return _sent()
        sub = asked.subscriber
        # The link names this request: it applies this form's profile, never an earlier or a later one.
        link = make_token(settings.secret_key, "confirm", sub.id, sub.token_version, request=asked.request)
        message = compose_confirmation(settings, sub.email, link, now)
    try:
        ctx.send(message, address)
    except Exception as exc:
        with session_scope(ctx.engine) as session:  # not sent: the slot is the reader's again
            release_confirmation(session, address, now)
        if not isinstance(exc, DigestError):
            raise
        log_event(log, "confirmation-failed", logging.ERROR, error=str(exc), note="nothing sent")
        return message_page("Please try again later", "We could not send the confirmation email just now. Please try again in a few minutes.", 503)
    return _sent()


def _sent():
    """Post/Redirect/Get: a form that worked answers with a 303 to a page of its own, so Back to it or a reload shows it
    again instead of the browser's "Confirm Form Resubmission", which would send the form a second time."""
    return redirect(url_for("pages.subscribe_sent"), 303)


@pages.get("/subscribe/sent")
def subscribe_sent():
    return _check_inbox()


def _check_inbox():
    # The same words for a new, pending, active or unknown address: the page reveals nothing.
    return message_page("Check your inbox", "If the address can receive mail, a confirmation link is on its way. Click it within 7 days to start your digest.")


def _ticked_seeds() -> list[str]:
    return [value.strip() for value in request.form.getlist(SEED_FIELD) if value.strip()]


def _subscribe_form(errors: dict[str, str] | None = None, notice: str = ""):
    """The subscribe page again (400) with what was typed and ticked, and the error beside its field or a notice."""
    form: dict[str, Any] = {k: request.form.get(k, "") for k in ("email", "interests", "send_at", "tz")}
    form["seeds"] = _seed_choices(_ticked_seeds()[:MAX_TICKS_SHOWN])
    return render_template("page_subscribe.html", form=form, errors=errors or {}, notice=notice, zones=zone_names()), 400


def _seed_choices(ticked: list[str]) -> list[tuple[str, str]]:
    """The ticked papers as (value, label) for ticked checkboxes: a typo in the address loses no tick, and a reader
    with too many ticks can untick some (hidden fields kept them all, and every resubmission failed again). The label
    is the stored paper's title, or the value as sent when no paper has it (its error says so)."""
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        # A value with a control character is not looked up (PostgreSQL refuses NUL): its error says so.
        papers = [None if CONTROL_CHARACTER.search(value) else get_paper_by_ident(session, normalise_ident(value)) for value in ticked]
        return [(value, paper.title if paper is not None else value) for value, paper in zip(ticked, papers, strict=True)]


@pages.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str):
    ctx = web_context()
    # Post/Redirect/Get (as _sent says): whatever the button's POST did, it answers 303, so Back to its page or a reload
    # never asks to send the form again. Done: the preferences page by the new subscriber's own link, which says so.
    # Already done (a double click, a second tab): the link itself, whose GET says "already subscribed".
    with session_scope(ctx.engine) as session:
        if _confirmed_by(session, ctx.read_claim("confirm", token)):
            return _already_subscribed() if request.method != "POST" else _to_the_link()
        claim, sub = _load(session, "confirm", token)
        asked = pending_profile(session, sub, claim.request)
        if request.method != "POST":
            # A button, not the GET itself, confirms: mail scanners that open every link must not spend it.
            # The page shows what the button applies: the form may have been filled in by someone else.
            return _confirm_page(session, sub, asked)
        if not ctx.csrf.valid():  # a tab left open for a day, or another browser: the page again, with a fresh token
            return _confirm_page(session, sub, asked, notice=_stale_form("you are not subscribed yet"), status=400)
        if not spend_token(session, claim.digest, ctx.now()):  # a double click: the first one confirms
            if sub.status in ("active", "paused"):
                return _to_the_link()
            raise LinkGone("this link has already been used")
        sub = confirm_subscriber(session, sub, ctx.now(), claim.request)
        preferences = ctx.make_token("preferences", sub)
    return redirect(url_for("pages.preferences", token=preferences, done="confirm"), 303)


def _to_the_link():
    """303 to the link that was POSTed to (under any path prefix), whose GET shows how it stands."""
    return redirect(request.script_root + request.path, 303)


def _confirm_page(session: Any, sub: Subscriber, asked: SubscriberInput | None, notice: str = "", status: int = 200):
    # The seed papers by title, as the reader ticked them on the front page (an arXiv id alone says nothing to them).
    seeds = [(paper.title if (paper := get_paper_by_ident(session, normalise_ident(seed))) is not None else seed) for seed in (asked.seed_papers or ())] if asked else []
    return render_template("page_confirm.html", email=sub.email, asked=asked, seeds=seeds, changes=sub.status in ("pending", "unsubscribed", "bounced"),
                           notice=notice), status


def _confirmed_by(session: Any, claim: Claim) -> bool:
    """Whether this link was already used and its subscriber is still subscribed: a replay or a second click, which
    shows "already subscribed" and changes nothing (the confirmation bumped the token version, so _load refuses it)."""
    if not token_used(session, claim.digest):
        return False
    sub = find_subscriber_by_id(session, claim.subscriber_id)
    return sub is not None and sub.status in ("active", "paused")


def _already_subscribed():
    # No preferences link: an old link hands out no new one (the preferences link is in every digest).
    return message_page("You're already subscribed", "This address is already subscribed, so nothing changed. "
                        "Your preferences and the unsubscribe link are at the bottom of every digest.")


@pages.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        claim, sub = _load_unsubscribe(session, token)
        if sub is None:  # nothing goes to the address the link was made for: what it asks, so no error (nor to one-click)
            return message_page("You are unsubscribed", "No digests go to this address: its subscription and data were deleted.")
        if claim.version == sub.token_version:
            again = "You can resume from your preferences."
            link = (url_for("pages.preferences", token=ctx.make_token("preferences", sub)), "Preferences")
        else:  # a link older than a resubscription: it stops mail, and hands out no preferences link (those it revoked)
            again = "You can subscribe again."
            link = (url_for("pages.subscribe"), "Subscribe again")
        if request.method != "POST":
            if sub.status == "unsubscribed":  # nothing to ask
                return message_page("You're already unsubscribed", f"No digests go to {sub.email}. Changed your mind? {again}", link=link)
            # Link scanners follow every URL with GET (or HEAD): only the button's POST unsubscribes.
            return render_template("page_unsubscribe.html", email=sub.email)
        # RFC 8058 one-click: mail providers POST `List-Unsubscribe=One-Click` with no cookie and no
        # form token, so no CSRF check here; the signed token is the authority. Twice is fine.
        if sub.status != "unsubscribed":
            set_status(session, sub, "unsubscribed", ctx.now())
    return message_page("You are unsubscribed", f"You will get no more digests. Changed your mind? {again}", link=link)


def _load_unsubscribe(session: Any, token: str) -> tuple[Claim, Subscriber | None]:
    """The claim of an unsubscribe link and its subscriber, whatever the link's version: an unsubscribe link must work in
    every email ever sent (RFC 8058, List-Unsubscribe), also after a resubscription bumped the version, and stopping
    mail is safe. The subscriber is the one of the link's address (its signed tag): None when they are gone (their data
    deleted, or SQLite gave their id to a newcomer, whose address differs). A link made before links carried the tag
    keeps the version rule (LinkGone when older): it could not tell a newcomer given the id from its own subscriber."""
    ctx = web_context()
    claim = ctx.read_claim("unsubscribe", token)
    sub = find_subscriber_by_id(session, claim.subscriber_id)
    if sub is None or claim.address is not None:
        return claim, sub if sub is not None and ctx.names_address(claim, sub.email) else None
    if sub.token_version != claim.version:
        raise LinkGone("this link is no longer valid (a newer email replaced it, or the subscription was removed)")
    return claim, sub


def _profile_form(sub: Subscriber) -> dict[str, str]:
    """The whole profile as the preferences form shows it (docs/subscribers.md's table; the lists one per line)."""
    form = {name: "\n".join(getattr(sub, name)) for name in LINE_FIELDS}
    return {**form, "name": sub.name, "max_papers": str(sub.max_papers), "send_at": sub.send_at, "tz": sub.tz, "frequency": sub.frequency,
            "trending_weight": f"{sub.trending_weight:g}"}


# What the preferences page says after a change (?done=ACTION, where the form's POST redirects).
DONE = {
    "confirm": "You are subscribed. Your first digest arrives at your chosen time: tune what it contains below, now or from any email.",
    "save": "Saved. Your next digest uses these preferences.",
    "pause": "Paused. No digests until you resume.",
    "resume": "Resumed. Your digest starts again at your send time.",
}


def _preferences_page(sub: Subscriber, form: dict, errors: dict, notice: str = "", status: int = 200):
    return render_template(
        "page_preferences.html", email=sub.email, status=sub.status, form=form, errors=errors, notice=notice,
        zones=zone_names(), frequencies=FREQUENCIES,
    ), status


@pages.route("/preferences/<token>", methods=["GET", "POST"])
def preferences(token: str):
    ctx = web_context()
    action = request.form.get("action", "save") if request.method == "POST" else "view"
    if action not in ("view", "save", "pause", "resume", "delete"):
        return message_page("Not allowed", "This form sent an unknown action.", 400)
    if request.method == "POST" and not ctx.csrf.valid():  # the page again, as typed, with a fresh token
        with session_scope(ctx.engine) as session:
            _, sub = _load(session, "preferences", token)
            stored = _profile_form(sub)
            typed = {k: request.form.get(k, stored[k]) for k in PROFILE_FIELDS} if action == "save" else stored
            undone = {"pause": "the digest was not paused", "resume": "the digest was not resumed", "delete": "nothing was deleted"}
            return _preferences_page(sub, typed, {}, _stale_form(undone.get(action, "nothing was saved")), status=400)
    if action == "delete":
        return _delete_data(token)
    notice = DONE.get(request.args.get("done", ""), "") if action == "view" else ""  # where a change redirected to
    try:
        with session_scope(ctx.engine) as session:
            _, sub = _load(session, "preferences", token)
            before = (sub.email, sub.status)
            if action == "save":
                update_subscriber(session, sub, _fields_from_form(), now=ctx.now())
            elif action == "pause":
                set_status(session, sub, "paused", ctx.now())
            elif action == "resume":
                set_status(session, sub, "active", ctx.now())
            if action == "view":  # a change that worked redirects (below): its page is rendered by the GET
                return _preferences_page(sub, _profile_form(sub), {}, notice)
    except FieldError as exc:
        form = {k: request.form.get(k, "") for k in PROFILE_FIELDS}
        return _preferences_error(before, form, {exc.field: _reader_error(exc)})
    except InputError as exc:
        return _preferences_error(before, None, {"status": exc.args[0]})
    # Done: the page of its own (Post/Redirect/Get, as _sent says), which says what was done.
    return redirect(url_for("pages.preferences", token=token, done=action), 303)


def _preferences_error(before: tuple[str, str], form: dict | None, errors: dict):
    """The form again with the error beside its field; nothing was saved (the session rolled back)."""
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        sub = get_subscriber(session, before[0])
        return _preferences_page(sub, form or _profile_form(sub), errors, status=400)


def _fields_from_form() -> SubscriberInput:
    """The profile the form sent, checked by validate_profile as the CLI's are; a field the form did not send (a
    page rendered before the field existed) is left as it is."""
    form = request.form
    _refuse_control_characters({name: name for name in PROFILE_FIELDS})
    given: dict[str, Any] = {name: _lines(name, form[name]) if name in LINE_FIELDS else form[name] for name in PROFILE_FIELDS if name in form}
    return SubscriberInput(**given)


def _delete_data(token: str):
    ctx = web_context()
    if request.form.get("confirm_delete") != "yes":
        with session_scope(ctx.engine) as session:
            _, sub = _load(session, "preferences", token)
            return _preferences_page(sub, _profile_form(sub), {"delete": "Tick the box to confirm that everything should be deleted."}, status=400)
    with session_scope(ctx.engine) as session:
        _, sub = _load(session, "preferences", token)
        remove_subscriber(session, sub)
    return message_page("Your data is deleted", "Your address, preferences, feedback and delivery history are gone. Links in old emails no longer work.")


@pages.route("/feedback/<token>", methods=["GET", "POST"])
def feedback(token: str):
    """A like or dislike link of the web edition page (or of an email sent before vote links): one token per link."""
    return _feedback(lambda session: _load(session, "feedback", token))


@pages.route(f"/feedback/<token>/<int(min=1, max={MAX_ROW_ID}):paper_id>/<vote>", methods=["GET", "POST"])
def vote(token: str, paper_id: int, vote: str):
    """A like or dislike link of an email: the email's one "vote" token, the paper and the vote in the path."""
    if vote not in VOTES:
        raise TokenError("this link is not valid (it may have been altered or cut short)")

    def load(session: Any) -> tuple[Claim, Subscriber]:
        claim, sub = _load(session, "vote", token)
        return replace(claim, paper_id=paper_id, value=VOTES[vote]), sub

    return _feedback(load)


def _feedback(load: Any):
    # Mail security scanners open every link of an email (GET or HEAD), in any order: were the like and
    # dislike links to vote, a scanner would cast ten votes the reader never gave. Opening the link shows
    # the paper and a button; only the button's POST (CSRF-checked, like confirm) records the vote.
    ctx = web_context()
    action = request.form.get("action", "") if request.method == "POST" else "view"
    if action not in ("view", "record", "undo"):
        return message_page("Not allowed", "This form sent an unknown action.", 400)
    notice = ""
    if request.method == "POST" and not ctx.csrf.valid():  # an old tab or another browser: the page again, fresh token
        action, notice = "view", _stale_form("nothing was recorded" if action == "record" else "your vote stands")
    with session_scope(ctx.engine) as session:
        claim, sub = load(session)
        paper = get_paper(session, claim.paper_id)
        if paper is None:
            raise LinkGone("this paper is no longer in the digest's store")
        assert claim.value is not None  # make_token signs a value into every feedback token
        if action == "record":
            record_feedback(session, sub, paper, claim.value, ctx.now())
        elif action == "undo":
            remove_feedback(session, sub, paper)
        if action == "view":
            stands = feedback_value(session, sub, paper) == claim.value
            # ?done=undo: where an Undo redirected; "Feedback removed" while the vote is not given again.
            state = "undone" if request.args.get("done") == "undo" and not stands else "recorded" if stands else "ask"
            return render_template("page_feedback.html", paper=paper, liked=claim.value > 0, state=state, notice=notice), 400 if notice else 200
    # Done: Post/Redirect/Get (as _sent says), to the link itself, which shows the vote as it stands.
    return redirect(request.script_root + request.path + ("?done=undo" if action == "undo" else ""), 303)


@pages.get("/edition/<token>")
def edition(token: str):
    """A sent email on the web: its papers as the ledger recorded them (digest.store.editions), so it stays the
    same whatever the ranking does later. People share this page, so it is a view that grants nothing: no
    preferences, unsubscribe or vote links (they act for the subscriber and never expire) and not the address;
    the page says they are in the email."""
    ctx = web_context()
    with session_scope(ctx.engine) as session:
        claim, sub = _load(session, "edition", token)
        subscriber_id = sub.id
    sent = sent_edition(ctx.engine, subscriber_id, claim.edition or "")
    if sent is None:
        keep = ctx.settings.keep_ledger_days
        if keep and claim.edition and date.fromisoformat(claim.edition) < (ctx.now() - timedelta(days=keep)).date():  # as digest.store.retention cuts
            return message_page("This edition is no longer kept", f"This server keeps the editions of the last {keep} days. "
                                "The email itself still holds every paper it sent you.", 410)
        return message_page("This edition was not sent", "There is no email of this date for this address. It may not have been sent yet.", 404)
    if sent.picks is not None:  # recorded: the email's own sections and reasons
        picks, trending = sent.picks, sent.trending or []
    else:  # sent before the ledger recorded sections: the papers in the email's order
        picks, trending = [(pid, ()) for pid in sent.papers], []
    papers = {c.paper.id: c for c in papers_by_ids(ctx.engine, [pid for pid, _ in picks] + list(trending))}
    cards = [paper_card(papers[pid], reasons) for pid, reasons in picks if pid in papers]
    trend_cards = [paper_card(papers[pid]) for pid in trending if pid in papers]
    return render_template("page_edition.html", day_long=long_date(date.fromisoformat(sent.edition)), cards=cards, trending=trend_cards,
                           recorded=sent.picks is not None)


@pages.get("/healthz")
def healthz():
    ctx = web_context()
    try:
        check_database(ctx.engine)
        current = schema_is_current(ctx.engine)
    except DigestError as exc:
        log_event(log, "healthz-failed", logging.ERROR, error=str(exc))
        return jsonify(status="error", database="unavailable"), 503
    if not current:
        return jsonify(status="error", database="ok", schema="outdated"), 503
    return jsonify(status="ok", database="ok", schema="current")
