"""The Lambda entry: every event source AWS can send (REST v1, HTTP API v2, ALB with single and
multi-value headers, Function URL), plain and base64 bodies, through to a real coinpulse."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.conftest import api_env, stripe_signature
from tests.lambda_events import (
    KINDS,
    V2_KINDS,
    checkout_completed,
    make_event,
    response_headers,
    response_json,
)

WEBHOOK_SECRET = "whsec_lambda_tests"
TOKEN_SECRET = "machine-token-secret-for-lambda-tests"
COINPULSE = "arcade/machine/machine_123/coinpulse"


@pytest.fixture
def lambda_env(monkeypatch, tmp_path, broker):
    """The function's environment, as the SAM template sets it (SQLite instead of DynamoDB)."""
    monkeypatch.chdir(tmp_path)  # no developer's .env is read
    settings = api_env(broker, tmp_path / "ledger.db", WEBHOOK_SECRET,
                       MACHINE_TOKEN_SECRET=TOKEN_SECRET)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ARCADE_SECRET_ID", raising=False)
    return settings


@pytest.fixture
def lambda_handler(lambda_env, monkeypatch):
    """The module as a fresh container sees it: no app yet. Apps built are closed afterwards."""
    import api
    from api import lambda_handler as module

    built = []
    real_create_app = api.create_app

    def recording_create_app(*args, **kwargs):
        app = real_create_app(*args, **kwargs)
        built.append(app)
        return app

    monkeypatch.setattr(module, "_handler", None)
    monkeypatch.setattr(api, "create_app", recording_create_app)
    module.built_apps = built
    yield module
    for app in built:
        app.extensions["arcade"].publisher.close()


def invoke(module, event):
    return module.handler(event, None)


def webhook_event(kind: str, session_id: str, base64_body: bool = False, secret=WEBHOOK_SECRET):
    body = checkout_completed(session_id)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": stripe_signature(body, secret),
    }
    return make_event(kind, "POST", "/webhook", body, headers, base64_body=base64_body)


