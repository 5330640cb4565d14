"""The console's pages and actions through the Flask test client, on the real broker and ledger:
what an operator reads, and what reaches a cabinet when they act."""

from __future__ import annotations

import csv
import io
import time

import pytest

from api.store import Cabinet
from tests.api.conftest import checkout_session, deliver, stripe_event
from tests.console.conftest import csrf_of


@pytest.fixture(autouse=True)
def cabinets_listening(subscribe):
    """Someone subscribed to the cabinets' coinpulses: the broker (MQTT 5) then takes them
    (without, it answers "no matching subscribers" and the payment is undeliverable)."""
    return subscribe(["arcade/machine/machine_123/coinpulse",
                      "arcade/machine/machine_456/coinpulse"])


def text(answer) -> str:
    return answer.get_data(as_text=True)


def services_of(client):
    return client.application.extensions["arcade"]


def pay(client, machine="machine_123", credits=2, amount=200, **fields):
    session = checkout_session(machine_id=machine, credits=credits, amount=amount, **fields)
    answer = deliver(client, stripe_event("checkout.session.completed", session))
    assert answer.status_code == 200, answer.json
    return session


def act(client, name, subject, reason="player asked", confirm=True, **fields):
    """Fill in an action's form, then (optionally) press the confirmation's button."""
    page = text(client.get("/console/"))
    data = {"subject": subject, "reason": reason, "csrf_token": csrf_of(page), **fields}
    first = client.post(f"/console/actions/{name}", data=data)
    if not confirm:
        return first
    assert first.status_code == 200 and "Confirm" in text(first), text(first)
    return client.post(f"/console/actions/{name}", data={**data, "confirmed": "yes"},
                       follow_redirects=True)


def test_fleet_lists_problems_first_with_takings_and_last_payment(operator_client):
    store = services_of(operator_client).store
    now = time.time()
    store.cabinet_seen(Cabinet("machine_123", "online", now - 5, "1.0.0", 0))
    store.cabinet_seen(Cabinet("machine_456", "offline", now - 1800, "1.0.0", 3))
    store.cabinet_seen(Cabinet("cab-a", "online", now - 5, "0.9.0", 0))
    session = pay(operator_client, "machine_123", amount=250)
    page = text(operator_client.get("/console/"))
    assert "2 of 3 online" in page and "1 needs attention" in page
    assert page.index("machine_456") < page.index("cab-a") < page.index("machine_123")
    assert "offline with 3 credit(s) owed" in page and "offline</span> for 30 min" in page
    assert "2.50 USD" in page and session["id"] in page


def test_the_live_part_comes_alone_for_the_page_script(operator_client):
    answer = operator_client.get("/console/", headers={"X-Console-Live": "1"})
    assert answer.status_code == 200
    assert "<html" not in text(answer) and 'id="fleet-summary"' in text(answer)


def test_a_payment_is_found_by_session_intent_cabinet_and_state(operator_client):
    session = pay(operator_client, "machine_123")
    other = pay(operator_client, "machine_456")
    by_intent = operator_client.get(f"/console/payments?q={session['payment_intent']}")
    assert by_intent.headers["Location"] == f"/console/payments/{session['id']}"
    page = text(operator_client.get(f"/console/payments/{session['id']}"))
    for expected in ("published", "paid", "<dd>2</dd>", "2.00 USD", "Open in Stripe",
                     f"https://dashboard.stripe.com/test/payments/{session['payment_intent']}"):
        assert expected in page
    listing = text(operator_client.get("/console/payments?machine=machine_456"))
    assert other["id"] in listing and session["id"] not in listing
    assert "No payments match" in text(operator_client.get("/console/payments?state=refunded"))
    missing = text(operator_client.get("/console/payments?q=cs_test_nothing"))
    assert "No payment has the id" in missing


def test_comp_is_confirmed_then_pulses_the_cabinet_with_its_own_id(operator_client, subscribe):
    coinpulses = subscribe("arcade/machine/machine_123/coinpulse")
    asked = act(operator_client, "comp", "machine_123", confirm=False, credits="3")
    assert "Put 3 free credit(s) on machine_123?" in text(asked)
    assert coinpulses.nothing_more() == []  # asking is not doing
    done = act(operator_client, "comp", "machine_123", credits="3", reason="coin jam")
    assert "Done: 3 comp credit(s) published as comp_" in text(done)
    [message] = coinpulses.wait_for(1)
    assert message.json()["id"].startswith("comp_") and message.json()["credits"] == 3
    audit = text(operator_client.get("/console/audit"))
    assert "comp" in audit and "coin jam" in audit and "ana" in audit
    money = text(operator_client.get("/console/money"))
    assert "comp" in money
    payments = list(csv.reader(io.StringIO(text(operator_client.get("/console/payments.csv")))))
    assert payments[1][1:3] == ["comp", message.json()["id"]]


