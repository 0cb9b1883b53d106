"""Forms for the public subscription pages.

The forms only validate and translate input into the services' `Preferences`;
every write goes through `subscriptions.services.subscribers`. Error messages
say what to do, because they are read out by screen readers on their own.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections import defaultdict

from django import forms
from django.utils.html import escape, format_html, json_script
from django.utils.safestring import mark_safe

from newsroom.models import Category
from subscriptions.addresses import AddressError, normalise_email
from subscriptions.models import Subscriber
from subscriptions.services.subscribers import Preferences
from subscriptions.tz_aliases import ALIASES

DEFAULT_TIMEZONE = "UTC"
DEFAULT_DIGEST_HOUR = 7
YES, NO = "yes", "no"


# Files in the zone folder that are not places a reader lives in.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def timezone_names() -> frozenset[str]:
    """The canonical IANA zone names a reader chooses from.

    Cached because it is read from disk on each call. Backward-compatible
    aliases (Africa/Asmera, America/Buenos_Aires) are left out: each would be
    a second entry for one place. `timezone_canonical` maps them.
    """
    names = zoneinfo.available_timezones() - NOT_ZONES - ALIASES.keys()
    return frozenset(names | {DEFAULT_TIMEZONE})


def timezone_canonical(name: str) -> str:
    """The listed name for `name`: "Asia/Calcutta" is "Asia/Kolkata"."""
    return ALIASES.get(name, name)


@functools.cache
def timezone_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Zones grouped by region (optgroups), so a long list stays scannable."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name in sorted(timezone_names()):
        region, _, place = name.partition("/")
        groups[region if place else "Other"].append((name, name.replace("_", " ")))
    return sorted(groups.items(), key=lambda item: (item[0] == "Other", item[0]))


@functools.cache
def _timezone_option_parts() -> tuple[tuple[str | None, str, str], ...]:
    """(value, markup before the `selected` slot, markup after it) for the whole list,
    exactly as Django's select.html and select_option.html would render it."""
    parts: list[tuple[str | None, str, str]] = []
    for region, zones in timezone_choices():
        parts.append((None, f'\n  <optgroup label="{escape(region)}">', ""))
        parts += [(name, f'\n  <option value="{escape(name)}"', f">{escape(label)}</option>\n")
                  for name, label in zones]
        parts.append((None, "\n  </optgroup>", ""))
    return tuple(parts)


class TimezoneSelect(forms.Select):
    """Django's Select for the ~600 zones, from option markup built once per process.

    The stock widget builds a dict and renders a template include per option on
    every page view: ~35 ms of the ~46 ms of CPU a sign-up page took (benchmarks/web_load.py).
    The HTML is the same (tests/subscriptions/test_timezone_select.py).
    """

    template_name = "subscriptions/widgets/timezone_select.html"

    def get_context(self, name, value, attrs):
        # The plain widget context (name, value, attrs), without ChoiceWidget's optgroups.
        context = forms.Widget.get_context(self, name, value, attrs)
        values = context["widget"]["value"]  # a list of strings (ChoiceWidget.format_value)
        selected = values[0] if values else None
        context["widget"]["options_html"] = mark_safe("".join(  # noqa: S308 - escaped above
            before + (" selected" if option == selected and option is not None else "") + after
            for option, before, after in _timezone_option_parts()
        ))
        return context

    def use_required_attribute(self, initial) -> bool:
        # Select's own answer, worked out without normalising the ~600 choices again on
        # every render: no `required`, because the first option (in a group) has a value.
        return False


def timezone_or_default(*candidates: str | None) -> str:
    """The first candidate that is a real zone name (from a query or a cookie), else UTC."""
    names = timezone_names()
    canonical = (timezone_canonical(name) for name in candidates if name)
    return next((name for name in canonical if name in names), DEFAULT_TIMEZONE)


@functools.cache
def timezone_aliases_script() -> str:
    """The alias table as a JSON data block for subscriptions/timezone.js.

    Browsers report ICU's names, often the old ones (Chrome: "Asia/Calcutta",
    "Europe/Kiev"); the script maps them to an option of the list. A data
    block is not executed, so a strict script-src CSP allows it.
    """
    return json_script(ALIASES, "timezone-aliases")


@functools.cache
def digest_hour_choices() -> list[tuple[int, str]]:
    """Callable choices: a form copies a list of choices per instance, a callable not."""
    return [(hour, f"{hour:02d}:00") for hour in range(24)]


class TimezoneField(forms.ChoiceField):
    """A choice of canonical zone that also takes an alias and stores its zone."""

    def to_python(self, value):
        return timezone_canonical(super().to_python(value))

    def valid_value(self, value) -> bool:
        # The choices are exactly `timezone_names()`: a set lookup, where ChoiceField's
        # own check normalises the ~600 grouped choices again on every sign-up.
        return str(value) in timezone_names()


