"""Bar charts as inline SVG drawn on the server: no chart library, no script, no CDN.

Each chart has a <title> and a text alternative (role="img" + aria-label), and every bar its own
<title>, so a screen reader and a hovering mouse both get the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP = 56, 28, 12


def bar_chart(
    bars: list[tuple[str, int]], title: str, describe: Callable[[int], str] = str,
    label_every: int = 1,
) -> Markup:
    """`bars`: (label, value) in order. Negative values (refunds beyond takings) draw down."""
    plot_width, plot_height = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    values = [value for _, value in bars] or [0]
    high, low = max(0, *values), min(0, *values)
    span = (high - low) or 1
    zero_y = TOP + plot_height * high / span
    step = plot_width / max(1, len(bars))
    total = sum(values)
    summary = f"{title}: {len(bars)} bars, total {describe(total)}, highest {describe(high)}"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label={quoteattr(summary)} xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - 8}" y1="{zero_y:.1f}" y2="{zero_y:.1f}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end">'
        f"{escape(describe(high))}</text>",
    ]
    if low < 0:
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_height}" '
                     f'text-anchor="end">{escape(describe(low))}</text>')
    for index, (label, value) in enumerate(bars):
        height = plot_height * abs(value) / span
        x = LEFT + index * step + step * 0.12
        y = zero_y - height if value >= 0 else zero_y
        parts.append(
            f'<rect class="{"bar" if value >= 0 else "bar negative"}" x="{x:.1f}" y="{y:.1f}" '
            f'width="{step * 0.76:.1f}" height="{max(height, 0.5):.1f}">'
            f"<title>{escape(label)}: {escape(describe(value))}</title></rect>"
        )
        if index % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x + step * 0.38:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
