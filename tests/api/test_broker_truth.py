"""MQTT 5 between the API and the broker: what Debian's Mosquitto really answers, and what the
API makes of it. Under MQTT 3.1.1 a PUBACK says only "received"; under MQTT 5 its reason code
says whether anyone will get the message."""

from __future__ import annotations

import queue
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from api.store import PartState, State
from tests.api.conftest import checkout_session, deliver, stripe_event
from tests.conftest import API_PASSWORD, API_USER

NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED = 0x10, 0x87


def v5_client(broker, user=API_USER, password=API_PASSWORD) -> tuple[mqtt.Client, queue.Queue]:
    """A connected paho MQTT 5 client; the queue receives (mid, reason code value) per PUBACK."""
    acks: queue.Queue = queue.Queue()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-v5-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(user, password)
    client.on_publish = lambda c, u, mid, reason, props: acks.put((mid, reason.value))
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client, acks


def puback(client, acks, topic, payload=b"{}", expiry: int | None = None) -> int:
    properties = None
    if expiry is not None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = expiry
    info = client.publish(topic, payload, qos=1, properties=properties)
    mid, reason = acks.get(timeout=10)
    assert mid == info.mid
    return reason


def test_mosquitto_answers_0x10_without_subscribers_and_0x87_when_the_acl_denies(own_broker):
    client, acks = v5_client(own_broker)
    try:
        assert puback(client, acks, "arcade/machine/nobody-here/coinpulse") == 0x10
        assert puback(client, acks, "elsewhere/machine/cab-a/coinpulse") == NOT_AUTHORIZED
    finally:
        client.disconnect()
        client.loop_stop()


def test_message_expiry_drops_a_credit_queued_for_an_offline_311_cabinet(own_broker):
    """The cabinet (MQTT 3.1.1, persistent session, as umqtt connects) is offline; of two queued
    coinpulses the one whose Message Expiry Interval ran out is never delivered."""
    topic = "arcade/machine/cab-a/coinpulse"
    received: queue.Queue = queue.Queue()
    subscribed = queue.Queue()

    def cabinet() -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="cab-a",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set("cab-a", "pw-cab-a")
        client.on_message = lambda c, u, m: received.put(m.payload)
        client.on_subscribe = lambda *args: subscribed.put(True)
        client.connect(own_broker.host, own_broker.port)
        client.loop_start()
        return client

    first = cabinet()
    first.subscribe(topic, qos=1)
    subscribed.get(timeout=10)
    first.disconnect()
    first.loop_stop()

    api, acks = v5_client(own_broker)
    try:
        # Queued for the offline session: the broker answers success, not 0x10.
        assert puback(api, acks, topic, b'{"id":"short"}', expiry=1) == 0
        assert puback(api, acks, topic, b'{"id":"long"}', expiry=600) == 0
    finally:
        api.disconnect()
        api.loop_stop()
    # Nothing but the clock ends an expiry interval; Mosquitto counts whole seconds, so 1 s
    # may last up to 2.
    time.sleep(2.5)
    back = cabinet()
    try:
        assert received.get(timeout=10) == b'{"id":"long"}'
        with pytest.raises(queue.Empty):
            received.get(timeout=1)
    finally:
        back.disconnect()
        back.loop_stop()


def test_a_credit_for_a_cabinet_nobody_subscribes_for_is_undeliverable(make_app, own_broker):
    """A mistyped or unprovisioned cabinet: under 3.1.1 the API answered `published` and the
    credit was gone. Now the part is `undeliverable` with the broker's reason."""
    app = make_app(MQTT_PORT=str(own_broker.port))
    session = checkout_session(machine_id="cab-b")
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 200
    assert response.json["result"] == "undeliverable", response.json
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.UNDELIVERABLE
    [part] = stored.parts
    assert part.state == PartState.UNDELIVERABLE
    assert part.reason == "0x10 No matching subscribers"


def test_a_credit_the_acl_drops_is_undeliverable(make_app, broker, subscribe):
    """The API's MQTT_TOPIC_PREFIX mistyped: the broker's ACL drops every coinpulse."""
    app = make_app(MQTT_TOPIC_PREFIX="arcde")
    session = checkout_session()
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.json["result"] == "undeliverable", response.json
    [part] = app.extensions["arcade"].store.get(session["id"]).parts
    assert (part.state, part.reason) == (PartState.UNDELIVERABLE, "0x87 Not authorized")
