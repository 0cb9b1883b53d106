"""Public subscription pages: sign-up, confirmation, preferences, unsubscribe.

Views validate input and call the services in `subscriptions.services.subscribers`;
they never change a subscriber themselves. Three rules shape them:

- Nothing changes on a GET: link scanners and mail previews fetch every link,
  so each emailed link lands on a page with a button that POSTs.
- Sign-up answers the same for every address, known or not, so the form
  cannot be used to find out who subscribes.
- Every link carries a signed token (`subscriptions.tokens`) for one purpose;
  a bad, foreign or stale token changes nothing and says so plainly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from newsroom.models import Category
from subscriptions import ratelimit
from subscriptions.forms import (
    DEFAULT_TIMEZONE,
    ManageForm,
    SignupForm,
    timezone_aliases_script,
    timezone_or_default,
)
from subscriptions.models import Subscriber
from subscriptions.page_cache import page_render
from subscriptions.services.subscribers import (
    SIGNUP_WORDING_VERSION,
    RequestInfo,
    subscriber_confirm,
    subscriber_resubscribe,
    subscriber_send_manage_link,
    subscriber_signup,
    subscriber_unfollow,
    subscriber_unsubscribe,
    subscriber_update_preferences,
)
from subscriptions.tokens import (
    Purpose,
    TokenError,
    TokenExpired,
    token_make,
    token_matches,
    token_read,
)

PAGES = "subscriptions/pages"
TIMEZONE_COOKIE = "tz"
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"  # RFC 8058 body

TokenView = Callable[..., HttpResponse]


def _request_info(request: HttpRequest, token: str | None = None) -> RequestInfo:
    """Where a consent event came from, without the token itself.

    A token in the stored page URL would hand every reader of the consent
    records a working link to that person's subscription.
    """
    info = RequestInfo.from_request(request)
    if token:
        info = dataclasses.replace(info, page=info.page.replace(token, "<token>"))
    return info


def _manage_token(subscriber: Subscriber) -> str:
    """A preferences link, minted only from a confirm token (7 days, just mailed)."""
    return token_make(subscriber_id=subscriber.pk, email=subscriber.email, purpose=Purpose.MANAGE)


def _subscriber_for(token: str, purpose: Purpose) -> Subscriber:
    """The live subscriber a token names; TokenError if it names none.

    An erased or re-addressed subscriber fails `token_matches`, and an unknown
    id is reported exactly like a forged token, so ids cannot be probed.
    """
    claim = token_read(token, purpose=purpose)
    subscriber = Subscriber.objects.filter(pk=claim.subscriber_id, erased_at__isnull=True).first()
    if subscriber is None or not token_matches(claim, subscriber.email):
        raise TokenError("This link is not valid.")
    return subscriber


def _link_problem(request: HttpRequest, error: TokenError, purpose: Purpose) -> HttpResponse:
    if isinstance(error, TokenExpired):
        return render(request, f"{PAGES}/link_expired.html", {"purpose": str(purpose)}, status=410)
    return render(request, f"{PAGES}/link_invalid.html", {"purpose": str(purpose)}, status=400)


def with_subscriber(purpose: Purpose) -> Callable[[TokenView], TokenView]:
    """Resolve the URL's token to a subscriber, or answer with the link-problem page."""

    def decorator(view: TokenView) -> TokenView:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, token: str) -> HttpResponse:
            try:
                subscriber = _subscriber_for(token, purpose)
            except TokenError as error:
                return _link_problem(request, error, purpose)
            return view(request, subscriber, token)

        return never_cache(wrapper)  # personal pages: no shared cache may keep them

    return decorator


