"""A paid checkout becomes exactly one confirmed coinpulse, whatever Stripe retries or reorders."""

from __future__ import annotations

import json
import threading
import time

import pytest

from api.store import Payment, State, planned
from tests.api.conftest import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    checkout_session,
    deliver,
    signed,
    stripe_event,
)

COINPULSE = "arcade/machine/+/coinpulse"


@pytest.fixture
def coinpulses(subscribe):
    return subscribe(COINPULSE)


def test_paid_checkout_publishes_one_coinpulse(client, app, coinpulses, broker):
    session = checkout_session(credits=2, amount=200)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    assert response.json["result"] == "published"
    message = coinpulses.next()
    assert message.topic == "arcade/machine/machine_123/coinpulse"
    assert not message.retain
    body = message.json()
    assert body["machineId"] == "machine_123"
    assert body["credits"] == 2
    assert body["id"] == session["id"]
    assert body["timestamp"].endswith("Z") and body["timestamp"][:2] == "20"
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.PUBLISHED
    assert (stored.machine_id, stored.credits, stored.amount, stored.currency) == (
        "machine_123",
        2,
        200,
        "usd",
    )
    assert coinpulses.nothing_more() == []


def test_seed_route_addcredit_also_credits(client, coinpulses):
    session = checkout_session()
    response = deliver(client, stripe_event("checkout.session.completed", session), "/addCredit")
    assert response.status_code == 200
    assert coinpulses.next().json()["id"] == session["id"]


def test_retried_event_is_published_once(client, coinpulses, broker):
    event = stripe_event("checkout.session.completed", checkout_session())
    first = deliver(client, event)
    again = deliver(client, event)
    assert (first.json["result"], again.json["result"]) == ("published", "duplicate")
    assert again.status_code == 200
    assert len(coinpulses.nothing_more()) == 1


