"""The API's MQTT connection: TLS with a CA file, wrong credentials, and a stale connection."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import pytest

from api.publisher import Publisher, PublishError
from api.settings import settings_from_env
from tests.api.conftest import checkout_session, deliver, stripe_event
from tests.conftest import API_PASSWORD, API_USER, make_broker
from tools.certs import make_tls_files


@pytest.fixture
def tls_broker(tmp_path):
    broker = make_broker(tmp_path / "tls-broker")
    broker.tls = make_tls_files(tmp_path / "tls")
    broker.start()
    yield broker
    broker.stop()


def publisher_for(broker, **env) -> Publisher:
    settings = settings_from_env(
        {
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "MQTT_BROKER": broker.host,
            "MQTT_PORT": str(broker.port),
            "MQTT_USERNAME": API_USER,
            "MQTT_PASSWORD": API_PASSWORD,
            "MQTT_PUBLISH_TIMEOUT_MS": "1500",
            **env,
        }
    )
    return Publisher(settings)


def test_webhook_over_tls_with_a_ca_file(make_app, tls_broker, subscribe):
    listener = subscribe("arcade/machine/+/coinpulse", on=tls_broker)
    app = make_app(
        MQTT_PORT=str(tls_broker.port), MQTT_TLS="true", MQTT_CA_CERT=str(tls_broker.tls.cafile)
    )
    session = checkout_session()
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    assert listener.next().json()["id"] == session["id"]


def test_tls_broker_not_trusted_by_the_system_store_is_refused(tls_broker):
    publisher = publisher_for(tls_broker, MQTT_TLS="true")
    with pytest.raises(PublishError, match="cannot reach|did not accept"):
        publisher.publish([("arcade/machine/m/coinpulse", b"{}")])


def test_plain_client_cannot_talk_to_a_tls_listener(tls_broker):
    publisher = publisher_for(tls_broker)
    with pytest.raises(PublishError):
        publisher.publish([("arcade/machine/m/coinpulse", b"{}")])


def test_wrong_password_fails_fast_and_clearly(broker):
    publisher = publisher_for(broker, MQTT_PASSWORD="wrong")
    with pytest.raises(PublishError, match="did not accept the connection"):
        publisher.publish([("arcade/machine/m/coinpulse", b"{}")])


def test_a_frozen_connection_is_replaced(own_broker, subscribe):
    """A broker that stops answering (as a socket does after a Lambda freeze): the publish fails
    without a PUBACK, and the next one uses a fresh connection."""
    publisher = publisher_for(own_broker)
    publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":1}')])
    own_broker.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(PublishError, match="no PUBACK"):
            publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":2}')])
        assert not publisher.connected
    finally:
        own_broker.process.send_signal(signal.SIGCONT)
    listener = subscribe("arcade/machine/+/coinpulse", on=own_broker)
    publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":3}')])
    assert listener.next().payload == b'{"n":3}'
    publisher.close()


def test_a_failed_publish_never_drops_the_fresh_connection_another_thread_uses(broker, subscribe):
    """Why 7: after a publish on a connection that died, the failure path discarded whatever
    connection was current — possibly a fresh one another worker thread had just made and was
    publishing on. Now it closes only its own."""
    from tests.netfault import PUBACK, MqttProxy

    proxy = MqttProxy(broker.host, broker.port)
    publisher = publisher_for(broker, MQTT_BROKER=proxy.host, MQTT_PORT=str(proxy.port))
    listener = subscribe("arcade/machine/machine_123/coinpulse")
    try:
        publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":0}')])
        listener.next()
        # From now on the first connection's PUBACKs are lost: thread A waits in vain.
        proxy.drop = lambda packet: packet.kind == PUBACK and packet.connection == 1
        failures = []

        def publish_on_the_old_connection():
            try:
                publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":1}')])
            except PublishError as error:
                failures.append(error)

        thread_a = threading.Thread(target=publish_on_the_old_connection)
        thread_a.start()
        assert listener.next().payload == b'{"n":1}'  # the broker has it; A has no PUBACK
        proxy.cut()  # the first connection dies: thread B makes a fresh one
        wait_until_disconnected(publisher)
        publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":2}')])
        thread_a.join(timeout=10)
        assert failures, "thread A should have had no PUBACK"
        assert publisher.connected  # A's failure closed A's connection, not B's
        publisher.publish([("arcade/machine/machine_123/coinpulse", b'{"n":3}')])
    finally:
        publisher.close()
        proxy.close()


def wait_until_disconnected(publisher: Publisher, timeout: float = 5.0) -> None:
    """paho notices a cut connection on its network thread; poll its flag until it does."""
    deadline = time.monotonic() + timeout
    while publisher.connected:
        assert time.monotonic() < deadline, "paho never noticed the cut connection"
        time.sleep(0.01)


def test_an_unexpected_error_after_the_claim_releases_it(make_app, tls_broker, tmp_path, subscribe):
    """Why 7: an exception after the claim kept it until the lease ran out (every Stripe retry
    meanwhile answered 409). Here the broker's CA file vanishes under a running API (e.g. /tmp
    cleaned on a long-lived container)."""
    subscribe("arcade/machine/+/coinpulse", on=tls_broker)  # the cabinet, listening
    ca = tmp_path / "ca-copy.pem"
    shutil.copy(tls_broker.tls.cafile, ca)
    app = make_app(MQTT_PORT=str(tls_broker.port), MQTT_TLS="true", MQTT_CA_CERT=str(ca))
    ca.unlink()
    event = stripe_event("checkout.session.completed", checkout_session())
    first = deliver(app.test_client(), event)
    assert first.status_code == 503, first.json
    shutil.copy(tls_broker.tls.cafile, ca)  # the operator puts it back
    retry = deliver(app.test_client(), event)
    assert (retry.status_code, retry.json["result"]) == (200, "published")