# --- Sign-up ------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        # A link may carry ?tz=Europe/Berlin, or the site may keep a `tz` cookie;
        # anything that is not a real zone name falls back to UTC, which the
        # page's script then replaces with the browser's zone.
        chosen = [request.GET.get("tz"), request.COOKIES.get(TIMEZONE_COOKIE)]
        timezone = timezone_or_default(*chosen)
        initial: dict[str, Any] = {"timezone": timezone}
        ticked: list[Category] = []
        if slugs := request.GET.getlist("category")[:20]:
            # Story pages link here with their category ticked (?category=world).
            ticked = initial["categories"] = list(
                Category.objects.filter(slug__in=slugs).order_by("pk"))
        from_browser = timezone == DEFAULT_TIMEZONE and DEFAULT_TIMEZONE not in chosen
        # The same page for everyone but its CSRF token: rendered once per process
        # and variant (subscriptions/page_cache.py).
        return page_render(
            request, f"{PAGES}/signup.html",
            lambda: _signup_context(SignupForm(initial=initial),
                                    timezone_from_browser=from_browser),
            vary=(timezone, from_browser, tuple(c.pk for c in ticked)), csrf=True,
        )

    info = _request_info(request)
    if not ratelimit.signup_allowed_for_client(info.ip_address):
        return _rate_limited(request)
    form = SignupForm(request.POST)
    if not form.is_valid():
        return _signup_page(request, form)
    if not ratelimit.signup_allowed_for_email(form.cleaned_data["email"]):
        return _rate_limited(request)
    # The outcome (new, pending, active, unsubscribed) is deliberately not shown.
    subscriber_signup(email=form.cleaned_data["email"], preferences=form.preferences(), info=info)
    return redirect("subscriptions:signup_done")


def _signup_page(request: HttpRequest, form: SignupForm) -> HttpResponse:
    """The page with a submitted form's errors (the unbound page is `page_render`'s)."""
    return render(request, f"{PAGES}/signup.html", _signup_context(form))


def _signup_context(form: SignupForm, *, timezone_from_browser: bool = False) -> dict:
    return {
        "form": form,
        "wording_version": SIGNUP_WORDING_VERSION,
        # Only an untouched choice is the browser's to make: never one from a
        # link, a cookie or the reader's own submission coming back with errors.
        "timezone_from_browser": timezone_from_browser,
        "timezone_aliases": timezone_aliases_script() if timezone_from_browser else "",
    }


def _rate_limited(request: HttpRequest) -> HttpResponse:
    response = render(request, f"{PAGES}/rate_limited.html", status=429)
    response["Retry-After"] = str(ratelimit.HOUR)
    return response


@csrf_exempt
@require_POST
def signup_embedded(request: HttpRequest) -> HttpResponse:
    """The embeddable form's target (README, "Sign up from anywhere"): the sign-up
    above, posted from a page on a site in NEWSROOM_API_ALLOWED_ORIGINS.

    That page cannot carry our CSRF token, so the Origin header, which browsers
    send with every cross-site POST, stands in for it: any other origin, or none,
    is refused. Topics come as category slugs (`topic`), stable across sites
    where our primary keys are not. Errors show our own sign-up page, whose form
    then posts to `signup` with a token as usual.
    """
    if request.headers.get("Origin") not in settings.NEWSROOM_API_ALLOWED_ORIGINS:
        return render(request, f"{PAGES}/embed_refused.html", status=403)
    data = request.POST.copy()
    if slugs := data.getlist("topic")[:20]:
        data.setlist("categories", [str(pk) for pk in Category.objects.filter(
            slug__in=slugs).order_by("pk").values_list("pk", flat=True)])
    request.POST = data  # type: ignore[assignment]  # the stubs want it immutable; signup reads it
    return signup(request)


@require_safe
def signup_done(request: HttpRequest) -> HttpResponse:
    return render(request, f"{PAGES}/signup_done.html")


