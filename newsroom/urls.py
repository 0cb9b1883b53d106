from django.contrib import admin
from django.urls import include, path

from newsroom import views

app_urls = (
    [
        path("", views.story_index, name="index"),
        path("stories/<slug:slug>/", views.story_detail, name="story"),
        path("categories/<slug:slug>/", views.category_detail, name="category"),
    ],
    "newsroom",
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),
    path("", include("subscriptions.urls")),
    path("", include(app_urls)),
]
