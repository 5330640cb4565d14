"""Security properties that a mutation of the code once survived (issue 11, "Why" 8): each test
here fails if the guarded line is changed the way the mutation changed it."""

from __future__ import annotations

import time

import pytest

from api.machines import is_valid_machine_id
from api.store import Claim, Payment, State, planned
from tests.api.conftest import checkout_session, deliver, stripe_event

COINPULSE = "arcade/machine/+/coinpulse"


def test_link_metadata_wins_over_the_client_reference_id_the_payer_can_edit(client, subscribe):
    """The payer can change `?client_reference_id=` in the link's URL; our metadata they cannot."""
    coinpulses = subscribe(COINPULSE)
    session = checkout_session(machine_id="machine_123", client_reference_id="machine_456")
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200 and response.json["result"] == "published"
    assert [m.topic for m in coinpulses.nothing_more()] == ["arcade/machine/machine_123/coinpulse"]


def test_invalid_metadata_machine_is_refused_not_replaced_by_the_client_reference(
    client, subscribe
):
    coinpulses = subscribe(COINPULSE)
    session = checkout_session(machine_id="a/b", client_reference_id="machine_456")
    response = deliver(client, stripe_event("checkout.session.completed", session))
    # Never published, never sent to the client_reference's cabinet; kept to be refunded.
    assert (response.status_code, response.json["result"]) == (200, "undeliverable")
    assert response.json["reason"] == "invalid_machine_id"
    assert coinpulses.nothing_more() == []


@pytest.mark.parametrize("machine_id", ["cab\n", "machine_123\n", "\nmachine_123", "cab\r"])
def test_machine_id_must_match_whole_not_up_to_a_newline(machine_id):
    # re.match with "$" accepts "cab\n": "$" also matches before a final newline.
    assert not is_valid_machine_id(machine_id)


@pytest.mark.parametrize("machine_id", ["machine_123\n", "machine_123\r\n"])
def test_machine_id_with_a_newline_is_refused_on_every_route(client, subscribe, machine_id):
    coinpulses = subscribe(COINPULSE)
    session = checkout_session(machine_id=machine_id)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    # Paid for a cabinet that cannot exist: never published, kept to be refunded.
    assert (response.status_code, response.json["reason"]) == (200, "invalid_machine_id")
    link = client.post("/create-payment-link", json={"machine_id": machine_id})
    assert link.status_code == 400 and "machine_id" in link.json["error"]
    assert coinpulses.nothing_more() == []


@pytest.mark.parametrize("state", [State.REFUNDED, State.DISPUTED])
def test_release_never_touches_a_row_that_is_no_longer_claimed(store, state):
    """A worker whose publish failed releases its claim; if a refund (or dispute) was recorded
    meanwhile, the release must not put the session back to creditable. (An async payment can
    fail only before it is paid, so never under a claim.)"""
    now = time.time()
    payment = planned(Payment("cs_test_release", "machine_123", 1, 100, "usd"), now=now)
    assert store.claim(payment, "worker-a", now, 60) == Claim.CLAIMED
    if state == State.REFUNDED:
        store.stripe_refunded("cs_test_release", 100, now + 1)
    else:
        store.stripe_disputed("cs_test_release", now + 1)
    store.release("cs_test_release", "worker-a", now + 2)
    assert store.get("cs_test_release").state == state
    # And the retry Stripe sends afterwards is refused, not credited.
    assert store.claim(payment, "worker-b", now + 3, 60) == Claim.REFUSED
