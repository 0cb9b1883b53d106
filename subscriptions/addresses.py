"""One spelling per mailbox: how an address is checked and normalised.

Every place that stores or looks up an address goes through `normalise_email`
(sign-up, tracking webhooks, the admin's forms and search, rate limits), so a
suppression reaches the row the mail goes to. Without it,
`user@` followed by `example.com` in fullwidth letters or a domain with a zero-width
space became a second subscriber while the mail went to the same mailbox, and a
complaint the ESP reports in ASCII (`xn--…`) never found the IDN subscriber.

- The domain is NFKC-normalised (fullwidth → ASCII) and then encoded with IDNA
  2008 / UTS #46 (the `idna` package; the stdlib codec is IDNA 2003) to its
  ASCII form, which is what ESPs report and SMTP servers are given.
- The local part is only lower-cased: NFKC there could change which mailbox
  is meant, and Django's validator takes ASCII local parts only anyway.
- Refused, with a message saying what to fix: invisible or control characters
  anywhere (Unicode categories Cc, Cf, Co, Cs, Cn, Z* and the other
  default-ignorables such as the Hangul filler), IP literals (`[192.0.2.1]`) and
  bare IPs, `localhost`, and dotless domains: none is a public mailbox we can
  deliver to, and the invisible ones are how look-alikes are made.
"""

from __future__ import annotations

import contextlib
import functools
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import idna
from django.db.models import QuerySet
from django.db.models.functions import Lower

MAX_LENGTH = 254  # RFC 5321 path limit, and Subscriber.email's max_length
# Addresses per `IN (...)` query: far below SQLite's 32,766 bound variables.
_IN_CHUNK = 500

# Characters no reader types on purpose and no font shows: Unicode's control,
# format, private-use, surrogate, unassigned and separator categories...
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zs", "Zl", "Zp"})
# ...and the default-ignorable code points filed elsewhere (letters, marks).
INVISIBLE_CHARACTERS = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))  # variation selectors
)


class AddressError(ValueError):
    """An address we will not store or look up; the message says what to fix."""


# In ASCII only the controls are invisible (the space is refused by the syntax).
_ASCII_INVISIBLE = re.compile(r"[\x00-\x1f\x7f]")


def invisible_character(text: str) -> str | None:
    """The first invisible or control character in `text`, described, or None."""
    if text.isascii():  # the common case, at C speed (an import reads millions)
        found = _ASCII_INVISIBLE.search(text)
        text = found.group() if found else ""
    for char in text:
        if char == " ":  # visible, and refused by the address syntax anyway
            continue
        if char in INVISIBLE_CHARACTERS or unicodedata.category(char) in INVISIBLE_CATEGORIES:
            name = unicodedata.name(char, "an invisible character")
            return f"U+{ord(char):04X} {name}"
    return None


@functools.lru_cache(maxsize=4096)  # a pure function; imports meet few domains, many times
def normalise_domain(domain: str) -> str:
    """The ASCII (IDNA) form of a mail domain; AddressError if it cannot be one."""
    if domain.startswith("["):
        raise AddressError("Addresses at an IP address ([…]) cannot get our email: "
                           "use one with a domain name, like name@example.com.")
    try:
        ascii_domain = idna.encode(unicodedata.normalize("NFKC", domain), uts46=True,
                                   std3_rules=True).decode("ascii").removesuffix(".")
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"The part after @ is not a valid domain name ({exc}).") from None
    labels = ascii_domain.split(".")
    if labels[-1] == "localhost":
        raise AddressError("Addresses at localhost cannot get our email: "
                           "use one with a public domain, like name@example.com.")
    if len(labels) < 2:
        raise AddressError("The part after @ needs a dot, like example.com.")
    if labels[-1].isdigit():
        raise AddressError("Addresses at an IP address cannot get our email: "
                           "use one with a domain name, like name@example.com.")
    return ascii_domain


def normalise_email(address: str) -> str:
    """The one spelling we store and look up; AddressError if it is not a mailbox.

    Local parts are case-sensitive in theory, but no mailbox provider treats
    them so, and two rows for Ann@ and ann@ would mean two copies of every alert.
    """
    address = address.strip()
    if problem := invisible_character(address):
        raise AddressError(f"The address contains an invisible character ({problem}): "
                           "type it again without it.")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("Enter a valid email address, like name@example.com.")
    normalised = f"{local.lower()}@{normalise_domain(domain)}"
    if len(normalised) > MAX_LENGTH:
        raise AddressError(f"Enter an email address of at most {MAX_LENGTH} characters.")
    return normalised


def email_lookup(address: str) -> str | None:
    """The stored spelling to look `address` up by, or None if no row can have it."""
    try:
        return normalise_email(address)
    except AddressError:
        return None


def search_term(term: str) -> str:
    """An admin search term in stored spelling: fullwidth `example` finds `example`,
    `bücher.de` finds `xn--bcher-kva.de`. Parts that cannot be encoded stay as typed."""
    words = []
    for word in unicodedata.normalize("NFKC", term).lower().split():
        if not word.isascii():
            local, at, domain = word.rpartition("@")
            with contextlib.suppress(idna.IDNAError, UnicodeError):
                word = local + at + idna.encode(domain, uts46=True).decode("ascii")
        words.append(word)
    return " ".join(words)


@dataclass(frozen=True)
class AddressAudit:
    """What normalising the stored addresses would do (migration 0008, and
    `manage.py subscriber_addresses`)."""

    renames: dict[int, str]  # id -> its normal spelling, which no other row has
    collisions: dict[str, list[int]]  # normal spelling -> the ids that would share it
    invalid: dict[int, str]  # id -> why its address cannot be normalised

    @property
    def problems(self) -> int:
        return sum(len(ids) for ids in self.collisions.values()) + len(self.invalid)


def address_audit(subscribers: QuerySet) -> AddressAudit:
    """Sort stored addresses into safe renames, collisions and invalid ones.

    A collision (two rows, one mailbox) is never resolved here: merging would
    lose one row's consent history or preferences and deleting would lose a
    suppression, so both rows stay and a person decides. Reads every row once,
    holding only the rows that would change.
    """
    changes: dict[int, str] = {}
    invalid: dict[int, str] = {}
    for pk, stored in subscribers.values_list("pk", "email").iterator(chunk_size=2000):
        try:
            normal = normalise_email(stored)
        except AddressError as exc:
            invalid[pk] = str(exc)
            continue
        if normal != stored:
            changes[pk] = normal
    claims: dict[str, list[int]] = defaultdict(list)
    for pk, normal in changes.items():
        claims[normal].append(pk)
    targets = list(claims)
    for start in range(0, len(targets), _IN_CHUNK):  # the rows that already have the spelling
        for lower, pk in (subscribers.annotate(lower=Lower("email"))
                          .filter(lower__in=targets[start:start + _IN_CHUNK])
                          .values_list("lower", "pk")):
            if pk not in claims[lower]:
                claims[lower].append(pk)
    collisions = {normal: sorted(ids) for normal, ids in claims.items() if len(ids) > 1}
    renames = {pk: normal for pk, normal in changes.items() if normal not in collisions}
    return AddressAudit(renames=renames, collisions=collisions, invalid=invalid)
