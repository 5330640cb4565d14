"""POST /webhook (and the seed's /addCredit): Stripe events, verified on the raw bytes first."""

from __future__ import annotations

import json
import time

from flask import Blueprint, jsonify, request

from api import crediting
from api.crediting import Outcome
from api.logs import note
from api.machines import is_valid_machine_id
from api.services import Services, services
from api.settings import Settings
from api.store import Payment

bp = Blueprint("webhook", __name__)

PAID_STATUSES = ("paid", "no_payment_required")


class BadEvent(ValueError):
    """The event cannot be acted on; the message says why (answered with 400)."""


def verify_signature(payload: bytes, header: str, settings: Settings) -> None:
    """Accept a signature made with any configured secret (rotation keeps two for a while)."""
    import stripe

    if signed_at(header) > time.time() + settings.webhook_tolerance_seconds:
        # Stripe's check only bounds the past; a far-future stamp would widen the replay window.
        raise BadEvent("invalid Stripe signature (timestamp in the future)")
    for secret in settings.stripe_webhook_secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload, header, secret, tolerance=settings.webhook_tolerance_seconds
            )
            return
        except stripe.SignatureVerificationError:
            continue
    raise BadEvent("invalid Stripe signature (wrong secret, altered body or stale timestamp)")


def signed_at(header: str) -> int:
    """The `t=` of a Stripe-Signature header (0 when absent; the library then rejects it)."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0


def parse_event(payload: bytes) -> dict:
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise BadEvent("body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise BadEvent("body is not a Stripe event")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise BadEvent("event has no data.object")
    return event


def credits_of(session: dict, settings: Settings) -> int:
    """Metadata `credits` (set by us on the link), else the amount at CENTS_PER_CREDIT."""
    raw = str((session.get("metadata") or {}).get("credits", "")).strip()
    if raw.isdigit():
        return int(raw)
    amount = session.get("amount_total")
    return amount // settings.cents_per_credit if isinstance(amount, int) and amount > 0 else 0


def payment_of(session: dict, settings: Settings) -> tuple[Payment | None, str]:
    """The ledger record for a Checkout Session (None when it is not for a cabinet), and why it
    can reach no cabinet ("" when it can). A paid session is recorded either way: money taken
    for a cabinet we cannot credit is refunded, never dropped."""
    metadata = session.get("metadata") or {}
    machine_id = metadata.get("machine_id") or session.get("client_reference_id")
    if not machine_id:
        return None, ""
    session_id = session.get("id")
    if not isinstance(session_id, str) or not session_id:
        raise BadEvent("checkout session has no id")
    problem = ""
    if not is_valid_machine_id(machine_id):
        # Never used in a topic; kept (shortened) so the operator can see what was asked for.
        machine_id, problem = str(machine_id)[:64], "invalid_machine_id"
    elif not settings.machine_allowed(machine_id):
        problem = "unknown_machine"
    amount = session.get("amount_total")
    payment = Payment(
        session_id=session_id,
        machine_id=machine_id,
        credits=credits_of(session, settings),
        amount=amount if isinstance(amount, int) else None,
        currency=session.get("currency"),
        payment_intent=session.get("payment_intent") or None,
    )
    if not problem and payment.credits <= 0:
        problem = "no_credits"
    return payment, problem


def handle_session(event_type: str, session: dict, svc: Services) -> Outcome:
    payment, problem = payment_of(session, svc.settings)
    if payment is None:
        return Outcome(200, "ignored", extra={"reason": "not a cabinet's checkout"})
    note(machine=payment.machine_id, session=payment.session_id)
    if event_type == "checkout.session.async_payment_failed":
        return crediting.record_failed(svc, payment)
    paid = event_type == "checkout.session.async_payment_succeeded" or (
        session.get("payment_status") in PAID_STATUSES
    )
    if not paid:
        return crediting.record_pending(svc, payment)
    if problem == "no_credits" and not payment.amount:
        return Outcome(200, "ignored", extra={"reason": "no credits in this purchase"})
    if problem:
        return crediting.record_undeliverable(svc, payment, problem)
    # The deadline starts when the plan is first stored (docs/protocol.md), now.
    return crediting.credit(svc, payment)


def check_livemode(event: dict, settings: Settings) -> Outcome | None:
    """A live API never credits a test event (a test endpoint's secret configured by mistake);
    a live event on a test API is refused loudly (400: Stripe retries and shows the failure)
    rather than real money dropped quietly."""
    live = event.get("livemode") is True
    if live and not settings.stripe_livemode:
        raise BadEvent("a livemode event reached an API in test mode (see STRIPE_LIVEMODE)")
    if not live and settings.stripe_livemode:
        return Outcome(200, "ignored", extra={"reason": "a test event on a live API"})
    return None


def handle_event(event: dict, svc: Services) -> Outcome:
    wrong_mode = check_livemode(event, svc.settings)
    if wrong_mode is not None:
        return wrong_mode
    event_type = event["type"]
    obj = event["data"]["object"]
    if event_type.startswith("checkout.session."):
        if event_type in (
            "checkout.session.completed",
            "checkout.session.async_payment_succeeded",
            "checkout.session.async_payment_failed",
        ):
            return handle_session(event_type, obj, svc)
    elif event_type in ("charge.refunded", "charge.dispute.created"):
        payment_intent = obj.get("payment_intent")
        if not isinstance(payment_intent, str) or not payment_intent:
            return Outcome(200, "ignored", extra={"reason": "no payment intent"})
        if event_type == "charge.dispute.created":
            return crediting.record_dispute(svc, payment_intent)
        return crediting.record_refund(svc, payment_intent, amount_refunded_of(obj))
    return Outcome(200, "ignored", extra={"reason": f"{event_type} is not used"})


def amount_refunded_of(charge: dict) -> int:
    """Stripe's cumulative `amount_refunded`; a charge without it counts as refunded whole."""
    refunded = charge.get("amount_refunded")
    if isinstance(refunded, int) and refunded >= 0:
        return refunded
    amount = charge.get("amount")
    return amount if isinstance(amount, int) else 0


@bp.post("/webhook")
@bp.post("/addCredit")
def receive():
    svc = services()
    if request.mimetype != "application/json":
        return jsonify(error="Content-Type must be application/json"), 415
    payload = request.get_data(cache=False)
    try:
        verify_signature(payload, request.headers.get("Stripe-Signature", ""), svc.settings)
        event = parse_event(payload)
        note(event=event.get("id"), type=event["type"])
        outcome = handle_event(event, svc)
    except BadEvent as error:
        note(result="rejected")
        return jsonify(error=str(error)), 400
    note(result=outcome.result)
    return jsonify(outcome.body()), outcome.status
