"""Request guards the whole site shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict

# Lookups the admin changelist would run straight from a query string
# (`?email__regex=(b+)+Z`): a backtracking pattern ties up a database worker.
REFUSED_LOOKUPS = frozenset({"regex", "iregex"})


class AdminLookupGuardMiddleware:
    """Answer 400 to an admin URL whose query string asks for a regex lookup.

    The admin turns unknown query parameters into ORM filters and allows any
    lookup on a model's own fields, so any staff member (or a stolen session)
    could send a catastrophic regex to the database. Refusing here covers every
    ModelAdmin, including Django's and third-party ones, without subclassing
    each; `_changelist_filters` (filters carried through a change page) is
    checked as well, since the admin applies it on the way back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is None or "admin" not in match.app_names:
            return None
        keys = list(request.GET)
        if "_changelist_filters" in request.GET:
            keys += list(QueryDict(request.GET["_changelist_filters"]))
        refused = sorted(k for k in keys if k.rsplit("__", 1)[-1].lower() in REFUSED_LOOKUPS)
        if refused:
            return HttpResponseBadRequest(
                f"Regular-expression lookups are not allowed in the admin: {', '.join(refused)}\n",
                content_type="text/plain",
            )
        return None


RENEWED = "_newsroom_renewed"  # when the session's lifetime last restarted (epoch seconds)
RENEW_EVERY = 60


class SessionIdleRenewalMiddleware:
    """Keep a signed-in session alive while it is used, so it ends after
    NEWSROOM_ADMIN_IDLE_MINUTES (SESSION_COOKIE_AGE) without a request.

    Touching the session restarts its lifetime (database row and cookie alike).
    We touch it at most once a minute rather than using SESSION_SAVE_EVERY_REQUEST,
    which writes the session on every request: on SQLite that would queue each
    admin page view (and the Operations page's 15 s refresh) behind the send
    workers' write lock. So a session ends between one minute short of the idle
    time and the idle time after its last request. Only signed-in sessions are
    touched: readers have no session and get none.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and SESSION_KEY in session:
            now = int(time.time())
            if now - session.get(RENEWED, 0) >= RENEW_EVERY:
                session[RENEWED] = now
        return self.get_response(request)


def session_renewed_at_login(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """A login saves the session anyway: stamp it, so the next request writes nothing."""
    if getattr(request, "session", None) is not None:
        request.session[RENEWED] = int(time.time())


# Scripts only from our own origin (Django's admin has no inline scripts either);
# styles too, except where a response says it shows email HTML (see below).
# Images may come from any https host: story bodies link them.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' https: data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def _policy(*, inline_styles: bool) -> str:
    directives = dict(CONTENT_SECURITY_POLICY)
    if inline_styles:
        directives["style-src"] += " 'unsafe-inline'"
    return "; ".join(f"{name} {value}" for name, value in directives.items())


_INLINE_STYLES = "csp_inline_styles"  # a marker attribute no HttpResponse declares


def allow_inline_styles(response: HttpResponse) -> HttpResponse:
    """Mark a response that shows email HTML: mail clients need inline CSS, so
    css-inline writes `style` attributes, and a srcdoc iframe inherits its page's
    policy. Scripts stay refused."""
    setattr(response, _INLINE_STYLES, True)
    return response


class ContentSecurityPolicyMiddleware:
    """A Content-Security-Policy header on every response (Django 5.2 has none).

    Our own pages carry no inline script or style (their CSS is in static
    files), so the policy is strict: only `allow_inline_styles` responses get
    'unsafe-inline' for styles. A response that already has a policy keeps it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.strict = _policy(inline_styles=False)
        self.inline_styles = _policy(inline_styles=True)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            relaxed = getattr(response, _INLINE_STYLES, False)
            response["Content-Security-Policy"] = self.inline_styles if relaxed else self.strict
        return response
