"""Template helpers for the public site's base layout.

The category navigation is a tag rather than view context so that any page
extending `newsroom/base.html` (including other apps' pages) gets it for free.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template
from django.template import RequestContext

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
