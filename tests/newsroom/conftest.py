"""Fixtures shared by the editorial admin tests."""

import pytest

from subscriptions.services import editions


@pytest.fixture
def enqueued(monkeypatch):
    """Keep the broker out: record the dispatches the service would enqueue."""
    calls: list[int] = []
    monkeypatch.setattr(editions, "_enqueue_dispatch",
                        lambda edition, **kwargs: calls.append(edition.pk))
    return calls
