"""Exporting in the same formats, and the round trip import(export(x))."""

from __future__ import annotations

import csv
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions.importing.formats import FORMATS, Source
from subscriptions.importing.service import ImportOptions, subscribers_import
from subscriptions.models import ConsentRecord, Subscriber
from tests.subscriptions import factories as f

pytestmark = pytest.mark.django_db
SLUGS = ("policy", "sport", "morning")
STATUSES = ("active", "unsubscribed", "bounced", "complained")
# Substack's list has no topics and one kind of leaving (email_disabled); the
# other formats keep both.
KEPT_STATUS = {fmt: (lambda s: s) for fmt in FORMATS} | {
    "substack": lambda s: s if s == "active" else "unsubscribed"}
KEEPS_TOPICS = {fmt: fmt != "substack" for fmt in FORMATS}

readers = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9._+-]{0,12}", fullmatch=True),
        st.sampled_from(STATUSES),
        st.sets(st.sampled_from(SLUGS)),
        st.integers(0, 10 * 365 * 86400),  # whole seconds: Mailchimp writes no fractions
    ),
    min_size=1, max_size=12, unique_by=lambda r: r[0],
)


def snapshot():
    return {s.email: (s.status, tuple(sorted(c.slug for c in s.categories.all())), s.confirmed_at)
            for s in Subscriber.objects.prefetch_related("categories")}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fmt=st.sampled_from(FORMATS), people=readers)
def test_round_trip_keeps_address_topics_status_and_consent_time(tmp_path_factory, fmt, people):
    topics = {slug: f.category(slug) for slug in SLUGS}
    ConsentRecord.objects.all().delete()
    Subscriber.objects.all().delete()
    epoch = datetime(2015, 1, 1, tzinfo=UTC)
    for local, status, slugs, seconds in people:
        consented = epoch + timedelta(seconds=seconds)
        f.subscriber(f"{local}@example.com", status=status, confirmed_at=consented,
                     unsubscribed_at=None if status == "active" else consented + timedelta(days=1),
                     categories=[topics[s] for s in slugs])
    before = snapshot()
    path = tmp_path_factory.mktemp("export") / f"list.{'zip' if fmt == 'mailchimp' else 'csv'}"
    call_command("export_subscribers", "--format", fmt, str(path))
    ConsentRecord.objects.all().delete()
    Subscriber.objects.all().delete()

    report = subscribers_import(source=Source(path, fmt), options=ImportOptions(format=fmt))

    assert report.bad == 0 and not report.unmapped_tags
    kept = KEPT_STATUS[fmt]
    assert snapshot() == {email: (kept(status), slugs if KEEPS_TOPICS[fmt] else (), consented)
                          for email, (status, slugs, consented) in before.items()}


def test_mailchimp_export_is_the_three_files(tmp_path):
    f.subscriber("a@example.com", categories=[f.category("policy")])
    f.subscriber("b@example.com", status="bounced")
    f.subscriber("c@example.com", status="complained")
    f.subscriber("d@example.com", status="pending")  # no consent: no place in the export
    path = tmp_path / "audience.zip"
    call_command("export_subscribers", "--format", "mailchimp", str(path))
    with zipfile.ZipFile(path) as archive:
        files = {name: list(csv.DictReader(archive.read(name).decode().splitlines()))
                 for name in archive.namelist()}
    assert [r["Email Address"] for r in files["subscribed_members_export.csv"]] == ["a@example.com"]
    assert files["subscribed_members_export.csv"][0]["TAGS"] == '"policy"'
    assert [r["Email Address"] for r in files["cleaned_members_export.csv"]] == ["b@example.com"]
    unsubscribed = files["unsubscribed_members_export.csv"]
    assert [(r["Email Address"], r["UNSUB_REASON"]) for r in unsubscribed] == [
        ("c@example.com", "abuse complaint")]


def test_erased_readers_are_not_exported(tmp_path):
    f.subscriber("gone@example.com", erased_at=datetime(2024, 1, 1, tzinfo=UTC))
    path = tmp_path / "list.csv"
    call_command("export_subscribers", "--format", "csv", str(path))
    assert path.read_text().splitlines()[1:] == []
