"""Signals the editorial side sends for the delivery side to act on.

Each is sent after the transaction that changed the story commits, so a
receiver never sees a state that could still roll back, and may enqueue work
that reads the story by id. Receivers get ids and values, never model
instances: they are meant to hand them straight to a Celery task.
"""

from django.dispatch import Signal

# kwargs: story_id: int, withdraw_alerts: bool (the editor's choice, default True):
# the delivery side cancels the story's alert that has not reached everyone yet.
story_unpublished = Signal()
