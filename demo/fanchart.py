"""A fan chart as a self-contained SVG (no plotting library): observed weekly counts and one
model's forecasts of the week of each reference date (horizon 0, made with the data of the
week before) with their median and 50% / 95% bands."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 1000
PANEL_H = 210
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 34, 28


def nice_ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    return [i * step for i in range(int(top // step) + 1)]


def write_fan_chart(conn, twins: list[str], model: str, locations: list[str], first: dt.date, last: dt.date,
                    path: Path) -> None:
    names = dict(conn.execute("SELECT location, location_name FROM flu.locations").fetchall())
    height = MARGIN_T + len(locations) * (PANEL_H + MARGIN_B + 14) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN_L}" y="20" font-size="15" font-weight="bold">'
        f"pg_enkf '{escape(model)}' forecasts of twins {escape(', '.join(twins))}: weekly influenza admissions, "
        "horizon 0 (real-time backtest)</text>",
    ]
    x0, x1 = MARGIN_L, WIDTH - MARGIN_R
    span = (last - first).days or 1

    def x_of(d: dt.date) -> float:
        return x0 + (x1 - x0) * (d - first).days / span

    for i, loc in enumerate(locations):
        top_y = MARGIN_T + 14 + i * (PANEL_H + MARGIN_B + 14)
        bottom_y = top_y + PANEL_H
        obs = conn.execute(
            "SELECT date, value::float8 FROM flu.admissions WHERE location = %s AND date BETWEEN %s AND %s ORDER BY date",
            (loc, first, last),
        ).fetchall()
        q = conn.execute(
            """SELECT target_end_date, quantile, value FROM enkf.forecast_quantiles
                WHERE twin = ANY(%s) AND model = %s AND location = %s AND horizon = 0
                  AND quantile IN (0.025, 0.25, 0.5, 0.75, 0.975) AND target_end_date BETWEEN %s AND %s
                ORDER BY target_end_date""",
            (twins, model, loc, first, last),
        ).fetchall()
        fc: dict[dt.date, dict[float, float]] = {}
        for d, p, v in q:
            fc.setdefault(d, {})[round(p, 3)] = v
        dates = sorted(fc)
        ymax = max([v for _, v in obs if v is not None] + [fc[d][0.975] for d in dates] + [1.0])
        ticks = nice_ticks(ymax * 1.05)
        ytop = ticks[-1] if ticks[-1] >= ymax else ymax

        def y_of(v: float) -> float:
            return bottom_y - (bottom_y - top_y) * v / ytop

        parts.append(f'<text x="{x0}" y="{top_y - 4}" font-size="13" font-weight="bold">{escape(names.get(loc, loc))} ({escape(loc)})</text>')
        for t in ticks:
            y = y_of(t)
            parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{t:,.0f}</text>')
        m = dt.date(first.year, first.month, 1)
        while m <= last:
            if m >= first and m.month in (1, 4, 7, 10):
                x = x_of(m)
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top_y}" y2="{bottom_y}" stroke="#f0f0f0"/>')
                parts.append(f'<text x="{x:.1f}" y="{bottom_y + 14}" text-anchor="middle">{m:%b %Y}</text>')
            m = dt.date(m.year + (m.month == 12), m.month % 12 + 1, 1)
        for lo, hi, color in ((0.025, 0.975, "#c6dbef"), (0.25, 0.75, "#6baed6")):
            if dates:
                upper = " ".join(f"{x_of(d):.1f},{y_of(fc[d][hi]):.1f}" for d in dates)
                lower = " ".join(f"{x_of(d):.1f},{y_of(fc[d][lo]):.1f}" for d in reversed(dates))
                parts.append(f'<polygon points="{upper} {lower}" fill="{color}" stroke="none"/>')
        if dates:
            med = " ".join(f"{x_of(d):.1f},{y_of(fc[d][0.5]):.1f}" for d in dates)
            parts.append(f'<polyline points="{med}" fill="none" stroke="#08519c" stroke-width="1.6"/>')
        pts = [(d, v) for d, v in obs if v is not None]
        if pts:
            line = " ".join(f"{x_of(d):.1f},{y_of(v):.1f}" for d, v in pts)
            parts.append(f'<polyline points="{line}" fill="none" stroke="black" stroke-width="1"/>')
            for d, v in pts:
                parts.append(f'<circle cx="{x_of(d):.1f}" cy="{y_of(v):.1f}" r="1.8" fill="black"/>')
        parts.append(f'<rect x="{x0}" y="{top_y}" width="{x1 - x0}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    ly = height - 12
    parts += [
        f'<circle cx="{MARGIN_L + 5}" cy="{ly - 4}" r="3" fill="black"/>',
        f'<text x="{MARGIN_L + 14}" y="{ly}">observed</text>',
        f'<line x1="{MARGIN_L + 90}" x2="{MARGIN_L + 115}" y1="{ly - 4}" y2="{ly - 4}" stroke="#08519c" stroke-width="2"/>',
        f'<text x="{MARGIN_L + 120}" y="{ly}">forecast median</text>',
        f'<rect x="{MARGIN_L + 230}" y="{ly - 10}" width="20" height="10" fill="#6baed6"/>',
        f'<text x="{MARGIN_L + 255}" y="{ly}">50% interval</text>',
        f'<rect x="{MARGIN_L + 345}" y="{ly - 10}" width="20" height="10" fill="#c6dbef"/>',
        f'<text x="{MARGIN_L + 370}" y="{ly}">95% interval</text>',
        "</svg>",
    ]
    path.write_text("\n".join(parts))
