"""The whole flow over TLS with a login per cabinet: payments arrive, and a cabinet's own login
cannot credit another cabinet (the broker's ACL drops the forged coinpulse)."""

from __future__ import annotations

import json
import queue
import uuid

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import TESTER_PASSWORD, TESTER_USER, Subscriber, publish
from tests.e2e.conftest import assert_credited
from tools.certs import make_tls_files

pytestmark = pytest.mark.slow


def connack(broker, user: str, password: str) -> mqtt.ReasonCode:
    """The broker's answer to a TLS login attempt."""
    answers: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex}")
    client.username_pw_set(user, password)
    client.tls_set(ca_certs=str(broker.tls.cafile))
    client.on_connect = lambda c, u, f, reason_code, p: answers.put(reason_code)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_tls_site_pays_each_cabinet_and_one_cabinet_cannot_credit_another(make_site, tmp_path):
    site = make_site(tls=make_tls_files(tmp_path / "tls"))
    site.start_cabinets(["cab-a", "cab-b"])
    site.start_listener()
    site.start_api()
    site.pay("cab-a", credits=2)

    # cab-a, logged in with its own credentials, forges a coinpulse for cab-b. MQTT 3.1.1 has
    # no way to refuse a publish: the broker PUBACKs it and silently drops it (ACL).
    victim = Subscriber(site.broker, "arcade/machine/cab-b/coinpulse", TESTER_USER,
                        TESTER_PASSWORD)
    forged = {"machineId": "cab-b", "credits": 5, "id": "cs_forged", "timestamp": "2026-01-01"}
    publish(site.broker, "arcade/machine/cab-b/coinpulse", json.dumps(forged), "cab-a",
            "pw-cab-a")
    assert victim.nothing_more() == []
    victim.close()
    # The victim's own sentinel: a real payment after the forgery. Coinpulses reach a cabinet in
    # order, so once this one is credited, the forged one would have been seen before it.
    real = site.pay("cab-b")
    site.cabinets["cab-b"].wait_count("ack", 1)
    assert [e["id"] for e in site.cabinets["cab-b"].of("credit")] == [real["id"]]
    assert_credited(site)

    # Per-cabinet credentials: cab-a's password does not open cab-b's login.
    assert connack(site.broker, "cab-b", "pw-cab-a").is_failure
    assert not connack(site.broker, "cab-b", "pw-cab-b").is_failure
