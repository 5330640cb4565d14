"""Stripe events as Stripe sends them: for the test checkout page and `arcade pay`, which stand in
for a real payment and must take the very path a real one takes (signature, ledger, coinpulse)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid


def checkout_session(
    machine_id: str, amount: int, credits: int | None, session_id: str | None = None
) -> dict:
    """A completed, paid Checkout Session (metadata values are strings, as in Stripe)."""
    metadata = {"machine_id": machine_id}
    if credits is not None:
        metadata["credits"] = str(credits)
    now = int(time.time())
    return {
        "id": session_id or f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "client_reference_id": machine_id,
        "created": now,
        "currency": "usd",
        "customer_details": None,
        "expires_at": now + 24 * 3600,
        "livemode": False,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
        "payment_link": None,
        "payment_method_types": ["card"],
        "payment_status": "paid",
        "status": "complete",
    }


def completed_event(session: dict) -> dict:
    import stripe

    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "data": {"object": session},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
    }


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def signed_delivery(event: dict, secret: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a webhook POST."""
    body = json.dumps(event, indent=2).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature_header(body, secret),
    }
    return body, headers
