"""Lambda invocation events as AWS sends them, built from our fixtures in fixtures/lambda_events/
(written from the shapes of real payloads: API Gateway REST and HTTP APIs, ALB, Function URLs).

What differs between sources, and what the handler must survive:
- REST API (payload 1.0): `httpMethod`/`path`, both `headers` and `multiValueHeaders`, header
  names as the client sent them, the stage in `requestContext.path` only.
- HTTP API and Function URL (payload 2.0): `rawPath`, `requestContext.http.method`, header
  names lowercased, repeated headers joined with commas.
- ALB: no `version`; `requestContext.elb`; either `headers` or, with multi-value headers enabled
  on the target group, ONLY `multiValueHeaders` (and the reply must use them too).
Any of them may carry the body base64-encoded (`isBase64Encoded`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "lambda_events"
KINDS = ("rest_v1", "http_v2", "alb", "alb_multi_value", "function_url")
V2_KINDS = ("http_v2", "function_url")


def make_event(
    kind: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
    stage: str | None = None,
) -> dict[str, Any]:
    event = json.loads((FIXTURES / f"{kind}.json").read_text())
    headers = dict(headers or {})
    if body:
        headers.setdefault("Content-Length", str(len(body)))
    if base64_body:
        event["body"] = base64.b64encode(body).decode()
    else:
        event["body"] = body.decode() if body else ("" if kind.startswith("alb") else None)
    event["isBase64Encoded"] = base64_body
    if kind in V2_KINDS:
        _v2(event, method, path, headers, stage)
    else:
        _v1(event, kind, method, path, headers)
    return event


def _v2(event: dict, method: str, path: str, headers: dict[str, str], stage: str | None) -> None:
    context = event["requestContext"]
    if stage:
        context["stage"] = stage
        path = f"/{stage}{path}"
    event["rawPath"] = path
    context["http"]["method"] = method
    context["http"]["path"] = path
    route = f"{method} {path}" if event["routeKey"] != "$default" else "$default"
    event["routeKey"] = context["routeKey"] = route
    event["headers"].update({name.lower(): value for name, value in headers.items()})


def _v1(event: dict, kind: str, method: str, path: str, headers: dict[str, str]) -> None:
    event["httpMethod"] = method
    event["path"] = path
    if kind == "rest_v1":
        event["requestContext"]["httpMethod"] = method
        event["requestContext"]["path"] = f"/{event['requestContext']['stage']}{path}"
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["headers"].update(headers)
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    elif kind == "alb":
        event["headers"].update({name.lower(): value for name, value in headers.items()})
    else:  # ALB with multi-value headers: there is no `headers` key at all
        event["multiValueHeaders"].update({k.lower(): [v] for k, v in headers.items()})


def response_headers(response: dict[str, Any]) -> dict[str, str]:
    """Headers of a handler's reply, lowercased, whichever shape the source needs."""
    if "multiValueHeaders" in response:
        return {k.lower(): ",".join(v) for k, v in response["multiValueHeaders"].items()}
    return {k.lower(): v for k, v in response["headers"].items()}


def response_json(response: dict[str, Any]) -> Any:
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    return json.loads(raw)


def checkout_completed(session_id: str, machine_id: str = "machine_123", credits: int = 1) -> bytes:
    """A `checkout.session.completed` delivery body as Stripe sends it (pretty-printed, with
    non-ASCII text: the signature covers the exact UTF-8 bytes)."""
    event = {
        "id": f"evt_{session_id.removeprefix('cs_test_')}",
        "object": "event",
        "api_version": "2026-08-26.dahlia",
        "created": 1795795200,
        "livemode": False,
        "pending_webhooks": 1,
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "amount_total": credits * 100,
                "currency": "eur",
                "client_reference_id": machine_id,
                "customer_details": {"name": "Zoë Ångström", "email": "zoe@example.com"},
                "metadata": {"machine_id": machine_id, "credits": str(credits)},
                "mode": "payment",
                "payment_intent": f"pi_{session_id.removeprefix('cs_test_')}",
                "payment_link": "plink_test_arcade",
                "payment_status": "paid",
                "status": "complete",
            }
        },
    }
    return json.dumps(event, indent=2, ensure_ascii=False).encode()
