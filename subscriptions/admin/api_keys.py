"""API keys in the admin: create one (its full text shown once), see when each was
last used, revoke. Keys are never deleted, so the consent records that name a
key's prefix keep pointing at a known partner."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from subscriptions.models import ApiKey
from subscriptions.services.api_keys import api_key_create, api_key_revoke


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do.")

    class Meta:
        model = ApiKey
        fields = ["name", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "shown_prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]

    @admin.display(description="Key", ordering="prefix")
    def shown_prefix(self, key: ApiKey) -> str:
        return f"nr_{key.prefix}_…"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        # A key's powers never change: revoke it and make another.
        return ["shown_prefix", "scopes", "created_at", "last_used_at", "revoked_at"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        if obj is not None:  # the change form edits the name only
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, full_key = api_key_create(name=obj.name, scopes=form.cleaned_data["scopes"])
        obj.pk, obj.prefix, obj.secret_hash = key.pk, key.prefix, key.secret_hash
        obj.scopes, obj.created_at = key.scopes, key.created_at
        obj._state.adding = False
        obj.full_key = full_key  # type: ignore[attr-defined]  # for response_add, this request only

    def response_add(self, request: HttpRequest, obj: ApiKey,
                     post_url_continue: str | None = None) -> HttpResponse:
        """A page with the full key, instead of a message: messages outlive the
        request in the session, and the key must be stored nowhere in clear."""
        response = TemplateResponse(request, "admin/subscriptions/apikey/created.html", {
            **self.admin_site.each_context(request),
            "opts": self.opts, "key": obj, "full_key": getattr(obj, "full_key", ""),
            "title": "API key created",
        })
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(api_key_revoke(key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)
