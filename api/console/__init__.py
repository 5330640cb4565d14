"""The operators' console at /console: fleet, cabinets, payments, money, actions, alerts.

Server-rendered Jinja pages, one stylesheet and one small script (live updates), no build step
and no CDN. Nothing under /console answers without a signed-in operator, except the sign-in page
and the stylesheet; every state change carries a CSRF token. Without CONSOLE_SECRET_KEY the
console is off (its pages say how to turn it on) and the player-facing routes are unchanged.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask

from api.settings import Settings

bp = Blueprint(
    "console", __name__, url_prefix="/console",
    template_folder="../templates", static_folder="../static", static_url_path="/static",
)
SESSION_HOURS = 12


def init_app(app: Flask, settings: Settings) -> None:
    from api.console import actions, auth, fleet, logbook, money, pages, payments  # noqa: F401

    if not settings.console_secret_key:
        app.register_blueprint(pages.off)
        return
    app.config.update(
        SECRET_KEY=settings.console_secret_key,
        SESSION_COOKIE_NAME="arcade_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.console_cookie_secure,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.register_blueprint(bp)
