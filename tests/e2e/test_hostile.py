"""The API under gunicorn, tried as an attacker would (issue 11, "Why" 1-3): raw bytes on a real
socket, then the server's own log read for tracebacks."""

from __future__ import annotations

import http.client
import json
import re

import pytest

from tests.api.conftest import checkout_session, stripe_event
from tests.e2e.conftest import WEBHOOK_SECRET, webhook

pytestmark = pytest.mark.slow

OPERATOR_TOKEN = "operator-token-e2e"


def raw_post(api, path: str, body: bytes, headers: dict[str, bytes | str]):
    """One request with header bytes exactly as given (requests would re-encode them)."""
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        connection.putrequest("POST", path, skip_host="Host" in headers)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def raw_get(api, path: str, headers: dict[str, str]):
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def stripe_site(make_site):
    site = make_site(OPERATOR_TOKEN=OPERATOR_TOKEN, MACHINE_TOKEN_SECRET="e2e-token-secret",
                     STRIPE_API_KEY="sk_test_e2e",
                     STRIPE_API_BASE="http://127.0.0.1:9", PRICE_ID="price_single")
    site.start_api(workers=2)
    return site


def test_hostile_bytes_get_4xx_json_and_no_traceback_in_the_log(stripe_site, subscribe):
    api = stripe_site.api
    coinpulses = subscribe("arcade/machine/+/coinpulse", on=stripe_site.broker)
    body = json.dumps(stripe_event("checkout.session.completed", checkout_session())).encode()
    cases = [
        ("/webhook", b'{"type": "\xe9"}',
         {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}),
        ("/webhook", body, {"Content-Type": "application/json", "Stripe-Signature": b"v1=\xe9"}),
        ("/webhook", body, {"Content-Type": "application/json",
                            "Stripe-Signature": "t=²,v1=00".encode()}),
        ("/gameover", b'{"machine_id": "machine_123"}',
         {"Content-Type": "application/json", "Authorization": b"Bearer \xe9"}),
        ("/create-payment-link", b"[" * 100_000, {"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {OPERATOR_TOKEN}"}),
    ]
    for path, data, headers in cases:
        status, _, answer = raw_post(api, path, data, headers)
        assert 400 <= status < 500, (path, headers, status, answer)
        assert "error" in json.loads(answer)
    assert coinpulses.nothing_more() == []
    assert "Traceback" not in api.output.text and '"level":"error"' not in api.output.text


def test_anonymous_link_creation_is_refused_and_stripe_never_called(stripe_site):
    """30 anonymous requests used to make 30 Payment Links (which cannot be deleted)."""
    api = stripe_site.api
    statuses = {raw_post(api, "/create-payment-link", json.dumps({"machine_id": f"cab{i:02d}"})
                         .encode(), {"Content-Type": "application/json"})[0] for i in range(20)}
    assert statuses == {401}
    # With the token it goes on to Stripe, unreachable here: our words, a Retry-After.
    status, headers, answer = raw_post(
        api, "/create-payment-link", b'{"machine_id": "cab01"}',
        {"Content-Type": "application/json", "Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert status == 503 and json.loads(answer) == {
        "error": "Stripe cannot be reached; retry shortly"}
    assert headers["Retry-After"] == "10"


def test_test_checkout_under_gunicorn_ignores_host_and_refuses_forged_posts(make_site, subscribe):
    site = make_site(TEST_CHECKOUT="true", MACHINE_IDS="cab-a")
    api = site.start_api(workers=2)  # the form token must hold across workers
    coinpulses = subscribe("arcade/machine/+/coinpulse", on=site.broker)
    status, answer = raw_get(api, "/test-checkout/cab-a", {"Host": "evil.example"})
    assert status == 200 and "evil.example" not in answer
    status, _, link = raw_post(api, "/create-payment-link", b'{"machine_id": "cab-a"}',
                               {"Content-Type": "application/json", "Host": "evil.example"})
    assert json.loads(link)["url"] == f"{api.url}/test-checkout/cab-a"

    # A cross-origin form (no token), and a forged token: nothing credited.
    for form in (b"session_id=cs_test_local_" + b"a" * 32,
                 b"session_id=cs_test_local_" + b"a" * 32 + b"&token=" + b"0" * 64):
        status, _, _ = raw_post(api, "/test-checkout/cab-a", form,
                                {"Content-Type": "application/x-www-form-urlencoded",
                                 "Origin": "http://evil.example"})
        assert status == 403
    assert coinpulses.nothing_more() == []

    # The page's own form pays, whichever worker gets the POST.
    for _ in range(3):
        _, page = raw_get(api, "/test-checkout/cab-a", {})
        form = "&".join(f"{k}={v}" for k, v in re.findall(
            r'name="(session_id|token)" value="([^"]+)"', page)).encode()
        status, headers, _ = raw_post(api, "/test-checkout/cab-a", form,
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, headers
    assert len(coinpulses.nothing_more()) == 3


def test_webhooks_still_credit_under_gunicorn(stripe_site, subscribe):
    coinpulses = subscribe("arcade/machine/+/coinpulse", on=stripe_site.broker)
    answer = stripe_site.api.post(*webhook(checkout_session(machine_id="machine_123")))
    assert answer.status_code == 200 and answer.json()["result"] == "published"
    assert len(coinpulses.nothing_more()) == 1
    assert WEBHOOK_SECRET not in stripe_site.api.output.text
