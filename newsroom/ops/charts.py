"""Small line charts as inline SVG, drawn on the server.

The Operations page reloads itself and has no JavaScript build, so a chart is
plain SVG markup: one polyline scaled into a fixed box, its first and last time
and its 0 and highest value as axis labels, and a <title> and <desc> that
screen readers announce instead of the picture. Every piece of text goes
through format_html, so queue names and titles cannot inject markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import slugify

Point = tuple[float, float]  # (unix time, value)

# The plot area inside the box: room on the left for the value labels and at
# the bottom for the time labels.
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 8, 18


def clock(timestamp: float) -> str:
    """A time of day in the site's time zone, for the time axis."""
    return datetime.fromtimestamp(timestamp, tz=timezone.get_current_timezone()).strftime(
        "%H:%M"
    )


def number(value: float) -> str:
    """Whole numbers as such, others with one decimal: axis labels stay short."""
    return f"{value:.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.1f}"


def line_chart(
    points: Sequence[Point], *, title: str, unit: str, ident: str | None = None,
    width: int = 320, height: int = 110, time_format: Callable[[float], str] = clock,
    empty: str = "No data yet",
) -> SafeString:
    """An accessible SVG line chart of `points`, oldest first.

    The value axis starts at 0, so a flat line at the bottom means "nothing",
    never "a little". `ident` makes the ids of title and desc unique on a page
    (default: from the title).
    """
    ident = slugify(ident or title) or "chart"
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    bottom, right = _TOP + plot_h, _LEFT + plot_w
    head = format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="ops-chart" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-labelledby="{i}-title {i}-desc">'
        '<title id="{i}-title">{title}</title>',
        w=width, h=height, i=ident, title=title,
    )
    if not points:
        return format_html(
            '{}<desc id="{}-desc">{}.</desc>'
            '<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="currentColor">'
            "{}</text></svg>",
            head, ident, empty, width // 2, height // 2, empty,
        )

    times = [t for t, _ in points]
    values = [v for _, v in points]
    first, last = times[0], times[-1]
    top = max(max(values), 0) or 1  # an all-zero series still gets a scale
    span = last - first

    def xy(t: float, v: float) -> tuple[str, str]:
        x = _LEFT + (plot_w * (t - first) / span if span > 0 else plot_w / 2)
        y = bottom - plot_h * max(v, 0) / top
        return f"{x:.1f}", f"{y:.1f}"

    coords = [xy(t, v) for t, v in points]
    desc = (
        f"{len(points)} samples from {time_format(first)} to {time_format(last)}: "
        f"latest {number(values[-1])} {unit}, highest {number(max(values))} {unit}."
    )
    return format_html(
        '{head}<desc id="{i}-desc">{desc}</desc>'
        '<g stroke="currentColor" stroke-opacity="0.35">'
        '<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>'
        '<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}"/>'
        "</g>"
        '<g font-size="10" fill="currentColor">'
        '<text x="{lx}" y="{ty}" text-anchor="end">{top}</text>'
        '<text x="{lx}" y="{y1}" text-anchor="end">0</text>'
        '<text x="{lx}" y="{uy}" text-anchor="end" font-size="8">{unit}</text>'
        '<text x="{x0}" y="{xy}" text-anchor="start">{start}</text>'
        '<text x="{x1}" y="{xy}" text-anchor="end">{end}</text>'
        "</g>"
        '<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{poly}"/>'
        '<circle cx="{cx}" cy="{cy}" r="2.5" fill="currentColor"/></svg>',
        head=head, i=ident, desc=desc, x0=_LEFT, y0=_TOP, y1=bottom, x1=right,
        lx=_LEFT - 4, ty=_TOP + 8, uy=_TOP + 18, top=number(top), unit=unit,
        xy=height - 4, start=time_format(first), end=time_format(last),
        poly=format_html_join(" ", "{},{}", coords), cx=coords[-1][0], cy=coords[-1][1],
    )
