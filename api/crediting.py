"""From a paid Checkout Session to its parts on the broker, through the ledger's lease.

claim (atomic; stores the part plan the first time) → publish the parts the broker has not
confirmed, before their deadline, each with its Message Expiry Interval → record each part's
PUBACK reason code and give the lease back. A failure between the steps leaves the parts that
were not confirmed `paid`, so Stripe's retry (or the sweep) publishes exactly those again, with the
same ids and credits, which the cabinet drops if it already has them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace

from api import ledger, protocol
from api.ledger import Claim, Part, PartState, Payment
from api.logs import note
from api.publisher import Outgoing, PublishError, refused
from api.services import Services


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


def with_plan(services: Services, payment: Payment, paid_at: float) -> Payment:
    """The payment with its part plan under today's settings (stored only by the first claim)."""
    settings = services.settings
    parts = ledger.plan_parts(
        payment.session_id,
        payment.credits,
        payment.amount,
        settings.max_credits_per_message,
        paid_at,
        settings.refund_undelivered_after_s,
        settings.refund_grace_s,
    )
    return replace(payment, parts=parts, paid_at=paid_at)


def coinpulse(services: Services, payment: Payment, part: Part, now: float) -> Outgoing:
    topic = protocol.topic(
        services.settings.mqtt_topic_prefix, payment.machine_id, protocol.COINPULSE
    )
    body = protocol.coinpulse(payment.machine_id, part.credits, part.id, part.expires_at)
    expiry = ledger.seconds_left(part, now) if part.expires_at is not None else None
    return Outgoing(topic, protocol.encode(body), expiry)


def credit(services: Services, payment: Payment, resend: bool = False) -> Outcome:
    """Publish what this payment still owes the broker. A new plan's deadline starts now, when
    it is first stored; `resend` (the operator's) also sends parts the broker took but the
    cabinet has not confirmed."""
    store = services.store
    now = time.time()
    token = secrets.token_hex(12)
    planned = with_plan(services, payment, now)
    claim, current = store.take(planned, token, now, services.settings.claim_lease_seconds,
                                resend)
    if claim != Claim.CLAIMED:
        return not_claimed(claim, current)
    try:
        current = with_stripe_facts(services, current, now)
        parts = [p for p in current.parts if ledger.publishable(p, now, resend)]
        if current.disputed:
            parts = []
        if not parts:  # a refund or dispute that came first has just won
            store.release(payment.session_id, token, time.time())
            return not_claimed(Claim.REFUSED, store.get(payment.session_id))
        messages = [coinpulse(services, current, part, now) for part in parts]
        try:
            codes = services.publisher.publish(messages)
        except PublishError as error:
            codes = error.codes + [None] * (len(parts) - len(error.codes))
            known = dict(zip([part.id for part in parts], codes, strict=True))
            store.published(payment.session_id, token, known, time.time())
            return Outcome(503, "broker_unavailable", error=f"credit not delivered: {error}")
    except BaseException:
        # Whatever went wrong (a bug, a store error): never keep the lease until it expires.
        store.release(payment.session_id, token, time.time())
        raise
    results = dict(zip([part.id for part in parts], codes, strict=True))
    kept = store.published(payment.session_id, token, results, time.time())
    refusals = [ledger.reason_text(code) for code in codes if refused(code)]
    if refusals:
        return Outcome(200, "undeliverable", extra={"reason": refusals[0]})
    if not kept:
        # Our lease ran out while publishing and another worker took over; the cabinet drops the
        # repeat by its id. Reported so the operator can see it happened.
        return Outcome(200, "published_lease_lost")
    return Outcome(200, "published", extra={"credits": sum(p.credits for p in parts)})


def not_claimed(claim: Claim, current: Payment | None) -> Outcome:
    if claim == Claim.BUSY:
        # Never 2xx here: Stripe stops retrying after a 2xx, and the worker holding the claim
        # may still fail — the retry is what makes sure the credit arrives.
        return Outcome(409, "busy", error="this payment is being credited now; retry later")
    if claim == Claim.REFUSED:
        why = str(current.state) if current else "failed"
        return Outcome(200, "refused", extra={"reason": why})
    if claim == Claim.EXPIRED:
        return Outcome(200, "expired", extra={"reason": "paid too long ago: refunded instead"})
    if claim == Claim.UNDELIVERABLE:
        return Outcome(200, "undeliverable", extra={"reason": undeliverable_reason(current)})
    return Outcome(200, "duplicate")


