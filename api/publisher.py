"""MQTT publishing with paho-mqtt 2 over MQTT 5: QoS 1; a message counts only once the broker
PUBACKs it, and the PUBACK's reason code says whether anyone will get it.

Under MQTT 3.1.1 a PUBACK only says "received": Mosquitto PUBACKs a message its ACL drops or that
no session subscribes to. Under MQTT 5 the same PUBACK carries 0x87 (not authorized) or 0x10 (no
matching subscribers); `publish` returns each message's reason code and the caller decides. A
message may carry a Message Expiry Interval: the broker drops it when it has waited that long
for an offline subscriber (the cabinets stay on MQTT 3.1.1; expiry still applies to them).

One connection per process, made on first use (never at import), replaced when it is down or has
been idle longer than the keepalive — after a Lambda freeze the socket may look open but be dead.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.settings import Settings

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

KEEPALIVE_SECONDS = 30
SUCCESS = 0


class PublishError(RuntimeError):
    """The broker did not confirm in time: the caller must not count the message as delivered.
    `codes` has what was known per message when it failed (None: no PUBACK)."""

    def __init__(self, message: str, codes: list[int | None] | None = None) -> None:
        super().__init__(message)
        self.codes = codes or []


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    expiry: int | None = None  # MQTT 5 Message Expiry Interval, seconds


def refused(code: int | None) -> bool:
    """A PUBACK that is not delivery: a failure (≥ 0x80), or 0x10, nobody subscribes."""
    return code is not None and code != SUCCESS


def client_id() -> str:
    """Unique per process, so two API workers never kick each other off the broker."""
    host = socket.gethostname().split(".")[0][:20]
    return f"arcade-api-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def new_client(
    settings: Settings,
    identity: str | None = None,
    clean_session: bool = True,
    mqtt5: bool = False,
) -> mqtt.Client:
    """A configured, not yet connected paho client (TLS, credentials) — shared with the tools.
    MQTT 3.1.1 unless `mqtt5` (MQTT 5 has no clean_session: a clean start is given to
    connect())."""
    import paho.mqtt.client as mqtt

    if mqtt5:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=identity or client_id(),
            protocol=mqtt.MQTTv5,
        )
    else:
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
        # PUBACK reason codes by (client, message id), written by paho's thread in on_publish,
        # which runs before the message counts as published.
        self._codes: dict[tuple[int, int], int] = {}

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.is_connected()

    def publish(
        self, messages: list[Outgoing | tuple[str, bytes]], retain: bool = False
    ) -> list[int]:
        """Publish every message (an Outgoing, or a plain (topic, payload)) with QoS 1 and return
        the broker's reason code for each, in order (0 = success). Raises PublishError if any is
        not PUBACKed in time."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = self._ready_client()
        pending = []
        for message in messages:
            if not isinstance(message, Outgoing):
                message = Outgoing(*message)
            properties = None
            if message.expiry is not None:
                properties = Properties(PacketTypes.PUBLISH)
                properties.MessageExpiryInterval = max(1, int(message.expiry))
            info = client.publish(
                message.topic, message.payload, qos=1, retain=retain, properties=properties
            )
            if info.rc != 0:
                self._discard(client)
                codes = [self._codes.pop((id(client), i.mid), None) for i in pending]
                raise PublishError(f"broker connection lost (paho rc {info.rc})", codes)
            pending.append(info)
        deadline = time.monotonic() + self.timeout
        for info in pending:
            try:
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # paho raises when the connection dropped; is_published() says the rest
        codes = [self._codes.pop((id(client), info.mid), None) for info in pending]
        if not all(info.is_published() for info in pending):
            self._discard(client)
            raise PublishError(f"no PUBACK from the broker within {self.timeout:g}s", codes)
        self._last_ok = time.monotonic()
        return [SUCCESS if code is None else code for code in codes]

    def close(self) -> None:
        with self._lock:
            self._discard_locked(self._client)

    def _ready_client(self) -> mqtt.Client:
        with self._lock:
            if self._client is not None and not self._usable():
                self._discard_locked(self._client)
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _usable(self) -> bool:
        idle = time.monotonic() - self._last_ok
        return self._client.is_connected() and idle < KEEPALIVE_SECONDS

    def _connect(self) -> mqtt.Client:
        self._answered.clear()
        self._refusal = ""
        try:
            client = new_client(self.settings, mqtt5=True)
            client.on_connect = self._on_connect
            client.on_publish = self._on_publish
            client.connect_timeout = self.timeout
            client.connect(
                self.settings.mqtt_broker,
                self.settings.mqtt_port,
                KEEPALIVE_SECONDS,
                clean_start=True,
            )
        except (OSError, ValueError) as error:  # unreachable, TLS, a CA file gone missing
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

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._codes[(id(client), mid)] = reason_code.value

    def _discard(self, client: mqtt.Client) -> None:
        with self._lock:
            self._discard_locked(client)

    def _discard_locked(self, client: mqtt.Client | None) -> None:
        """Close `client`; forget it only if it is still the current one (another thread may
        already use a fresh connection, which must not be dropped)."""
        if client is None:
            return
        if self._client is client:
            self._client = None
        client.disconnect()
        client.loop_stop()
