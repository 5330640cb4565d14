"""Connecting the tools to the broker from the same settings the API reads (MQTT_*)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import replace

import paho.mqtt.client as mqtt

from api.settings import MqttSettings, SettingsError, mqtt_settings_from_env
from tools.errors import UserError
from tools.settings import text

CONNECT_TIMEOUT_S = 10.0


def mqtt_settings(env: Mapping[str, str], login: str = "") -> MqttSettings:
    """Broker settings; login="MONITOR" prefers MQTT_MONITOR_USERNAME/PASSWORD when set."""
    try:
        settings = mqtt_settings_from_env(env, missing_hint="put it in .env or the environment")
    except SettingsError as error:
        raise UserError(str(error)) from None
    if login and text(env, f"MQTT_{login}_USERNAME"):
        settings = replace(settings, username=text(env, f"MQTT_{login}_USERNAME"),
                           password=text(env, f"MQTT_{login}_PASSWORD"))
    return settings


def new_client(settings: MqttSettings, role: str) -> mqtt.Client:
    """A client with a unique id (never a cabinet's id: that would kick the cabinet off)."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"arcade-{role}-{uuid.uuid4().hex[:10]}",
        protocol=mqtt.MQTTv311,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        # No CA file: the system's trust store checks the broker's certificate.
        client.tls_set(ca_certs=settings.ca_cert or None)
    return client


def connect(settings: MqttSettings, role: str, setup=None, on_connected=None) -> mqtt.Client:
    """Connected client with its network loop running; UserError saying why when it cannot.

    setup(client) runs before connecting (to set callbacks); on_connected(client) runs in the
    network thread after every (re)connect, so subscriptions made there survive a broker restart.
    """
    client = new_client(settings, role)
    if setup is not None:
        setup(client)
    answered = threading.Event()
    outcome: dict[str, str] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            outcome["refused"] = str(reason_code)
        elif on_connected is not None:
            on_connected(client)
        answered.set()

    client.on_connect = on_connect
    where = f"{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as error:
        hint = " (TLS: is MQTT_CA_CERT the broker's CA?)" if settings.tls else ""
        raise UserError(f"cannot reach the broker at {where}: {error.strerror or error}{hint}") \
            from None
    client.loop_start()
    if not answered.wait(CONNECT_TIMEOUT_S):
        disconnect(client)
        raise UserError(f"the broker at {where} did not answer within {CONNECT_TIMEOUT_S:.0f}s")
    if "refused" in outcome:
        disconnect(client)
        who = settings.username or "anonymous"
        raise UserError(f"the broker at {where} refused {who}: {outcome['refused']} "
                        "(check MQTT_USERNAME/MQTT_PASSWORD)")
    return client


def disconnect(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def publish_and_wait(settings: MqttSettings, topic: str, payload: bytes,
                     retain: bool = False) -> None:
    """One QoS 1 message; returns once the broker's PUBACK arrived (UserError on timeout)."""
    client = connect(settings, "publish")
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=settings.timeout)
        if not info.is_published():
            raise UserError(f"no PUBACK from the broker within {settings.timeout:g}s for {topic}")
    finally:
        disconnect(client)
