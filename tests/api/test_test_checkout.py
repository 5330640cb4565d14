"""Test checkout mode: a local "Pay (test)" page that drives the real webhook path."""

from __future__ import annotations

import re

import pytest

from api.settings import SettingsError
from api.store import State


@pytest.fixture
def test_app(make_app):
    return make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", CREDITS_PER_PURCHASE="2")


def session_id_on(page: str) -> str:
    return re.search(r'name="session_id" value="([^"]+)"', page).group(1)


def test_refused_beside_a_live_stripe_key(make_app):
    with pytest.raises(SettingsError, match="TEST_CHECKOUT"):
        make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="sk_live_abc")


def test_off_unless_asked_for(client):
    assert client.get("/test-checkout/machine_123").status_code == 404


def test_payment_link_points_to_the_local_page(test_app, stripe_api):
    response = test_app.test_client().post(
        "/create-payment-link", json={"machine_id": "machine_123"}
    )
    assert response.status_code == 200
    assert response.json["url"] == "http://localhost/test-checkout/machine_123"
    assert stripe_api.requests == []


def test_public_url_setting_is_used_for_phones(make_app):
    app = make_app(TEST_CHECKOUT="true", PUBLIC_URL="http://192.0.2.10:5000/")
    response = app.test_client().post("/create-payment-link", json={"machine_id": "cab-a"})
    assert response.json["url"] == "http://192.0.2.10:5000/test-checkout/cab-a"


def test_page_says_test_loudly(test_app):
    page = test_app.test_client().get("/test-checkout/machine_123")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "TEST MODE — NO REAL PAYMENT" in text and "machine_123" in text
    assert "2 credits for" in text and "2.00 USD" in text
    assert session_id_on(text).startswith("cs_test_local_")


def test_pay_button_credits_once_through_the_webhook(test_app, subscribe):
    listener = subscribe("arcade/machine/+/coinpulse")
    client = test_app.test_client()
    session_id = session_id_on(client.get("/test-checkout/machine_123").get_data(as_text=True))
    paid = client.post("/test-checkout/machine_123", data={"session_id": session_id})
    # Lands on the receipt, as a real Payment Link does after paying.
    assert (paid.status_code, paid.location) == (303, f"/receipt/{session_id}")
    message = listener.next().json()
    assert (message["id"], message["credits"]) == (session_id, 2)
    receipt = client.get(paid.location).get_data(as_text=True)
    assert "sending 2 credits to machine_123" in receipt
    # A double click or a reload of the same form pays once.
    again = client.post("/test-checkout/machine_123", data={"session_id": session_id})
    assert (again.status_code, again.location) == (303, f"/receipt/{session_id}")
    assert listener.nothing_more() == []
    stored = test_app.extensions["arcade"].store.get(session_id)
    assert stored.state == State.PUBLISHED and stored.amount == 200


@pytest.mark.parametrize("session_id", ["", "cs_live_x", "cs_test_local_XYZ", "a" * 60])
def test_malformed_session_id_is_400(test_app, session_id):
    response = test_app.test_client().post(
        "/test-checkout/machine_123", data={"session_id": session_id}
    )
    assert response.status_code == 400


def test_unknown_machine_is_404(make_app):
    app = make_app(TEST_CHECKOUT="true", MACHINE_IDS="cab-a")
    assert app.test_client().get("/test-checkout/machine_123").status_code == 404
    assert app.test_client().get("/test-checkout/cab-a").status_code == 200
