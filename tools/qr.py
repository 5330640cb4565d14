"""`arcade qr`: a printable QR code of a cabinet's payment link, the machine id written under it."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from api.qrcode import BORDER, LABEL_RATIO, SCALE, make_code, svg_with_label
from tools.errors import UserError
from tools.http import ApiRefused, endpoint, operator_auth, post_json
from tools.settings import require_machine_id


def payment_url_from_api(api_base: str, machine_id: str) -> str:
    answer = post_json(endpoint(api_base, "/create-payment-link"), {"machine_id": machine_id},
                       operator_auth())
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


def is_test_link(url: str) -> bool:
    """A link that takes no real money: our test checkout page, or a Stripe test-mode link."""
    parts = urlsplit(url)
    return "/test-checkout/" in parts.path or (
        parts.hostname == "buy.stripe.com" and parts.path.startswith("/test_"))


def phone_cannot_open(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def check_link(url: str, test: bool) -> None:
    if is_test_link(url) and not test:
        raise UserError(f"{url} is a test link (no real payment): a cabinet's QR code needs a "
                        "live one; add --test to print it anyway (for trying things out)")
    if phone_cannot_open(url):
        click.echo(f"warning: {url} points to this computer, which a phone cannot open: set "
                   "PUBLIC_URL in the API's .env to this machine's network address (and run it "
                   "with --host 0.0.0.0)", err=True)


@click.command(epilog="""\b
Examples:
  arcade qr machine_123 --api https://api.example.com --out machine_123.png
  arcade qr machine_123 --url https://buy.stripe.com/abc --out machine_123.svg
  arcade qr machine_123 --test --out test.png     # the API of `. run/activate` (test checkout)
""")
@click.argument("machine_id")
@click.option("--url", help="The payment link to encode.")
@click.option("--api", "api_url", envvar="ARCADE_API_URL", help="Ask this API for the cabinet's "
              "payment link (POST /create-payment-link) [env: ARCADE_API_URL].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file: .png or .svg (vector, for print shops).")
@click.option("--test", is_flag=True, help="Allow a test link (test checkout, Stripe test mode).")
@click.pass_context
def qr(ctx: click.Context, machine_id: str, url: str | None, api_url: str | None, out: Path,
       test: bool) -> None:
    """Write a printable QR code of a cabinet's payment link, with its machine id under it."""
    require_machine_id(machine_id)
    if url is not None and ctx.get_parameter_source("api_url") != ParameterSource.COMMANDLINE:
        api_url = None  # ARCADE_API_URL is the default source, --url the explicit one
    if (url is None) == (api_url is None):
        raise UserError("give exactly one of --url or --api (or set ARCADE_API_URL)")
    if out.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"--out must end in .png or .svg, got {out.name!r}")
    if url is None:
        url = payment_url_from_api(api_url, machine_id)
    elif not url.startswith(("https://", "http://")):
        raise UserError(f"--url must start with https:// (got {url!r})")
    check_link(url, test)
    write_qr(url, machine_id, out)
    click.echo(f"wrote {out}: {url}")
