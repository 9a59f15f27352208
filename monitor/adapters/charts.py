"""Server-rendered SVG charts for the status page: a rule's matching articles per hour.

One inline ``<svg>`` per rule (no scripts, no external resources: the page's CSP allows
neither): a bar per hour of the last 48 (UTC hours, the current one last), the baseline as
a dashed line, each signal as a red mark at its time with its kind's initial (B, S, E).
Every bar, the baseline and each mark carry a ``<title>``, which browsers show on hover.
"""

from __future__ import annotations

from html import escape

from monitor.observe.snapshot import ChartRow
from monitor.timefmt import utc_iso

__all__ = ["render_chart"]

WIDTH, HEIGHT = 600, 130
_LEFT, _RIGHT, _TOP, _BOTTOM = 34, 10, 16, 22
_KIND_MARK = {"burst": "B", "spike": "S", "escalation": "E"}


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def render_chart(chart: ChartRow) -> str:
    """The chart of one rule as an inline ``<svg>`` element (every value escaped)."""
    hours = len(chart.counts)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    bar_w = plot_w / max(1, hours)
    top = max(max(chart.counts, default=0), chart.baseline, 1.0)
    bottom = _TOP + plot_h

    def y(value: float) -> float:
        return bottom - value / top * plot_h

    total = sum(chart.counts)
    label = f"{chart.rule_id}: {total} matching articles in the last {hours} hours, {len(chart.signals)} signals"
    parts = [
        f'<svg class="chart" role="img" aria-label="{_t(label)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-size="10" font-family="system-ui,sans-serif">',
        f"<title>{_t(label)}</title>",
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{WIDTH - _RIGHT}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end" fill="#555">{_number(top)}</text>',
        f'<text x="{_LEFT - 4}" y="{bottom}" text-anchor="end" fill="#555">0</text>',
        f'<text x="{_LEFT}" y="{HEIGHT - 6}" fill="#555">{hours} h ago</text>',
        f'<text x="{WIDTH - _RIGHT}" y="{HEIGHT - 6}" text-anchor="end" fill="#555">now (UTC hours)</text>',
    ]
    for index, count in enumerate(chart.counts):
        if count:
            start = (chart.first_hour + index) * 3600
            parts.append(
                f'<rect class="bar" data-hour="{_t(utc_iso(start))}" x="{_LEFT + index * bar_w + 1:.1f}" y="{y(count):.1f}" '
                f'width="{max(1.0, bar_w - 2):.1f}" height="{bottom - y(count):.1f}" fill="#4a78c2">'
                f"<title>{_t(utc_iso(start))}: {count} matching article{'s' if count != 1 else ''}</title></rect>"
            )
    baseline = y(chart.baseline)
    parts.append(
        f'<line class="baseline" x1="{_LEFT}" y1="{baseline:.1f}" x2="{WIDTH - _RIGHT}" y2="{baseline:.1f}" '
        f'stroke="#9a6700" stroke-width="1.5" stroke-dasharray="5 3"><title>baseline: {chart.baseline:.2f} an hour</title></line>'
    )
    for moment, kind in chart.signals:
        x = _LEFT + (moment / 3600 - chart.first_hour) * bar_w
        mark = _KIND_MARK.get(kind, "?")
        parts.append(
            f'<g class="signal" data-kind="{_t(kind)}"><title>{_t(kind)} at {_t(utc_iso(moment))}</title>'
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#b42318" stroke-width="2"/>'
            f'<text x="{x:.1f}" y="{_TOP - 4}" text-anchor="middle" fill="#b42318" font-weight="bold">{mark}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
