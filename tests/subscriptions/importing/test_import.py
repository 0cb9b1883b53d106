"""Importing other tools' exports: what each row becomes, idempotence, dry runs."""

from __future__ import annotations

import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from subscriptions.importing.formats import Source
from subscriptions.importing.service import (
    ImportOptions,
    ImportRefused,
    subscribers_import,
)
from subscriptions.models import ConsentRecord, Subscriber
from tests.subscriptions import factories as f

SAMPLES = Path(__file__).parent / "samples"
MAILCHIMP_MAP = {"Policy Watchers": "policy", "Morning Brief": "morning", "Sports Desk": "sport"}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def topics():
    return [f.category("policy"), f.category("sport"), f.category("morning")]


@pytest.fixture
def mailchimp_zip(tmp_path):
    path = tmp_path / "audience.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in sorted((SAMPLES / "mailchimp").iterdir()):
            archive.write(member, member.name)
    return path


def run(path, fmt, **options):
    options.setdefault("mapping", {})
    return subscribers_import(source=Source(Path(path), fmt),
                              options=ImportOptions(format=fmt, **options))


def state():
    """Everything an import may change, to compare before and after."""
    return (
        sorted(Subscriber.objects.values_list("email", "status", "confirmed_at",
                                              "unsubscribed_at", "suppression_reason")),
        sorted(Subscriber.categories.through.objects.values_list("subscriber__email",
                                                                 "category__slug")),
        ConsentRecord.objects.count(),
    )


def test_mailchimp_audience_zip(mailchimp_zip):
    report = run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)

    assert (report.rows, report.new, report.suppressed, report.bad) == (8, 3, 3, 2)
    ada = Subscriber.objects.get(email="ada@example.com")
    assert ada.status == Subscriber.Status.ACTIVE
    assert ada.confirmed_at == datetime(2019, 3, 1, 9, 16, 30, tzinfo=UTC)
    assert sorted(ada.categories.values_list("slug", flat=True)) == ["morning", "policy"]
    consent = ada.consents.get()
    assert (consent.action, consent.method, consent.at) == (
        "signup", "import", datetime(2019, 3, 1, 9, 16, 30, tzinfo=UTC))
    assert consent.details["source"] == "mailchimp"
    assert consent.ip_address == "198.51.100.7"
    # One spelling: the capitalised address and its repeat are one reader.
    assert Subscriber.objects.filter(email="bob@example.org").count() == 1
    assert ("subscribed_members_export.csv:6",
            "bob@example.org appears on an earlier line") in report.bad_lines
    assert any(line == "subscribed_members_export.csv:5" and "valid email" in reason
               for line, reason in report.bad_lines)
    assert not Subscriber.objects.filter(email__startswith="not-an").exists()
    # Unsubscribed, complained and cleaned: suppressions, never active.
    statuses = dict(Subscriber.objects.values_list("email", "status"))
    assert statuses["dan@example.com"] == "unsubscribed"
    assert statuses["erin@example.org"] == "complained"
    assert statuses["frank@example.com"] == "bounced"
    dan = Subscriber.objects.get(email="dan@example.com")
    assert dan.unsubscribed_at == datetime(2022, 12, 5, 21, 1, 47, tzinfo=UTC)
    assert [c.action for c in dan.consents.all()] == ["signup", "withdraw"]


def test_reimport_changes_nothing(mailchimp_zip):
    run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)
    before = state()
    report = run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)
    assert state() == before
    assert (report.new, report.suppressed, report.updated, report.unchanged) == (0, 0, 0, 6)


def test_dry_run_saves_nothing_and_reports_the_same(mailchimp_zip):
    dry = run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP, dry_run=True)
    assert state() == ([], [], 0)
    real = run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)
    assert dry.as_dict() | {"dry_run": False} == real.as_dict()


def test_unmapped_tags_are_reported_not_dropped_silently(mailchimp_zip):
    report = run(mailchimp_zip, "mailchimp", mapping={"Policy Watchers": "policy"})
    assert report.unmapped_tags == {"Morning Brief": 3, "Sports Desk": 2}
    assert "'Morning Brief': 3 rows" in "\n".join(report.lines())


