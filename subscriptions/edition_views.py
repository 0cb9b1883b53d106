"""An edition on the web: its "view in browser" page (its content, without personal
links) and the redirect its tracked links lead through (`/r/<token>`)."""

from __future__ import annotations

from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from newsroom.middleware import allow_inline_styles
from newsroom.models import Category, Story
from subscriptions.models import Edition
from subscriptions.sending.content import (
    ContentError,
    ViewKey,
    alert_content,
    digest_content,
    fill_generic,
    issue_date,
)
from subscriptions.sending.links import Click
from subscriptions.services.clicks import click_record


@cache_control(public=True, max_age=300)
def edition_view(request: HttpRequest, token: str) -> HttpResponse:
    try:
        key = ViewKey.from_token(token)
    except (signing.BadSignature, ValueError, TypeError):
        raise Http404("No such edition.") from None
    edition = Edition.objects.filter(pk=key.edition_id).first()
    if edition is None:
        raise Http404("No such edition.")
    if edition.kind == Edition.Kind.ALERT:
        story = edition.stories.get()
        story = Story.objects.select_related("category").get(pk=story.pk)
        try:
            content = alert_content(edition.pk, story)
        except ContentError:
            raise Http404("This alert can no longer be shown.") from None
    else:
        assert edition.window_end is not None  # a digest has a window
        categories = list(Category.objects.filter(pk__in=key.category_ids))
        stories = list(Story.objects.filter(
            status=Story.Status.PUBLISHED, category__in=categories,
            live_since__gt=key.window_start, live_since__lte=edition.window_end,
            published_at__lte=edition.window_end,
        ).select_related("category"))
        if not stories:
            raise Http404("This digest can no longer be shown.")
        try:
            content = digest_content(
                edition.pk, key.window_start, edition.frequency, stories, categories,
                issue_date=issue_date(
                    edition.window_end, edition.audience.get("slots", ())),
            )
        except ContentError:
            raise Http404("This digest can no longer be shown.") from None
    # A reader's own links become the sign-up page's: the page is shared.
    response = HttpResponse(fill_generic(content.html))
    response["X-Robots-Tag"] = "noindex"
    return allow_inline_styles(response)  # email HTML: its CSS is inlined


@require_safe
def click(request: HttpRequest, token: str) -> HttpResponse:
    """Count a followed link and go where its signed token says, nowhere else.

    A token not made by us, or naming anything but an http(s) URL, gets the
    link-problem page. Only GET counts: a HEAD (a link checker) is redirected
    uncounted. The answer is never cached (each click must reach us) and sends
    no Referer on (the token says which edition the reader came from).
    """
    try:
        target = Click.from_token(token)
    except (signing.BadSignature, ValueError, TypeError):
        response = render(request, "subscriptions/pages/link_invalid.html",
                          {"purpose": "click"}, status=400)
    else:
        if request.method == "GET":
            click_record(edition_id=target.edition_id, story_id=target.story_id,
                         url=target.url)
        response = HttpResponseRedirect(target.url)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
