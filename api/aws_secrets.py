"""Secrets from AWS Secrets Manager into the environment, once per Lambda container.

The function's configuration holds only the secret's ARN (`ARCADE_SECRET_ID`); the values never
appear in the template, CloudFormation events, `sam deploy` output or the Lambda console. The
secret is a JSON object whose keys are setting names, e.g.

    {"STRIPE_API_KEY": "sk_live_…", "STRIPE_WEBHOOK_SECRET": "whsec_…",
     "MQTT_PASSWORD": "…", "MACHINE_TOKEN_SECRET": "…", "MQTT_CA_CERT_PEM": "-----BEGIN …"}

`MQTT_CA_CERT_PEM` (the broker's CA certificate as text) is written to a file and MQTT_CA_CERT
pointed at it, since the MQTT client needs a path. A variable already set in the environment
wins, as with `.env` files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

SECRET_ID_VARIABLE = "ARCADE_SECRET_ID"
SECRET_KEYS = (
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "MACHINE_TOKEN_SECRET",
    "CONSOLE_SECRET_KEY",  # signs the console's session cookies
    "CONSOLE_OPERATORS",  # `arcade operator add NAME --print` entries
    "ALERT_WEBHOOK_URL",  # incoming-webhook URLs carry their own token
    "OPERATOR_TOKEN",
    "INGEST_TOKEN",  # the broker rule's bearer token for POST /ingest/mqtt (issue 10)
)
CA_PEM_KEY = "MQTT_CA_CERT_PEM"


class SecretsError(RuntimeError):
    """The secret is missing or malformed; the message names it, never a value."""


def load_secrets(
    env: MutableMapping[str, str] | None = None,
    client: Any = None,
    ca_dir: Path | None = None,
) -> list[str]:
    """Set the secret's settings that the environment lacks; returns their names only."""
    env = os.environ if env is None else env
    secret_id = env.get(SECRET_ID_VARIABLE, "").strip()
    if not secret_id:
        return []
    values = fetch_secret(secret_id, client)
    loaded = []
    for key in SECRET_KEYS:
        if values.get(key) and not env.get(key, "").strip():
            env[key] = str(values[key])
            loaded.append(key)
    pem = values.get(CA_PEM_KEY)
    if pem and not env.get("MQTT_CA_CERT", "").strip():
        env["MQTT_CA_CERT"] = str(write_ca_file(str(pem), ca_dir))
        loaded.append("MQTT_CA_CERT")
    return loaded


def fetch_secret(secret_id: str, client: Any = None) -> dict[str, Any]:
    if client is None:
        import boto3  # only when a secret is configured: not for local runs or at import

        client = boto3.client("secretsmanager")
    try:
        raw = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except KeyError:
        raise SecretsError(f"secret {secret_id} has no SecretString (store JSON text)") from None
    try:
        values = json.loads(raw)
    except ValueError:
        raise SecretsError(f"secret {secret_id} is not a JSON object of settings") from None
    if not isinstance(values, dict):
        raise SecretsError(f"secret {secret_id} is not a JSON object of settings")
    return values


def write_ca_file(pem: str, directory: Path | None = None) -> Path:
    # /tmp is the only writable place on Lambda; the file is per container.
    directory = directory or Path(tempfile.gettempdir())
    path = directory / "arcade-mqtt-ca.pem"
    path.write_text(pem if pem.endswith("\n") else pem + "\n")
    path.chmod(0o600)
    return path
