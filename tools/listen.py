"""`arcade listen`: record in the ledger what cabinets report — acks (payment delivered) and
status (online/offline, last seen). Runs beside the API (`make run` starts it)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import click

from api import protocol
from api.delivery import record_message
from api.publisher import new_client
from api.settings import Settings
from api.store import Store
from tools.settings import api_settings

ALERT_SWEEP_SECONDS = 5


def listener_topics(prefix: str) -> list[tuple[str, int]]:
    return [
        (protocol.topic(prefix, "+", protocol.ACK), 1),
        (protocol.topic(prefix, "+", protocol.STATUS), 1),
        (protocol.topic(prefix, "+", protocol.GAMEOVER), 1),  # counted for the console
    ]


def start_listener(
    settings: Settings, store: Store, on_record: Callable[[str, str], None] | None = None
):
    """A connected paho client recording every ack and status; paho reconnects on its own.

    A persistent session under a fixed client id: acks sent while the listener is down wait in
    the broker and are recorded when it is back.
    """
    prefix = settings.mqtt_topic_prefix
    client = new_client(settings, identity=f"arcade-listener-{prefix}", clean_session=False)

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(listener_topics(prefix))

    def on_message(client, userdata, message):
        result = record_message(store, prefix, message.topic, message.payload, time.time())
        if result == "ignored":
            result = count_gameover(store, settings, message.topic)
        if on_record is not None:
            on_record(message.topic, result)

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.connect_async(settings.mqtt_broker, settings.mqtt_port, keepalive=30)
    client.loop_start()
    return client


def count_gameover(store: Store, settings: Settings, topic: str) -> str:
    """A cabinet's game over, counted per day for the console (the message itself is the
    cabinet's business: nothing else is recorded)."""
    from zoneinfo import ZoneInfo

    from api.store_console import periods_of

    parsed = protocol.parse_topic(settings.mqtt_topic_prefix, topic)
    if parsed is None or parsed[1] != protocol.GAMEOVER:
        return "ignored"
    store.count_gameover(parsed[0], periods_of(time.time(), ZoneInfo(settings.timezone)))
    return "gameover"


def sweep_alerts(store: Store, settings: Settings) -> None:
    """Open incidents and send alerts (api/alerts.py); a failure waits for the next sweep."""
    from api.alerts import sweep

    try:
        for key in sweep(store, settings):
            click.echo(json.dumps({"time": protocol.utc_timestamp(), "alert_sent": key}))
    except Exception as error:  # the listener must keep recording whatever the sweep meets
        click.echo(json.dumps({"time": protocol.utc_timestamp(),
                               "alert_sweep_failed": f"{type(error).__name__}: {error}"}))


def print_record(topic: str, result: str) -> None:
    line = {"time": protocol.utc_timestamp(), "topic": topic, "recorded": result}
    click.echo(json.dumps(line, separators=(",", ":")))


@click.command()
def listen() -> None:
    """Record cabinets' acks and status in the ledger (STORE_URL) until stopped.

    \b
    Example:
      arcade listen            # beside `arcade serve`, with the same .env
    """
    from api.store import open_store

    settings = api_settings()
    store = open_store(settings.store_url)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *args: stop.set())
    client = start_listener(settings, store, print_record)
    click.echo(f"listening on {settings.mqtt_broker}:{settings.mqtt_port} for acks and status")
    while not stop.wait(ALERT_SWEEP_SECONDS):
        sweep_alerts(store, settings)
    client.disconnect()
    client.loop_stop()
