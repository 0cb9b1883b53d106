"""Public pages that are the same for every reader, rendered once per process.

The sign-up page and the unsubscribe page differ from one request to the next
only in values that need no template work: the CSRF token (masked anew for each
request) and the token in the page's own URLs. Rendering them through the
templates cost 20 ms of CPU per sign-up page (the form's field templates) and
4 ms per unsubscribe page (benchmarks/README.md, "Web load"), under the bursts a
widely shared story or a 1M-recipient alert brings. `page_render` renders a page
once with a placeholder for each such value, keeps the HTML, and puts the
values in per request.

A kept page is keyed by everything else that shapes it, so it is never stale:

- the view's own choices (`vary`: the ticked topics, the preselected zone, ...);
- every category row (the navigation and the topic list, changed in the admin
  by another process), read per request in one query: the one the navigation
  made anyway;
- the language, the year (footer), the script prefix and the URL pattern;
- settings and templates, constant in a production process: the kept pages are
  dropped when a setting changes (tests) and when the dev server sees a file
  change.

A page rendered here must show nothing of the request beyond the spliced values
(no messages, no user, no query string): tests/subscriptions/test_page_cache.py
checks that each page is byte for byte what `render` gives.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connections, router
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import get_script_prefix
from django.utils import timezone, translation
from django.utils.autoreload import file_changed

from newsroom.models import Category

MAX_PAGES = 256  # variants per process (zones from a cookie, topics from a link): ~50 KB each
# Values that render as themselves in HTML text, attributes and reversed URLs (no
# escaping, no percent-encoding): tokens, CSRF tokens. Anything else is rendered in full.
SPLICEABLE = re.compile(r"[A-Za-z0-9_.:-]*")
_MARK = f"spliced{secrets.token_hex(8)}v"  # unguessable: no content can contain it
_PLACEHOLDER = re.compile(re.escape(_MARK) + r"(\d+)x")

_pages: OrderedDict[tuple, tuple[str, tuple[str, ...]]] = OrderedDict()
_lock = threading.Lock()


def page_render(request: HttpRequest, template_name: str, context: Callable[[], dict[str, Any]],
                *, vary: tuple = (), splice: Mapping[str, str] | None = None,
                csrf: bool = False, status: int = 200) -> HttpResponse:
    """`render(request, template_name, context())`, from a page kept per process.

    `context` is called only when the page is rendered; `vary` must hold everything
    in it that can differ between requests. `splice` maps context names to values
    put in per request; `csrf` adds the request's CSRF token (`{% csrf_token %}`),
    which also sets the CSRF cookie as rendering it would.
    """
    values = dict(splice or {})
    if csrf:
        values["csrf_token"] = get_token(request)
    if not all(SPLICEABLE.fullmatch(value) for value in values.values()):
        return render(request, template_name, {**context(), **values}, status=status)
    match = request.resolver_match
    key = (template_name, vary, tuple(values), _categories(), translation.get_language(),
           _year(), get_script_prefix(), match.route if match else request.path)
    with _lock:
        kept = _pages.get(key)
        if kept is not None:
            _pages.move_to_end(key)
    if kept is None:
        placeholders = {name: f"{_MARK}{i}x" for i, name in enumerate(values)}
        html: str = render_to_string(template_name, {**context(), **placeholders}, request)
        if not all(p in html for p in placeholders.values()):  # a value not shown as is
            return render(request, template_name, {**context(), **values}, status=status)
        kept = (html, tuple(values))
        with _lock:
            _pages[key] = kept
            while len(_pages) > MAX_PAGES:
                _pages.popitem(last=False)
    html, names = kept
    if names:
        ordered = [values[name] for name in names]
        html = _PLACEHOLDER.sub(lambda m: ordered[int(m[1])], html)
    return HttpResponse(html, status=status)


def _year() -> int:
    """The year as the footer's `{% now "Y" %}` shows it."""
    return datetime.now(tz=timezone.get_current_timezone() if settings.USE_TZ else None).year


def _categories() -> tuple:
    """Every category row: what the navigation and the topic list show of them.

    Plain SQL built once: the ORM's compiling of the same query cost more than running it.
    """
    connection = connections[router.db_for_read(Category)]
    with connection.cursor() as cursor:
        cursor.execute(_categories_sql(connection.alias))
        return tuple(map(tuple, cursor.fetchall()))


@functools.cache
def _categories_sql(alias: str) -> str:
    quote = connections[alias].ops.quote_name
    meta = Category._meta
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    # Names from the model, quoted: no input reaches this string.
    return f"SELECT {columns} FROM {quote(meta.db_table)} ORDER BY {quote(meta.pk.column)}"  # noqa: S608


def page_cache_clear() -> None:
    with _lock:
        _pages.clear()


@receiver(setting_changed)
def _setting_changed(**kwargs: Any) -> None:
    page_cache_clear()


@receiver(file_changed)
def _file_changed(**kwargs: Any) -> None:
    # The dev server reloads templates without restarting (django.template.autoreload).
    page_cache_clear()
