"""`arcade qr`: a printable QR code of a cabinet's payment link, the machine id written under it."""

from __future__ import annotations

import io
from pathlib import Path

import click

from api.qrcode import BORDER, LABEL_RATIO, SCALE, make_code, svg_with_label
from tools.errors import UserError
from tools.http import ApiRefused, endpoint, post_json
from tools.settings import require_machine_id


def payment_url_from_api(api_base: str, machine_id: str) -> str:
    answer = post_json(endpoint(api_base, "/create-payment-link"), {"machine_id": machine_id})
    if answer.status != 200:
        raise ApiRefused(f"the API answered {answer.status}: {answer.reason()}")
    url = answer.json().get("url")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise ApiRefused(f"the API's answer has no payment link: {answer.text.strip()[:200]}")
    return url


def png_with_label(url: str, label: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    buffer = io.BytesIO()
    make_code(url).save(buffer, kind="png", scale=SCALE, border=BORDER)
    code = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    band = int(code.width * LABEL_RATIO)
    sheet = Image.new("L", (code.width, code.height + band), 255)
    sheet.paste(code, (0, 0))
    font = ImageFont.load_default(size=int(band * 0.6))
    draw = ImageDraw.Draw(sheet)
    # Centered under the code, inside the band (the code's quiet zone stays blank).
    draw.text((code.width / 2, code.height + band * 0.3), label, fill=0, font=font, anchor="mt")
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def write_qr(url: str, label: str, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix == ".png":
        data = png_with_label(url, label)
    elif suffix == ".svg":
        data = svg_with_label(url, label).encode()
    else:
        raise UserError(f"--out must end in .png or .svg, got {out.name!r}")
    try:
        out.write_bytes(data)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None


@click.command(epilog="""\b
Examples:
  arcade qr machine_123 --api http://127.0.0.1:5000 --out machine_123.png
  arcade qr machine_123 --url https://buy.stripe.com/test_abc --out machine_123.svg
""")
@click.argument("machine_id")
@click.option("--url", help="The payment link to encode.")
@click.option("--api", "api_url", help="Ask this API for the cabinet's payment link "
              "(POST /create-payment-link).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .png or .svg (vector, for print shops).")
def qr(machine_id: str, url: str | None, api_url: str | None, out: Path) -> None:
    """Write a printable QR code of a cabinet's payment link, with its machine id under it."""
    require_machine_id(machine_id)
    if (url is None) == (api_url is None):
        raise UserError("give exactly one of --url or --api")
    if out.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"--out must end in .png or .svg, got {out.name!r}")
    if url is None:
        url = payment_url_from_api(api_url, machine_id)
    elif not url.startswith(("https://", "http://")):
        raise UserError(f"--url must start with https:// (got {url!r})")
    write_qr(url, machine_id, out)
    click.echo(f"wrote {out}: {url}")
