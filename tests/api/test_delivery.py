"""The delivery record: cabinets' acks and status land in the ledger."""

from __future__ import annotations

import json
import queue
import time

import pytest

from api.delivery import record_message
from api.store import Payment, State
from tests.conftest import publish


def paid(store, session_id="cs_a", machine_id="cab-a"):
    store.claim(Payment(session_id, machine_id, 1), "t", time.time(), 60)
    store.mark_published(session_id, "t", time.time())


def ack(machine_id, credit_id):
    return json.dumps({"machineId": machine_id, "id": credit_id, "credits": 1}).encode()


def test_ack_marks_the_payment_acked(store):
    paid(store)
    assert record_message(store, "arcade", "arcade/machine/cab-a/ack", ack("cab-a", "cs_a"), 5.0)
    assert store.get("cs_a").state == State.ACKED and store.get("cs_a").acked_at == 5.0


def test_ack_of_a_split_purchase_part_names_the_session(store):
    paid(store)
    result = record_message(store, "arcade", "arcade/machine/cab-a/ack", ack("cab-a", "cs_a:2"), 1)
    assert result == "acked" and store.get("cs_a").state == State.ACKED


def test_status_records_the_cabinet(store):
    status = {"machineId": "cab-a", "state": "offline", "firmware": "1.2.0", "pending_credits": 3}
    topic = "arcade/machine/cab-a/status"
    assert record_message(store, "arcade", topic, json.dumps(status).encode(), 7.0) == "offline"
    [cabinet] = store.cabinets()
    assert (cabinet.machine_id, cabinet.state, cabinet.last_seen) == ("cab-a", "offline", 7.0)
    assert (cabinet.firmware, cabinet.pending_credits) == ("1.2.0", 3)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("arcade/machine/cab-a/ack", b"not json"),
        ("arcade/machine/cab-a/ack", b'{"credits": 1}'),
        ("arcade/machine/cab-a/status", b'{"state": "exploded"}'),
        ("arcade/machine/cab-a/coinpulse", b'{"id": "cs_a"}'),
        ("other/machine/cab-a/ack", b'{"id": "cs_a"}'),
        ("arcade/machine/cab-a/ack", b"[1]"),
    ],
)
def test_anything_else_is_ignored(store, topic, payload):
    paid(store)
    assert record_message(store, "arcade", topic, payload, 1.0) == "ignored"
    assert store.get("cs_a").state == State.PUBLISHED and store.cabinets() == []


def test_listener_records_acks_and_status_from_the_broker(own_broker, tmp_path):
    broker = own_broker  # its own: no retained status left by other tests
    from api.settings import settings_from_env
    from api.store_sqlite import SQLiteStore
    from tests.api.conftest import api_config
    from tools.listen import start_listener

    store = SQLiteStore(str(tmp_path / "ledger.db"))
    paid(store, "cs_listened", "cab-b")
    recorded = queue.Queue()
    client = start_listener(
        settings_from_env(api_config(broker, tmp_path)),
        store,
        lambda topic, result: recorded.put(result),
    )
    try:
        # Published by the cabinet's own login, as the firmware does.
        status = json.dumps({"machineId": "cab-b", "state": "online", "firmware": "1.0.0"})
        publish(broker, "arcade/machine/cab-b/status", status, "cab-b", "pw-cab-b", retain=True)
        assert recorded.get(timeout=10) == "online"
        publish(
            broker, "arcade/machine/cab-b/ack", ack("cab-b", "cs_listened"), "cab-b", "pw-cab-b"
        )
        assert recorded.get(timeout=10) == "acked"
    finally:
        client.disconnect()
        client.loop_stop()
    assert store.get("cs_listened").state == State.ACKED
    assert [c.state for c in store.cabinets()] == ["online"]