# --- Confirmation (double opt-in) ---------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@with_subscriber(Purpose.CONFIRM)
def confirm(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    """GET shows a button; only its POST confirms (scanners prefetch GETs)."""
    state = "inactive" if subscriber.is_suppressed else subscriber.status
    if request.method == "POST" and state == Subscriber.Status.PENDING:
        confirmed = subscriber_confirm(subscriber=subscriber, info=_request_info(request, token))
        state = "confirmed" if confirmed else Subscriber.Status.ACTIVE  # lost a race: same thing
    return render(request, f"{PAGES}/confirm.html", {
        "state": state,
        "subscriber": subscriber,
        "token": token,
        "manage_token": _manage_token(subscriber),
    })


# --- Preferences ----------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@with_subscriber(Purpose.MANAGE)
def manage(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    """The preferences page; a valid manage token is proof of the address.

    A pending subscriber may edit preferences and leave here, but only the
    confirmation link activates the subscription (that is the double opt-in).
    """
    if request.method == "POST":
        form = ManageForm(request.POST)
        if form.is_valid():
            subscriber_update_preferences(
                subscriber=subscriber, preferences=form.preferences(),
                info=_request_info(request, token),
            )
            messages.success(request, "Your preferences are saved.")
            return redirect("subscriptions:manage", token)
    else:
        form = ManageForm(initial=ManageForm.initial_for(subscriber))
    return render(request, f"{PAGES}/manage.html", {
        "form": form,
        "subscriber": subscriber,
        "token": token,
        "followed": list(subscriber.categories.order_by("order", "name")),
    })


def _back_to_manage(token: str) -> HttpResponseRedirect:
    return redirect(reverse("subscriptions:manage", args=[token]))


@require_POST
@with_subscriber(Purpose.MANAGE)
def manage_unfollow(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    category = Category.objects.filter(slug=request.POST.get("category", "")).first()
    followed = subscriber.categories.count()
    if category is None or not subscriber.categories.filter(pk=category.pk).exists():
        messages.info(request, "You were not following that topic.")
    elif followed == 1:
        # Same rule as the form: no topics at all means leaving, which is explicit.
        messages.error(request, f"{category.name} is your only topic. To stop all emails, "
                                "use “Unsubscribe from everything”.")
    else:
        subscriber_unfollow(subscriber=subscriber, category=category,
                            info=_request_info(request, token), method="preferences-page")
        messages.success(request, f"You no longer follow {category.name}.")
    return _back_to_manage(token)


@require_POST
@with_subscriber(Purpose.MANAGE)
def manage_unsubscribe(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    left = subscriber_unsubscribe(subscriber=subscriber, info=_request_info(request, token),
                                  method="preferences-page")
    if left:
        messages.success(request, "You are unsubscribed from everything. "
                                  "We have sent you one last email to confirm it.")
    else:
        messages.info(request, "You were already unsubscribed.")
    return _back_to_manage(token)


@require_POST
@with_subscriber(Purpose.MANAGE)
def manage_resubscribe(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    if subscriber_resubscribe(subscriber=subscriber, info=_request_info(request, token)):
        messages.success(request, "Welcome back! You are subscribed again.")
    else:
        messages.info(request, "Your subscription was already active.")
    return _back_to_manage(token)


# --- Unsubscribe (RFC 8058 one-click) --------------------------------------------


@csrf_exempt  # mail providers POST without cookies or a CSRF token; the signed token is the proof
@require_http_methods(["GET", "HEAD", "POST"])
@with_subscriber(Purpose.UNSUBSCRIBE)
def unsubscribe(request: HttpRequest, subscriber: Subscriber, token: str) -> HttpResponse:
    """GET asks; any POST leaves at once, idempotently, and answers 200 (never a redirect).

    The mail program's one-click POST carries `List-Unsubscribe=One-Click`; the
    page's own button posts without it. Neither needs a cookie, and neither
    gets a goodbye email: the person has just said they want no more mail.
    """
    unsubscribed = subscriber.status == Subscriber.Status.UNSUBSCRIBED
    if request.method == "POST":
        one_click = request.POST.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
        subscriber_unsubscribe(
            subscriber=subscriber, info=_request_info(request, token),
            method="one-click" if one_click else "unsubscribe-page", send_goodbye=False,
        )
        unsubscribed = True  # now, or already before: the answer is the same
    return _unsubscribe_page(request, token, unsubscribed=unsubscribed)


def _unsubscribe_page(request: HttpRequest, token: str, **context: bool) -> HttpResponse:
    # No preferences link on this page: the unsubscribe token lives a year and
    # travels in headers and forwarded mail, and the preferences page shows the
    # address. The page offers to email that link to the address instead.
    # The same page for every reader but the token in its URLs (subscriptions/page_cache.py).
    return page_render(request, f"{PAGES}/unsubscribe.html", lambda: context,
                       vary=tuple(sorted(context.items())), splice={"token": token})


@csrf_exempt  # cookieless like the page it is on; it can only mail the token's own address
@require_POST
@with_subscriber(Purpose.UNSUBSCRIBE)
def unsubscribe_manage_link(request: HttpRequest, subscriber: Subscriber,
                            token: str) -> HttpResponse:
    """Email the reader a link to their preferences (the "manage" email)."""
    if not ratelimit.manage_link_allowed(subscriber.email):
        return _rate_limited(request)
    sent = subscriber_send_manage_link(subscriber=subscriber)
    return _unsubscribe_page(
        request, token, unsubscribed=subscriber.status == Subscriber.Status.UNSUBSCRIBED,
        link_sent=sent, link_refused=not sent,
    )
