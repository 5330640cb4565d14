"""What every console page shares: rendering (whole page, or only its live part for the page's
own refresh), formatting of money and times in the arcade's time zone, HTML errors, and the
security headers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from api.console import bp
from api.services import services

LIVE_HEADER = "X-Console-Live"  # the page's script asks for the live part only

# The console off (no CONSOLE_SECRET_KEY): one page that says how to turn it on.
off = Blueprint("console_off", __name__, url_prefix="/console")


@off.route("", defaults={"rest": ""}, strict_slashes=False, methods=["GET", "POST"])
@off.route("/<path:rest>", methods=["GET", "POST"])
def console_off(rest: str):
    message = (
        "The operators' console is off: set CONSOLE_SECRET_KEY (a random string of 32 or more"
        " characters) and add an operator with `arcade operator add NAME` (README: Console)."
    )
    return message, 503, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


def zone() -> ZoneInfo:
    return ZoneInfo(services().settings.timezone)


def local(stamp: float | None, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not stamp:
        return "–"
    return datetime.fromtimestamp(stamp, UTC).astimezone(zone()).strftime(pattern)


def ago(stamp: float | None, now: float | None = None) -> str:
    """"3 min", "2 h 5 min", "4 days": how long since `stamp`."""
    if not stamp:
        return "–"
    seconds = max(0, int((now or time.time()) - stamp))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} days"


def money(cents: int | None, currency: str | None) -> str:
    if cents is None:
        return "–"
    sign = "−" if cents < 0 else ""
    return f"{sign}{abs(cents) / 100:,.2f} {(currency or '').upper()}".strip()


def dashboard_url(payment_intent: str | None) -> str:
    """The payment in Stripe's dashboard (test or live, as the API's key)."""
    if not payment_intent or not payment_intent.startswith("pi_"):
        return ""
    key = services().settings.stripe_api_key
    mode = "" if key.startswith(("sk_live_", "rk_live_")) else "test/"
    return f"https://dashboard.stripe.com/{mode}payments/{payment_intent}"


@bp.app_template_filter("local")
def _local_filter(stamp, pattern="%Y-%m-%d %H:%M:%S"):
    return local(stamp, pattern)


@bp.app_template_filter("ago")
def _ago_filter(stamp):
    return ago(stamp)


@bp.app_template_global("money")
def _money_global(cents, currency):
    return money(cents, currency)


@bp.app_template_global("dashboard_url")
def _dashboard_global(payment_intent):
    return dashboard_url(payment_intent)


def render_page(template: str, **context) -> str:
    """The whole page, or only its `live` block when the page's script refreshes itself."""
    if request.headers.get(LIVE_HEADER) == "1":
        env = current_app.jinja_env
        page = env.get_template(template)
        context = {**context, "timezone": services().settings.timezone}
        current_app.update_template_context(context)
        block = page.blocks.get("live")
        if block is not None:
            return Markup("".join(block(page.new_context(context))))
    return render_template(template, timezone=services().settings.timezone, **context)


@bp.errorhandler(HTTPException)
def _html_error(error: HTTPException):
    if request.path.endswith((".json", ".csv")):
        from api.errors import error_response

        return error_response(error.code or 500, error.description or error.name)
    page = render_template("console/error.html", code=error.code, message=error.description)
    return page, error.code or 500


@bp.after_request
def _security_headers(response):
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # Only our own files: no inline script, no CDN; inline SVG charts are markup, not script.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    return response
