"""`arcade listen`: record in the ledger what cabinets report — acks (per part: received, done,
expired, rejected) and status (online/offline, problems, last seen) — and run the sweep (publish
again what the broker did not take, refund what was not delivered in time). Runs beside the API
(`make run` starts it)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable

import click

from api import protocol
from api.delivery import record_message
from api.publisher import new_client
from api.settings import Settings
from api.store import Heartbeat, Store
from tools.settings import api_settings

log = logging.getLogger("arcade.listener")

BEAT_EVERY_S = 15.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def listener_topics(prefix: str) -> list[tuple[str, int]]:
    return [
        (protocol.topic(prefix, "+", protocol.ACK), 1),
        (protocol.topic(prefix, "+", protocol.STATUS), 1),
        (protocol.topic(prefix, "+", protocol.GAMEOVER), 1),  # counted for the console
    ]


def listener_client_id(settings: Settings) -> str:
    """One id per (machine, ledger, prefix): a restarted listener finds its persistent session
    (acks sent while it was down), while listeners of other ledgers or machines on the same
    broker no longer evict each other, nor share one session's messages."""
    import hashlib
    import socket

    place = "\0".join((socket.gethostname(), settings.store_url, settings.mqtt_topic_prefix))
    return f"arcade-listener-{hashlib.sha256(place.encode()).hexdigest()[:16]}"


class Listener:
    """A paho client recording every ack and status (paho reconnects on its own), a heartbeat
    with its counters in the ledger, and, with `sweep`, the sweep every SWEEP_INTERVAL_S.

    A persistent session under a fixed client id: acks sent while the listener is down wait in
    the broker and are recorded when it is back. Nothing a cabinet sends can stop it: a bad
    message is dropped (and counted), an unexpected error is logged and counted.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        on_record: Callable[[str, str], None] | None = None,
        sweep: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_record = on_record
        self.counts = {"recorded": 0, "dropped": 0, "errors": 0, "swept": 0, "refunded": 0}
        self.connected = False
        self.subscribed = threading.Event()  # set once the broker confirmed our subscriptions
        self._stop = threading.Event()
        self._services = None
        if sweep:
            from api.publisher import Publisher
            from api.services import Services

            self._services = Services(settings, store, Publisher(settings))
        client = new_client(settings, identity=listener_client_id(settings), clean_session=False)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = lambda *args: self.subscribed.set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client = client
        self.beat()
        client.connect_async(settings.mqtt_broker, settings.mqtt_port, keepalive=30)
        client.loop_start()
        self._thread = threading.Thread(target=self._every_while, daemon=True)
        self._thread.start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(listener_topics(self.settings.mqtt_topic_prefix))
            self.connected = True
            self.beat()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        self.beat()

    def _on_message(self, client, userdata, message) -> None:
        prefix = self.settings.mqtt_topic_prefix
        try:
            result = count_gameover(self.store, self.settings, message.topic)
            if result == "ignored":
                result = record_message(
                    self.store, prefix, message.topic, message.payload, time.time()
                )
        except Exception:  # the store failed, or a bug: log it, count it, keep listening
            log.exception("could not record a message on %s", message.topic[:200])
            result = "error"
        key = {"dropped": "dropped", "error": "errors"}.get(result, "recorded")
        self.counts[key] += 1
        if key != "recorded":
            self.beat()  # a problem shows in the health at once
        if self.on_record is not None:
            self.on_record(message.topic, result)

    def beat(self) -> None:
        detail = {"connected": self.connected, "broker": self.settings.mqtt_broker, **self.counts}
        try:
            self.store.heartbeat(Heartbeat("listener", time.time(), detail))
        except Exception:
            log.exception("could not write the listener's heartbeat")

    def _every_while(self) -> None:
        """Heartbeat every BEAT_EVERY_S, sweep every SWEEP_INTERVAL_S, until stopped."""
        sweep_every = self.settings.sweep_interval_s
        next_beat = next_sweep = time.monotonic()
        while True:
            now = time.monotonic()
            if self._services is not None and now >= next_sweep:
                self.sweep_once()
                next_sweep = time.monotonic() + sweep_every
            if now >= next_beat:
                self.beat()
                next_beat = time.monotonic() + BEAT_EVERY_S
            due = min(next_beat, next_sweep) if self._services is not None else next_beat
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return

    def sweep_once(self) -> None:
        from api.sweep import sweep

        try:
            report = sweep(self._services)
        except Exception:
            log.exception("the sweep failed")
            self.counts["errors"] += 1
            return
        self.counts["swept"] += report.republished
        self.counts["refunded"] += report.refunded
        for line in report.results:
            log.info("sweep: %s", line)

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._thread.join(timeout=10)
        self.connected = False
        self.beat()
        if self._services is not None:
            self._services.publisher.close()


def start_listener(
    settings: Settings,
    store: Store,
    on_record: Callable[[str, str], None] | None = None,
    sweep: bool = False,
) -> Listener:
    return Listener(settings, store, on_record, sweep)


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


def print_record(topic: str, result: str) -> None:
    line = {"time": protocol.utc_timestamp(), "topic": topic, "recorded": result}
    click.echo(json.dumps(line, separators=(",", ":")))


@click.command(epilog="""\b
Example:
  arcade listen            # beside `arcade serve`, with the same .env
""")
def listen() -> None:
    """Record cabinets' acks and status in the ledger (STORE_URL), and refund what was not
    delivered in time (REFUND_UNDELIVERED_AFTER_S), until stopped."""
    from api.logs import configure_logging
    from api.store import open_store

    settings = api_settings()
    configure_logging()
    store = open_store(settings.store_url)
    # Stop signals are taken by sigwait, never by a handler: a Python handler runs between two
    # bytecodes of the main thread, and one that lands while that thread holds a lock the
    # handler needs never returns (Event.set() inside that event's wait(): a listener that
    # outlived `arcade run`). Blocked before any thread starts: every thread inherits the mask,
    # so the signal waits for sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    listener = start_listener(settings, store, print_record, sweep=True)
    refunds = (
        f"refunds after {settings.refund_undelivered_after_s}+{settings.refund_grace_s} s"
        if settings.refund_undelivered_after_s
        else "refunds off (REFUND_UNDELIVERED_AFTER_S=0)"
    )
    click.echo(
        f"listening on {settings.mqtt_broker}:{settings.mqtt_port} for acks and status;"
        f" sweeping every {settings.sweep_interval_s} s, {refunds}"
    )
    signal.sigwait(STOP_SIGNALS)
    listener.stop()
