"""The Celery application; configuration lives in Django settings (CELERY_*)."""

import os
import re
from typing import Any

from celery import Celery
from kombu.transport.native_delayed_delivery import MAX_NUMBER_OF_BITS_TO_USE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")

app = Celery("newsroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# RabbitMQ's native delayed delivery (countdowns on quorum queues) routes a message
# through its delay exchanges with the countdown's bits prepended to the routing key:
# "0.0.…1.1.alerts" arrives from the queue "alerts".
_DELAY_PREFIX = re.compile(rf"^(?:[01]\.){{{MAX_NUMBER_OF_BITS_TO_USE}}}")


def request_queue(request: Any) -> str | None:
    """The queue a task's message was consumed from (its routing key, as every queue
    is bound by its own name), or None when it ran eagerly or was called directly."""
    routing_key = (request.delivery_info or {}).get("routing_key")
    return _DELAY_PREFIX.sub("", routing_key, count=1) if routing_key else None
