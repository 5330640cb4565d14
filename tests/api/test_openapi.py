"""docs/openapi.yaml is true: the app serves exactly its routes, and Schemathesis, generating
requests from it (valid and invalid), finds no 500, no undocumented status, content type or
shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from api.machines import machine_token
from tests.api.conftest import OPERATOR, TOKEN_SECRET

BASE = "http://localhost"
SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
schema = schemathesis.openapi.from_path(SPEC_PATH)

FUZZ = settings(max_examples=30, deadline=None,
                suppress_health_check=list(HealthCheck))
# Data valid by the description may still be refused by the server's settings (a price not in
# ALLOWED_PRICE_IDS, an unknown cabinet, a payment already made): not a contract breach.
SETTINGS_DEPENDENT = [schemathesis.checks.positive_data_acceptance]


INGEST_TOKEN = "ingest-token-for-the-openapi-tests"


@pytest.fixture
def stripe_mode_app(make_app):
    return make_app(RATE_LIMIT_PER_CLIENT="off", RATE_LIMIT_PER_CABINET="off",
                    INGEST_TOKEN=INGEST_TOKEN)


@pytest.fixture
def test_checkout_app(make_app):
    return make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL="http://127.0.0.1:5000",
                    RATE_LIMIT_PER_CLIENT="off", RATE_LIMIT_PER_CABINET="off")


def credentials(case) -> dict[str, str]:
    """Valid tokens, so generated requests also reach past the auth checks (Schemathesis tries
    without them on its own)."""
    if case.path == "/create-payment-link":
        return dict(OPERATOR)
    if case.path == "/ingest/mqtt":
        return {"Authorization": f"Bearer {INGEST_TOKEN}"}
    if case.path == "/gameover" and isinstance(case.body, dict):
        machine_id = case.body.get("machine_id")
        if isinstance(machine_id, str):
            return {"Authorization": f"Bearer {machine_token(TOKEN_SECRET, machine_id)}"}
    return {}


@schema.exclude(path_regex="^/test-checkout").parametrize()
@FUZZ
def test_the_api_keeps_to_its_openapi_description(case, stripe_mode_app):
    call_and_validate(case, stripe_mode_app, headers=credentials(case))


def call_and_validate(case, app, **kwargs) -> None:
    # The schema's own transport too (its auth probe uses it), not only this call's.
    case.operation.schema.app = app
    case.call_and_validate(app=app, base_url=BASE, excluded_checks=SETTINGS_DEPENDENT, **kwargs)


@schema.include(path_regex="^/test-checkout").parametrize()
@FUZZ
def test_the_test_checkout_keeps_to_its_openapi_description(case, test_checkout_app):
    call_and_validate(case, test_checkout_app)


def test_the_description_has_exactly_the_apps_routes(test_checkout_app):
    served = {
        (re.sub(r"<([a-z_]+)>", r"{\1}", rule.rule), method.lower())
        for rule in test_checkout_app.url_map.iter_rules()
        # The console's HTML pages are for people (README: Console), not part of this description.
        if rule.endpoint != "static" and not rule.rule.startswith("/console")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, item in SPEC["paths"].items()
                 for method in item if method != "parameters"}
    assert described == served


def readme_section(title: str) -> str:
    text = (SPEC_PATH.parents[1] / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_the_readme_security_section_links_the_description_and_names_real_settings():
    from api.settings import settings_from_env
    from tests.deploy.test_template import RecordingEnv

    section = readme_section("Security")
    assert "(docs/openapi.yaml)" in section
    asked = RecordingEnv(STRIPE_WEBHOOK_SECRET="whsec_x", MQTT_BROKER="broker")
    settings_from_env(asked)
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", section))
    assert named and named <= asked.asked, sorted(named - asked.asked)
    # Every route the description has is in the section's table.
    for path in SPEC["paths"]:
        assert path.split("{")[0].rstrip("/").split("/")[1] in section, path
