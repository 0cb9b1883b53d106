"""Signal receivers: the anymail tracking webhook hands events to a task; an
unpublished story withdraws its alert.

The receiver runs inside the ESP's webhook request, so it only filters and
enqueues; an error here (the broker is down) becomes a 500, which makes the
ESP retry the webhook later, so it is not swallowed.
"""

from __future__ import annotations

import logging
from typing import Any

from anymail.signals import AnymailTrackingEvent

from subscriptions.sending.steering import alerts_withdraw
from subscriptions.services.tracking import HANDLED_TYPES, event_payload

logger = logging.getLogger(__name__)


def tracking_event_received(
    sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any
) -> None:
    if event.event_type not in HANDLED_TYPES:
        return  # opens, clicks, queued, sent...: nothing to do, and most of the traffic
    from subscriptions.tasks import tracking_event_process

    tracking_event_process.delay_on_commit(**event_payload(event, esp_name))


def story_unpublished_received(sender: Any, story_id: int, withdraw_alerts: bool = True,
                               **kwargs: Any) -> None:
    """Cancel the story's unfinished alert, unless the editor chose to let it go on
    (the readers still waiting would get a link to a page that is gone)."""
    if withdraw_alerts:
        alerts_withdraw(story_id=story_id)
