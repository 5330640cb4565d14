"""From a paid Checkout Session to exactly one confirmed coinpulse, through the ledger's lease.

claim (atomic) → publish (QoS 1, PUBACK awaited) → mark published. A failure between the steps
leaves the session creditable, so Stripe's retry finishes the job; a repeat publish after a lost
PUBACK carries the same message id, which the cabinet drops.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from api import bookkeeping, protocol
from api.publisher import PublishError
from api.services import Services
from api.store import Claim, Payment, State


@dataclass
class Outcome:
    status: int
    result: str
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def body(self) -> dict:
        if self.error:
            return {"error": self.error, "result": self.result}
        return {"received": True, "result": self.result, **self.extra}


def coinpulse_messages(services: Services, payment: Payment) -> list[tuple[str, bytes]]:
    settings = services.settings
    chunks = protocol.split_credits(
        payment.session_id, payment.credits, settings.max_credits_per_message
    )
    topic = protocol.topic(settings.mqtt_topic_prefix, payment.machine_id, protocol.COINPULSE)
    return [
        (topic, protocol.encode(protocol.coinpulse(payment.machine_id, credits, credit_id)))
        for credit_id, credits in chunks
    ]


def credit(services: Services, payment: Payment) -> Outcome:
    outcome = _credit(services, payment)
    bookkeeping.after_change(services, payment.session_id)  # totals, alerts (idempotent)
    return outcome


def _credit(services: Services, payment: Payment) -> Outcome:
    store, settings = services.store, services.settings
    token = secrets.token_hex(12)
    claim = store.claim(payment, token, time.time(), settings.claim_lease_seconds)
    if claim == Claim.DUPLICATE:
        return Outcome(200, "duplicate")
    if claim == Claim.REFUSED:
        return Outcome(200, "refused", extra={"reason": "refunded, disputed or failed"})
    if claim == Claim.BUSY:
        # Never 2xx here: Stripe stops retrying after a 2xx, and the worker holding the claim
        # may still fail — the retry is what makes sure the credit arrives.
        return Outcome(409, "busy", error="this payment is being credited now; retry later")
    try:
        services.publisher.publish(coinpulse_messages(services, payment))
    except PublishError as error:
        store.release(payment.session_id, token, time.time())
        return Outcome(503, "broker_unavailable", error=f"credit not delivered: {error}")
    if not store.mark_published(payment.session_id, token, time.time()):
        # Our lease ran out while publishing and another worker took over; the cabinet drops the
        # repeat by its id. Reported so the operator can see it happened.
        return Outcome(200, "published_lease_lost")
    return Outcome(200, "published", extra={"credits": payment.credits})


def record_pending(services: Services, payment: Payment) -> Outcome:
    services.store.record(payment, time.time())
    return Outcome(200, "awaiting_payment")


def record_failed(services: Services, payment: Payment) -> Outcome:
    now = time.time()
    services.store.record(payment, now)
    services.store.mark(payment.session_id, State.FAILED, now)
    return Outcome(200, "failed")


def record_against_payment_intent(services: Services, payment_intent: str, state: State) -> Outcome:
    """Refunds and disputes arrive on the charge; the payment intent links them to the session."""
    found = services.store.find_by_payment_intent(payment_intent) if payment_intent else None
    if found is None:
        return Outcome(200, "unknown_payment")
    services.store.mark(found.session_id, state, time.time())
    bookkeeping.after_change(services, found.session_id)
    return Outcome(200, str(state), extra={"session": found.session_id})
