"""The "view in browser" page of an edition: its content, without personal links."""

from __future__ import annotations

from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control

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
