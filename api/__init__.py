"""Arcade STEM API: Stripe checkout → exactly one MQTT coinpulse per paid session."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from flask import Flask

# Stripe events are a few KB; anything far larger is not from Stripe.
MAX_BODY_BYTES = 256 * 1024


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """The app, configured from the environment (and `.env`), or from `test_config`'s variables."""
    from api import (
        console,
        errors,
        ingest,
        logs,
        receipt,
        security,
        services,
        test_checkout,
        views,
        webhook,
    )
    from api.settings import SettingsError, api_settings_from_env, load_dotenv_files

    if test_config is None:
        load_dotenv_files()
        try:
            settings = api_settings_from_env()
        except SettingsError as error:
            # One line naming the variable, not a traceback (also on Lambda's init log).
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    else:
        settings = api_settings_from_env(test_config)

    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    services.init_app(app, settings)
    errors.init_app(app)
    security.init_app(app, settings)
    logs.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(webhook.bp)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(receipt.bp)
    if settings.test_checkout:
        app.register_blueprint(test_checkout.bp)
    console.init_app(app, settings)
    return app
