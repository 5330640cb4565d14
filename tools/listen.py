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


def listener_topics(prefix: str) -> list[tuple[str, int]]:
    return [
        (protocol.topic(prefix, "+", protocol.ACK), 1),
        (protocol.topic(prefix, "+", protocol.STATUS), 1),
    ]


def listener_client_id(settings: Settings) -> str:
    """One id per (machine, ledger, prefix): a restarted listener finds its persistent session
    (acks sent while it was down), while listeners of other ledgers or machines on the same
    broker no longer evict each other, nor share one session's messages."""
    import hashlib
    import socket

    place = "\0".join((socket.gethostname(), settings.store_url, settings.mqtt_topic_prefix))
    return f"arcade-listener-{hashlib.sha256(place.encode()).hexdigest()[:16]}"


def start_listener(
    settings: Settings, store: Store, on_record: Callable[[str, str], None] | None = None
):
    """A connected paho client recording every ack and status; paho reconnects on its own.

    A persistent session under a fixed client id: acks sent while the listener is down wait in
    the broker and are recorded when it is back.
    """
    prefix = settings.mqtt_topic_prefix
    client = new_client(settings, identity=listener_client_id(settings), clean_session=False)

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(listener_topics(prefix))

    def on_message(client, userdata, message):
        result = record_message(store, prefix, message.topic, message.payload, time.time())
        if on_record is not None:
            on_record(message.topic, result)

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.connect_async(settings.mqtt_broker, settings.mqtt_port, keepalive=30)
    client.loop_start()
    return client


def print_record(topic: str, result: str) -> None:
    line = {"time": protocol.utc_timestamp(), "topic": topic, "recorded": result}
    click.echo(json.dumps(line, separators=(",", ":")))


@click.command(epilog="""\b
Example:
  arcade listen            # beside `arcade serve`, with the same .env
""")
def listen() -> None:
    """Record cabinets' acks and status in the ledger (STORE_URL) until stopped."""
    from api.store import open_store

    settings = api_settings()
    store = open_store(settings.store_url)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *args: stop.set())
    client = start_listener(settings, store, print_record)
    click.echo(f"listening on {settings.mqtt_broker}:{settings.mqtt_port} for acks and status")
    stop.wait()
    client.disconnect()
    client.loop_stop()