def test_five_concurrent_deliveries_publish_once(make_app, coinpulses, broker):
    app = make_app()
    event = stripe_event("checkout.session.completed", checkout_session())
    body, headers = signed(event)
    barrier = threading.Barrier(5)
    statuses = []

    def deliver_once():
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/webhook", data=body, headers=headers).status_code)

    threads = [threading.Thread(target=deliver_once) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Exactly one publish; the others either saw it done (200) or in progress (409, retried).
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    assert len(coinpulses.nothing_more()) == 1
    # Stripe retries the 409s later: still nothing more.
    for _ in range(statuses.count(409)):
        assert deliver(app.test_client(), event).json["result"] == "duplicate"
    assert coinpulses.nothing_more() == []


def test_completed_then_async_succeeded_credits_once(client, coinpulses, broker):
    session = checkout_session()
    deliver(client, stripe_event("checkout.session.completed", session))
    response = deliver(client, stripe_event("checkout.session.async_payment_succeeded", session))
    assert response.json["result"] == "duplicate"
    assert len(coinpulses.nothing_more()) == 1


def test_unpaid_checkout_waits_for_async_payment(client, app, coinpulses, broker):
    session = checkout_session(payment_status="unpaid")
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.json["result"] == "awaiting_payment"
    assert app.extensions["arcade"].store.get(session["id"]).state == State.PENDING
    assert coinpulses.nothing_more() == []
    succeeded = dict(session, payment_status="paid")
    response = deliver(client, stripe_event("checkout.session.async_payment_succeeded", succeeded))
    assert response.json["result"] == "published"
    assert len(coinpulses.nothing_more()) == 1


def test_async_payment_failed_is_recorded_and_never_credited(client, app, coinpulses, broker):
    session = checkout_session(payment_status="unpaid")
    deliver(client, stripe_event("checkout.session.completed", session))
    response = deliver(client, stripe_event("checkout.session.async_payment_failed", session))
    assert response.status_code == 200 and response.json["result"] == "failed"
    assert app.extensions["arcade"].store.get(session["id"]).state == State.FAILED
    late = deliver(client, stripe_event("checkout.session.async_payment_succeeded", session))
    assert late.json["result"] == "refused"
    assert coinpulses.nothing_more() == []


@pytest.mark.parametrize(
    ("event_type", "state"),
    [("charge.refunded", State.REFUNDED), ("charge.dispute.created", State.DISPUTED)],
)
def test_refund_and_dispute_are_recorded_without_pulse(
    client, app, coinpulses, broker, event_type, state
):
    session = checkout_session(payment_intent="pi_refund_me")
    deliver(client, stripe_event("checkout.session.completed", session))
    coinpulses.next()
    charge = charge_refunded("pi_refund_me", 100)["data"]["object"]
    if event_type == "charge.dispute.created":
        charge = {
            "id": "dp_1",
            "object": "dispute",
            "charge": "ch_1",
            "payment_intent": "pi_refund_me",
        }
    response = deliver(client, stripe_event(event_type, charge))
    assert response.status_code == 200 and response.json["result"] == str(state)
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == state and stored.machine_id == "machine_123"
    assert coinpulses.nothing_more() == []


def test_other_event_types_are_ignored_with_200(client, coinpulses, broker):
    response = deliver(
        client, stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    )
    assert response.status_code == 200 and response.json["result"] == "ignored"
    assert coinpulses.nothing_more() == []


def test_credits_from_amount_when_metadata_has_none(client, coinpulses):
    session = checkout_session(credits=None, amount=350)
    deliver(client, stripe_event("checkout.session.completed", session))
    assert coinpulses.next().json()["credits"] == 3


def test_machine_from_client_reference_id_when_metadata_lacks_it(client, coinpulses):
    session = checkout_session(machine_id=None, client_reference_id="machine_456")
    deliver(client, stripe_event("checkout.session.completed", session))
    assert coinpulses.next().topic == "arcade/machine/machine_456/coinpulse"


def test_large_purchase_is_split_for_the_cabinet(client, coinpulses, broker):
    session = checkout_session(credits=45, amount=4500)
    deliver(client, stripe_event("checkout.session.completed", session))
    messages = [m.json() for m in coinpulses.wait_for(3)]
    assert [(m["id"], m["credits"]) for m in messages] == [
        (f"{session['id']}:1", 20),
        (f"{session['id']}:2", 20),
        (f"{session['id']}:3", 5),
    ]
    assert coinpulses.nothing_more() == []


def test_checkout_without_machine_is_not_ours(client, coinpulses, broker):
    session = checkout_session(machine_id=None)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200 and response.json["result"] == "ignored"
    assert coinpulses.nothing_more() == []


@pytest.mark.parametrize("machine_id", ["a/b", "+", "#", "x" * 65, "ca bin", "é"])
def test_machine_id_that_could_inject_topics_is_never_published(
    client, app, coinpulses, broker, machine_id
):
    """Someone paid through a link with a forged client_reference_id: nothing is published, and
    the money is not kept silently: the payment is recorded undeliverable, to be refunded."""
    session = checkout_session(machine_id=machine_id)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    assert (response.json["result"], response.json["reason"]) == (
        "undeliverable",
        "invalid_machine_id",
    )
    assert coinpulses.nothing_more() == []
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.UNDELIVERABLE and stored.parts[0].refund_at is not None


def test_a_paid_session_for_a_cabinet_not_in_machine_ids_is_kept_for_a_refund(
    make_app, coinpulses, broker, tmp_path
):
    """Why 5: a cabinet removed from MACHINE_IDS answered 400 and wrote nothing: paid, invisible."""
    app = make_app(MACHINE_IDS="machine_456")
    session = checkout_session(machine_id="machine_123")
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    assert (response.json["result"], response.json["reason"]) == (
        "undeliverable",
        "unknown_machine",
    )
    assert coinpulses.nothing_more() == []
    assert session["id"] in undelivered_listing(tmp_path)
    # Stripe's retry of the same event changes nothing.
    again = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert again.json["result"] == "undeliverable"
    assert coinpulses.nothing_more() == []


def test_previous_webhook_secret_still_accepted_during_rotation(client, coinpulses):
    event = stripe_event("checkout.session.completed", checkout_session())
    assert deliver(client, event, secret=OLD_WEBHOOK_SECRET).status_code == 200
    coinpulses.next()


def _raw_post(client, body: bytes, headers: dict):
    return client.post("/webhook", data=body, headers=headers)


def _bad_deliveries():
    event = stripe_event("checkout.session.completed", checkout_session())
    body, good = signed(event)
    stale_body, stale = signed(event, timestamp=int(time.time()) - 3600)
    future_body, future = signed(event, timestamp=int(time.time()) + 3600)
    wrong_body, wrong = signed(event, secret="whsec_attacker")
    text_body, text_headers = signed(b"this is not json")
    list_body, list_headers = signed(b"[1, 2, 3]")
    no_data_body, no_data = signed(json.dumps({"type": "checkout.session.completed"}).encode())
    big = json.dumps(dict(event, padding="x" * 300_000)).encode()
    big_body, big_headers = signed(big)
    return [
        ("bad signature", wrong_body, wrong, 400),
        ("stale timestamp", stale_body, stale, 400),
        ("timestamp from the future", future_body, future, 400),
        ("no signature", body, {"Content-Type": "application/json"}, 400),
        ("garbage signature", body, dict(good, **{"Stripe-Signature": "nonsense"}), 400),
        ("truncated body", body[: len(body) // 2], good, 400),
        ("altered body", body.replace(b'"credits": "1"', b'"credits": "99"'), good, 400),
        ("non-JSON", text_body, text_headers, 400),
        ("JSON but not an event", list_body, list_headers, 400),
        ("event without data", no_data_body, no_data, 400),
        ("wrong content type", body, dict(good, **{"Content-Type": "text/plain"}), 415),
        ("oversized body", big_body, big_headers, 413),
    ]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [case[1:] for case in _bad_deliveries()],
    ids=[case[0] for case in _bad_deliveries()],
)
def test_bad_deliveries_are_rejected_and_publish_nothing(
    client, coinpulses, broker, body, headers, status
):
    response = _raw_post(client, body, headers)
    assert response.status_code == status
    assert response.is_json and response.json["error"]
    assert coinpulses.nothing_more() == []


def test_delivery_finding_a_claim_in_progress_gets_409_not_200(client, app, coinpulses, broker):
    session = checkout_session()
    store = app.extensions["arcade"].store
    payment = Payment(session["id"], "machine_123", 1)
    store.claim(planned(payment, now=time.time()), "another-worker", time.time(), 60)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 409 and response.json["error"]
    assert coinpulses.nothing_more() == []


def test_claim_of_a_crashed_worker_expires_and_the_retry_credits(client, app, coinpulses, broker):
    session = checkout_session()
    store = app.extensions["arcade"].store
    payment = planned(Payment(session["id"], "machine_123", 1), now=time.time() - 120)
    store.claim(payment, "crashed", time.time() - 120, 60)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.json["result"] == "published"
    assert len(coinpulses.nothing_more()) == 1


def test_broker_down_answers_503_and_the_retry_publishes_once(make_app, own_broker, subscribe):
    from tests.api.conftest import api_config  # noqa: F401  (documents where the config comes from)

    app = make_app(MQTT_PORT=str(own_broker.port))
    client = app.test_client()
    session = checkout_session()
    event = stripe_event("checkout.session.completed", session)
    assert deliver(client, event).status_code == 200  # connection made while the broker is up
    own_broker.stop()
    second = stripe_event("checkout.session.completed", checkout_session())
    response = deliver(client, second)
    assert response.status_code == 503 and "credit not delivered" in response.json["error"]
    assert app.extensions["arcade"].store.get(second["data"]["object"]["id"]).state == State.PAID
    own_broker.start()
    listener = subscribe(COINPULSE, on=own_broker)
    retry = deliver(client, second)
    assert retry.status_code == 200 and retry.json["result"] == "published"
    assert listener.next().json()["id"] == second["data"]["object"]["id"]
    assert deliver(client, second).json["result"] == "duplicate"


def test_signature_is_checked_against_raw_bytes_not_reserialised_json(client, coinpulses):
    """Stripe signs the exact bytes; whitespace and key order must be kept as sent."""
    event = stripe_event("checkout.session.completed", checkout_session())
    body = json.dumps(event, indent=4, sort_keys=True).encode()
    body, headers = signed(body)
    assert client.post("/webhook", data=body, headers=headers).status_code == 200
    coinpulses.next()


def test_webhook_secret_is_required_and_cannot_be_blank(make_app):
    from api.settings import SettingsError

    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        make_app(STRIPE_WEBHOOK_SECRET=" , ")


def test_primary_secret_in_use(client, coinpulses):
    event = stripe_event("checkout.session.completed", checkout_session())
    assert deliver(client, event, secret=WEBHOOK_SECRET).status_code == 200
    coinpulses.next()


def test_async_succeeded_before_completed_still_credits_once(client, app, coinpulses):
    """Stripe does not promise order: the later, older-looking event must not undo anything."""
    session = checkout_session(payment_status="paid")
    first = deliver(client, stripe_event("checkout.session.async_payment_succeeded", session))
    assert first.json["result"] == "published"
    late = dict(session, payment_status="unpaid")
    assert deliver(client, stripe_event("checkout.session.completed", late)).status_code == 200
    assert app.extensions["arcade"].store.get(session["id"]).state == State.PUBLISHED
    assert len(coinpulses.nothing_more()) == 1


def test_free_checkout_with_credits_is_credited_when_allowed(make_app, coinpulses):
    client = make_app(ALLOW_FREE_CREDITS="true").test_client()
    session = checkout_session(credits=1, amount=0, payment_status="no_payment_required")
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.json["result"] == "published"
    assert coinpulses.next().json()["credits"] == 1


def test_purchase_worth_no_credit_publishes_nothing_and_is_kept_for_a_refund(
    client, app, coinpulses
):
    session = checkout_session(credits=None, amount=50)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200 and response.json["result"] == "not_credited"
    assert coinpulses.nothing_more() == []
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.NOT_CREDITED  # and refunded by the next sweep (test_refunds.py)


# --- Why 3: refunds and disputes, whatever their order --------------------------------------------
def charge_refunded(payment_intent: str, amount_refunded: int, amount: int = 100) -> dict:
    charge = {
        "id": f"ch_{payment_intent[3:]}",
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
        "currency": "usd",
        "livemode": False,
        "payment_intent": payment_intent,
    }
    return stripe_event("charge.refunded", charge)


def dispute_created(payment_intent: str) -> dict:
    dispute = {"id": "dp_1", "object": "dispute", "charge": "ch_1", "amount": 100,
               "payment_intent": payment_intent, "livemode": False}
    return stripe_event("charge.dispute.created", dispute)


@pytest.mark.parametrize(
    ("first", "state"),
    [
        (lambda pi: charge_refunded(pi, 100), State.REFUNDED),
        (lambda pi: dispute_created(pi), State.DISPUTED),
    ],
    ids=["refund", "dispute"],
)
def test_a_refund_or_dispute_that_arrives_before_completed_wins(
    client, app, coinpulses, broker, first, state
):
    session = checkout_session(payment_intent="pi_early_1")
    early = deliver(client, first("pi_early_1"))
    assert early.status_code == 200 and early.json["result"] == "kept", early.json
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert (response.status_code, response.json["result"]) == (200, "refused"), response.json
    assert coinpulses.nothing_more() == []
    assert app.extensions["arcade"].store.get(session["id"]).state == state


def test_a_partial_refund_is_not_a_whole_refund(client, app, coinpulses, broker):
    session = checkout_session(credits=2, amount=200, payment_intent="pi_partial_1")
    deliver(client, stripe_event("checkout.session.completed", session))
    coinpulses.next()
    store = app.extensions["arcade"].store
    partial = deliver(client, charge_refunded("pi_partial_1", 50, amount=200))
    assert partial.json["result"] == "partially_refunded"
    stored = store.get(session["id"])
    assert (stored.state, stored.amount_refunded) == (State.PUBLISHED, 50)
    deliver(client, charge_refunded("pi_partial_1", 200, amount=200))
    stored = store.get(session["id"])
    assert (stored.state, stored.amount_refunded) == (State.REFUNDED, 200)


# --- Why 5: paid but invisible --------------------------------------------------------------------
def undelivered_listing(tmp_path) -> str:
    from click.testing import CliRunner

    from tools.cli import cli

    result = CliRunner().invoke(
        cli, ["ledger", "--undelivered"], env={"STORE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_a_paid_session_the_broker_never_took_stays_listed_as_paid(make_app, own_broker, tmp_path):
    app = make_app(MQTT_PORT=str(own_broker.port))
    own_broker.stop()
    session = checkout_session()
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 503
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.PAID  # not "pending", the state of an unpaid checkout
    listing = undelivered_listing(tmp_path)
    row = next(line for line in listing.splitlines() if session["id"] in line)
    assert " paid " in row


# --- Why 7: livemode ------------------------------------------------------------------------------
def test_a_live_api_never_credits_a_test_event(make_app, coinpulses, broker):
    app = make_app(STRIPE_API_KEY="sk_live_123")
    session = checkout_session()  # livemode: false, as a test endpoint sends it
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert (response.status_code, response.json["result"]) == (200, "ignored")
    assert "test" in response.json["reason"]
    assert coinpulses.nothing_more() == []
    assert app.extensions["arcade"].store.get(session["id"]) is None


def test_a_test_api_refuses_a_live_event(make_app, coinpulses, broker):
    app = make_app(STRIPE_API_KEY="sk_test_123")
    event = stripe_event("checkout.session.completed", dict(checkout_session(), livemode=True))
    event["livemode"] = True
    response = deliver(app.test_client(), event)
    # Real money must not be dropped quietly: 400 makes Stripe retry and show the failure.
    assert response.status_code == 400 and "livemode" in response.json["error"]
    assert coinpulses.nothing_more() == []
