"""Read a bounce: a delivery status notification (RFC 3464) or a feedback-loop
complaint (RFC 5965, ARF), as JSON-like facts, without touching the database.

Both are `multipart/report` messages whose machine-readable part says what
happened; the human text around it differs by MTA and is not read. Postfix,
Exim, Sendmail, Microsoft and the big mailbox providers all send the standard
parts, so Python's email package is all it takes (flufl.bounce, Mailman's
detector, mostly adds heuristics for pre-RFC 3464 bounces, which the MTAs in
front of a newsroom's relay no longer send).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.utils import parseaddr
from enum import StrEnum


class Kind(StrEnum):
    HARD = "hard"  # Action: failed with a 5.x.x status: the address is gone
    SOFT = "soft"  # delayed, or failed with 4.x.x (mailbox full, over quota)
    COMPLAINT = "complaint"  # an ARF abuse report: the reader pressed "spam"


@dataclass(frozen=True)
class Report:
    """One recipient's fate in one bounce message."""

    kind: Kind
    recipient: str  # the address the report names ("" if redacted)
    status: str  # the enhanced status code, "5.1.1" ("" for complaints)
    diagnostic: str  # the remote server's words, or the feedback type
    report_id: str  # the bounce message's own id: the same bounce twice, the same id
    original_sender: str  # the envelope sender the report quotes (our VERP address)
    original_message_id: str  # the Message-ID of the mail that bounced, if enclosed


_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_ADDRESS_TYPE = re.compile(r"^\s*[\w-]+\s*;\s*")  # "rfc822; " before an address


def _field(fields: Message, name: str) -> str:
    return " ".join(str(fields.get(name, "")).split())


def _address(value: str) -> str:
    """`rfc822; a@b` or `<a@b>` -> `a@b`."""
    return _ADDRESS_TYPE.sub("", value).strip().strip("<>").strip()


def _messages(part: Message) -> list[Message]:
    """The parsed payload of a message/* part (field blocks, or the enclosed mail)."""
    payload = part.get_payload()
    return [m for m in payload if isinstance(m, Message)] if isinstance(payload, list) else []


def _enclosed(report: Message) -> Message | None:
    """The returned message (or its headers), if the report encloses one."""
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            return next(iter(_messages(part)), None)
        if kind == "text/rfc822-headers":
            content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                return message_from_bytes(content, policy=policy.compat32)
    return None


def reports_read(data: bytes) -> list[Report]:
    """Every recipient's report in `data`; [] when it is no report we understand
    (an auto-reply, a pre-standard bounce, spam sent to the bounce address)."""
    message = message_from_bytes(data, policy=policy.compat32)
    if message.get_content_type() != "multipart/report":
        return []
    report_id = _field(message, "Message-ID") or "sha256:" + hashlib.sha256(data).hexdigest()
    enclosed = _enclosed(message)
    original_id = _field(enclosed, "Message-ID") if enclosed is not None else ""
    report_type = (message.get_param("report-type") or "")
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    for part in message.walk():
        kind = part.get_content_type()
        if report_type == "delivery-status" and kind == "message/delivery-status":
            return _delivery_status(part, report_id, original_id)
        if report_type == "feedback-report" and kind == "message/feedback-report":
            return _feedback(part, report_id, original_id, enclosed)
    return []


def _delivery_status(part: Message, report_id: str, original_id: str) -> list[Report]:
    blocks = _messages(part)
    if not blocks:
        return []
    per_message, per_recipient = blocks[0], blocks[1:]
    # Postfix names the envelope sender; others leave it to the RCPT TO we were sent to.
    sender = _address(_field(per_message, "X-Postfix-Sender"))
    reports = []
    for fields in per_recipient:
        action = _field(fields, "Action").lower()
        match = _STATUS.search(_field(fields, "Status"))
        if action not in {"failed", "delayed"} or match is None:
            continue  # delivered, relayed, expanded: nothing went wrong
        kind = Kind.HARD if action == "failed" and match.group(1) == "5" else Kind.SOFT
        recipient = _address(_field(fields, "Final-Recipient")
                             or _field(fields, "Original-Recipient"))
        reports.append(Report(
            kind=kind, recipient=recipient, status=match.group(0),
            diagnostic=_field(fields, "Diagnostic-Code"), report_id=report_id,
            original_sender=sender, original_message_id=original_id,
        ))
    return reports


def _feedback(part: Message, report_id: str, original_id: str,
              enclosed: Message | None) -> list[Report]:
    fields = next(iter(_messages(part)), None)
    if fields is None:
        return []
    feedback_type = _field(fields, "Feedback-Type").lower()
    if feedback_type not in {"abuse", "fraud"}:
        return []  # not-spam, virus, other: no complaint about us
    # Providers often redact the recipient; the enclosed To is the last resort.
    recipient = _address(_field(fields, "Original-Rcpt-To")
                         or _field(fields, "Removal-Recipient")
                         or (parseaddr(_field(enclosed, "To"))[1] if enclosed is not None else ""))
    return [Report(
        kind=Kind.COMPLAINT, recipient=recipient, status="",
        diagnostic=f"feedback-type {feedback_type}", report_id=report_id,
        original_sender=_address(_field(fields, "Original-Mail-From")),
        original_message_id=original_id,
    )]
