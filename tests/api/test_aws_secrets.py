"""Secrets Manager → environment at cold start (moto server, real HTTP, as on AWS)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from api.aws_secrets import SecretsError, load_secrets

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfakefakefake\n-----END CERTIFICATE-----"


@pytest.fixture
def secrets_client(aws_env):
    import boto3

    return boto3.client("secretsmanager")


def make_secret(client, value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    created = client.create_secret(Name=f"arcade/{uuid.uuid4().hex[:8]}", SecretString=text)
    return created["ARN"]


def test_settings_come_from_the_secret_and_the_ca_becomes_a_file(secrets_client, tmp_path):
    arn = make_secret(
        secrets_client,
        {
            "STRIPE_API_KEY": "sk_test_from_secret",
            "STRIPE_WEBHOOK_SECRET": "whsec_new,whsec_old",
            "MQTT_PASSWORD": "broker-password",
            "MACHINE_TOKEN_SECRET": "token-secret",
            "MQTT_CA_CERT_PEM": CA_PEM,
            "SOMETHING_ELSE": "ignored",
        },
    )
    env = {"ARCADE_SECRET_ID": arn, "MQTT_BROKER": "broker.example.com"}
    loaded = load_secrets(env, ca_dir=tmp_path)
    assert sorted(loaded) == sorted(
        [
            "STRIPE_API_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "MQTT_PASSWORD",
            "MACHINE_TOKEN_SECRET",
            "MQTT_CA_CERT",
        ]
    )
    assert env["STRIPE_WEBHOOK_SECRET"] == "whsec_new,whsec_old"
    assert "SOMETHING_ELSE" not in env
    ca_file = tmp_path / "arcade-mqtt-ca.pem"
    assert env["MQTT_CA_CERT"] == str(ca_file)
    assert ca_file.read_text() == CA_PEM + "\n"
    # The settings module accepts what the loader produced.
    from api.settings import settings_from_env

    settings = settings_from_env(env)
    assert settings.mqtt_ca_cert == str(ca_file) and settings.stripe_api_key.startswith("sk_")


def test_the_environment_wins_over_the_secret(secrets_client, tmp_path):
    arn = make_secret(secrets_client, {"STRIPE_API_KEY": "sk_secret", "MQTT_PASSWORD": "p"})
    env = {"ARCADE_SECRET_ID": arn, "STRIPE_API_KEY": "sk_env", "MQTT_PASSWORD": ""}
    assert load_secrets(env, ca_dir=tmp_path) == ["MQTT_PASSWORD"]  # empty counts as unset
    assert env["STRIPE_API_KEY"] == "sk_env"


@pytest.mark.parametrize("text", ["not json", '["a list"]'])
def test_a_malformed_secret_names_the_secret_not_its_value(secrets_client, text):
    arn = make_secret(secrets_client, text)
    with pytest.raises(SecretsError) as raised:
        load_secrets({"ARCADE_SECRET_ID": arn})
    assert arn in str(raised.value) and text not in str(raised.value)


def test_a_missing_secret_is_an_error(aws_env):
    with pytest.raises(Exception, match="ResourceNotFound"):
        load_secrets({"ARCADE_SECRET_ID": "arcade/does-not-exist"})


def test_without_a_secret_nothing_is_fetched_or_imported():
    code = (
        "import sys; from api.aws_secrets import load_secrets;"
        " print(load_secrets({}), 'boto3' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[] False", result.stderr
