"""Public pages: the front page, story pages and category pages.

Only live stories are ever shown; drafts and scheduled stories answer 404,
exactly like unknown slugs, so their existence does not leak.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from django.conf import settings
from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import requires_csrf_token
from django.views.decorators.http import require_safe

from newsroom import selectors
from newsroom.models import Category, Story

STORIES_PER_PAGE = 20
FAVICON = Path(__file__).resolve().parent / "static" / "newsroom" / "favicon.svg"

logger = logging.getLogger(__name__)


@require_safe
def story_index(request: HttpRequest) -> HttpResponse:
    page = _paginate(request, selectors.story_list_live())
    return render(request, "newsroom/story_index.html", {"page": page})


@require_safe
def story_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        story = selectors.story_get_live(slug=slug)
    except Story.DoesNotExist:
        raise Http404("No such story.") from None
    return render(request, "newsroom/story_detail.html", {"story": story})


@require_safe
def category_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        category = selectors.category_get(slug=slug)
    except Category.DoesNotExist:
        raise Http404("No such category.") from None
    page = _paginate(request, selectors.story_list_live(category=category))
    return render(request, "newsroom/category_detail.html", {"category": category, "page": page})


def _paginate(request: HttpRequest, stories: QuerySet[Story]) -> Page:
    """The requested page; a page that does not exist is a 404, not page 1,
    so crawlers do not index the same list under endless URLs."""
    try:
        return Paginator(stories, STORIES_PER_PAGE).page(request.GET.get("page") or 1)
    except InvalidPage:
        raise Http404("No such page.") from None


@require_safe
@cache_control(public=True, max_age=86_400)
def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers and crawlers fetch whatever a page links:
    the site's SVG icon rather than a 404 in the log for every new visitor."""
    return HttpResponse(_favicon_svg(), content_type="image/svg+xml")


@functools.cache
def _favicon_svg() -> bytes:
    return FAVICON.read_bytes()


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    """The styled 500 page (settings: handler500 in newsroom/urls.py).

    Rendered from settings alone: no context processors and no database,
    either of which may be what just failed. If even that fails, plain text.
    """
    try:
        html = loader.get_template("500.html").render({"site_name": settings.NEWSROOM_NAME})
    except Exception:
        logger.exception("the 500 page could not be rendered")
        html = "<h1>Server Error (500)</h1>"
    return HttpResponseServerError(html)
