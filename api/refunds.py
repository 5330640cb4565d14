"""Refunds of undelivered parts through Stripe: `Refund` on the payment intent, for the part's
amount, with an idempotency key per part.

Exactly once, twice over: the ledger's refund claim lets one sweep at a time refund a part (two
overlapping sweeps refund it once), and the idempotency key `arcade-refund-<part id>` makes
Stripe answer a repeat of the same call (a sweep that died after Stripe refunded, before the
ledger recorded it) with the first refund instead of a second one.
"""

from __future__ import annotations

import logging
import secrets
import time

from api.ledger import Part, Payment
from api.services import Services

log = logging.getLogger("arcade.refunds")

REFUND_LEASE_S = 120.0  # longer than a Stripe call with its retries can take
RETRY_FAILED_AFTER_S = 60.0


def idempotency_key(part: Part) -> str:
    return f"arcade-refund-{part.id}"


def refund_amount(payment: Payment, part: Part) -> int:
    """The part's amount, but never more than is left to refund (Stripe's `amount_refunded`
    includes refunds made by hand in the dashboard)."""
    left = (payment.amount or 0) - max(payment.amount_refunded, payment.refunded_by_us)
    return max(0, min(part.amount or 0, left))


def refund_part(
    services: Services,
    session_id: str,
    part_id: str,
    force: bool = False,
    now: float | None = None,
) -> str:
    """Refund one part if it is due (or `force`: the operator's refund); returns what happened:
    `refunded`, `nothing_charged`, `not_due` (not refundable, not yet due, or another sweep has
    it) or `failed` (the timeline says why; tried again later)."""
    store = services.store
    token = secrets.token_hex(12)
    now = time.time() if now is None else now
    if not store.refund_claim(session_id, part_id, token, now, REFUND_LEASE_S, force):
        return "not_due"
    payment = store.get(session_id)
    part = payment.part(part_id)
    amount = refund_amount(payment, part)
    if amount == 0:
        store.refunded(session_id, part_id, token, "", 0, now)
        return "nothing_charged"
    try:
        refund_id = create_refund(services, payment, part, amount)
    except Exception as error:  # Stripe said no, or could not be reached: the next sweep retries
        message = stripe_message(error)
        log.warning("refund of %s failed: %s", part_id, message)
        store.refund_failed(session_id, part_id, token, message, now)
        return "failed"
    store.refunded(session_id, part_id, token, refund_id, amount, now)
    return "refunded"


def create_refund(services: Services, payment: Payment, part: Part, amount: int) -> str:
    from api.payments import stripe_client

    settings = services.settings
    if settings.test_checkout and not settings.stripe_api_key:
        # Test checkout without a Stripe account (`make run`): no payment here is real, nothing
        # was charged, so the refund is only recorded, for the ledger and the receipt to show.
        return f"re_test_local_{secrets.token_hex(8)}"
    if not payment.payment_intent:
        raise RefundError("the payment has no payment intent to refund")
    client = stripe_client(settings)
    refund = client.v1.refunds.create(
        params={
            "payment_intent": payment.payment_intent,
            "amount": amount,
            "reason": "requested_by_customer",
            "metadata": {
                "session_id": payment.session_id,
                "part": part.id,
                "machine_id": payment.machine_id,
                "why": "credit not delivered to the cabinet in time (Arcade STEM)",
            },
        },
        options={"idempotency_key": idempotency_key(part)},
    )
    return refund.id


class RefundError(RuntimeError):
    pass


def stripe_message(error: Exception) -> str:
    """What to put on the timeline: Stripe's own message (safe to show), never a key."""
    message = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return message.splitlines()[0][:200]
