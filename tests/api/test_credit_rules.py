"""What a paid session credits: amounts only in the operator's CURRENCY, free checkouts only when
ALLOW_FREE_CREDITS says so; the rest is recorded in the ledger, never silently dropped."""

from __future__ import annotations

import pytest

from api.store import State
from tests.api.conftest import checkout_session, deliver, stripe_event

COINPULSE = "arcade/machine/+/coinpulse"


def pay(client, **session_fields):
    session = checkout_session(**{k: v for k, v in session_fields.items() if k != "currency"})
    session["currency"] = session_fields.get("currency", "usd")
    return session, deliver(client, stripe_event("checkout.session.completed", session))


def test_an_amount_in_another_currency_is_recorded_not_credited(client, app, subscribe):
    coinpulses = subscribe(COINPULSE)
    session, response = pay(client, credits=None, amount=8400, currency="inr")
    assert response.status_code == 200 and response.json["result"] == "not_credited"
    assert "'inr'" in response.json["reason"] and "CURRENCY" in response.json["reason"]
    stored = app.extensions["arcade"].store.get(session["id"])
    assert (stored.state, stored.credits, stored.amount, stored.currency) == (
        State.NOT_CREDITED, 0, 8400, "inr")
    assert coinpulses.nothing_more() == []


def test_the_configured_currency_is_credited(make_app, subscribe):
    coinpulses = subscribe(COINPULSE)
    client = make_app(CURRENCY="EUR").test_client()
    _, response = pay(client, credits=None, amount=300, currency="eur")
    assert response.json["result"] == "published"
    assert coinpulses.next().json()["credits"] == 3
    _, usd = pay(client, credits=None, amount=300, currency="usd")
    assert usd.json["result"] == "not_credited"


def test_our_links_credits_hold_whatever_the_currency(client, subscribe):
    """The link's metadata was set by us from the operator's own Price."""
    coinpulses = subscribe(COINPULSE)
    _, response = pay(client, credits=2, amount=180, currency="eur")
    assert response.json["result"] == "published"
    assert coinpulses.next().json()["credits"] == 2


@pytest.mark.parametrize("credits", [1, None])
def test_a_free_checkout_is_recorded_not_credited_by_default(client, app, subscribe, credits):
    coinpulses = subscribe(COINPULSE)
    session, response = pay(client, credits=credits, amount=0,
                            payment_status="no_payment_required")
    assert response.json["result"] == "not_credited"
    assert "ALLOW_FREE_CREDITS" in response.json["reason"]
    assert app.extensions["arcade"].store.get(session["id"]).state == State.NOT_CREDITED
    assert coinpulses.nothing_more() == []


def test_an_unpaid_session_later_paid_in_another_currency_ends_not_credited(client, app):
    session, first = pay(client, credits=None, amount=500, currency="inr",
                         payment_status="unpaid")
    assert first.json["result"] == "awaiting_payment"
    paid = dict(session, payment_status="paid")
    later = deliver(client, stripe_event("checkout.session.async_payment_succeeded", paid))
    assert later.json["result"] == "not_credited"
    assert app.extensions["arcade"].store.get(session["id"]).state == State.NOT_CREDITED


@pytest.mark.parametrize("value", ["dollars", "us", "€€€"])
def test_currency_setting_is_validated(make_app, value):
    from api.settings import SettingsError

    with pytest.raises(SettingsError, match="CURRENCY"):
        make_app(CURRENCY=value)
