"""Fixtures shared by the sending tests."""

import pytest

from subscriptions.sending import enqueue


@pytest.fixture
def no_enqueue(monkeypatch):
    """Keep the broker out of in-process tests: batches are run by the test."""
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)
