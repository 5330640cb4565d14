"""template.yaml: lint-clean, and in step with the code it deploys (table, routes, settings)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.deploy.conftest import ROOT, tool


def test_cfn_lint_is_clean_including_informational_checks():
    try:
        import samtranslator  # noqa: F401 - cfn-lint needs it to expand a SAM template
    except ImportError:
        pytest.fail("aws-sam-translator is missing: cfn-lint cannot expand SAM templates")
    result = subprocess.run(
        [tool("cfn-lint"), "--include-checks", "I", "--", "template.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class RecordingClient:
    """Stands in for boto3's DynamoDB client: records what create_table asks AWS for."""

    def __init__(self):
        self.calls: dict[str, dict] = {}

    def create_table(self, **kwargs):
        self.calls["create_table"] = kwargs

    def update_time_to_live(self, **kwargs):
        self.calls["update_time_to_live"] = kwargs

    def get_waiter(self, name):
        return type("Waiter", (), {"wait": lambda self, **kwargs: None})()


def test_the_table_is_the_one_the_store_creates_for_itself(template):
    from api.store_dynamodb import create_table

    client = RecordingClient()
    create_table("ledger", client)
    wanted = client.calls["create_table"]
    table = template["Resources"]["LedgerTable"]
    properties = table["Properties"]
    assert properties["BillingMode"] == wanted["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == wanted["KeySchema"]
    by_name = lambda items: sorted(items, key=lambda item: str(item))  # noqa: E731
    assert by_name(properties["AttributeDefinitions"]) == by_name(wanted["AttributeDefinitions"])
    assert by_name(properties["GlobalSecondaryIndexes"]) == by_name(
        wanted["GlobalSecondaryIndexes"]
    )
    ttl = client.calls["update_time_to_live"]["TimeToLiveSpecification"]
    assert properties["TimeToLiveSpecification"] == ttl
    # Paid credits are records: never dropped with the stack.
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_the_http_api_routes_are_exactly_the_apps_routes(function, tmp_path):
    from api import create_app

    app = create_app(
        {
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "MQTT_BROKER": "127.0.0.1",
            "STORE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        }
    )
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    # HTTP API paths name parameters {like_this}, Flask <like_this>.
    served = {(re.sub(r"<([^>]+)>", r"{\1}", path), method) for path, method in served}
    events = [e for e in function["Properties"]["Events"].values() if e["Type"] != "Schedule"]
    routed = {(e["Properties"]["Path"], e["Properties"]["Method"]) for e in events}
    # The console (its own sign-in) is routed whole: /console and everything under it.
    console = {("/console", "ANY"), ("/console/{proxy+}", "ANY")}
    assert console <= routed
    assert {(path, method) for path, method in served if path.startswith("/console")}
    assert routed - console == {(p, m) for p, m in served if not p.startswith("/console")}
    for event in events:
        assert event["Type"] == "HttpApi"
        assert event["Properties"]["PayloadFormatVersion"] == "2.0"


def test_the_sweep_runs_on_a_schedule_in_the_same_function(function):
    """EventBridge → the API's own function (api/lambda_handler.py recognises the event)."""
    [schedule] = [e for e in function["Properties"]["Events"].values() if e["Type"] == "Schedule"]
    assert schedule["Properties"]["Schedule"] == "rate(1 minute)"
    assert "Input" not in schedule["Properties"]  # the plain "Scheduled Event" it expects


class RecordingEnv(dict):
    """An environment that notes every variable the settings ask for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)


def test_every_setting_is_a_parameter_or_in_the_secret(function, template):
    from api.aws_secrets import CA_PEM_KEY, SECRET_ID_VARIABLE, SECRET_KEYS
    from api.settings import settings_from_env

    env = RecordingEnv(STRIPE_WEBHOOK_SECRET="whsec_x", MQTT_BROKER="broker")
    settings_from_env(env)
    variables = function["Properties"]["Environment"]["Variables"]
    from_secret = set(SECRET_KEYS) | {"MQTT_CA_CERT"}  # the CA comes as CA_PEM_KEY, a file
    # Test checkout mode is for one machine (`make run`); the deployed stack never offers it.
    local_only = {"TEST_CHECKOUT", "PUBLIC_URL", "TEST_CHECKOUT_NETWORK",
                  # API Gateway gives the client's own address: no proxy hops to trust there.
                  "TRUSTED_PROXY_HOPS"}
    missing = env.asked - set(variables) - from_secret - local_only
    assert not missing, f"settings the template cannot set: {sorted(missing)}"
    assert variables[SECRET_ID_VARIABLE] == {"Ref": "SecretArn"}
    assert CA_PEM_KEY not in variables
    # Every parameter is used, and none carries a secret value in plain text.
    parameters = template["Parameters"]
    resources = str(template["Resources"])
    for name in parameters:
        assert f"'{name}'" in resources, f"parameter {name} is never used"
        if name != "SecretArn":
            assert not any(w in name.upper() for w in ("SECRET", "PASSWORD", "TOKEN", "KEY"))
    assert not set(SECRET_KEYS) & set(variables) - {"MQTT_USERNAME"}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_the_function_may_use_only_its_table_and_its_secret(function):
    statements = [s for policy in function["Properties"]["Policies"] for s in policy["Statement"]]
    actions = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        resources = as_list(statement["Resource"])
        assert "*" not in map(str, resources)
        for action in as_list(statement["Action"]):
            actions.add(action)
            assert "*" not in action, action
            if action.startswith("dynamodb:"):
                assert all("LedgerTable" in str(resource) for resource in resources)
            else:
                assert action == "secretsmanager:GetSecretValue"
                assert resources == [{"Ref": "SecretArn"}]
    # Exactly the calls the stores make: no Scan; deletes only of operators and retirements.
    wanted = {"GetItem", "PutItem", "UpdateItem", "Query", "GetSecretValue", "DeleteItem",
              "BatchGetItem"}
    assert {action.split(":")[1] for action in actions} == wanted


def test_the_function_is_the_lambda_image_target(function):
    assert function["Properties"]["PackageType"] == "Image"
    assert function["Metadata"]["DockerBuildTarget"] == "lambda"
    assert function["Metadata"]["Dockerfile"] == "Dockerfile"


def test_outputs_give_the_webhook_url_and_the_table(template):
    outputs = template["Outputs"]
    assert str(outputs["WebhookUrl"]["Value"]).rstrip("'}\"").endswith("/webhook")
    assert outputs["TableName"]["Value"] == {"Ref": "LedgerTable"}
