"""The Lambda image's layout, built the way the Dockerfile builds it, run in a fresh interpreter
that sees nothing else: pinned wheels `pip install --target` a task root, api/ copied in, the
handler imported and driven with REST v1 and HTTP API v2 events against DynamoDB and Secrets
Manager (moto server) and a real Mosquitto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import API_PASSWORD, API_USER, stripe_signature
from tests.deploy.conftest import ROOT
from tests.lambda_events import checkout_completed, make_event, response_json

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "whsec_layout_tests"
TOKEN_SECRET = "layout-token-secret"

# Runs inside the task root with -S -E: no site-packages, no PYTHON* variables, like /var/task.
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import api.lambda_handler as entry
sdks_at_import = sorted(m for m in ("stripe", "boto3", "botocore", "paho") if m in sys.modules)
responses = [entry.handler(event, None) for event in json.load(sys.stdin)]
origins = {name: getattr(sys.modules.get(name), "__file__", None)
           for name in ("flask", "apig_wsgi", "stripe", "boto3", "paho", "api")}
print(json.dumps({"sdks_at_import": sdks_at_import,
                  "responses": responses, "origins": origins}))
"""


@pytest.fixture(scope="session")
def task_root(tmp_path_factory) -> Path:
    """/var/task as the Dockerfile's lambda target fills it."""
    root = tmp_path_factory.mktemp("var-task")
    install = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:",
        "--requirement", str(ROOT / "requirements" / "runtime.txt"),
        "--target", str(root),
    ]  # fmt: skip
    result = subprocess.run(install, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.copytree(ROOT / "api", root / "api", ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture
def ledger(aws_env):
    from api.store_dynamodb import DynamoDBStore, create_table

    name = f"arcade-layout-{uuid.uuid4().hex[:8]}"
    create_table(name)
    return DynamoDBStore(name)


@pytest.fixture
def secret_arn(aws_env):
    import boto3

    secret = {
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MQTT_PASSWORD": API_PASSWORD,
        "MACHINE_TOKEN_SECRET": TOKEN_SECRET,
        "STRIPE_API_KEY": "sk_test_layout",
    }
    created = boto3.client("secretsmanager").create_secret(
        Name=f"arcade/layout-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret)
    )
    return created["ARN"]


def function_env(broker, ledger, secret_arn, task_root) -> dict[str, str]:
    """What the SAM template gives the function: settings, the table, the secret's ARN."""
    keep = ("PATH", "HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL")  # fmt: skip
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(
        LAMBDA_TASK_ROOT=str(task_root),
        ARCADE_SECRET_ID=secret_arn,
        STORE_URL=f"dynamodb://{ledger.table_name}",
        MQTT_BROKER=broker.host,
        MQTT_PORT=str(broker.port),
        MQTT_TLS="false",
        MQTT_USERNAME=API_USER,
        MQTT_TOPIC_PREFIX="arcade",
        MQTT_PUBLISH_TIMEOUT_MS="3000",
        CENTS_PER_CREDIT="100",
    )
    return env


def webhook(kind: str, session_id: str, base64_body: bool = False) -> dict:
    body = checkout_completed(session_id)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": stripe_signature(body, WEBHOOK_SECRET),
    }
    return make_event(kind, "POST", "/webhook", body, headers, base64_body=base64_body)


def gameover(kind: str, token: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return make_event(kind, "POST", "/gameover", b'{"machine_id": "machine_123"}', headers)


def run_container(task_root: Path, env: dict[str, str], events: list[dict]) -> dict:
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-c", DRIVER, str(task_root)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        cwd=task_root,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) | {"log": result.stderr}


def test_the_lambda_layout_serves_v1_and_v2_events(
    task_root, broker, ledger, secret_arn, subscribe
):
    from api.machines import machine_token

    coins = subscribe("arcade/machine/machine_123/coinpulse")
    gameovers = subscribe("arcade/machine/machine_123/gameover")
    paid_v1, paid_v2 = f"cs_test_{uuid.uuid4().hex}", f"cs_test_{uuid.uuid4().hex}"
    token = machine_token(TOKEN_SECRET, "machine_123")
    events = [
        make_event("rest_v1", "GET", "/status"),
        make_event("http_v2", "GET", "/status"),
        webhook("rest_v1", paid_v1),
        webhook("http_v2", paid_v2, base64_body=True),
        webhook("http_v2", paid_v2),  # Stripe's retry of a delivered payment
        gameover("rest_v1", None),
        gameover("http_v2", "not-the-token"),
        gameover("rest_v1", token),
        gameover("http_v2", token),
    ]
    run = run_container(task_root, function_env(broker, ledger, secret_arn, task_root), events)
    statuses = [response["statusCode"] for response in run["responses"]]
    bodies = [response_json(response) for response in run["responses"]]
    assert statuses == [200, 200, 200, 200, 200, 401, 401, 200, 200], run["log"]

    # /status: up, and the DynamoDB ledger reachable from inside the function.
    assert [(b["status"], b["store"]) for b in bodies[:2]] == [("up", "ok"), ("up", "ok")]
    # The webhooks: each paid session credited once, the retry a duplicate.
    assert [b["result"] for b in bodies[2:5]] == ["published", "published", "duplicate"]
    assert sorted(m.json()["id"] for m in coins.wait_for(2)) == sorted([paid_v1, paid_v2])
    for session_id in (paid_v1, paid_v2):
        stored = ledger.get(session_id)
        assert (stored.state, stored.machine_id, stored.credits) == ("published", "machine_123", 1)
    # /gameover: refused without the cabinet's token, published with it.
    assert all("error" in body for body in bodies[5:7])
    assert [b["message"] for b in bodies[7:]] == ["Game over signal sent"] * 2
    assert len(gameovers.wait_for(2)) == 2

    # No SDK loaded at import (bench/ measures the cold import's time), and everything came from
    # the task root, not from this venv.
    assert run["sdks_at_import"] == []
    for name, origin in run["origins"].items():
        assert origin and origin.startswith(str(task_root)), (name, origin)
    # One JSON line per request, and no secret in any of it.
    for secret in (WEBHOOK_SECRET, API_PASSWORD, TOKEN_SECRET, token):
        assert secret not in run["log"]
    request_lines = [json.loads(line) for line in run["log"].splitlines() if '"path"' in line]
    assert len(request_lines) == len(events)


def test_a_missing_secret_answers_503_json_and_logs_no_value(
    task_root, broker, ledger, secret_arn
):
    env = function_env(broker, ledger, secret_arn, task_root)
    env["ARCADE_SECRET_ID"] = secret_arn + "-gone"
    run = run_container(task_root, env, [make_event("http_v2", "GET", "/status")])
    response = run["responses"][0]
    assert response["statusCode"] == 503 and "error" in response_json(response)
    assert "ResourceNotFoundException" in run["log"]