@pytest.mark.parametrize("kind", KINDS)
def test_status_through_every_event_source(lambda_handler, kind):
    response = invoke(lambda_handler, make_event(kind, "GET", "/status"))
    assert response["statusCode"] == 200
    assert response_headers(response)["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False  # JSON goes back as text
    body = response_json(response)
    assert (body["status"], body["message"]) == ("up", "API is running")


def test_each_source_gets_the_reply_shape_it_expects(lambda_handler):
    multi = invoke(lambda_handler, make_event("alb_multi_value", "GET", "/status"))
    assert "headers" not in multi and multi["multiValueHeaders"]["Content-Type"] == [
        "application/json"
    ]
    v2 = invoke(lambda_handler, make_event("http_v2", "GET", "/status"))
    assert v2["headers"]["content-type"] == "application/json" and v2["cookies"] == []
    single = invoke(lambda_handler, make_event("alb", "GET", "/status"))
    assert single["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("base64_body", [False, True], ids=["text-body", "base64-body"])
@pytest.mark.parametrize("kind", KINDS)
def test_signed_webhook_still_verifies_and_credits_once(
    lambda_handler, subscribe, kind, base64_body
):
    coins = subscribe(COINPULSE)
    session_id = f"cs_test_{uuid.uuid4().hex}"
    event = webhook_event(kind, session_id, base64_body)
    response = invoke(lambda_handler, event)
    assert response["statusCode"] == 200, response_json(response)
    assert response_json(response)["result"] == "published"
    message = coins.next().json()
    assert (message["machineId"], message["credits"], message["id"]) == (
        "machine_123",
        1,
        session_id,
    )
    # Stripe delivers again: the same event through the same container is a duplicate.
    again = invoke(lambda_handler, webhook_event(kind, session_id, base64_body))
    assert (again["statusCode"], response_json(again)["result"]) == (200, "duplicate")


@pytest.mark.parametrize("kind", ["rest_v1", "http_v2", "alb_multi_value"])
def test_a_body_altered_in_transit_is_rejected_and_nothing_is_published(
    lambda_handler, subscribe, kind
):
    coins = subscribe(COINPULSE)
    forged = webhook_event(kind, f"cs_test_{uuid.uuid4().hex}", secret="whsec_someone_else")
    response = invoke(lambda_handler, forged)
    assert response["statusCode"] == 400
    assert "signature" in response_json(response)["error"]
    # The next genuine payment is the first thing the cabinet hears: nothing came before it.
    genuine = f"cs_test_{uuid.uuid4().hex}"
    assert invoke(lambda_handler, webhook_event(kind, genuine))["statusCode"] == 200
    assert coins.next().json()["id"] == genuine


@pytest.mark.parametrize("kind", ["rest_v1", "http_v2", "function_url", "alb_multi_value"])
def test_gameover_needs_the_cabinets_token(lambda_handler, subscribe, kind):
    from api.machines import machine_token

    gameovers = subscribe("arcade/machine/machine_123/gameover")
    body = b'{"machine_id": "machine_123"}'
    plain = {"Content-Type": "application/json"}
    refused = invoke(lambda_handler, make_event(kind, "POST", "/gameover", body, plain))
    assert refused["statusCode"] == 401 and "error" in response_json(refused)
    token = machine_token(TOKEN_SECRET, "machine_123")
    authorised = plain | {"Authorization": f"Bearer {token}"}
    response = invoke(lambda_handler, make_event(kind, "POST", "/gameover", body, authorised))
    assert response["statusCode"] == 200
    assert response_json(response)["message"] == "Game over signal sent"
    assert gameovers.next().json()["status"] == "game_over"


@pytest.mark.parametrize("kind", ["rest_v1", "http_v2", "alb"])
def test_unknown_route_is_a_json_404(lambda_handler, kind):
    response = invoke(lambda_handler, make_event(kind, "GET", "/nope"))
    assert response["statusCode"] == 404 and "error" in response_json(response)


def test_an_http_api_stage_in_the_path_is_not_part_of_the_route(lambda_handler):
    event = make_event("http_v2", "GET", "/status", stage="prod")
    assert event["rawPath"] == "/prod/status"
    assert invoke(lambda_handler, event)["statusCode"] == 200


def test_the_app_is_built_once_per_container(lambda_handler):
    for kind in KINDS:
        invoke(lambda_handler, make_event(kind, "GET", "/status"))
    assert len(lambda_handler.built_apps) == 1


@pytest.mark.parametrize("kind", ["http_v2", "rest_v1", "alb_multi_value"])
def test_a_missing_setting_answers_json_and_is_retried_once_fixed(
    lambda_handler, monkeypatch, capsys, kind
):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET")
    response = invoke(lambda_handler, make_event(kind, "GET", "/status"))
    assert response["statusCode"] == 500
    assert response_json(response) == {"error": "the API is not configured; see the function's log"}
    assert "STRIPE_WEBHOOK_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)  # the operator fixes it
    assert invoke(lambda_handler, make_event(kind, "GET", "/status"))["statusCode"] == 200


def test_start_up_failure_never_logs_a_secret(lambda_handler, monkeypatch, capsys):
    def broken():
        raise RuntimeError(f"boom {WEBHOOK_SECRET}")

    monkeypatch.setattr("api.aws_secrets.load_secrets", broken)
    response = invoke(lambda_handler, make_event("http_v2", "GET", "/status"))
    assert response["statusCode"] == 503 and "error" in response_json(response)
    assert WEBHOOK_SECRET not in capsys.readouterr().err


def test_importing_the_handler_loads_no_sdk():
    # The SDKs are what makes a cold start slow; bench/run_all.py measures its time.
    code = (
        "import sys; import api.lambda_handler;"
        " print(sorted(m for m in ('stripe', 'boto3', 'botocore', 'paho') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_v2_sources_are_the_two_that_lowercase_headers():
    # A guard on our own fixtures: HTTP APIs and Function URLs lowercase every header name.
    for kind in V2_KINDS:
        event = make_event(kind, "POST", "/webhook", b"{}", {"Stripe-Signature": "t=1,v1=x"})
        assert "stripe-signature" in event["headers"]


# The event an EventBridge schedule (template.yaml, `Sweep`) sends.
SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-12-01T20:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/arcade-api-Sweep"],
    "detail": {},
}


def test_the_schedule_runs_the_sweep_in_the_same_function(
    lambda_handler, monkeypatch, stripe_api
):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_lambda")
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    monkeypatch.setenv("MACHINE_IDS", "machine_456")  # machine_123 was removed: never credited
    session_id = f"cs_test_{uuid.uuid4().hex}"
    response = invoke(lambda_handler, webhook_event("http_v2", session_id))
    assert response_json(response)["result"] == "undeliverable"
    report = invoke(lambda_handler, SCHEDULED_EVENT)
    assert (report["looked_at"], report["refunded"], report["failed"]) == (1, 1, 0)
    [call] = stripe_api.calls("POST", "/v1/refunds")
    assert call["headers"]["Idempotency-Key"] == f"arcade-refund-{session_id}"
    # A second, overlapping or later run: nothing left to refund.
    assert invoke(lambda_handler, SCHEDULED_EVENT)["refunded"] == 0
    status = invoke(lambda_handler, make_event("http_v2", "GET", "/status"))
    assert response_json(status)["delivery"] == {"listener": "none", "sweep": "ok"}
