"""The operations app in the admin: the Operations page, and the send-rate
chart on each edition's page.

Both read what this app samples. The edition page belongs to subscriptions,
which may not import operations, so this app replaces its edition admin with a
subclass that draws the chart (INSTALLED_APPS lists this app after
subscriptions, whose admin must be registered first).
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.safestring import SafeString

from newsroom.models import Operations
from newsroom.ops.samples import edition_rate_chart
from newsroom.ops.views import OperationsAdmin
from subscriptions.admin.editions import EditionAdmin
from subscriptions.models import Edition


class EditionChartAdmin(EditionAdmin):
    """Subscriptions' edition admin, with the sampler's rate chart."""

    def rate_chart(self, edition: Edition) -> SafeString | None:
        return edition_rate_chart(edition)


admin.site.register(Operations, OperationsAdmin)
admin.site.unregister(Edition)
admin.site.register(Edition, EditionChartAdmin)
