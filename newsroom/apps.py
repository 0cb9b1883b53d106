from django.apps import AppConfig


class NewsroomConfig(AppConfig):
    name = "newsroom"
    verbose_name = "Editorial"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Starts no process: only runall and the test suite run the embedded Redis
        # (newsroom/embedded_redis.py), so no other command leaves one behind.
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_in

        from newsroom.middleware import session_renewed_at_login
        from newsroom.private_files import data_folder_prepare

        # The files the settings name (newsroom/settings.py writes nothing itself).
        data_folder_prepare(settings)

        user_logged_in.connect(session_renewed_at_login, dispatch_uid="newsroom.session_renewed")
