"""API fixtures: the app on a real broker and SQLite file, a recording stand-in for Stripe's API,
and webhooks signed exactly as Stripe signs them."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import api_env, stripe_signature

WEBHOOK_SECRET = "whsec_test_primary"
OLD_WEBHOOK_SECRET = "whsec_test_previous"
TOKEN_SECRET = "machine-token-secret-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

# Stripe's error answers, as its API sends them (status, body): the stand-in replays one on demand.
STRIPE_ERRORS = {
    "rate_limit": (429, {"error": {"type": "invalid_request_error", "code": "rate_limit",
                                   "message": "Request rate limit exceeded. Learn more about rate "
                                              "limits here https://stripe.com/docs/rate-limits."}}),
    "bad_key": (401, {"error": {"type": "invalid_request_error",
                                "message": "Invalid API Key provided: sk_test_****_123"}}),
    "no_permission": (403, {"error": {
        "type": "invalid_request_error",
        "message": "The provided key 'rk_test_****_123' does not have the required permissions "
                   "for this endpoint"}}),
    "no_such_price": (400, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                      "param": "line_items[0][price]",
                                      "message": "No such price: 'price_gone'"}}),
    "api_error": (500, {"error": {"type": "api_error",
                                  "message": "Sorry, something went wrong on Stripe's end."}}),
}


class StripeStub(ThreadingHTTPServer):
    """Answers the Stripe calls the API makes (prices, payment links, refunds), in Stripe's
    shapes, and records each request. Like Stripe, a repeated Idempotency-Key gets the first
    answer again instead of a second object."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StripeHandler)
        self.requests: list[dict] = []
        self.refunds_by_key: dict[str, dict] = {}
        self.refund_error: str | None = None  # set: refunds answer 400 with this message
        self.lock = threading.Lock()
        self.prices = {
            "price_single": {"unit_amount": 100, "metadata": {}},
            "price_bundle": {"unit_amount": 400, "metadata": {"credits": "5"}},
            "price_250": {"unit_amount": 250, "metadata": {}},
        }
        self.links_by_key: dict[str, dict] = {}
        self.planned_errors: list[str] = []  # names in STRIPE_ERRORS, answered in turn

    def fail_next(self, *names: str) -> None:
        self.planned_errors.extend(names)

    def deactivate(self, url: str) -> None:
        """What "Deactivate" on a link in the Stripe dashboard does."""
        for link in self.links_by_key.values():
            if url.startswith(link["url"]):
                link["active"] = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, method: str, prefix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]


class _StripeHandler(BaseHTTPRequestHandler):
    server: StripeStub

    def log_message(self, *args):  # keep test output quiet
        pass

    def _record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        entry = {
            "method": self.command,
            "path": urlparse(self.path).path,
            "form": {k: v[0] for k, v in parse_qs(body).items()},
            "headers": dict(self.headers),
        }
        self.server.requests.append(entry)
        return entry

    def _planned_error(self) -> bool:
        if not self.server.planned_errors:
            return False
        status, body = STRIPE_ERRORS[self.server.planned_errors.pop(0)]
        self._answer(status, body)
        return True

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:12]}")
        if status >= 400:
            self.send_header("Stripe-Should-Retry", "false")  # as Stripe says for these
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _missing(self, what: str) -> None:
        self._answer(
            404,
            {
                "error": {
                    "code": "resource_missing",
                    "message": f"No such price: '{what}'",
                    "param": "price",
                    "type": "invalid_request_error",
                }
            },
        )

    def do_GET(self):
        entry = self._record()
        if self._planned_error():
            return
        if entry["path"].startswith("/v1/payment_links/"):
            link_id = entry["path"].removeprefix("/v1/payment_links/")
            links = [link for link in self.server.links_by_key.values() if link["id"] == link_id]
            return self._answer(200, links[0]) if links else self._missing(link_id)
        price_id = entry["path"].removeprefix("/v1/prices/")
        price = self.server.prices.get(price_id)
        if price is None:
            return self._missing(price_id)
        self._answer(
            200,
            {
                "id": price_id,
                "object": "price",
                "active": True,
                "currency": "usd",
                "livemode": False,
                "type": "one_time",
                "unit_amount": price["unit_amount"],
                "metadata": price["metadata"],
            },
        )

    def do_POST(self):
        entry = self._record()
        if self._planned_error():
            return
        if entry["path"] == "/v1/refunds":
            return self._refund(entry)
        if entry["path"] != "/v1/payment_links":
            return self._answer(404, {"error": {"type": "invalid_request_error", "message": "?"}})
        price_id = entry["form"].get("line_items[0][price]")
        if price_id not in self.server.prices:
            return self._missing(price_id)
        key = entry["headers"].get("Idempotency-Key", uuid.uuid4().hex)
        if key not in self.server.links_by_key:  # Stripe replays the first answer for a key
            link_id = f"plink_{uuid.uuid4().hex[:14]}"
            self.server.links_by_key[key] = {
                "id": link_id,
                "object": "payment_link",
                "active": True,
                "livemode": False,
                "metadata": {
                    k[len("metadata[") : -1]: v
                    for k, v in entry["form"].items()
                    if k.startswith("metadata[")
                },
                "url": f"https://buy.stripe.com/test_{link_id}",
            }
        self._answer(200, self.server.links_by_key[key])

    def _refund(self, entry: dict) -> None:
        """POST /v1/refunds as Stripe answers it (shape of its OpenAPI fixture for a refund)."""
        if self.server.refund_error:
            return self._answer(
                400,
                {"error": {"type": "invalid_request_error", "message": self.server.refund_error}},
            )
        key = entry["headers"].get("Idempotency-Key") or uuid.uuid4().hex
        form = entry["form"]
        with self.server.lock:
            self._new_refund(key, form)
        self._answer(200, self.server.refunds_by_key[key])

    def _new_refund(self, key: str, form: dict) -> None:
        if key not in self.server.refunds_by_key:
            self.server.refunds_by_key[key] = {
                "id": f"re_{uuid.uuid4().hex[:24]}",
                "object": "refund",
                "amount": int(form["amount"]),
                "balance_transaction": None,
                "charge": f"ch_{uuid.uuid4().hex[:24]}",
                "created": int(time.time()),
                "currency": "usd",
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "payment_intent": form.get("payment_intent"),
                "reason": form.get("reason"),
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": "succeeded",
                "transfer_reversal": None,
            }


