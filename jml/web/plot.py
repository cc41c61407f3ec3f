"""Deprovision durations against the SLA, drawn server-side as inline SVG (one chart per connector)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from jml.web.data import Clock
from jml.web.html import duration, h, when

W, H = 520, 170
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 12, 26


def _ticks(top: float) -> list[float]:
    """Three or four round values between 0 and `top` seconds."""
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400]
    step = next((s for s in steps if top / s <= 4), steps[-1] * max(1, int(top // (steps[-1] * 4)) + 1))
    return [i * step for i in range(int(top // step) + 1)]


def chart(connector: str, clocks: list[Clock], sla: dt.timedelta) -> str:
    sla_s = sla.total_seconds()
    values = [c.duration or 0.0 for c in clocks]
    top = max([*values, sla_s]) * 1.15 or 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + ph - (v / top) * ph

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{h(connector)}: deprovision durations of the last {len(clocks)} leavers against the '
             f'SLA of {h(duration(sla_s))}">']
    for t in _ticks(top):
        yy = y(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{h(duration(t))}</text>')
    n = max(len(values), 1)
    slot = pw / n
    bw = max(2.0, min(28.0, slot * 0.7))
    for i, (c, v) in enumerate(zip(clocks, values, strict=True)):
        x = LEFT + i * slot + (slot - bw) / 2
        late = v > sla_s or c.breached
        tip = f"{c.employee_id}: {duration(v)} (verified {when(c.verified_at)})"
        parts.append(f'<rect class="bar{" late" if late else ""}" x="{x:.1f}" y="{y(v):.1f}" width="{bw:.1f}" '
                     f'height="{max(1.0, ph - (y(v) - TOP)):.1f}"><title>{h(tip)}</title></rect>')
    sy = y(sla_s)
    parts.append(f'<line class="sla" x1="{LEFT}" x2="{W - RIGHT}" y1="{sy:.1f}" y2="{sy:.1f}"/>')
    parts.append(f'<text class="sla-label" x="{W - RIGHT - 4}" y="{sy - 4:.1f}" text-anchor="end">'
                 f'SLA {h(duration(sla_s))}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}"/>')
    parts.append(f'<text class="tick" x="{LEFT}" y="{H - 8}">oldest</text>')
    parts.append(f'<text class="tick" x="{W - RIGHT}" y="{H - 8}" text-anchor="end">newest</text>')
    parts.append("</svg>")
    late_n = sum(1 for c, v in zip(clocks, values, strict=True) if v > sla_s or c.breached)
    caption = (f"{len(clocks)} leaver{'s' if len(clocks) != 1 else ''}, median "
               f"{duration(sorted(values)[len(values) // 2]) if values else '—'}, {late_n} over the SLA")
    return (f'<figure class="plot"><figcaption><strong>{h(connector)}</strong> '
            f'<span class="muted">{h(caption)}</span></figcaption>{"".join(parts)}</figure>')


def durations_section(per_connector: dict[str, list[Clock]], sla_for: Callable[[str], dt.timedelta]) -> str:
    if not per_connector:
        return '<p class="empty">no leavers yet</p>'
    charts = [chart(name, clocks, sla_for(name)) for name, clocks in per_connector.items()]
    return '<div class="plots">' + "".join(charts) + "</div>"
