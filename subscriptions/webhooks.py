"""anymail's tracking webhooks, mounted so that they fail closed.

anymail accepts anything when `ANYMAIL["WEBHOOK_SECRET"]` is unset (it only
warns), and its views for ESPs with a signing key raise a configuration error,
a 500, when that key is missing. A forged bounce suppresses a real reader, so
we do not rely on either behaviour:

* only the tracking endpoints are mounted (we act on no inbound mail); every
  other anymail URL answers 404;
* each tracking view is wrapped by `fail_closed`, which answers 403 unless the
  basic-auth secret *and* the ESP's signing key (where anymail can check one)
  are configured, and never lets anymail's configuration error become a 500.

The check happens per request, not when URLs load, so settings changed in tests
or by a reload apply at once and every URL exists whether configured or not
(an ESP's "test webhook" button gets a clear 403, not a misleading 404).
`newsroom.W001` (subscriptions/checks.py) names what is missing for the ESP
that EMAIL_URL selects.

And a body anymail cannot read is a 400, not a 500: anymail lets any error
while validating or parsing a body become a 500 (a JSON `null` posted to
Postmark's URL, `{"signature": 1}` to Mailgun's), and an ESP retries a 500
although that body can never succeed. An error after parsing (our receiver,
the broker being down) stays a 500, which makes the ESP deliver the event again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailConfigurationError, AnymailWebhookValidationFailure
from anymail.utils import get_anymail_setting
from anymail.webhooks.base import AnymailCoreWebhookView
from django.core.exceptions import BadRequest, ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.urls import URLPattern

logger = logging.getLogger(__name__)

app_name = "anymail"  # keeps reverse("anymail:postmark_tracking_webhook") working

# ESP (its URL segment, also its anymail backend module) -> the signing-key setting
# anymail verifies for its tracking webhook; None where basic auth is all there is.
SIGNING_KEYS: dict[str, str | None] = {
    "amazon_ses": None,  # SNS signatures are not checked by anymail: the secret is all
    "brevo": None,
    "sendinblue": None,
    "mailersend": "MAILERSEND_SIGNING_SECRET",
    "mailgun": "MAILGUN_WEBHOOK_SIGNING_KEY",
    "mailjet": None,
    "mailtrap": "MAILTRAP_TRACKING_SECRET",
    "mandrill": "MANDRILL_WEBHOOK_KEY",
    "postal": "POSTAL_WEBHOOK_KEY",
    "postmark": None,
    "resend": "RESEND_SIGNING_SECRET",
    "sendgrid": "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY",
    "sparkpost": None,
    "unisender_go": "UNISENDER_GO_API_KEY",  # Unisender Go signs with the API key
}


def _configured(name: str) -> bool:
    """Whether the anymail setting `name` is set, looked up the way anymail does."""
    value = get_anymail_setting(name.lower(), default=None, allow_bare=True)
    if isinstance(value, list | tuple):
        return any(str(item).strip() for item in value)
    return bool(str(value or "").strip())


def missing_credentials(esp: str) -> list[str]:
    """The ANYMAIL settings the tracking webhook of `esp` still needs (empty: ready)."""
    if esp not in SIGNING_KEYS:
        return []  # no tracking webhook in anymail (console, test, scaleway)
    needed = ["WEBHOOK_SECRET"]
    if signing_key := SIGNING_KEYS[esp]:
        needed.append(signing_key)
    return [name for name in needed if not _configured(name)]


def fail_closed(view: Callable[..., HttpResponse], esp: str) -> Callable[..., HttpResponse]:
    """`view`, answering 403 while the credentials of `esp` are incomplete."""

    @functools.wraps(view)  # keeps csrf_exempt and login_not_required
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        missing = missing_credentials(esp)
        if missing:
            logger.warning("webhook refused: %s is not configured", " and ".join(missing),
                           extra={"esp": esp, "missing": missing})
            return HttpResponseForbidden(
                "This webhook is turned off until its credentials are configured.\n",
                content_type="text/plain",
            )
        try:
            return view(request, *args, **kwargs)
        except AnymailConfigurationError as exc:  # a setting anymail wants beyond ours
            logger.error("webhook refused: %s", exc, extra={"esp": esp})
            return HttpResponseForbidden("This webhook is misconfigured.\n",
                                         content_type="text/plain")

    return guarded


# For mypy the mixin is the view it is mixed into, so that super() resolves.
if TYPE_CHECKING:
    class _MixinBase(AnymailCoreWebhookView): ...
else:
    _MixinBase = object


class _ReadableBodyOnly(_MixinBase):
    """Mixed in before an anymail view: unreadable requests are 400s, not 500s."""

    def run_validators(self, request):
        try:
            super().run_validators(request)
        except (AnymailWebhookValidationFailure, ImproperlyConfigured):
            raise  # already a 400; a missing setting stays loud
        except Exception as exc:
            raise _unreadable(self, exc) from exc

    def parse_events(self, request):
        try:
            return list(super().parse_events(request))  # some return generators
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            raise _unreadable(self, exc) from exc


def _unreadable(view: AnymailCoreWebhookView, exc: Exception) -> BadRequest:
    logger.warning("unreadable %s webhook body: %s: %s",
                   view.esp_name, type(exc).__name__, str(exc)[:200])
    return BadRequest(f"unreadable {view.esp_name} webhook body")


def _hardened(pattern: URLPattern) -> URLPattern:
    view_class = getattr(pattern.callback, "view_class", None)
    if view_class is None or not issubclass(view_class, AnymailCoreWebhookView):
        return pattern
    hardened: type[AnymailCoreWebhookView] = type(
        view_class.__name__, (_ReadableBodyOnly, view_class),
        {"__module__": __name__, "__doc__": view_class.__doc__},
    )
    view = hardened.as_view(**getattr(pattern.callback, "view_initkwargs", {}))
    return URLPattern(pattern.pattern, view, pattern.default_args, pattern.name)


def _tracking_patterns() -> list[URLPattern]:
    patterns = []
    for pattern in anymail_urls.urlpatterns:
        esp = str(pattern.pattern).lstrip("^").split("/", 1)[0]
        if not (pattern.name.endswith("_tracking_webhook") or pattern.name == "mandrill_webhook"):
            continue
        if esp not in SIGNING_KEYS:  # an ESP new in anymail stays unmounted until listed
            continue
        pattern = _hardened(pattern)
        patterns.append(URLPattern(pattern.pattern, fail_closed(pattern.callback, esp),
                                   pattern.default_args, pattern.name))
    return patterns


urlpatterns = _tracking_patterns()
