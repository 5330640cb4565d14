"""A cabinet's printable QR code (its payment link, the machine id written under it), as SVG.

Shared by `arcade qr` and the console's cabinet page, so both print the same sticker.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

SCALE = 12  # pixels (PNG) or user units (SVG) per module: ~40 mm wide at 300 dpi for a link
BORDER = 4  # the quiet zone the QR standard asks for, in modules
LABEL_RATIO = 0.12  # height of the text band, as a share of the code's width


def make_code(url: str):
    import segno

    # Level M survives a scuffed sticker; a payment link still fits in a small version.
    return segno.make(url, error="m", micro=False)


def svg_with_label(url: str, label: str) -> str:
    qr_code = make_code(url)
    buffer = io.BytesIO()
    qr_code.save(buffer, kind="svg", scale=SCALE, border=BORDER, xmldecl=False, light="#fff",
                 dark="#000", nl=False)
    code = buffer.getvalue().decode()
    width = qr_code.symbol_size(scale=SCALE, border=BORDER)[0]
    band = int(width * LABEL_RATIO)
    font_size = int(band * 0.6)
    # segno cannot write text: its SVG is nested in ours, with a <text> under it.
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{width + band}" '
        f'viewBox="0 0 {width} {width + band}">'
        f'<rect width="{width}" height="{width + band}" fill="#fff"/>{code}'
        f'<text x="{width / 2:g}" y="{width + band * 0.3 + font_size * 0.8:g}" '
        f'font-family="DejaVu Sans, Arial, sans-serif" font-size="{font_size}" '
        f'text-anchor="middle" fill="#000">{escape(label)}</text></svg>\n'
    )
