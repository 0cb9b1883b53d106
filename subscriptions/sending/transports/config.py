"""Turn EMAIL_URL (and ANYMAIL_* variables) into Django email settings.

Three kinds of URL:
  outbox: (default)            every message becomes an .eml file in the outbox folder
  smtp://user:pass@host:587    SMTP; `smtps://` for implicit TLS, `?tls=1` for STARTTLS
  anymail://mailgun            any ESP django-anymail supports; its settings come
                               from ANYMAIL_<NAME> variables, e.g. ANYMAIL_MAILGUN_API_KEY
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import EmailValidator

_TRUE = {"1", "true", "yes", "on"}


def _typed(key: str, value: str) -> str | float | bool:
    """Environment values are text; anymail wants a number for timeouts and
    booleans for its switches. Keys and secrets stay text even when all digits."""
    if key.endswith("TIMEOUT"):
        return float(value)
    if value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return value


def email_settings(
    email_url: str, environ: Mapping[str, str], *, outbox_dir: Path
) -> dict[str, Any]:
    """Settings for the transport named by `email_url`, plus the ANYMAIL dict."""
    anymail: dict[str, Any] = {
        key.removeprefix("ANYMAIL_"): _typed(key, value)
        for key, value in environ.items()
        if key.startswith("ANYMAIL_") and value
    }
    if "WEBHOOK_SECRET" in anymail and "," in anymail["WEBHOOK_SECRET"]:
        anymail["WEBHOOK_SECRET"] = [s.strip() for s in anymail["WEBHOOK_SECRET"].split(",")]
    result: dict[str, Any] = {"ANYMAIL": anymail, "EMAIL_TIMEOUT": 30}

    parts = urlsplit(email_url or "outbox:")
    scheme = parts.scheme.lower()
    if scheme == "outbox":
        result["EMAIL_BACKEND"] = "subscriptions.sending.transports.outbox.OutboxBackend"
        result["EMAIL_FILE_PATH"] = str(outbox_dir)
        result["EMAIL_TRANSPORT"] = "outbox"
    elif scheme in {"smtp", "smtps"}:
        if not parts.hostname:
            raise ImproperlyConfigured(f"EMAIL_URL {email_url!r} names no SMTP host")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        result.update(
            EMAIL_BACKEND="subscriptions.sending.transports.smtp.SMTPBackend",
            EMAIL_HOST=parts.hostname,
            EMAIL_PORT=parts.port or (465 if scheme == "smtps" else 25),
            EMAIL_HOST_USER=unquote(parts.username or ""),
            EMAIL_HOST_PASSWORD=unquote(parts.password or ""),
            EMAIL_USE_SSL=scheme == "smtps",
            EMAIL_USE_TLS=query.get("tls", "").lower() in _TRUE,
            EMAIL_TRANSPORT="smtp",
        )
        if result["EMAIL_USE_SSL"] and result["EMAIL_USE_TLS"]:
            raise ImproperlyConfigured("EMAIL_URL: smtps:// already uses TLS; drop ?tls=1")
        if "timeout" in query:
            result["EMAIL_TIMEOUT"] = float(query["timeout"])
    elif scheme == "anymail":
        esp = (parts.netloc or parts.path).strip("/").lower().replace("-", "_")
        module = f"anymail.backends.{esp}"
        if not esp or importlib.util.find_spec(module) is None:
            raise ImproperlyConfigured(
                f"EMAIL_URL {email_url!r}: django-anymail has no backend named {esp!r}"
            )
        result["EMAIL_BACKEND"] = f"{module}.EmailBackend"
        result["EMAIL_TRANSPORT"] = esp
    else:
        raise ImproperlyConfigured(
            f"EMAIL_URL must start with outbox:, smtp://, smtps:// or anymail://, not {email_url!r}"
        )
    return result


def sender_address(name: str, value: str) -> str:
    """`value` (`addr@domain` or `Name <addr@domain>`) if it names exactly one
    valid address; else ImproperlyConfigured naming the variable.

    The default sender is `news@` the host of SITE_URL, so an IP or dotless
    SITE_URL yields `news@127.0.0.1`, which receivers refuse or junk: better
    refused here, at start-up, than discovered as bounces.
    """
    addresses = getaddresses([value])
    address = addresses[0][1] if len(addresses) == 1 else ""
    try:
        # The parser repairs what it reads (`a@[1.2.3.4` becomes `a@[1.2.3.4]`):
        # accept only what it found as written. Address literals are refused too.
        if address not in value or "\r" in value or "\n" in value or "@[" in address:
            raise ValidationError("not one plain address")
        EmailValidator()(address)
    except ValidationError:
        raise ImproperlyConfigured(
            f"{name} {value!r} is not a valid email address. Set {name} to an address at "
            "your mail domain, e.g. 'Newsroom <news@example.com>' (by default it is news@ "
            "the host of SITE_URL, which is no mail domain when SITE_URL is an IP address "
            "or a name without a dot)."
        ) from None
    return address


def sender_domain(from_email: str) -> str:
    """The domain of a sender address, for Message-IDs: receivers and spam filters
    expect an id in the sender's domain, not the sending machine's host name."""
    return parseaddr(from_email)[1].rpartition("@")[2] or "localhost"
