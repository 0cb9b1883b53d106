from django.apps import AppConfig
from django.conf import settings


class NewsroomConfig(AppConfig):
    name = "newsroom"
    verbose_name = "Editorial"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from newsroom.ops import broker  # noqa: F401 - stamps each task with its publish time

        if settings.REDIS_EMBEDDED:
            from newsroom import embedded_redis

            embedded_redis.ensure_running(settings.DATA_DIR)
