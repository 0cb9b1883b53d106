"""The outbox (sending/transports/outbox.py): one .eml file per message."""

import email
from email import policy

from django.core.mail import EmailMultiAlternatives, get_connection

from subscriptions.sending.transports.base import Batch, Recipient
from subscriptions.sending.transports.outbox import OutboxBackend, OutboxTransport


def test_outbox_backend_writes_one_eml_file_per_message(tmp_path):
    connection = get_connection("subscriptions.sending.transports.outbox.OutboxBackend",
                                file_path=str(tmp_path))
    messages = []
    for n in range(3):
        msg = EmailMultiAlternatives(
            f"Subject {n} – ünïcode",  # noqa: RUF001
            "Plain body", "news@example.com", [f"r{n}@example.com"],
            connection=connection,
        )
        msg.attach_alternative("<p>HTML body</p>", "text/html")
        messages.append(msg)
    assert connection.send_messages(messages) == 3
    files = sorted(tmp_path.glob("*.eml"))
    assert len(files) == 3
    assert not list(tmp_path.glob("*.part"))
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert parsed["To"] in {"r0@example.com", "r1@example.com", "r2@example.com"}
    assert parsed["Subject"].startswith("Subject ")
    assert parsed.get_body(("html",)).get_content().strip() == "<p>HTML body</p>"
    assert parsed.get_body(("plain",)).get_content().strip() == "Plain body"


def test_the_transport_writes_each_prebuilt_message_as_it_is(tmp_path):
    transport = OutboxTransport(OutboxBackend(file_path=str(tmp_path / "out")))
    recipients = [Recipient(n, f"r{n}@example.com", {}, {}, "") for n in range(3)]
    results = transport.send(Batch(from_email="news@example.com", recipients=recipients,
                                   render=lambda r: f"To: {r.email}\r\n\r\nHi\r\n".encode()))
    assert [(r.delivery_id, r.status) for r in results] == [(0, "sent"), (1, "sent"), (2, "sent")]
    written = sorted(p.read_bytes() for p in (tmp_path / "out").glob("*.eml"))
    assert written == [f"To: r{n}@example.com\r\n\r\nHi\r\n".encode() for n in range(3)]


def test_a_folder_that_cannot_be_written_leaves_every_message_for_a_retry(tmp_path):
    folder = tmp_path / "out"
    folder.write_text("a file where the folder should be")
    transport = OutboxTransport(OutboxBackend(file_path=str(folder)))
    recipients = [Recipient(n, f"r{n}@example.com", {}, {}, "") for n in range(2)]
    results = transport.send(Batch(from_email="news@example.com", recipients=recipients,
                                   render=lambda r: b"x"))
    assert [(r.delivery_id, r.status) for r in results] == [(0, "retry"), (1, "retry")]
    assert "exists" in results[0].detail
