"""MQTT publishing with paho-mqtt 2: QoS 1; a message counts only once the broker PUBACKs it.

One connection per process, made on first use (never at import), replaced when it is down or has
been idle longer than the keepalive — after a Lambda freeze the socket may look open but be dead.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING

from api.settings import Settings

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

KEEPALIVE_SECONDS = 30


class PublishError(RuntimeError):
    """The broker did not confirm in time: the caller must not count the message as delivered."""


def client_id() -> str:
    """Unique per process, so two API workers never kick each other off the broker."""
    host = socket.gethostname().split(".")[0][:20]
    return f"arcade-api-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def new_client(
    settings: Settings, identity: str | None = None, clean_session: bool = True
) -> mqtt.Client:
    """A configured, not yet connected paho client (TLS, credentials) — shared with the tools."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=identity or client_id(),
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password or None)
    if settings.mqtt_tls:
        # A CA file for private brokers (the seed shipped ca.crt); else the system store.
        client.tls_set(ca_certs=settings.mqtt_ca_cert or None)
    return client


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.mqtt_publish_timeout
        self._client: mqtt.Client | None = None
        self._answered = threading.Event()  # CONNACK in, good or bad
        self._refusal = ""
        self._last_ok = 0.0
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    def publish(self, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
        """Publish every (topic, payload) with QoS 1; return once all are PUBACKed, else raise."""
        client = self._ready_client()
        pending = []
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:
                self._discard()
                raise PublishError(f"broker connection lost (paho rc {info.rc})")
            pending.append(info)
        deadline = time.monotonic() + self.timeout
        for info in pending:
            try:
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # paho raises when the connection dropped; is_published() says the rest
            if not info.is_published():
                self._discard()
                raise PublishError(f"no PUBACK from the broker within {self.timeout:g}s")
        self._last_ok = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._discard_locked()

    def _ready_client(self) -> mqtt.Client:
        with self._lock:
            if self._client is not None and not self._usable():
                self._discard_locked()
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _usable(self) -> bool:
        idle = time.monotonic() - self._last_ok
        return self._client.is_connected() and idle < KEEPALIVE_SECONDS

    def _connect(self) -> mqtt.Client:
        client = new_client(self.settings)
        client.on_connect = self._on_connect
        self._answered.clear()
        self._refusal = ""
        client.connect_timeout = self.timeout
        try:
            client.connect(self.settings.mqtt_broker, self.settings.mqtt_port, KEEPALIVE_SECONDS)
        except (OSError, ValueError) as error:
            raise PublishError(f"cannot reach the MQTT broker: {error}") from None
        client.loop_start()
        if not self._answered.wait(self.timeout) or self._refusal:
            client.disconnect()
            client.loop_stop()
            reason = self._refusal or "no answer"
            raise PublishError(f"the MQTT broker did not accept the connection: {reason}")
        self._last_ok = time.monotonic()
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refusal = str(reason_code)
            # Wrong credentials: stop paho retrying forever in the background.
            client.disconnect()
        self._answered.set()

    def _discard(self) -> None:
        with self._lock:
            self._discard_locked()

    def _discard_locked(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
