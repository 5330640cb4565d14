"""The API's MQTT connection: TLS with a CA file, wrong credentials, and a stale connection."""

from __future__ import annotations

import signal

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