def undeliverable_reason(payment: Payment | None) -> str:
    for part in payment.parts if payment else []:
        if part.state == PartState.UNDELIVERABLE:
            return part.reason
    return ""


def with_stripe_facts(services: Services, payment: Payment, now: float) -> Payment:
    """Link the session to its payment intent, and apply a refund or dispute that arrived
    before it (kept by payment intent): it wins over this credit. Returns the record as it is
    then."""
    store, session_id = services.store, payment.session_id
    if not payment.payment_intent:
        return payment
    known = store.note_intent(payment.payment_intent, session_id=session_id)
    if not (known.amount_refunded or known.disputed):
        return payment  # the usual case: nothing came first
    if known.amount_refunded:
        store.stripe_refunded(session_id, known.amount_refunded, now)
    if known.disputed:
        store.stripe_disputed(session_id, now)
    return store.get(session_id)


# --- payments that are not credited now ---------------------------------------------------------
def record_pending(services: Services, payment: Payment) -> Outcome:
    services.store.record(payment, time.time())
    with_stripe_facts(services, services.store.get(payment.session_id), time.time())
    return Outcome(200, "awaiting_payment")


def record_failed(services: Services, payment: Payment) -> Outcome:
    now = time.time()
    services.store.record(payment, now)
    services.store.mark_failed(payment.session_id, now)
    return Outcome(200, "failed")


def record_undeliverable(services: Services, payment: Payment, reason: str) -> Outcome:
    """Paid, but it can reach no cabinet (unknown or invalid machine): kept in the ledger,
    nothing published, refunded by the next sweep."""
    now = time.time()
    services.store.never_deliverable(payment, reason, now)
    current = with_stripe_facts(services, services.store.get(payment.session_id), now)
    return Outcome(200, "undeliverable", extra={"reason": undeliverable_reason(current) or reason})


def record_not_credited(services: Services, payment: Payment, reason: str) -> Outcome:
    """Paid, but the operator's rules credit nothing (another currency, a free checkout, less
    than one credit): kept in the ledger as `not_credited`, nothing published, and what was
    charged refunded by the next sweep (nothing to give back for a free checkout)."""
    now = time.time()
    services.store.never_deliverable(
        replace(payment, credits=0), ledger.NOT_CREDITED + reason, now
    )
    with_stripe_facts(services, services.store.get(payment.session_id), now)
    note(reason=reason)
    return Outcome(200, "not_credited", extra={"reason": reason})


# --- what Stripe says about a charge -------------------------------------------------------------
def record_refund(services: Services, payment_intent: str, amount_refunded: int) -> Outcome:
    """`charge.refunded` carries the cumulative amount refunded: a partial refund is recorded as
    such; a refund before the session is known is kept and wins when it comes."""
    store, now = services.store, time.time()
    known = store.note_intent(payment_intent, amount_refunded=amount_refunded)
    session_id = known.session_id or session_of_intent(services, payment_intent)
    if not session_id:
        return Outcome(200, "kept")
    store.stripe_refunded(session_id, amount_refunded, now)
    payment = store.get(session_id)
    full = payment is not None and amount_refunded >= (payment.amount or 0)
    result = "refunded" if full else "partially_refunded"
    return Outcome(200, result, extra={"session": session_id})


def record_dispute(services: Services, payment_intent: str) -> Outcome:
    store = services.store
    known = store.note_intent(payment_intent, disputed=True)
    session_id = known.session_id or session_of_intent(services, payment_intent)
    if not session_id:
        return Outcome(200, "kept")
    store.stripe_disputed(session_id, time.time())
    return Outcome(200, "disputed", extra={"session": session_id})


def session_of_intent(services: Services, payment_intent: str) -> str:
    found = services.store.find_by_payment_intent(payment_intent)
    return found.session_id if found else ""
