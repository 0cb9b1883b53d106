"""The subscriptions app's admin, one module per subject.

Importing the modules registers their admins: subscribers (look-up, export,
erase), editions and deliveries (the ledger, steering, preview, test send) and
alerts (the story admin's "send breaking alert", which replaces editorial's
story admin so that editorial knows nothing of sending) and the API's keys.
"""

from subscriptions.admin import alerts, api_keys, editions, subscribers

__all__ = ["alerts", "api_keys", "editions", "subscribers"]
