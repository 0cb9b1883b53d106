from django.contrib import admin
from django.urls import include, path
from django.views.decorators.cache import cache_control

from newsroom import feeds, views
from newsroom.ops import health, metrics
from subscriptions.api import api

_feed = cache_control(public=True, max_age=300)

app_urls = (
    [
        path("", views.story_index, name="index"),
        path("stories/<slug:slug>/", views.story_detail, name="story"),
        path("categories/<slug:slug>/", views.category_detail, name="category"),
        path("favicon.ico", views.favicon, name="favicon"),
        # Feeds: readers poll them every few minutes; five minutes of caching is
        # news-fresh and keeps a popular feed off the database.
        path("feed/", _feed(feeds.LatestStoriesFeed()), name="feed"),
        path("feed/atom/", _feed(feeds.LatestStoriesAtomFeed()), name="feed_atom"),
        path("categories/<slug:slug>/feed/", _feed(feeds.CategoryFeed()),
             name="category_feed"),
        path("categories/<slug:slug>/feed/atom/", _feed(feeds.CategoryAtomFeed()),
             name="category_feed_atom"),
    ],
    "newsroom",
)

handler500 = "newsroom.views.server_error"

urlpatterns = [
    # Probes and Prometheus: no session auth (metrics has its own bearer token).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),  # JSON API; CORS for NEWSROOM_API_ALLOWED_ORIGINS
    # anymail's tracking webhooks only: refusing until their credentials are set,
    # 400 for a body they cannot read.
    path("anymail/", include("subscriptions.webhooks")),
    path("", include("subscriptions.urls")),
    path("", include(app_urls)),
]
