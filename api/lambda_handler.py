"""AWS Lambda entry point: `api.lambda_handler.handler` (the container image's CMD).

One handler for every way AWS invokes a function over HTTP: API Gateway REST APIs (payload 1.0),
HTTP APIs (payload 2.0), Application Load Balancers (with or without multi-value headers) and
Function URLs. apig-wsgi translates each event into a WSGI request for the Flask app and the
response back into the shape that event's source expects; the archived aws-wsgi only knows the
REST API's payload 1.0 and crashes on the others (see the README, "Deploy to AWS").

The app is built on the first event, not at import: importing this module stays fast (no Stripe,
boto3 or paho), and settings and secrets are read once per container.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
LambdaHandler = Callable[[Event, Any], dict[str, Any]]

log = logging.getLogger("arcade.lambda")

_handler: LambdaHandler | None = None
_app: Any = None  # the Flask app behind _handler (its services run the scheduled sweep)


def handler(event: Event, context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        try:
            _handler = build_handler()
        except SystemExit:
            # create_app has printed the one line naming the bad setting; answering keeps the
            # container alive and the reply JSON. Nothing is cached: the next event tries again.
            return error_event(event, 500, "the API is not configured; see the function's log")
        except Exception as error:  # e.g. Secrets Manager unreachable: Stripe will retry
            log.error("start-up failed: %s", describe(error))
            return error_event(event, 503, "the API could not start; retry later")
    if is_scheduled(event):
        return run_sweep()
    return _handler(without_stage(event), context)


def is_scheduled(event: Event) -> bool:
    """The EventBridge schedule of template.yaml (a "Scheduled Event" from aws.events)."""
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


def run_sweep() -> dict[str, Any]:
    """Refund what was not delivered in time, publish again what the broker did not take: the
    sweep `arcade listen` runs locally, here once per schedule (api/sweep.py)."""
    from dataclasses import asdict

    from api.sweep import sweep

    report = sweep(_app.extensions["arcade"])
    result = asdict(report)
    log.info(json.dumps({"sweep": {k: v for k, v in result.items() if k != "results"}}))
    return result


def build_handler() -> LambdaHandler:
    from apig_wsgi import make_lambda_handler

    from api import create_app
    from api.aws_secrets import load_secrets
    from api.logs import configure_logging

    global _app
    configure_logging()
    load_secrets()  # before create_app reads the settings
    _app = create_app()
    # binary_support: bodies with a non-text content type go back base64-encoded, as AWS
    # requires; JSON and text stay plain. ALB multi-value headers are detected per event.
    return make_lambda_handler(_app, binary_support=True)


def without_stage(event: Event) -> Event:
    """An HTTP API with a named stage puts it in front of rawPath (`/prod/webhook`); Flask's
    routes have no stage. REST APIs already pass the path without it, `$default` has none."""
    if event.get("version") != "2.0":
        return event
    stage = (event.get("requestContext") or {}).get("stage") or "$default"
    prefix = f"/{stage}"
    raw_path = event.get("rawPath") or "/"
    if stage == "$default" or not (raw_path == prefix or raw_path.startswith(prefix + "/")):
        return event
    return {**event, "rawPath": raw_path[len(prefix) :] or "/"}


def error_event(event: Event, status: int, message: str) -> dict[str, Any]:
    """A JSON error in the response shape of the event's source, without the app."""
    body = json.dumps({"error": message})
    headers = {"Content-Type": "application/json"}
    response: dict[str, Any] = {"statusCode": status, "body": body, "isBase64Encoded": False}
    if "multiValueHeaders" in event and event.get("version") != "2.0":
        response["multiValueHeaders"] = {key: [value] for key, value in headers.items()}
    else:
        response["headers"] = headers
    if "elb" in (event.get("requestContext") or {}):
        response["statusDescription"] = f"{status} Error"
    return response


def describe(error: Exception) -> str:
    """The error for the log: AWS's and our secrets loader's messages name resources, never
    secret values; anything else is logged by type only."""
    from api.aws_secrets import SecretsError

    name = type(error).__name__
    if isinstance(error, SecretsError) or type(error).__module__.startswith("botocore"):
        return f"{name}: {error}"
    return name
