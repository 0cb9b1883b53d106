from django.urls import path

from subscriptions import edition_views, views

app_name = "subscriptions"

# Emails reverse these names with a token argument: keep names and arguments stable.
urlpatterns = [
    path("subscribe/", views.signup, name="signup"),
    path("subscribe/embedded/", views.signup_embedded, name="signup_embedded"),
    path("subscribe/check-your-inbox/", views.signup_done, name="signup_done"),
    path("subscribe/confirm/<str:token>/", views.confirm, name="confirm"),
    path("preferences/<str:token>/", views.manage, name="manage"),
    path("preferences/<str:token>/unfollow/", views.manage_unfollow, name="manage_unfollow"),
    path("preferences/<str:token>/unsubscribe/", views.manage_unsubscribe,
         name="manage_unsubscribe"),
    path("preferences/<str:token>/resubscribe/", views.manage_resubscribe,
         name="manage_resubscribe"),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("unsubscribe/<str:token>/preferences-link/", views.unsubscribe_manage_link,
         name="unsubscribe_manage_link"),
    path("editions/<str:token>/", edition_views.edition_view, name="edition_view"),
    path("r/<str:token>", edition_views.click, name="click"),
]
