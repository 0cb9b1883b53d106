from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the Operations page, /metrics, probes, the sampler and the canary.

    Its own app so that it can read editorial and sending while neither imports
    it (.importlinter holds the contract); the label keeps it apart from the
    editorial app it sits inside.
    """

    name = "newsroom.ops"
    label = "ops"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from newsroom.ops import broker  # noqa: F401 - stamps each task with its publish time