def test_resend_publishes_an_undeliverable_credit_with_the_same_id(operator_client, subscribe):
    # Nobody subscribed to cab-a: the broker (MQTT 5) says "no matching subscribers".
    session = pay(operator_client, "cab-a")
    page = text(operator_client.get(f"/console/payments/{session['id']}"))
    assert "undeliverable" in page and "No matching subscribers" in page
    assert "1 needs attention" in text(operator_client.get("/console"))
    coinpulses = subscribe("arcade/machine/cab-a/coinpulse")  # the cabinet is back
    done = act(operator_client, "resend", session["id"], reason="cabinet was rebooted")
    assert f"Done: published again (published): {session['id']} (2 credits)" in text(done)
    [again] = coinpulses.wait_for(1)
    assert again.json()["id"] == session["id"] and again.json()["credits"] == 2
    page = text(operator_client.get(f"/console/payments/{session['id']}"))
    assert "operator resend" in page
    # Still no word from the cabinet: another resend sends it again (the cabinet drops a repeat
    # of an id it has), until the cabinet confirms it.
    again_done = act(operator_client, "resend", session["id"], reason="no credit yet")
    assert "Done: published again (published)" in text(again_done)
    assert [m.json()["id"] for m in coinpulses.wait_for(1)] == [session["id"]]
    services_of(operator_client).store.ack("cab-a", session["id"], "done", "", time.time())
    nothing = act(operator_client, "resend", session["id"], reason="again?")
    assert "Not done: " in text(nothing)
    assert coinpulses.nothing_more() == []


def test_refund_goes_to_stripe_once_and_leaves_the_takings(operator_client, stripe_api):
    session = pay(operator_client, "machine_123", amount=300, credits=3)  # not delivered yet
    done = act(operator_client, "refund", session["id"], reason="never got the credits")
    assert "Done: refunded 3.00 USD" in text(done)
    [call] = stripe_api.calls("POST", "/v1/refunds")
    assert call["form"]["payment_intent"] == session["payment_intent"]
    assert call["headers"]["Idempotency-Key"] == f"arcade-refund-{session['id']}"
    page = text(operator_client.get(f"/console/payments/{session['id']}"))
    assert "refunded" in page and "operator refund" in page
    again = act(operator_client, "refund", session["id"], reason="twice?")
    assert "Not done: nothing to refund" in text(again)
    assert len(stripe_api.calls("POST", "/v1/refunds")) == 1
    money = text(operator_client.get("/console/money"))
    assert "−3.00 USD" not in money and "0.00 USD" in money


def test_an_action_needs_a_reason(operator_client):
    session = pay(operator_client)
    answer = act(operator_client, "refund", session["id"], reason="", confirm=False)
    assert answer.status_code == 302
    page = text(operator_client.get(answer.headers["Location"]))
    assert "Not done: say why" in page and "published" in page


def test_retire_moves_a_cabinet_to_the_end_and_back(operator_client):
    store = services_of(operator_client).store
    now = time.time()
    store.cabinet_seen(Cabinet("cab-a", "offline", now - 3600, "1.0.0", 2))
    store.cabinet_seen(Cabinet("cab-b", "online", now, "1.0.0", 0))
    act(operator_client, "retire", "cab-a", reason="sold")
    page = text(operator_client.get("/console/"))
    assert "1 of 1 online" in page and page.index("cab-b") < page.index("cab-a")
    assert "retired" in page
    act(operator_client, "unretire", "cab-a", reason="bought back")
    assert "1 of 2 online" in text(operator_client.get("/console/"))


def test_money_page_and_daily_csv_subtract_refunds_and_disputes(operator_client):
    pay(operator_client, "machine_123", amount=500, credits=5)
    disputed = pay(operator_client, "machine_456", amount=200, credits=2)
    deliver(operator_client, stripe_event("charge.dispute.created", {
        "object": "dispute", "payment_intent": disputed["payment_intent"], "amount": 200}))
    page = text(operator_client.get("/console/money"))
    assert "7.00 USD" in page and "2.00 USD" in page and "5.00 USD" in page
    assert '<svg class="chart"' in page and "Net takings per day (USD)" in page
    for by in ("week", "month"):
        assert "5.00 USD" in text(operator_client.get(f"/console/money?by={by}"))
    rows = list(csv.DictReader(io.StringIO(text(operator_client.get("/console/money/daily.csv")))))
    by_cabinet = {row["cabinet"]: row for row in rows}
    assert by_cabinet["machine_123"]["net"] == "5.00"
    assert (by_cabinet["machine_456"]["gross"], by_cabinet["machine_456"]["disputed"],
            by_cabinet["machine_456"]["net"]) == ("2.00", "2.00", "0.00")


def test_cabinet_page_has_charts_qr_and_config(operator_client):
    pay(operator_client, "machine_123", amount=400, credits=4)
    page = text(operator_client.get("/console/cabinets/machine_123"))
    assert "Takings per day, last 30 days (USD)" in page and "Per hour, today" in page
    assert "Credits per message (API)" in page and "Game overs" in page
    qr = operator_client.get("/console/cabinets/machine_123/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml"
    assert "machine_123</text>" in text(qr)
    assert operator_client.get("/console/cabinets/nope").status_code == 404


def test_a_dispute_opens_an_alert_shown_in_the_console(operator_client):
    disputed = pay(operator_client)
    deliver(operator_client, stripe_event("charge.dispute.created", {
        "object": "dispute", "payment_intent": disputed["payment_intent"], "amount": 200}))
    page = text(operator_client.get("/console/alerts"))
    assert f"Payment {disputed['id']} for machine_123 is disputed" in page