def test_a_reader_who_left_here_is_never_reactivated(mailchimp_zip):
    f.subscriber("ada@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    report = run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)
    assert Subscriber.objects.get(email="ada@example.com").status == "unsubscribed"
    assert report.kept_suppressed == 1
    assert not ConsentRecord.objects.filter(subscriber__email="ada@example.com").exists()


def test_known_readers_keep_their_choices_and_leave_if_they_left_later(mailchimp_zip):
    mine = f.subscriber("carol@example.com", categories=[f.category("policy")])
    stayed = f.subscriber("dan@example.com",  # came back here after leaving Mailchimp
                          confirmed_at=datetime(2024, 1, 1, tzinfo=UTC))
    left = f.subscriber("erin@example.org", confirmed_at=datetime(2019, 1, 1, tzinfo=UTC))
    pending = f.subscriber("bob@example.org", status=Subscriber.Status.PENDING)
    run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP)
    for row in (mine, stayed, left, pending):
        row.refresh_from_db()
    assert list(mine.categories.values_list("slug", flat=True)) == ["policy"]
    assert stayed.status == "active"
    assert left.status == "complained"
    assert pending.status == "active"
    assert pending.consents.get().action == "confirm"


def test_require_confirmation_mails_the_double_opt_in(mailchimp_zip, monkeypatch,
                                                      django_capture_on_commit_callbacks):
    from subscriptions.importing import service

    asked: list[list[int]] = []
    monkeypatch.setattr(service, "_ask_to_confirm", asked.append)
    with django_capture_on_commit_callbacks(execute=True):
        run(mailchimp_zip, "mailchimp", mapping=MAILCHIMP_MAP, require_confirmation=True)
    ada = Subscriber.objects.get(email="ada@example.com")
    assert ada.status == "pending"
    assert ada.pk in asked[0]
    assert ada.consents.get().details["require_confirmation"] is True


def test_listmonk(topics):
    report = run(SAMPLES / "listmonk_subscribers.csv", "listmonk", source_list="sport")
    assert (report.new, report.suppressed, report.bad) == (1, 1, 2)
    gina = Subscriber.objects.get(email="gina@example.com")
    assert list(gina.categories.values_list("slug", flat=True)) == ["sport"]
    assert gina.confirmed_at == datetime(2023, 4, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert Subscriber.objects.get(email="hank@example.org").status == "unsubscribed"
    reasons = dict(report.bad_lines)
    assert "localhost" in reasons["4"]
    assert reasons["5"] == "the attributes are not valid JSON"


def test_ghost():
    report = run(SAMPLES / "ghost_members.csv", "ghost",
                 mapping={"Policy Watchers": "policy", "Morning Brief": "morning"})
    assert (report.new, report.suppressed, report.bad) == (1, 1, 1)
    assert report.unmapped_tags == {"VIP": 1}
    assert dict(report.bad_lines)["4"] == "'yesterday' is not a date and time I can read"
    assert Subscriber.objects.get(email="lee@example.org").status == "unsubscribed"


def test_substack():
    report = run(SAMPLES / "substack_email_list.csv", "substack")
    assert (report.new, report.suppressed, report.bad) == (2, 1, 0)
    assert Subscriber.objects.get(email="oscar@example.org").status == "unsubscribed"


def test_plain_csv():
    report = run(SAMPLES / "plain.csv", "csv")
    assert (report.new, report.suppressed, report.skipped, report.bad) == (1, 1, 1, 1)
    quinn = Subscriber.objects.get(email="quinn@example.com")
    assert sorted(quinn.categories.values_list("slug", flat=True)) == ["policy", "sport"]
    assert not Subscriber.objects.filter(email="sam@example.com").exists()
    assert "unknown status 'sleeping'" in dict(report.bad_lines)["5"]


def test_wrong_format_and_unknown_topic_are_refused_before_any_row():
    with pytest.raises(ImportRefused, match="no 'Email Address' column"):
        run(SAMPLES / "plain.csv", "mailchimp")
    with pytest.raises(ImportRefused, match="No topic with the slug 'nope'"):
        run(SAMPLES / "plain.csv", "csv", mapping={"x": "nope"})
    assert state() == ([], [], 0)


def test_command(tmp_path, capsys):
    folder = tmp_path / "mc"
    shutil.copytree(SAMPLES / "mailchimp", folder)
    call_command("import_subscribers", str(folder / "subscribed_members_export.csv"),
                 "--format", "mailchimp", "--map", "Policy Watchers=policy",
                 "--map", "Morning Brief=morning", "--map", "Sports Desk=sport", "--dry-run")
    out = capsys.readouterr().out
    assert "dry run, nothing saved" in out
    assert "3 new subscribers would be added" in out
    assert "line 5:" in out
    assert Subscriber.objects.count() == 0
    with pytest.raises(CommandError, match="Their tag=topic-slug"):
        call_command("import_subscribers", str(SAMPLES / "plain.csv"), "--format", "csv",
                     "--map", "policy")