@contextlib.contextmanager
def running_stripe_stub() -> Iterator[StripeStub]:
    """The stand-in serving on a thread for the duration (fixtures here, in e2e and in tools)."""
    server = StripeStub()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stripe_api():
    with running_stripe_stub() as server:
        yield server


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_url(request, tmp_path) -> str:
    """A fresh ledger on either store, as STORE_URL (DynamoDB: moto server, real HTTP)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    request.getfixturevalue("aws_env")
    from api.store_dynamodb import create_table

    table = f"arcade-{uuid.uuid4().hex[:10]}"
    create_table(table)
    return f"dynamodb://{table}"


def api_config(broker, tmp_path, **overrides) -> dict[str, str]:
    return api_env(
        broker,
        tmp_path / "ledger.db",
        f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        **{
            "STRIPE_API_KEY": "sk_test_123",
            "PRICE_ID": "price_single",
            "MQTT_PUBLISH_TIMEOUT_MS": "2000",
            "MACHINE_TOKEN_SECRET": TOKEN_SECRET,
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
            **overrides,
        },
    )


@pytest.fixture
def make_app(broker, tmp_path, stripe_api):
    from api import create_app

    made = []

    def factory(**overrides):
        overrides.setdefault("STRIPE_API_BASE", stripe_api.url)
        app = create_app(api_config(broker, tmp_path, **overrides))
        made.append(app)
        return app

    yield factory
    for app in made:
        app.extensions["arcade"].publisher.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def checkout_session(
    session_id: str | None = None,
    machine_id: str | None = "machine_123",
    credits: int | None = 1,
    amount: int = 100,
    payment_status: str = "paid",
    payment_intent: str | None = None,
    client_reference_id: str | None = None,
) -> dict:
    """A Checkout Session as our Payment Links produce it (metadata copied from the link)."""
    metadata = {}
    if machine_id is not None:
        metadata["machine_id"] = machine_id
    if credits is not None:
        metadata["credits"] = str(credits)
    session_id = session_id or f"cs_test_{uuid.uuid4().hex}"
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "client_reference_id": client_reference_id,
        "currency": "usd",
        "customer_details": {"email": "stripe@example.com", "name": "Jenny Rosen"},
        "livemode": False,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": payment_intent or f"pi_{uuid.uuid4().hex[:24]}",
        "payment_link": "plink_test_123",
        "payment_status": payment_status,
        "status": "complete" if payment_status != "unpaid" else "complete",
    }


def stripe_event(event_type: str, obj: dict, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2026-08-26.dahlia",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def signed(event: dict | bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    """(body, headers) of a webhook delivery exactly as Stripe sends it."""
    body = event if isinstance(event, bytes) else json.dumps(event, indent=2).encode()
    headers = {
        "Stripe-Signature": stripe_signature(body, secret, timestamp),
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    return body, headers


def deliver(client, event: dict | bytes, path: str = "/webhook", **kwargs):
    body, headers = signed(event, **kwargs)
    return client.post(path, data=body, headers=headers)