class TopicField(forms.ModelMultipleChoiceField):
    """Categories as checkboxes whose labels carry the category's description."""

    widget = forms.CheckboxSelectMultiple

    def _check_values(self, value):
        # `pk__in` with a number past a bigint is an OverflowError in the SQLite
        # driver, a 500: refuse anything but short ASCII digits before the query.
        for pk in value:
            if not re.fullmatch(r"[0-9]{1,18}", str(pk)):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                    params={"pk": pk},
                )
        # Django's own (private) step, which django-stubs does not declare.
        return super()._check_values(value)  # type: ignore[misc]

    def label_from_instance(self, obj: Category) -> str:
        if not obj.description:
            return obj.name
        return format_html(
            '<span><span class="choice-name">{}</span> <span class="choice-hint">{}</span></span>',
            obj.name, obj.description,
        )


class AddressField(forms.EmailField):
    """An email address in the spelling we store (subscriptions/addresses.py).

    Normalised before Django's syntax check, so an invisible character, an IP
    literal, localhost or a dotless domain (the last three Django accepts) is
    refused with its reason rather than a bare "not valid"; the syntax check
    then reads the ASCII form of the domain.
    """

    def clean(self, value):
        value = self.to_python(value)
        if value not in self.empty_values:
            try:
                value = normalise_email(value)
            except AddressError as exc:
                raise forms.ValidationError(str(exc), code="invalid") from None
        self.validate(value)
        self.run_validators(value)
        return value


class PreferencesForm(forms.Form):
    """What a subscriber receives; shared by the sign-up and preferences pages."""

    topics_required_message = "Choose at least one topic."

    categories = TopicField(
        label="Topics", queryset=Category.objects.order_by("order", "name"),
        error_messages={"invalid_choice": "Choose topics from the list.",
                        "invalid_pk_value": "Choose topics from the list."},
    )
    frequency = forms.ChoiceField(
        label="Digest", choices=Subscriber.Frequency.choices, initial=Subscriber.Frequency.DAILY,
        widget=forms.RadioSelect,
        help_text="A summary of the latest stories on your topics.",
        error_messages={"required": "Choose how often you want the digest.",
                        "invalid_choice": "Choose daily, weekly or no digest."},
    )
    digest_hour = forms.TypedChoiceField(
        label="Digest time", coerce=int, initial=DEFAULT_DIGEST_HOUR,
        choices=digest_hour_choices,
        help_text="The hour, in your time zone, when the digest arrives.",
        error_messages={"required": "Choose an hour from 0 to 23.",
                        "invalid_choice": "Choose an hour from 0 to 23."},
    )
    timezone = TimezoneField(
        label="Time zone", choices=timezone_choices, initial=DEFAULT_TIMEZONE,
        widget=TimezoneSelect,
        error_messages={"required": "Choose your time zone.",
                        "invalid_choice": "Choose a time zone from the list, e.g. Europe/Berlin."},
    )
    wants_alerts = forms.TypedChoiceField(
        label="Breaking news alerts", coerce=lambda value: value == YES, initial=YES,
        choices=[(YES, "Yes, email me when big news breaks"), (NO, "No alerts")],
        widget=forms.RadioSelect,
        help_text="Only for major stories on your topics, at any hour.",
        error_messages={"required": "Choose whether you want breaking news alerts."},
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["categories"].error_messages["required"] = self.topics_required_message

    def preferences(self) -> Preferences:
        data = self.cleaned_data
        return Preferences(
            categories=tuple(data["categories"]), frequency=data["frequency"],
            wants_alerts=data["wants_alerts"], timezone=data["timezone"],
            digest_hour=data["digest_hour"],
        )

    @classmethod
    def initial_for(cls, subscriber: Subscriber) -> dict:
        """The subscriber's current settings, as the fields expect them."""
        return {
            "categories": list(subscriber.categories.all()),
            "frequency": subscriber.frequency,
            "digest_hour": subscriber.digest_hour,
            "timezone": timezone_canonical(subscriber.timezone),
            "wants_alerts": YES if subscriber.wants_alerts else NO,
        }


class SignupForm(PreferencesForm):
    email = AddressField(
        label="Email address", max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "spellcheck": "false"}),
        error_messages={"required": "Enter your email address.",
                        "invalid": "Enter a valid email address, like name@example.com.",
                        "max_length": "Enter an email address of at most 254 characters."},
    )

    field_order = ["email", "categories", "frequency", "digest_hour", "timezone", "wants_alerts"]


class ManageForm(PreferencesForm):
    # No topics at all would be a subscription that sends nothing: leaving is
    # a separate, explicit action (and records a withdrawal of consent).
    topics_required_message = (
        "Choose at least one topic. To stop all emails, use “Unsubscribe from everything” below."
    )
