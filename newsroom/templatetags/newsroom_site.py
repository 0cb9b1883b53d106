"""Template helpers for the public site's base layout.

The category navigation is a tag rather than view context so that any page
extending `newsroom/base.html` (including other apps' pages) gets it for free.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from django import template
from django.template import RequestContext
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from newsroom import selectors

register = template.Library()


@register.inclusion_tag("newsroom/includes/category_nav.html", takes_context=True)
def category_nav(context: RequestContext) -> dict:
    """Category links, marking the current one for assistive technology."""
    request = context.get("request")
    return {"categories": selectors.category_list(), "current_path": getattr(request, "path", "")}


@register.filter
def http_url(url: str) -> str:
    """The URL if it is absolute http(s), else an empty string.

    Autoescaping does not stop `javascript:` links, and source URLs may come
    from imports that bypassed form validation, so links are checked here.
    """
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""
    return url if scheme in {"http", "https"} else ""


@register.simple_tag
def story_time(moment: dt.datetime | None) -> SafeString | str:
    """A story's `<time>`: the date alone for a date-only story, else date and time.

    A story file may give a bare date, which the importer stores as midnight in
    TIME_ZONE; "8 May 2026, 00:00 UTC" would claim a time nobody wrote. A moment
    an editor or the publish action sets is never midnight to the microsecond.
    """
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    if local.time() == dt.time(0):
        return format_html('<time datetime="{}">{}</time>',
                           local.date().isoformat(), dateformat.format(local, "j F Y"))
    return format_html('<time datetime="{}">{}</time>',
                       local.isoformat(), dateformat.format(local, "j F Y, H:i T"))
