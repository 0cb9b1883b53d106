"""Public pages: the front page, story pages and category pages.

Only live stories are ever shown; drafts and scheduled stories answer 404,
exactly like unknown slugs, so their existence does not leak.
"""

from __future__ import annotations

from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from newsroom import selectors
from newsroom.models import Category, Story

STORIES_PER_PAGE = 20


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
