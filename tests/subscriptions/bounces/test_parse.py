"""Reading DSNs and ARF reports, without the database."""

from pathlib import Path

from subscriptions.bounces.parse import Kind, reports_read

SAMPLES = Path(__file__).parent
VERP = "bounces+7.c.0123456789abcdef@bounce.example.com"


def sample(name: str, **replace: str) -> bytes:
    text = (SAMPLES / name).read_text().replace("@@VERP@@", VERP).replace(
        "@@RCPT@@", "ann@example.net").replace("@@DOMAIN@@", "bounce.example.com")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode()


def test_postfix_hard_bounce():
    [report] = reports_read(sample("postfix_hard.eml"))
    assert (report.kind, report.recipient, report.status) == (Kind.HARD, "ann@example.net", "5.1.1")
    assert report.diagnostic.startswith("smtp; 550 5.1.1 <ann@example.net>: Recipient address")
    assert report.report_id == "<20231114220003.6B1F21C0A3@mail.example.org>"
    assert report.original_sender == VERP  # X-Postfix-Sender
    assert report.original_message_id == "<e7.s12.0a1b2c3d4e5f@example.com>"


def test_exim_hard_bounce_with_a_generic_status():
    [report] = reports_read(sample("exim_hard.eml"))
    assert (report.kind, report.status) == (Kind.HARD, "5.0.0")
    assert report.original_message_id == "<e8.s12.9f8e7d6c5b4a@example.com>"


def test_a_delay_warning_and_a_4xx_failure_are_soft():
    [delayed] = reports_read(sample("postfix_soft.eml"))
    [failed] = reports_read(sample("postfix_soft.eml", **{"Action: delayed": "Action: failed"}))
    assert (delayed.kind, failed.kind, failed.status) == (Kind.SOFT, Kind.SOFT, "4.2.2")


def test_a_success_notice_is_no_bounce():
    assert reports_read(sample("postfix_hard.eml", **{"Action: failed": "Action: delivered",
                                                      "Status: 5.1.1": "Status: 2.0.0"})) == []


def test_an_arf_abuse_report_is_a_complaint_and_not_spam_is_not():
    [report] = reports_read(sample("arf_complaint.eml"))
    assert (report.kind, report.recipient, report.original_sender) == (
        Kind.COMPLAINT, "ann@example.net", VERP)
    assert reports_read(sample("arf_complaint.eml",
                               **{"Feedback-Type: abuse": "Feedback-Type: not-spam"})) == []


def test_a_redacted_arf_report_falls_back_to_the_enclosed_to():
    data = sample("arf_complaint.eml", **{"Original-Rcpt-To: <ann@example.net>\n": ""})
    [report] = reports_read(data)
    assert report.recipient == "ann@example.net"


def test_mail_that_is_no_report_gives_nothing():
    assert reports_read(b"Subject: Out of office\r\n\r\nBack on Monday.\r\n") == []
    assert reports_read(b"\x00\xff garbage") == []
