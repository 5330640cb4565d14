"""POST /create-payment-link: one Stripe Payment Link per (cabinet, price), then the same URL."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import OPERATOR, OPERATOR_TOKEN


def link_for(client, headers=OPERATOR, **body):
    return client.post("/create-payment-link", json=body, headers=headers)


def test_first_request_creates_the_link_in_stripe(client, stripe_api):
    response = link_for(client, machine_id="machine_123")
    assert response.status_code == 200, response.json
    url = response.json["url"]
    assert url.startswith("https://buy.stripe.com/test_plink_")
    assert url.endswith("?client_reference_id=machine_123")
    [create] = stripe_api.calls("POST", "/v1/payment_links")
    assert create["form"]["line_items[0][price]"] == "price_single"
    assert create["form"]["line_items[0][quantity]"] == "1"
    assert create["form"]["metadata[machine_id]"] == "machine_123"
    assert create["form"]["metadata[credits]"] == "1"
    assert create["form"]["payment_intent_data[metadata][machine_id]"] == "machine_123"
    assert create["headers"]["Idempotency-Key"] == "arcade-link-machine_123-price_single-1"
    assert create["headers"]["Authorization"] == "Bearer sk_test_123"


def test_later_requests_serve_the_same_url_without_calling_stripe(client, stripe_api):
    first = link_for(client, machine_id="machine_123").json["url"]
    calls = len(stripe_api.requests)
    for _ in range(3):
        assert link_for(client, machine_id="machine_123").json["url"] == first
    assert len(stripe_api.requests) == calls
    other = link_for(client, machine_id="machine_456").json["url"]
    assert other != first and other.endswith("client_reference_id=machine_456")


def test_a_restarted_server_keeps_the_link(make_app, stripe_api):
    first = link_for(make_app().test_client(), machine_id="machine_123").json["url"]
    again = link_for(make_app().test_client(), machine_id="machine_123").json["url"]
    assert again == first
    assert len(stripe_api.calls("POST", "/v1/payment_links")) == 1


@pytest.mark.parametrize(
    ("price_id", "settings", "credits"),
    [
        ("price_bundle", {}, "5"),  # the Price's own metadata wins: "5 credits for $4"
        ("price_single", {"CREDITS_PER_PURCHASE": "3"}, "3"),
        ("price_250", {}, "2"),  # 250 cents at 100 per credit
        ("price_250", {"CENTS_PER_CREDIT": "50"}, "5"),
    ],
)
def test_credits_in_the_link_metadata(make_app, stripe_api, price_id, settings, credits):
    client = make_app(PRICE_ID=price_id, **settings).test_client()
    assert link_for(client, machine_id="machine_123").status_code == 200
    [create] = stripe_api.calls("POST", "/v1/payment_links")
    assert create["form"]["metadata[credits]"] == credits
    assert stripe_api.calls("GET", f"/v1/prices/{price_id}")


def test_request_may_choose_an_allowed_price(make_app, stripe_api):
    client = make_app(ALLOWED_PRICE_IDS="price_bundle, price_250").test_client()
    assert link_for(client, machine_id="machine_123", price_id="price_bundle").status_code == 200
    refused = link_for(client, machine_id="machine_123", price_id="price_other")
    assert refused.status_code == 400 and "price_id" in refused.json["error"]
    assert [c["form"]["line_items[0][price]"] for c in stripe_api.calls("POST", "/v1/")] == [
        "price_bundle"
    ]


def test_unknown_machine_rejected_when_allow_list_set(make_app, stripe_api):
    client = make_app(MACHINE_IDS="machine_456").test_client()
    response = link_for(client, machine_id="machine_123")
    assert response.status_code == 400 and "unknown machine_id" in response.json["error"]
    assert stripe_api.requests == []


@pytest.mark.parametrize(
    ("error", "status", "message", "retry_after"),
    [
        ("rate_limit", 503, "Stripe is limiting our requests; retry shortly", "10"),
        ("bad_key", 503, "payments are not configured correctly on the server", None),
        ("no_permission", 503, "payments are not configured correctly on the server", None),
        ("no_such_price", 400, "Stripe refused to make this payment link", None),
        ("api_error", 502, "Stripe answered with an error; retry shortly", "10"),
    ],
)
def test_stripe_errors_are_answered_in_our_words(
    client, stripe_api, capfd, error, status, message, retry_after
):
    stripe_api.fail_next(error, error, error)  # the library's own retries meet it too
    response = link_for(client, machine_id="machine_123")
    assert response.status_code == status
    assert response.json["error"].startswith(message)
    assert response.headers.get("Retry-After") == retry_after
    # Stripe's words (key digits, its request id) never reach the caller; the request id is in
    # our log line, for the operator.
    answered = response.get_data(as_text=True)
    assert "sk_test" not in answered and "req_" not in answered and "Stripe's end" not in answered
    [line] = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if '"path":"/create-payment-link"' in line]
    assert line["stripe_request"].startswith("req_") and line["status"] == status


def test_stripe_unreachable_is_a_503_with_retry_after(make_app):
    from tools.broker import free_port

    client = make_app(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}").test_client()
    response = link_for(client, machine_id="machine_123")
    assert response.status_code == 503 and response.json["error"] == (
        "Stripe cannot be reached; retry shortly")
    assert response.headers["Retry-After"] == "10"


def test_no_stripe_key_is_a_503_that_says_so(make_app, stripe_api):
    response = link_for(make_app(STRIPE_API_KEY="").test_client(), machine_id="machine_123")
    assert response.status_code == 503 and "STRIPE_API_KEY" in response.json["error"]
    assert stripe_api.requests == []


# --- who may create links (issue 11, "Why" 2) ----------------------------------------------------


def test_without_machine_ids_link_creation_needs_the_operator_token(client, stripe_api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"},
                    {"Authorization": f"Bearer {OPERATOR_TOKEN}x"}):
        response = link_for(client, headers=headers, machine_id="machine_123")
        assert response.status_code == 401 and "OPERATOR_TOKEN" in response.json["error"] or (
            response.json["error"] == "the operator token is not valid"), response.json
    assert stripe_api.requests == []
    assert link_for(client, machine_id="machine_123").status_code == 200


def test_thirty_anonymous_requests_make_no_link(client, stripe_api):
    answers = {link_for(client, headers={}, machine_id=f"cab{i:02d}").status_code
               for i in range(20)}
    assert answers == {401}
    assert stripe_api.requests == []


def test_machine_ids_let_anyone_ask_for_a_known_cabinets_link(make_app, stripe_api):
    client = make_app(MACHINE_IDS="machine_123,machine_456").test_client()
    assert link_for(client, headers={}, machine_id="machine_123").status_code == 200
    unknown = link_for(client, headers={}, machine_id="cab01")
    assert unknown.status_code == 400 and "unknown machine_id" in unknown.json["error"]
    wrong = link_for(client, headers={"Authorization": "Bearer nope"}, machine_id="machine_123")
    assert wrong.status_code == 401


def test_neither_token_nor_machine_ids_means_link_creation_is_off(make_app, stripe_api):
    client = make_app(OPERATOR_TOKEN="").test_client()
    response = link_for(client, headers={}, machine_id="machine_123")
    assert response.status_code == 503
    assert "OPERATOR_TOKEN" in response.json["error"] and "MACHINE_IDS" in response.json["error"]
    assert link_for(client, machine_id="machine_123").status_code == 401  # no token to match


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"{not json", "application/json", "JSON object"),
        (b"[]", "application/json", "JSON object"),
        (b"{}", "application/json", "machine_id is required"),
        (b'{"machine_id": ""}', "application/json", "machine_id is required"),
        (b'{"machine_id": "a/b/#"}', "application/json", "machine_id must match"),
        (b'{"machine_id": 7}', "application/json", "machine_id must match"),
        (b"machine_id=machine_123", "application/x-www-form-urlencoded", "JSON object"),
    ],
)
def test_bad_requests_are_400_with_a_message(client, stripe_api, data, content_type, message):
    response = client.post("/create-payment-link", data=data, content_type=content_type)
    assert response.status_code == 400
    assert message in response.json["error"]
    assert stripe_api.requests == []
