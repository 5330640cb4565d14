"""Pay and play, or get your money back by itself: the sweep refunds what was not delivered by its
deadline (through the recording Stripe stand-in, which answers like Stripe and records each
call), publishes again what the broker did not take, and never refunds anything twice. Every
test runs on SQLite and on DynamoDB (moto server)."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from api.ledger import PartState, State
from api.sweep import sweep
from tests.api.conftest import checkout_session, deliver, stripe_event

DEADLINE, GRACE = 120, 30
COINS = "arcade/machine/+/coinpulse"


@pytest.fixture
def refunding_app(make_app, store_url):
    return make_app(
        STORE_URL=store_url,
        REFUND_UNDELIVERED_AFTER_S=str(DEADLINE),
        REFUND_GRACE_S=str(GRACE),
    )


def services_of(app):
    return app.extensions["arcade"]


def paid(app, credits=1, machine_id="machine_123", **session) -> dict:
    session = checkout_session(credits=credits, amount=100 * credits, machine_id=machine_id,
                               **session)
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    return session


def refund_calls(stripe_api) -> list[dict]:
    return stripe_api.calls("POST", "/v1/refunds")


def test_an_undelivered_credit_is_refunded_after_its_deadline(refunding_app, subscribe, stripe_api):
    subscribe(COINS)  # the broker takes it; no cabinet ever confirms it
    session = paid(refunding_app, credits=2, payment_intent=f"pi_{uuid.uuid4().hex[:20]}")
    services = services_of(refunding_app)
    [part] = services.store.get(session["id"]).parts
    assert sweep(services, now=part.refund_at - 1).refunded == 0
    assert refund_calls(stripe_api) == []

    report = sweep(services, now=part.refund_at)
    assert report.refunded == 1
    [call] = refund_calls(stripe_api)
    assert call["form"]["payment_intent"] == session["payment_intent"]
    assert call["form"]["amount"] == "200"
    assert call["headers"]["Idempotency-Key"] == f"arcade-refund-{session['id']}"
    assert call["form"]["metadata[session_id]"] == session["id"]
    stored = services.store.get(session["id"])
    assert stored.state == State.REFUNDED
    refund = stripe_api.refunds_by_key[f"arcade-refund-{session['id']}"]
    assert (stored.parts[0].refund_id, stored.parts[0].refunded_amount) == (refund["id"], 200)
    assert [e.kind for e in stored.events][-1] == "refunded"
    # Done: a later sweep finds nothing to do.
    assert sweep(services, now=part.refund_at + 600).looked_at == 0
    assert len(refund_calls(stripe_api)) == 1


def test_a_split_purchase_refunds_only_its_undelivered_parts(refunding_app, subscribe, stripe_api):
    subscribe(COINS)
    session = paid(refunding_app, credits=45)  # 20 + 20 + 5, 4500 cents
    services = services_of(refunding_app)
    parts = services.store.get(session["id"]).parts
    for part in parts[:2]:  # the cabinet journaled two of them
        services.store.ack("machine_123", part.id, "received", "", time.time())
    sweep(services, now=parts[0].refund_at)
    [call] = refund_calls(stripe_api)
    assert (call["form"]["amount"], call["headers"]["Idempotency-Key"]) == (
        "500",
        f"arcade-refund-{parts[2].id}",
    )
    stored = services.store.get(session["id"])
    assert [p.state for p in stored.parts] == [
        PartState.RECEIVED,
        PartState.RECEIVED,
        PartState.REFUNDED,
    ]
    assert stored.state == State.RECEIVED  # the cabinet still owes two parts' pulses


def test_two_overlapping_sweeps_refund_once(refunding_app, subscribe, stripe_api, store_url):
    subscribe(COINS)
    sessions = [paid(refunding_app, credits=45) for _ in range(2)]  # 6 parts
    services = services_of(refunding_app)
    due = max(p.refund_at for s in sessions for p in services.store.get(s["id"]).parts)
    from api.services import Services
    from api.store import open_store

    # Two sweeps, each with its own connection to the ledger, at the same instant.
    other = Services(services.settings, open_store(store_url), services.publisher)
    barrier = threading.Barrier(2)
    reports = []

    def run(svc):
        barrier.wait()
        reports.append(sweep(svc, now=due))

    threads = [threading.Thread(target=run, args=(svc,)) for svc in (services, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    keys = [call["headers"]["Idempotency-Key"] for call in refund_calls(stripe_api)]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 6
    assert sum(report.refunded for report in reports) == 6
    for session in sessions:
        assert services.store.get(session["id"]).state == State.REFUNDED


def test_a_sweep_that_died_after_stripe_refunded_is_not_refunded_twice(
    refunding_app, subscribe, stripe_api
):
    """Stripe refunded, the sweep died before the ledger knew: the next sweep makes the same
    call with the same idempotency key, and Stripe answers with the first refund."""
    from api import refunds

    subscribe(COINS)
    session = paid(refunding_app)
    services = services_of(refunding_app)
    payment = services.store.get(session["id"])
    [part] = payment.parts
    first = refunds.create_refund(services, payment, part, 100)  # ... and then the sweep died
    assert sweep(services, now=part.refund_at).refunded == 1
    calls = refund_calls(stripe_api)
    assert len(calls) == 2 and len({c["headers"]["Idempotency-Key"] for c in calls}) == 1
    assert len(stripe_api.refunds_by_key) == 1
    assert services.store.get(session["id"]).parts[0].refund_id == first


def test_a_refund_stripe_refuses_is_noted_and_tried_again_later(
    refunding_app, subscribe, stripe_api
):
    subscribe(COINS)
    session = paid(refunding_app)
    services = services_of(refunding_app)
    [part] = services.store.get(session["id"]).parts
    stripe_api.refund_error = "Charge ch_1 has already been refunded."
    assert sweep(services, now=part.refund_at).failed == 1
    stored = services.store.get(session["id"])
    assert stored.state == State.PUBLISHED
    assert (stored.events[-1].kind, stored.events[-1].detail) == (
        "refund_failed",
        "Charge ch_1 has already been refunded.",
    )
    assert sweep(services, now=part.refund_at + 1).looked_at == 0  # not every sweep
    stripe_api.refund_error = None
    assert sweep(services, now=part.refund_at + 61).refunded == 1
    assert services.store.get(session["id"]).state == State.REFUNDED


def test_a_received_part_is_never_refunded(refunding_app, subscribe, stripe_api):
    subscribe(COINS)
    session = paid(refunding_app)
    services = services_of(refunding_app)
    [part] = services.store.get(session["id"]).parts
    services.store.ack("machine_123", part.id, "received", "", time.time())
    assert sweep(services, now=part.refund_at + 3600).looked_at == 0
    assert refund_calls(stripe_api) == []


def test_a_late_ack_after_the_refund_is_flagged_for_the_operator(refunding_app, subscribe):
    subscribe(COINS)
    session = paid(refunding_app)
    services = services_of(refunding_app)
    [part] = services.store.get(session["id"]).parts
    sweep(services, now=part.refund_at)
    services.store.ack("machine_123", part.id, "received", "", time.time())
    stored = services.store.get(session["id"])
    assert stored.state == State.REFUNDED_BUT_DELIVERED
    assert stored.parts[0].refund_id  # the refund stands: the player keeps both


def test_a_payment_no_cabinet_can_take_is_refunded_at_the_next_sweep(
    make_app, store_url, stripe_api
):
    app = make_app(STORE_URL=store_url, MACHINE_IDS="machine_456")
    session = paid(app)  # machine_123 is not in MACHINE_IDS
    services = services_of(app)
    assert sweep(services).refunded == 1
    [call] = refund_calls(stripe_api)
    assert call["form"]["amount"] == "100"
    assert services.store.get(session["id"]).state == State.REFUNDED


def test_refunds_off_reports_and_never_refunds(make_app, store_url, subscribe, stripe_api):
    app = make_app(STORE_URL=store_url, REFUND_UNDELIVERED_AFTER_S="0")
    coins = subscribe(COINS)
    session = paid(app)
    assert "expires" not in coins.next().json()
    services = services_of(app)
    assert services.store.get(session["id"]).parts[0].expires_at is None
    assert sweep(services, now=time.time() + 10 * 86400).refunded == 0
    assert refund_calls(stripe_api) == []
    assert [p.session_id for p in services.store.undelivered()] == [session["id"]]


def test_the_coinpulse_carries_its_deadline_and_the_broker_its_expiry(refunding_app, broker):
    """`expires` in the body for the cabinet, the Message Expiry Interval for the broker."""
    import queue

    got: queue.Queue = queue.Queue()
    subscribed: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"v5-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set("observer", "observer-password-for-tests")
    client.on_message = lambda c, u, m: got.put(m)
    client.on_subscribe = lambda *args: subscribed.put(True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("arcade/machine/machine_123/coinpulse", qos=1)
        subscribed.get(timeout=10)
        session = paid(refunding_app)
        message = got.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    [part] = services_of(refunding_app).store.get(session["id"]).parts
    body = message.payload.decode()
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(part.expires_at)))
    assert f'"expires":"{expected}"' in body
    assert DEADLINE - 5 <= message.properties.MessageExpiryInterval <= DEADLINE


def test_the_sweep_publishes_again_what_the_broker_did_not_take(
    make_app, own_broker, store_url, subscribe
):
    """Broker down at payment time: the webhook answers 503 and the part stays `paid`. Stripe's
    retry may come much later; the sweep publishes it as soon as the broker is back."""
    app = make_app(STORE_URL=store_url, MQTT_PORT=str(own_broker.port))
    own_broker.stop()
    session = checkout_session()
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 503
    own_broker.start()
    coins = subscribe(COINS, on=own_broker)
    services = services_of(app)
    assert sweep(services, now=time.time() + 11).republished == 1
    assert coins.next().json()["id"] == session["id"]
    assert services.store.get(session["id"]).state == State.PUBLISHED
    retry = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert retry.json["result"] == "duplicate"
    assert coins.nothing_more() == []


def test_test_checkout_without_stripe_records_the_refund_and_calls_nobody(
    make_app, store_url, stripe_api
):
    """`make run` without a Stripe account: nothing was charged, so nothing is sent to Stripe;
    the refund is recorded for the ledger and the receipt."""
    app = make_app(STORE_URL=store_url, TEST_CHECKOUT="true", STRIPE_API_KEY="",
                   PUBLIC_URL="http://127.0.0.1:5000", MACHINE_IDS="machine_456")
    session = paid(app)
    assert sweep(services_of(app)).refunded == 1
    stored = services_of(app).store.get(session["id"])
    assert stored.state == State.REFUNDED
    assert stored.parts[0].refund_id.startswith("re_test_local_")
    assert refund_calls(stripe_api) == []


def test_a_payment_the_rules_credit_nothing_is_refunded_by_itself(make_app, store_url,
                                                                  stripe_api):
    """Issue 11's rules (CURRENCY, ALLOW_FREE_CREDITS, less than a credit) credit nothing; what
    was charged comes back by itself, and nothing is sent for a free checkout."""
    app = make_app(STORE_URL=store_url)
    client, services = app.test_client(), services_of(app)
    inr = checkout_session(credits=None, amount=8400, payment_intent="pi_inr_1")
    inr["currency"] = "inr"
    free = checkout_session(credits=1, amount=0, payment_status="no_payment_required")
    for session in (inr, free):
        response = deliver(client, stripe_event("checkout.session.completed", session))
        assert response.json["result"] == "not_credited"
        assert services.store.get(session["id"]).state == State.NOT_CREDITED
    assert sweep(services).refunded == 2
    [call] = refund_calls(stripe_api)
    assert (call["form"]["payment_intent"], call["form"]["amount"]) == ("pi_inr_1", "8400")
    assert services.store.get(inr["id"]).state == State.REFUNDED
    free_part = services.store.get(free["id"]).parts[0]
    assert (free_part.state, free_part.refunded_amount) == (PartState.REFUNDED, 0)
