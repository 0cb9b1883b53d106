from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "Subscriptions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import tracking

        from newsroom.signals import story_unpublished
        from subscriptions import checks  # noqa: F401 - registers the system checks
        from subscriptions.receivers import story_unpublished_received, tracking_event_received

        tracking.connect(tracking_event_received, dispatch_uid="subscriptions.tracking")
        story_unpublished.connect(story_unpublished_received,
                                  dispatch_uid="subscriptions.story_unpublished")
