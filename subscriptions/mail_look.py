"""The look every email shares: masthead, colours, and text that cannot spoof.

Edition and account emails render through one layout
(`subscriptions/editions/_layout.html`); this module gives it the masthead
settings and colours, and cleans text that reaches an inbox line.
"""

from __future__ import annotations

import re
from functools import lru_cache

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

# Light and dark surfaces of the layout; every text colour on them passes 4.5:1.
PAPER, INK = "#ffffff", "#1b1b1b"
NIGHT_PAPER, NIGHT_INK = "#1e1e1e", "#ececec"
NIGHT_TINT = "#2a2a2a"  # boxes on the dark paper ("in this issue", code)
# Bidi controls (embeddings, overrides, isolates, marks): in a subject or headline
# they reorder what the reader sees ("gpj.exe" shown as "exe.jpg").
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def strip_bidi(text: str) -> str:
    return _BIDI.sub("", text)


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@lru_cache(maxsize=8)
def _on_night(brand: str) -> str:
    """The brand colour lightened (mixed with white) until it reads on the dark paper
    and its boxes: a dark red kicker or link would vanish there."""
    r, g, b = (int(brand[i : i + 2], 16) for i in (1, 3, 5))
    for step in range(21):
        t = step / 20
        mixed = "#{:02x}{:02x}{:02x}".format(*(round(c + (255 - c) * t) for c in (r, g, b)))
        if contrast(mixed, NIGHT_TINT) >= 4.5:  # the lighter of the dark surfaces
            return mixed
    return NIGHT_INK


@lru_cache(maxsize=8)
def _styles(values: tuple[tuple[str, str], ...]) -> SafeString:
    # Its dozens of colour variables cost more to render than the rest of a digest's frame.
    return mark_safe(render_to_string("subscriptions/editions/_styles.html", dict(values)))  # noqa: S308


def look() -> dict[str, str]:
    """The layout's masthead, colours and CSS, from settings (a key for caches too)."""
    values = _values()
    return {**values, "styles": _styles(tuple(values.items()))}


def _values() -> dict[str, str]:
    brand = settings.NEWSROOM_BRAND_COLOR.lower()
    return {
        "site_name": settings.NEWSROOM_NAME,
        "site_url": settings.SITE_URL,
        "postal_address": settings.NEWSROOM_POSTAL_ADDRESS,
        "logo_url": settings.NEWSROOM_LOGO_URL,
        "brand": brand,
        "brand_night": _on_night(brand),
        "night_paper": NIGHT_PAPER,
        "night_ink": NIGHT_INK,
        "night_tint": NIGHT_TINT,
    }
