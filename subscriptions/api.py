"""The JSON API (django-ninja), mounted at /api/v1/: sign-up from other sites and apps.

It is another door to the same room as the HTML form: the same service
(`subscriber_signup`: double opt-in, consent record), the same validation
(`SignupForm`), the same rate limits and the same answer for every address,
so the API cannot be used to find out who subscribes. Browsers may call it
from the origins in NEWSROOM_API_ALLOWED_ORIGINS (django-cors-headers);
servers call it with an API key (`Authorization: Bearer nr_<prefix>_<secret>`),
which lifts the per-IP limit a partner's one server would hit at once, never
the per-address one. Schema: /api/v1/openapi.json, docs: /api/v1/docs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, NinjaAPI, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.security import HttpBearer

from newsroom.models import Category
from subscriptions import ratelimit
from subscriptions.forms import DEFAULT_DIGEST_HOUR, DEFAULT_TIMEZONE, NO, YES, SignupForm
from subscriptions.models import TEXT_LIMIT, ApiKey, Subscriber
from subscriptions.services.api_keys import api_key_check
from subscriptions.services.subscribers import RequestInfo, subscriber_signup

CHECK_YOUR_INBOX = {"status": "check your inbox"}
# The form's field names as the API spells them.
API_FIELD = {"categories": "topics", "wants_alerts": "alerts"}
MAX_TOPICS = 50

api = NinjaAPI(
    title="Newsroom API", version="1", urls_namespace="api",
    docs_url="/docs", openapi_url="/openapi.json",
    description="Sign readers up from other sites, apps and servers (double opt-in).",
)


class RateLimited(Exception):
    """Too many sign-ups from one client or for one address within the hour."""


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: a server with its key, or a browser or app without one."""

    key: ApiKey | None = None


class SignupAuth(HttpBearer):
    """An API key is optional: without one the caller is anonymous and counted per IP.

    Runs before the body is read, so malformed attempts count against the
    per-IP limit as they do on the HTML form. A key that is unknown, revoked or
    lacks the scope is refused outright (401/403) rather than quietly treated as
    anonymous: a partner should learn at once that its key stopped working.
    """

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def __call__(self, request: HttpRequest) -> Caller:
        header = request.headers.get("Authorization")
        if header:
            scheme, _, token = header.partition(" ")
            key = api_key_check(token.strip()) if scheme.lower() == "bearer" else None
            if key is None:
                raise HttpError(401, "This API key is not valid or was revoked.")
            if self.scope not in key.scopes:
                raise HttpError(403, f"This API key may not {self.scope}.")
            return Caller(key)
        if not ratelimit.signup_allowed_for_client(RequestInfo.from_request(request).ip_address):
            raise RateLimited
        return Caller()

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        raise NotImplementedError  # __call__ above does the whole job


class SignupIn(Schema):
    email: str = Field(max_length=320)
    topics: list[str] = Field(max_length=MAX_TOPICS, description="Category slugs (GET /topics).")
    frequency: Subscriber.Frequency = Subscriber.Frequency.DAILY
    alerts: bool = True
    timezone: str = Field(DEFAULT_TIMEZONE, max_length=64, description="An IANA zone name.")
    digest_hour: int = Field(DEFAULT_DIGEST_HOUR, ge=0, le=23)


class StatusOut(Schema):
    status: str


class ErrorsOut(Schema):
    errors: dict[str, list[str]]


class TopicOut(Schema):
    slug: str
    name: str
    description: str


@api.exception_handler(RateLimited)
def rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = api.create_response(
        request, {"status": "too many sign-ups, try again later"}, status=429)
    response["Retry-After"] = str(ratelimit.HOUR)
    return response


@api.exception_handler(ValidationError)
def invalid_body(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """400 with field errors, as the sign-up answers its own checks (ninja says 422)."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        names = [part for part in error.get("loc", ()) if isinstance(part, str)]
        field = names[-1] if names and names[-1] not in ("body", "payload") else "body"
        errors.setdefault(field, []).append(str(error.get("msg", "Not valid.")))
    return api.create_response(request, {"errors": errors}, status=400)


@api.post("/signups", auth=SignupAuth(ApiKey.Scope.SIGNUP),
          response={202: StatusOut, 400: ErrorsOut, 429: StatusOut})
def signup(request: HttpRequest, payload: SignupIn) -> Status[dict]:
    """Sign an address up: a confirmation email goes out, and the address only
    receives mail once its owner clicks the link in it. The answer is the same
    whether the address is new or already subscribed."""
    slugs = list(dict.fromkeys(payload.topics))
    found = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "pk"))
    form = SignupForm({
        "email": payload.email,
        "categories": [str(found[slug]) for slug in slugs if slug in found],
        "frequency": payload.frequency,
        "digest_hour": str(payload.digest_hour),
        "timezone": payload.timezone,
        "wants_alerts": YES if payload.alerts else NO,
    })
    valid = form.is_valid()
    errors = {API_FIELD.get(name, name): list(messages) for name, messages in form.errors.items()}
    if unknown := [slug for slug in slugs if slug not in found]:
        errors.setdefault("topics", []).append(f"Unknown topics: {', '.join(unknown[:5])}.")
    if not valid or errors:
        return Status(400, {"errors": errors})
    if not ratelimit.signup_allowed_for_email(form.cleaned_data["email"]):
        raise RateLimited
    caller: Caller = request.auth  # type: ignore[attr-defined]  # set by SignupAuth
    info = dataclasses.replace(
        RequestInfo.from_request(request), page=request.headers.get("Origin", "api")[:TEXT_LIMIT])
    method = f"api-key:{caller.key.prefix}" if caller.key else "api"
    subscriber_signup(
        email=form.cleaned_data["email"], preferences=form.preferences(), info=info, method=method)
    return Status(202, CHECK_YOUR_INBOX)


@api.get("/topics", response=list[TopicOut])
def topics(request: HttpRequest) -> list[Category]:
    """The topics (categories) a reader may choose, in the site's order."""
    return list(Category.objects.order_by("order", "name"))
