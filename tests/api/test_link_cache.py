"""Cached payment links are checked in Stripe once stale (LINK_CHECK_SECONDS): a link deactivated
in the dashboard, or a Price whose credits changed, is replaced instead of served on."""

from __future__ import annotations

import sqlite3

from tests.api.conftest import OPERATOR


def link_url(client, machine_id="machine_123"):
    response = client.post("/create-payment-link", json={"machine_id": machine_id},
                           headers=OPERATOR)
    assert response.status_code == 200, response.json
    return response.json["url"]


def test_a_fresh_link_is_served_without_asking_stripe(make_app, stripe_api):
    client = make_app(LINK_CHECK_SECONDS="3600").test_client()
    first = link_url(client)
    calls = len(stripe_api.requests)
    assert link_url(client) == first and len(stripe_api.requests) == calls


def test_a_deactivated_link_is_replaced(make_app, stripe_api):
    client = make_app(LINK_CHECK_SECONDS="0").test_client()
    first = link_url(client)
    assert link_url(client) == first  # checked: still active
    stripe_api.deactivate(first)
    second = link_url(client)
    assert second != first
    creates = stripe_api.calls("POST", "/v1/payment_links")
    assert len(creates) == 2
    assert creates[1]["headers"]["Idempotency-Key"] != creates[0]["headers"]["Idempotency-Key"]
    assert link_url(client) == second  # the replacement is kept


def test_a_price_whose_credits_changed_gets_a_new_link(make_app, stripe_api):
    client = make_app(PRICE_ID="price_bundle", LINK_CHECK_SECONDS="0").test_client()
    first = link_url(client)
    stripe_api.prices["price_bundle"]["metadata"]["credits"] = "6"
    second = link_url(client)
    assert second != first
    create = stripe_api.calls("POST", "/v1/payment_links")[-1]
    assert create["form"]["metadata[credits]"] == "6"


def test_stripe_down_during_a_check_serves_the_link_it_confirmed_before(make_app, stripe_api):
    client = make_app(LINK_CHECK_SECONDS="0").test_client()
    first = link_url(client)
    stripe_api.fail_next("api_error", "api_error", "api_error")
    assert link_url(client) == first


def test_a_link_cached_by_an_older_version_is_replaced_once(make_app, stripe_api, tmp_path):
    """Ledgers from before link ids were kept: the column is added, the link checked anew."""
    ledger = tmp_path / "ledger.db"
    with sqlite3.connect(ledger) as old:
        old.execute("CREATE TABLE links (machine_id TEXT NOT NULL, price_id TEXT NOT NULL,"
                    " url TEXT NOT NULL, created_at REAL NOT NULL,"
                    " PRIMARY KEY (machine_id, price_id))")
        old.execute("INSERT INTO links VALUES ('machine_123', 'price_single',"
                    " 'https://buy.stripe.com/test_old', 1.0)")
    client = make_app(STORE_URL=f"sqlite:///{ledger}").test_client()
    url = link_url(client)
    assert url.startswith("https://buy.stripe.com/test_plink_")
    assert link_url(client) == url
    assert len(stripe_api.calls("POST", "/v1/payment_links")) == 1
