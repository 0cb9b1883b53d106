"""System checks run at start-up and by `check --deploy`."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register

from subscriptions.webhooks import SIGNING_KEYS, missing_credentials


@register()
def esp_webhook_credentials(app_configs, **kwargs) -> list[Warning]:
    """The configured ESP's tracking webhook refuses every event until its
    credentials are set, so bounces and complaints would go unrecorded."""
    backend = getattr(settings, "EMAIL_BACKEND", "")
    if not backend.startswith("anymail.backends."):
        return []
    esp = backend.removeprefix("anymail.backends.").split(".", 1)[0]
    if esp not in SIGNING_KEYS:
        return []
    missing = missing_credentials(esp)
    if not missing:
        return []
    variables = ", ".join(f"ANYMAIL_{name}" for name in missing)
    return [Warning(
        f"The {esp} tracking webhook (/anymail/{esp}/tracking/) refuses every event: "
        f"{variables} {'is' if len(missing) == 1 else 'are'} not set.",
        hint="Use the values configured in the ESP's webhook settings; until then "
             "bounces and complaints from the ESP are not recorded.",
        id="newsroom.W001",
    )]
