"""The time-zone list of the sign-up and preferences pages (`forms.TimezoneSelect`).

Django's Select builds a dict and renders a template include for each of the ~600
zones on every page view: that was ~35 ms of the ~46 ms of CPU a sign-up page cost
(benchmarks/README.md, "Web load"). TimezoneSelect renders the same HTML from
option markup built once per process; these tests pin "the same HTML" and "no
per-zone work".
"""

from __future__ import annotations

import pytest
from django import forms
from django.forms.widgets import ChoiceWidget
from django.urls import reverse

from newsroom.models import Category
from subscriptions.forms import ManageForm, SignupForm, TimezoneSelect, timezone_choices


def _render(widget: forms.Widget, value, attrs: dict) -> str:
    field = forms.ChoiceField(choices=timezone_choices, widget=widget)
    return field.widget.render("timezone", value, attrs)


@pytest.mark.parametrize("value", [
    None, "", "UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "America/Port_of_Spain",
    "Mars/Olympus_Mons", '"><script>alert(1)</script>',
])
@pytest.mark.parametrize("attrs", [
    {"id": "id_timezone"},
    {"id": "id_timezone", "aria-describedby": "id_timezone_error", "aria-invalid": True,
     "required": True},
])
def test_renders_exactly_what_djangos_select_renders(value, attrs):
    assert _render(TimezoneSelect, value, attrs) == _render(forms.Select, value, attrs)


@pytest.mark.parametrize("data", [None, {}, {"timezone": "Europe/Berlin"},
                                  {"timezone": "Mars/Olympus_Mons"}])
def test_a_form_renders_the_same_field_as_with_djangos_select(data):
    """Through the form too: `required`, aria attributes of errors, the bound value."""

    class Stock(SignupForm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.fields["timezone"].widget = forms.Select()
            self.fields["timezone"].choices = timezone_choices  # sets the widget's too

    fast, stock = SignupForm(data=data), Stock(data=data)
    if data is not None:
        assert fast.is_valid() == stock.is_valid()
    assert str(fast["timezone"]) == str(stock["timezone"])
    assert fast["timezone"].as_field_group() == stock["timezone"].as_field_group()


def test_both_forms_use_it():
    assert isinstance(SignupForm().fields["timezone"].widget, TimezoneSelect)
    assert isinstance(ManageForm().fields["timezone"].widget, TimezoneSelect)


@pytest.mark.django_db
def test_the_signup_page_builds_no_option_per_zone(client, monkeypatch):
    Category.objects.create(name="World", slug="world", order=1)
    built: list[str] = []
    create_option = ChoiceWidget.create_option

    def counting(self, name, *args, **kwargs):
        built.append(name)
        return create_option(self, name, *args, **kwargs)

    monkeypatch.setattr(ChoiceWidget, "create_option", counting)
    page = client.get(reverse("subscriptions:signup") + "?tz=Asia/Tokyo").content.decode()

    assert "timezone" not in built  # the other fields still build theirs (24 hours, ...)
    assert page.count("<option ") == sum(len(zones) for _region, zones in timezone_choices()) + 24
    assert '<option value="Asia/Tokyo" selected>Asia/Tokyo</option>' in page
