"""The anymail webhook URLs, answering 400 to a body they cannot read.

Anymail lets any error while validating or parsing a webhook body become a 500:
a JSON `null` posted to Postmark's tracking URL, `{"signature": 1}` to
Mailgun's. A stranger should not be able to produce server errors, and an ESP
retries a 500 although that body can never succeed. So each anymail view is
subclassed here: an error reading the request is a 400 (Django's `BadRequest`);
an error after parsing (our receiver, the broker being down) stays a 500,
which is what makes the ESP deliver the event again later.
"""

from __future__ import annotations

import logging

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.webhooks.base import AnymailCoreWebhookView
from django.core.exceptions import BadRequest, ImproperlyConfigured
from django.urls import URLPattern

logger = logging.getLogger(__name__)

app_name = "anymail"


class _ReadableBodyOnly:
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
    hardened = type(view_class.__name__, (_ReadableBodyOnly, view_class), {
        "__module__": __name__,
        "__doc__": view_class.__doc__,
    })
    view = hardened.as_view(**pattern.callback.view_initkwargs)
    return URLPattern(pattern.pattern, view, pattern.default_args, pattern.name)


urlpatterns = [_hardened(pattern) for pattern in anymail_urls.urlpatterns]
