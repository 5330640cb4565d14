"""The delivery record: cabinets' acks (per part, only for their own payments) and status land in
the ledger; a bad message is dropped, never fatal."""

from __future__ import annotations

import json
import queue
import time

import pytest

from api.delivery import record_message
from api.store import Cabinet, PartState, Payment, State, planned
from tests.conftest import publish


def published(store, session_id="cs_a", machine_id="cab-a", credits=1, now=1.0):
    """A paid payment whose every part the broker accepted."""
    payment = planned(Payment(session_id, machine_id, credits, 100 * credits, "usd"), now=now)
    store.claim(payment, "t", now, 60)
    store.published(session_id, "t", {part.id: 0 for part in payment.parts}, now)
    return store.get(session_id)


def ack(machine_id, credit_id, state=None, **extra):
    body = {"machineId": machine_id, "id": credit_id, "credits": 1, **extra}
    if state is not None:
        body["state"] = state
    return json.dumps(body).encode()


def record(store, machine_id, kind, payload, now=5.0):
    return record_message(store, "arcade", f"arcade/machine/{machine_id}/{kind}", payload, now)


def test_an_ack_without_state_means_done(store):
    published(store)
    assert record(store, "cab-a", "ack", ack("cab-a", "cs_a")) == "done"
    stored = store.get("cs_a")
    assert stored.state == State.DONE and stored.parts[0].done_at == 5.0


@pytest.mark.parametrize(
    ("state", "payment_state", "part_state"),
    [
        ("received", State.RECEIVED, PartState.RECEIVED),
        ("done", State.DONE, PartState.DONE),
        ("expired", State.EXPIRED, PartState.EXPIRED),
        ("rejected", State.UNDELIVERABLE, PartState.UNDELIVERABLE),
    ],
)
def test_each_ack_state(store, state, payment_state, part_state):
    published(store)
    extra = {"reason": "credits above max_credits_per_message"} if state == "rejected" else {}
    record(store, "cab-a", "ack", ack("cab-a", "cs_a", state, **extra))
    stored = store.get("cs_a")
    assert (stored.state, stored.parts[0].state) == (payment_state, part_state)
    if state == "rejected":
        assert stored.parts[0].reason == "cabinet: credits above max_credits_per_message"


def test_received_then_done_and_a_late_received_never_goes_back(store):
    published(store)
    record(store, "cab-a", "ack", ack("cab-a", "cs_a", "received"), now=2.0)
    record(store, "cab-a", "ack", ack("cab-a", "cs_a", "done"), now=3.0)
    record(store, "cab-a", "ack", ack("cab-a", "cs_a", "received"), now=4.0)  # a resent duplicate
    part = store.get("cs_a").parts[0]
    assert (part.state, part.received_at, part.done_at) == (PartState.DONE, 2.0, 3.0)


def test_a_cabinet_cannot_ack_another_cabinets_payment(store):
    """Why 4: acks were matched by session id only: cabinet A could ack cabinet B's payment."""
    published(store, "cs_b", "cab-b")
    assert record(store, "cab-a", "ack", ack("cab-a", "cs_b")) == "ack_wrong_machine"
    assert store.get("cs_b").state == State.PUBLISHED


def test_an_ack_naming_another_machine_in_its_body_is_dropped(store):
    published(store)
    assert record(store, "cab-a", "ack", ack("cab-b", "cs_a")) == "dropped"
    assert store.get("cs_a").state == State.PUBLISHED


def test_one_part_acks_only_itself(store):
    """Why 4: any one part acked a whole split purchase."""
    published(store, credits=45)  # 20 + 20 + 5
    assert record(store, "cab-a", "ack", ack("cab-a", "cs_a:2")) == "done"
    stored = store.get("cs_a")
    assert [p.state for p in stored.parts] == [
        PartState.PUBLISHED,
        PartState.DONE,
        PartState.PUBLISHED,
    ]
    assert stored.state == State.PUBLISHED
    for part_id in ("cs_a:1", "cs_a:3"):
        record(store, "cab-a", "ack", ack("cab-a", part_id))
    assert store.get("cs_a").state == State.DONE


@pytest.mark.parametrize("credit_id", ["cs_a:4", "cs_a:0", "cs_nobody", "cs_a:1:1"])
def test_an_ack_for_an_unknown_part_changes_nothing(store, credit_id):
    published(store, credits=45)
    assert record(store, "cab-a", "ack", ack("cab-a", credit_id)) == "ack_unknown"
    assert store.get("cs_a").state == State.PUBLISHED


def test_status_records_the_cabinet_and_its_problem(store):
    status = {
        "machineId": "cab-a",
        "state": "offline",
        "firmware": "1.2.0",
        "pending_credits": 3,
        "problem": "pulse_repeat_cap",
        "detail": "stopped after 3 repeats",
    }
    assert record(store, "cab-a", "status", json.dumps(status).encode(), 7.0) == "offline"
    [cabinet] = store.cabinets()
    assert (cabinet.machine_id, cabinet.state, cabinet.last_seen) == ("cab-a", "offline", 7.0)
    assert (cabinet.firmware, cabinet.pending_credits) == ("1.2.0", 3)
    assert (cabinet.problem, cabinet.detail) == ("pulse_repeat_cap", "stopped after 3 repeats")


