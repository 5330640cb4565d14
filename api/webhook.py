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

    if not header.isascii():
        # Stripe's header is ASCII; the library would raise TypeError comparing other text.
        raise BadEvent("invalid Stripe signature (malformed Stripe-Signature header)")
    try:
        payload.decode("utf-8")  # what the library does first, raising a bare UnicodeDecodeError
    except UnicodeDecodeError:
        raise BadEvent("body is not UTF-8 JSON") from None
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
        if key == "t" and value.isascii() and value.isdigit():  # "²".isdigit() is True
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


def metadata_of(session: dict) -> dict:
    metadata = session.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def metadata_credits(session: dict) -> int | None:
    """The `credits` we put in the link's metadata (copied onto its sessions), if any."""
    raw = str(metadata_of(session).get("credits", "")).strip()
    return int(raw) if raw.isascii() and raw.isdigit() else None  # "²".isdigit() is True


def in_our_currency(session: dict, settings: Settings) -> bool:
    currency = session.get("currency")
    return isinstance(currency, str) and currency.lower() == settings.security.currency


def credits_of(session: dict, settings: Settings) -> int:
    """Metadata `credits` (set by us on the link), else the amount at CENTS_PER_CREDIT — only in
    the operator's CURRENCY (8,400 INR is not 84 credits)."""
    credits = metadata_credits(session)
    if credits is not None:
        return credits
    amount = session.get("amount_total")
    if not in_our_currency(session, settings) or not isinstance(amount, int) or amount <= 0:
        return 0
    return amount // settings.cents_per_credit


def why_not_credited(session: dict, settings: Settings) -> str | None:
    """Why a paid session is recorded but not credited, or None when it is credited."""
    if session.get("payment_status") == "no_payment_required" and (
        not settings.security.allow_free_credits
    ):
        return "a free (100 % off) checkout, and ALLOW_FREE_CREDITS is off"
    if metadata_credits(session) is None and not in_our_currency(session, settings):
        return (f"paid in {session.get('currency')!r}; credits are counted from amounts in "
                f"{settings.security.currency} only (CURRENCY)")
    if credits_of(session, settings) <= 0:
        return "worth less than one credit"
    return None


def payment_of(session: dict, settings: Settings) -> tuple[Payment | None, str]:
    """The ledger record for a Checkout Session (None when it is not for a cabinet), and why it
    can reach no cabinet ("" when it can). A paid session is recorded either way: money taken
    for a cabinet we cannot credit is refunded, never dropped."""
    # The link's metadata is ours; client_reference_id is in the URL, which the payer can edit:
    # it only names the cabinet when the metadata names none.
    machine_id = metadata_of(session).get("machine_id") or session.get("client_reference_id")
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
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        currency=text_or_none(session.get("currency")),
        payment_intent=text_or_none(session.get("payment_intent")),
    )
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
    if problem:
        return crediting.record_undeliverable(svc, payment, problem)
    reason = why_not_credited(session, svc.settings)
    if reason:
        return crediting.record_not_credited(svc, payment, reason)
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
