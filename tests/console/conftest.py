"""Console fixtures: the API with its console on, an operator, a signed-in test client, and a
local HTTP receiver standing in for an incoming-webhook service (Slack, Discord, ntfy)."""

from __future__ import annotations

import json
import queue
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.console.auth import hash_password
from tests.api.conftest import StripeStub, _StripeHandler, make_app, store_url  # noqa: F401

SECRET_KEY = "console-secret-key-for-tests-0123456789abcdef"
OPERATOR, PASSWORD = "ana", "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def console_app(make_app, store_url):  # noqa: F811  (the fixtures imported above)
    """The console on either ledger: SQLite, and DynamoDB (moto server, real HTTP)."""

    def factory(**overrides):
        overrides.setdefault("STORE_URL", store_url)
        app = make_app(CONSOLE_SECRET_KEY=SECRET_KEY, **overrides)
        app.extensions["arcade"].store.put_operator(OPERATOR, hash_password(PASSWORD), 0.0)
        return app

    return factory


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client, name: str = OPERATOR, password: str = PASSWORD):
    page = client.get("/console/sign-in").get_data(as_text=True)
    return client.post("/console/sign-in", data={
        "name": name, "password": password, "csrf_token": csrf_of(page)})


@pytest.fixture
def operator_client(console_app):
    """A test client (over https, for the Secure cookie) signed in as the operator."""
    app = console_app()
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    answer = sign_in(client)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    client.application = app
    return client


class _RefundingHandler(_StripeHandler):
    """Stripe's refunds too: POST /v1/refunds answers a Refund (replayed per idempotency key)."""

    def do_POST(self):
        if self.path != "/v1/refunds":
            return super().do_POST()
        entry = self._record()
        key = entry["headers"].get("Idempotency-Key", "")
        refunds = self.server.links_by_key
        refunds.setdefault(f"refund:{key}", {
            "id": f"re_{len(refunds) + 1:08d}", "object": "refund", "status": "succeeded",
            "payment_intent": entry["form"].get("payment_intent"), "amount": 100,
            "currency": "usd", "metadata": {},
        })
        self._answer(200, refunds[f"refund:{key}"])


@pytest.fixture
def stripe_api():
    """The API's Stripe stand-in (tests/api/conftest.py), answering refunds as well."""
    server = StripeStub()
    server.RequestHandlerClass = _RefundingHandler
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class AlertReceiver(ThreadingHTTPServer):
    """Records every POST's JSON body; answers `status` (200 unless a test changes it)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.bodies: queue.Queue = queue.Queue()
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/alerts"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: AlertReceiver

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.status == 200:
            self.server.bodies.put({"path": self.path, "type": self.headers["Content-Type"],
                                    "json": json.loads(body)})
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def alert_receiver():
    server = AlertReceiver()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
