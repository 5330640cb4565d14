"""The app's outside resources (settings, ledger, MQTT publisher), made once per app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from api.publisher import Publisher
from api.settings import Settings
from api.store import Store, open_store


@dataclass
class Services:
    settings: Settings
    store: Store
    publisher: Publisher

    def __post_init__(self) -> None:
        # The console's day totals are counted in the arcade's time zone (ARCADE_TIMEZONE).
        from zoneinfo import ZoneInfo

        self.store.console_zone = ZoneInfo(self.settings.timezone)


def init_app(app: Flask, settings: Settings) -> None:
    # Nothing here touches the network: the store and the broker connect on first use.
    store = open_store(settings.store_url)
    app.extensions["arcade"] = Services(settings, store, Publisher(settings))


def services() -> Services:
    return current_app.extensions["arcade"]
