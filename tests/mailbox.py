"""Read what the outbox backend wrote, as a person's mail program would."""

from __future__ import annotations

import email
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path


class Outbox:
    """The .eml files written since this object was made (other tests' are ignored)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._before = set(self.folder.glob("*.eml"))

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        found = []
        new = set(self.folder.glob("*.eml")) - self._before
        for path in sorted(new, key=lambda p: (p.stat().st_mtime_ns, p.name)):  # oldest first
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            if to is None or to.lower() in str(message["To"]).lower():
                found.append(message)
        return found

    def wait_for(self, to: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(to)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def text_body(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_body(message: EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


def unsubscribe_link(list_unsubscribe: str) -> str:
    """The https URI of a List-Unsubscribe header (`<https://…>, <mailto:…>`)."""
    uris = [part.strip().strip("<>") for part in str(list_unsubscribe).split(",")]
    [https] = [uri for uri in uris if uri.startswith(("https://", "http://"))]
    return https
