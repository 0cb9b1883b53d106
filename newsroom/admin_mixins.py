"""Admin building blocks shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest


def admin_user(request: HttpRequest) -> User:
    """The user behind an admin request, typed as signed in: the admin site
    lets no anonymous request reach a view, an action or a save."""
    user = request.user
    assert isinstance(user, User), "admin views run for signed-in users only"
    return user


class ReadOnlyAdminMixin:
    """Shown, never added, changed or deleted through the admin: rows that
    services write (editions, deliveries, subscribers) or that aren't rows at all."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
