"""The receipt page a player lands on after paying: it follows that one payment (paid, on its
way, on the cabinet, or refunded with the amount) and nothing else."""

from __future__ import annotations

import re
import time

import pytest

from api.sweep import sweep
from tests.api.conftest import checkout_session, deliver, stripe_event

COINS = "arcade/machine/+/coinpulse"


def pay(app, **session) -> dict:
    session = checkout_session(**session)
    response = deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    assert response.status_code == 200, response.json
    return session


def text_of(html: str) -> str:
    """Roughly what a person reads: the page without tags, scripts or styles."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def receipt(app, session_id: str):
    page = app.test_client().get(f"/receipt/{session_id}")
    status = app.test_client().get(f"/receipt/{session_id}/status")
    return page, status.json


def test_before_the_webhook_arrives_the_page_waits(app):
    page, status = receipt(app, "cs_test_not_here_yet")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "Waiting for your payment to be confirmed" in text_of(page.get_data(as_text=True))
    assert '<meta http-equiv="refresh"' in page.get_data(as_text=True)  # without JS too
    assert status["final"] is False


def test_paid_then_on_the_cabinet(app, subscribe):
    subscribe(COINS)
    session = pay(app, credits=2, amount=200)
    page, status = receipt(app, session["id"])
    shown = text_of(page.get_data(as_text=True))
    assert "Paid — sending 2 credits to machine_123" in shown
    assert "2.00 USD" in shown and status["final"] is False
    app.extensions["arcade"].store.ack("machine_123", session["id"], "done", "", time.time())
    page, status = receipt(app, session["id"])
    assert "✓ 2 credits on machine_123" in text_of(page.get_data(as_text=True))
    assert status["final"] is True and status["tone"] == "ok"
    assert "http-equiv" not in page.get_data(as_text=True)  # final: no more reloading


def test_a_cabinet_that_cannot_be_reached_then_the_refund(make_app, stripe_api):
    app = make_app(MACHINE_IDS="machine_456")  # machine_123 can never be credited
    session = pay(app, amount=300, credits=3)
    page, status = receipt(app, session["id"])
    assert status["headline"] == "We could not reach machine_123"
    assert "money comes back automatically" in status["detail"]
    sweep(app.extensions["arcade"])
    page, status = receipt(app, session["id"])
    assert "Refunded: 3.00 USD" in text_of(page.get_data(as_text=True))
    assert (status["final"], status["tone"]) == (True, "refund")


def test_the_page_says_nothing_about_other_payments(app, subscribe):
    subscribe(COINS)
    mine = pay(app, machine_id="machine_123", credits=1, payment_intent="pi_mine_123")
    other = pay(app, machine_id="machine_456", credits=7, amount=700,
                payment_intent="pi_other_456")
    page, status = receipt(app, mine["id"])
    html = page.get_data(as_text=True)
    for secret in (other["id"], "machine_456", "7.00", "pi_mine_123", "pi_other_456",
                   "stripe@example.com", "Jenny Rosen"):
        assert secret not in html and secret not in str(status)
    assert set(status) == {"headline", "detail", "tone", "final", "steps", "machine", "credits",
                           "amount"}


def test_the_page_is_private_and_runs_only_its_own_script(app):
    page = app.test_client().get("/receipt/cs_test_abc")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "default-src 'none'" in policy
    html = page.get_data(as_text=True)
    assert html.count(f'nonce="{nonce}"') == 2  # the one style and the one script
    assert "http://" not in html and "https://" not in html  # no CDN, nothing from elsewhere


@pytest.mark.parametrize("session_id", ["nope", "cs_test_a/b", "cs_test_" + "x" * 300, "pi_123"])
def test_not_a_session_id_is_404(app, session_id):
    assert app.test_client().get(f"/receipt/{session_id}").status_code == 404


def test_payment_links_send_the_player_to_the_receipt(make_app, stripe_api):
    app = make_app(PUBLIC_URL="https://arcade.example.com", MACHINE_IDS="cab-a")
    response = app.test_client().post("/create-payment-link", json={"machine_id": "cab-a"})
    assert response.status_code == 200, response.json
    [create] = stripe_api.calls("POST", "/v1/payment_links")
    assert create["form"]["after_completion[type]"] == "redirect"
    assert create["form"]["after_completion[redirect][url]"] == (
        "https://arcade.example.com/receipt/{CHECKOUT_SESSION_ID}"
    )


def test_a_payment_in_another_currency_then_its_refund(app, stripe_api):
    session = checkout_session(credits=None, amount=8400, payment_intent="pi_inr_receipt")
    session["currency"] = "inr"
    deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    status = receipt(app, session["id"])[1]
    assert status["headline"] == "This payment buys no credits here"
    assert "money comes back automatically" in status["detail"] and not status["final"]
    sweep(app.extensions["arcade"])
    status = receipt(app, session["id"])[1]
    assert (status["headline"], status["final"]) == ("Refunded: 84.00 INR", True)


def test_a_free_checkout_that_buys_nothing(app):
    session = checkout_session(credits=1, amount=0, payment_status="no_payment_required")
    deliver(app.test_client(), stripe_event("checkout.session.completed", session))
    status = receipt(app, session["id"])[1]
    assert (status["headline"], status["detail"], status["final"]) == (
        "This payment buys no credits here", "Nothing was charged.", True)
