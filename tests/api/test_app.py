"""Status, JSON errors, request logs and start-up settings: what an operator sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from api.settings import SettingsError, settings_from_env
from tests.api.conftest import WEBHOOK_SECRET, checkout_session, deliver, stripe_event


def test_status_is_up_and_local(client, stripe_api):
    response = client.get("/status")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "up" and body["message"] == "API is running"
    assert body["store"] == "ok" and body["version"]
    assert body["broker"] in ("idle", "connected")
    assert stripe_api.requests == []  # never calls Stripe


def test_status_shows_the_broker_connected_after_a_publish(client, subscribe):
    deliver(client, stripe_event("checkout.session.completed", checkout_session()))
    assert client.get("/status").json["broker"] == "connected"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("get", "/nowhere", 404), ("get", "/webhook", 405), ("delete", "/status", 405)],
)
def test_unknown_routes_and_methods_are_json(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.is_json and response.json["error"]


def test_one_json_log_line_per_request_without_payload_or_secrets(client, capfd, subscribe):
    subscribe("arcade/machine/+/coinpulse")  # the cabinet, listening
    session = checkout_session(credits=1)
    deliver(client, stripe_event("checkout.session.completed", session, event_id="evt_logged"))
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]
    [line] = [entry for entry in lines if entry.get("path") == "/webhook"]
    assert line["status"] == 200 and line["result"] == "published"
    assert line["machine"] == "machine_123" and line["session"] == session["id"]
    assert line["event"] == "evt_logged" and isinstance(line["latency_ms"], float)
    text = json.dumps(lines)
    for secret in (WEBHOOK_SECRET, "sk_test_123", "api-password-for-tests", "Jenny Rosen"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MQTT_BROKER": "127.0.0.1"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_x"}, "MQTT_BROKER"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_x", "MQTT_BROKER": "h", "MQTT_PORT": "abc"}, "MQTT_PORT"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_x", "MQTT_BROKER": "h", "MQTT_TLS": "maybe"}, "MQTT_TLS"),
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "STORE_URL": "mysql://x"}, "STORE_URL"),
        (
            {"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "MQTT_CA_CERT": "/no/ca.crt"},
            "MQTT_CA_CERT",
        ),
        # Why 7: a prefix with a wildcard made every publish raise after the claim.
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "MQTT_TOPIC_PREFIX": "arcade/+"},
         "MQTT_TOPIC_PREFIX"),
        # Why 7: a lease shorter than a publish can take passes the payment to a retry while
        # the first worker still publishes.
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "CLAIM_LEASE_SECONDS": "5"},
         "CLAIM_LEASE_SECONDS"),
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "CLAIM_LEASE_SECONDS": "20",
          "MQTT_PUBLISH_TIMEOUT_MS": "10000"}, "CLAIM_LEASE_SECONDS"),
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "REFUND_UNDELIVERED_AFTER_S": "-1"},
         "REFUND_UNDELIVERED_AFTER_S"),
        ({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h", "STRIPE_API_KEY": "sk_test_1",
          "STRIPE_LIVEMODE": "true"}, "STRIPE_LIVEMODE"),
    ],
)
def test_bad_settings_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        settings_from_env(env)


def test_arcade_serve_without_settings_says_which_variable_and_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from tools.cli import main; main()", "serve"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: STRIPE_WEBHOOK_SECRET is not set (see README: Settings)"


def test_create_app_from_environment_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import api; api.create_app()"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": os.getcwd(), "MQTT_BROKER": "h"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: STRIPE_WEBHOOK_SECRET is not set (see README: Settings)"
    ]


def test_importing_the_api_connects_to_nothing_and_loads_no_stripe():
    code = (
        "import sys, socket\n"
        "def refuse(*a, **k): raise SystemExit('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "import api, api.webhook, api.views\n"
        "assert 'stripe' not in sys.modules and 'boto3' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_dotenv_files_load_and_real_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("STRIPE_WEBHOOK_SECRET=whsec_from_env_file\nMQTT_BROKER=a\n")
    (tmp_path / ".env.local").write_text("MQTT_BROKER=from_local\nMQTT_PORT=1999\n")
    code = (
        "from api.settings import load_dotenv_files, settings_from_env\n"
        "load_dotenv_files()\n"
        "s = settings_from_env()\n"
        "print(s.stripe_webhook_secrets[0], s.mqtt_broker, s.mqtt_port)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": os.getcwd(), "MQTT_PORT": "2000"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["whsec_from_env_file", "from_local", "2000"], result.stderr


def test_secrets_never_appear_in_settings_repr():
    settings = settings_from_env(
        {
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "MQTT_BROKER": "h",
            "MQTT_PASSWORD": "hunter2",
            "MACHINE_TOKEN_SECRET": "tok",
            "STRIPE_API_KEY": "sk_test_secret",
        }
    )
    text = repr(settings)
    assert "hunter2" not in text and "tok'" not in text and "sk_test_secret" not in text
