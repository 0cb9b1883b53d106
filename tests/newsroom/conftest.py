"""Fixtures shared by the editorial admin tests."""

import pytest

from subscriptions.sending import enqueue


@pytest.fixture
def enqueued(monkeypatch):
    """Keep the broker out: record the dispatches the service would enqueue."""
    calls: list[int] = []
    monkeypatch.setattr(enqueue, "enqueue_dispatch",
                        lambda edition, **kwargs: calls.append(edition.pk))
    return calls