def test_an_ack_moves_the_cabinets_last_seen(store):
    """Issue 12: "last seen" moved only on status, not on acks."""
    published(store)
    store.cabinet_seen(Cabinet("cab-a", "online", 1.0, "1.0.0", 1))
    record(store, "cab-a", "ack", ack("cab-a", "cs_a"), now=9.0)
    [cabinet] = store.cabinets()
    assert (cabinet.state, cabinet.last_seen, cabinet.firmware) == ("online", 9.0, "1.0.0")


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("arcade/machine/cab-a/ack", b"not json"),
        ("arcade/machine/cab-a/ack", b'{"credits": 1}'),
        ("arcade/machine/cab-a/ack", b'{"id": "cs_a", "state": "eaten"}'),
        ("arcade/machine/cab-a/ack", b'{"id": "' + b"x" * 300 + b'"}'),
        ("arcade/machine/cab-a/ack", b"[1]"),
        ("arcade/machine/cab-a/ack", b'{"id": "cs_a", "pad": "' + b"x" * 5000 + b'"}'),
        ("arcade/machine/cab-a/status", b'{"state": "exploded"}'),
        ("arcade/machine/cab-a/status", json.dumps({"state": "online", "pending_credits": 10**20})),
        ("arcade/machine/cab-a/status", b'{"state": "online", "pending_credits": -1}'),
        ("arcade/machine/cab-a/status", b'{"state": "online", "firmware": {"x": 1}}'),
        ("arcade/machine/cab-a/status", b'{"state": "online", "problem": "' + b"p" * 200 + b'"}'),
        ("arcade/machine/cab-a/coinpulse", b'{"id": "cs_a"}'),
        ("other/machine/cab-a/ack", b'{"id": "cs_a"}'),
        ("arcade/machine/a+b/ack", b'{"id": "cs_a"}'),
    ],
)
def test_anything_else_is_dropped(store, topic, payload):
    published(store)
    payload = payload.encode() if isinstance(payload, str) else payload
    assert record_message(store, "arcade", topic, payload, 1.0) in ("dropped", "ignored")
    assert store.get("cs_a").state == State.PUBLISHED and store.cabinets() == []


# --- over the real broker, through `arcade listen` ------------------------------------------------
@pytest.fixture
def listening(own_broker, tmp_path):
    """A listener on a broker of its own (no retained status left by other tests)."""
    from api.settings import settings_from_env
    from api.store_sqlite import SQLiteStore
    from tests.api.conftest import api_config
    from tools.listen import start_listener

    store = SQLiteStore(str(tmp_path / "ledger.db"))
    recorded: queue.Queue = queue.Queue()
    settings = settings_from_env(api_config(own_broker, tmp_path))
    listener = start_listener(settings, store, lambda topic, result: recorded.put(result))
    assert listener.subscribed.wait(10), "the listener never subscribed"
    yield store, recorded
    listener.stop()


def as_cabinet(broker, machine_id, kind, payload, retain=False):
    """Published with the cabinet's own login, as the firmware does."""
    topic = f"arcade/machine/{machine_id}/{kind}"
    publish(broker, topic, payload, machine_id, f"pw-{machine_id}", retain=retain)


def test_listener_records_status_and_each_ack_state(listening, own_broker):
    store, recorded = listening
    published(store, "cs_listened", "cab-b", credits=45, now=time.time())
    status = json.dumps({"machineId": "cab-b", "state": "online", "firmware": "1.0.0"})
    as_cabinet(own_broker, "cab-b", "status", status, retain=True)
    assert recorded.get(timeout=10) == "online"
    for part, state, extra in [
        (1, "received", {}),
        (1, None, {}),  # firmware 1.0: an ack without state is `done`
        (2, "expired", {}),
        (3, "rejected", {"reason": "credits above 4"}),
    ]:
        as_cabinet(own_broker, "cab-b", "ack", ack("cab-b", f"cs_listened:{part}", state, **extra))
        assert recorded.get(timeout=10) == (state or "done")
    parts = store.get("cs_listened").parts
    assert [p.state for p in parts] == [
        PartState.DONE,
        PartState.EXPIRED,
        PartState.UNDELIVERABLE,
    ]
    assert parts[2].reason == "cabinet: credits above 4"
    assert [c.state for c in store.cabinets()] == ["online"]


def test_a_status_the_ledger_cannot_hold_never_stops_the_listener(listening, own_broker):
    """Why 4: `pending_credits: 10**20` raised inside paho's callback: the loop thread died, the
    process stayed up, and the message came back on every restart."""
    store, recorded = listening
    huge = json.dumps({"machineId": "cab-a", "state": "online", "pending_credits": 10**20})
    as_cabinet(own_broker, "cab-a", "status", huge)
    assert recorded.get(timeout=10) == "dropped"
    fine = json.dumps({"machineId": "cab-a", "state": "online", "pending_credits": 2})
    as_cabinet(own_broker, "cab-a", "status", fine)
    assert recorded.get(timeout=10) == "online"
    assert [(c.machine_id, c.pending_credits) for c in store.cabinets()] == [("cab-a", 2)]


def test_a_cabinet_acking_another_cabinets_payment_over_the_broker(listening, own_broker):
    store, recorded = listening
    published(store, "cs_of_b", "cab-b", now=time.time())
    as_cabinet(own_broker, "cab-a", "ack", ack("cab-a", "cs_of_b"))
    assert recorded.get(timeout=10) == "ack_wrong_machine"
    assert store.get("cs_of_b").state == State.PUBLISHED


def test_the_listener_reports_its_health(listening, own_broker):
    store, recorded = listening
    as_cabinet(own_broker, "cab-a", "status", b'{"state": "online"}')
    assert recorded.get(timeout=10) == "online"
    as_cabinet(own_broker, "cab-a", "ack", b"garbage")
    assert recorded.get(timeout=10) == "dropped"
    beat = store.heartbeat_of("listener")
    assert beat is not None and beat.detail["connected"] is True
    assert beat.detail["recorded"] >= 1 and beat.detail["dropped"] >= 1
