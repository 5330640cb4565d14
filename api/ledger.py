"""The ledger's model: a payment, its part plan, each part's state, and the timeline of events.

Every change to a payment is a pure function here, `(current record, facts) -> (new record,
answer)`. The stores (SQLite, DynamoDB) only run such a function atomically on one record
(store.update), so both stores agree by construction and the rules live in one place.

A paid purchase is split once into parts (`{session}` or `{session}:1..k`, at most MAX_PARTS),
each with its own credits, amount, deadline and state:

    paid ──publish──▶ published ──ack received──▶ received ──ack done──▶ done
      │                  │                             (an ack without state is `done`)
      └─broker refused─▶ undeliverable (reason)  ◀─cabinet rejected─┘
    paid / published / undeliverable / expired ──refund_at passed──▶ refunded
    refunded ──ack received or done──▶ refunded_but_delivered (for the operator)
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

# A cabinet remembers its last 64 credit ids; 8 parts keep any one purchase far inside that,
# even with other purchases arriving between a publish and its retry.
MAX_PARTS = 8
# The sweep publishes again a part the broker did not take, this long after the last try.
RETRY_AFTER_S = 10.0
# Kept per payment: a timeline, not a log (acks repeated by a cabinet change nothing, add nothing).
MAX_EVENTS = 200


class State(enum.StrEnum):
    """A payment's state: what a person needs to know first (derived from its parts)."""

    PENDING = "pending"  # completed, payment not confirmed yet (async methods)
    FAILED = "failed"  # async payment failed: nothing to credit
    PAID = "paid"  # paid; a part is not (yet) accepted by the broker
    UNDELIVERABLE = "undeliverable"  # a part cannot reach the cabinet (reason on the part)
    PUBLISHED = "published"  # the broker has every part; the cabinet has not confirmed all
    RECEIVED = "received"  # the cabinet journaled every part (it owes the pulses)
    DONE = "done"  # every credit pulsed
    EXPIRED = "expired"  # the cabinet refused a part as too late; its refund is due
    REFUNDED = "refunded"  # every part is done or refunded, at least one refunded
    REFUNDED_BUT_DELIVERED = "refunded_but_delivered"  # refunded, then pulsed after all
    DISPUTED = "disputed"  # a dispute was opened: nothing more is published or refunded
    NOT_CREDITED = "not_credited"  # paid, but the operator's rules credit nothing (CURRENCY,
    # ALLOW_FREE_CREDITS, less than one credit): refunded by the next sweep


class PartState(enum.StrEnum):
    PAID = "paid"
    UNDELIVERABLE = "undeliverable"
    PUBLISHED = "published"
    RECEIVED = "received"
    DONE = "done"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    REFUNDED_BUT_DELIVERED = "refunded_but_delivered"


# The broker does not have it (yet): the API may publish it again.
UNCONFIRMED = (PartState.PAID, PartState.UNDELIVERABLE)
# Paid and not on the cabinet: refunded when its refund_at passes.
REFUNDABLE = (PartState.PAID, PartState.PUBLISHED, PartState.UNDELIVERABLE, PartState.EXPIRED)
DELIVERED = (PartState.RECEIVED, PartState.DONE, PartState.REFUNDED_BUT_DELIVERED)
# Payment states in which something is still owed to the player.
OPEN_STATES = (
    State.NOT_CREDITED,
    State.PAID,
    State.UNDELIVERABLE,
    State.PUBLISHED,
    State.RECEIVED,
    State.EXPIRED,
)
# Reasons a part can never be published; the API refunds them at once.
NEVER_DELIVERABLE = (
    "too_many_parts",
    "unknown_machine",
    "invalid_machine_id",
)
# The reason of a part the operator's rules credit nothing for starts with this.
NOT_CREDITED = "not credited: "


class Claim(enum.StrEnum):
    CLAIMED = "claimed"  # the caller holds the lease and must publish, then record or release
    DUPLICATE = "duplicate"  # nothing left to publish
    BUSY = "busy"  # another worker holds a live lease: tell Stripe to retry later
    REFUSED = "refused"  # refunded/disputed/failed before it was credited: never publish
    EXPIRED = "expired"  # its deadline passed before the broker took it: refunded instead
    UNDELIVERABLE = "undeliverable"  # it can reach no cabinet (unknown machine, ...): refunded


@dataclass
class Event:
    at: float
    kind: str
    part: str = ""
    detail: str = ""


@dataclass
class Part:
    id: str
    credits: int
    amount: int | None = None  # cents this part is worth: what its refund pays back
    state: PartState = PartState.PAID
    reason: str = ""  # why undeliverable / expired (a broker reason code, a cabinet's words)
    expires_at: float | None = None  # the coinpulse's `expires`; None = no deadline
    refund_at: float | None = None  # refunded if still undelivered then; None = never
    attempts: int = 0  # publishes sent
    tried_at: float | None = None
    published_at: float | None = None
    received_at: float | None = None
    done_at: float | None = None
    refunded_at: float | None = None
    refund_id: str = ""
    refunded_amount: int = 0
    refund_token: str = ""  # a sweep holding this part's refund (see refund_claim)
    refund_expires: float | None = None


@dataclass
class Payment:
    session_id: str
    machine_id: str
    credits: int
    amount: int | None = None
    currency: str | None = None
    payment_intent: str | None = None
    state: State = State.PENDING
    created_at: float = 0.0
    updated_at: float = 0.0
    paid_at: float | None = None
    parts: list[Part] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    amount_refunded: int = 0  # what Stripe reports refunded in all (charge.refunded)
    disputed: bool = False
    claim_token: str = ""
    claim_expires: float | None = None
    version: int = 0

    # --- derived ---------------------------------------------------------------------------
    def part(self, part_id: str) -> Part | None:
        return next((part for part in self.parts if part.id == part_id), None)

    @property
    def published_at(self) -> float | None:
        """When the broker had the last part (None while a part is not confirmed)."""
        times = [p.published_at for p in self.parts]
        return max(times) if times and None not in times else None

    @property
    def done_at(self) -> float | None:
        times = [p.done_at for p in self.parts]
        return max(times) if times and None not in times else None

    @property
    def refunded_by_us(self) -> int:
        return sum(part.refunded_amount for part in self.parts)

    @property
    def refund_due_at(self) -> float | None:
        times = [p.refund_at for p in self.parts if p.state in REFUNDABLE and p.refund_at]
        return min(times) if times else None

    def sweep_at(self) -> float | None:
        """When the sweep should next look at this payment: to publish again a part the broker
        has not taken (before its deadline), or to refund one (at its refund_at)."""
        if self.disputed or not self.parts:
            return None
        times = []
        for part in self.parts:
            if retryable(part):
                again = (part.tried_at or self.paid_at or 0.0) + RETRY_AFTER_S
                if part.expires_at is None or again < part.expires_at - 1:
                    times.append(again)
            if part.state in REFUNDABLE and part.refund_at is not None:
                times.append(part.refund_at)
        return min(times) if times else None


def summary(payment: Payment) -> State:
    """The payment's state from its parts: what needs a person's attention first."""
    if payment.disputed:
        return State.DISPUTED
    if not payment.parts:
        if payment.state == State.FAILED:
            return State.FAILED
        if payment.amount and payment.amount_refunded >= payment.amount:
            return State.REFUNDED
        return payment.state if payment.state in (State.PENDING, State.FAILED) else State.PENDING
    states = {part.state for part in payment.parts}
    if PartState.REFUNDED_BUT_DELIVERED in states:
        return State.REFUNDED_BUT_DELIVERED
    fully_refunded = bool(payment.amount) and payment.amount_refunded >= (payment.amount or 0)
    if fully_refunded:  # in Stripe, by us or by hand: the money is back, whatever was pulsed
        return State.REFUNDED
    if any(p.state == PartState.UNDELIVERABLE and p.reason.startswith(NOT_CREDITED)
           for p in payment.parts):
        return State.NOT_CREDITED
    for part_state, state in (
        (PartState.UNDELIVERABLE, State.UNDELIVERABLE),
        (PartState.EXPIRED, State.EXPIRED),
        (PartState.PAID, State.PAID),
        (PartState.PUBLISHED, State.PUBLISHED),
        (PartState.RECEIVED, State.RECEIVED),
    ):
        if part_state in states:
            return state
    if PartState.REFUNDED in states:
        return State.REFUNDED
    return State.DONE


# --- the plan ----------------------------------------------------------------------------------
def plan_parts(
    session_id: str,
    credits: int,
    amount: int | None,
    max_per_message: int,
    paid_at: float,
    deadline_s: int,
    grace_s: int,
) -> list[Part]:
    """The part plan of a paid purchase: ids that never change meaning, amounts that add up to
    what was paid, and one deadline for all (None when refunds are off: deadline_s == 0)."""
    expires_at = paid_at + deadline_s if deadline_s else None
    refund_at = expires_at + grace_s if expires_at is not None else None
    count = math.ceil(credits / max_per_message)
    if count > MAX_PARTS:
        return [
            Part(
                session_id,
                credits,
                amount,
                PartState.UNDELIVERABLE,
                "too_many_parts",
                refund_at=paid_at,
            )
        ]
    sizes = [min(max_per_message, credits - n * max_per_message) for n in range(count)]
    ids = [session_id] if count == 1 else [f"{session_id}:{n}" for n in range(1, count + 1)]
    amounts = split_amount(amount, sizes)
    return [
        Part(part_id, size, part_amount, expires_at=expires_at, refund_at=refund_at)
        for part_id, size, part_amount in zip(ids, sizes, amounts, strict=True)
    ]


def split_amount(amount: int | None, sizes: list[int]) -> list[int | None]:
    """Each part's share of the amount, in whole cents, adding up exactly (the last takes the
    remainder)."""
    if amount is None:
        return [None] * len(sizes)
    total = sum(sizes)
    shares = [amount * size // total for size in sizes]
    shares[-1] += amount - sum(shares)
    return shares


def never_deliverable(
    current: Payment | None, payment: Payment, reason: str, now: float
) -> tuple[Payment | None, None]:
    """A paid payment that can reach no cabinet: one part, refunded at the next sweep. A record
    that already has its plan keeps it."""
    if current is not None and current.parts:
        return None, None
    part = Part(
        payment.session_id,
        payment.credits,
        payment.amount,
        PartState.UNDELIVERABLE,
        reason,
        refund_at=now,
    )
    new = copy(current) if current is not None else replace(payment, created_at=now, events=[])
    new.parts, new.paid_at = [part], now
    note(new, now, "paid", detail=f"undeliverable: {reason}")
    return new, None


def planned(
    payment: Payment,
    max_per_message: int = 20,
    now: float = 0.0,
    deadline_s: int = 180,
    grace_s: int = 60,
) -> Payment:
    """`payment` with its part plan (for scripts and tests; the API plans from its settings)."""
    parts = plan_parts(
        payment.session_id,
        payment.credits,
        payment.amount,
        max_per_message,
        now,
        deadline_s,
        grace_s,
    )
    return replace(payment, parts=parts, paid_at=now)


def retryable(part: Part) -> bool:
    """The broker has not taken it, and it is not a part that can never be delivered."""
    if part.state == PartState.PAID:
        return True
    return part.state == PartState.UNDELIVERABLE and part.reason.startswith("0x")


def publishable(part: Part, now: float, resend: bool = False) -> bool:
    """May this part be published now? Only while the broker has not confirmed it (or, on an
    operator's resend, while the cabinet has not), and only before its deadline."""
    if not (retryable(part) or (resend and part.state == PartState.PUBLISHED)):
        return False
    return part.expires_at is None or seconds_left(part, now) >= 1


def seconds_left(part: Part, now: float) -> int:
    """Whole seconds until the part's deadline: its MQTT Message Expiry Interval."""
    return int(part.expires_at - now) if part.expires_at is not None else 0


# --- transitions -------------------------------------------------------------------------------
def note(payment: Payment, now: float, kind: str, part: str = "", detail: str = "") -> None:
    payment.events.append(Event(now, kind, part, detail))
    del payment.events[:-MAX_EVENTS]


def claim(
    current: Payment | None, incoming: Payment, token: str, now: float, lease: float
) -> tuple[Payment | None, Claim]:
    """See `claimed` (this is its answer without the record)."""
    written, (answer, _) = claimed(current, incoming, token, now, lease)
    return written, answer


def claimed(
    current: Payment | None, incoming: Payment, token: str, now: float, lease: float,
    resend: bool = False,
) -> tuple[Payment | None, tuple[Claim, Payment | None]]:
    """Create the record with its plan if new (the plan is stored once: a retry never re-plans),
    then take the lease if there is something to publish (with `resend`, the operator's, also
    parts the broker took but the cabinet has not confirmed)."""
    if current is None:
        payment = replace(incoming, created_at=now, events=[])
        note(payment, now, "paid", detail=plan_detail(payment))
    elif current.state == State.FAILED:
        return None, (Claim.REFUSED, current)
    else:
        payment = copy(current)
        if not payment.parts:  # recorded while awaiting payment, or refunded/disputed first
            payment.parts = incoming.parts
            payment.paid_at = incoming.paid_at
            payment.payment_intent = payment.payment_intent or incoming.payment_intent
            note(payment, now, "paid", detail=plan_detail(payment))
    payment = stripe_facts(payment, now)
    if payment.disputed or summary(payment) == State.REFUNDED:
        return changed(current, payment), (Claim.REFUSED, payment)
    if not any(publishable(part, now, resend) for part in payment.parts):
        if any(retryable(part) for part in payment.parts):
            # Too late to publish: it is refunded instead.
            return changed(current, payment), (Claim.EXPIRED, payment)
        if any(part.state == PartState.UNDELIVERABLE for part in payment.parts):
            return changed(current, payment), (Claim.UNDELIVERABLE, payment)
        return changed(current, payment), (Claim.DUPLICATE, payment)
    if payment.claim_token and payment.claim_token != token:
        if payment.claim_expires is not None and payment.claim_expires > now:
            return changed(current, payment), (Claim.BUSY, payment)
    payment.claim_token, payment.claim_expires = token, now + lease
    return payment, (Claim.CLAIMED, payment)


def plan_detail(payment: Payment) -> str:
    if not payment.parts:
        return ""
    credits = "+".join(str(part.credits) for part in payment.parts)
    return f"{len(payment.parts)} part(s): {credits} credits"


def release(current: Payment | None, token: str, now: float) -> tuple[Payment | None, None]:
    if current is None or current.claim_token != token:
        return None, None
    payment = copy(current)
    payment.claim_token, payment.claim_expires = "", None
    return payment, None


def published(
    current: Payment | None, token: str, results: dict[str, int | None], now: float
) -> tuple[Payment | None, bool]:
    """Record the broker's answer for each part we sent (None: no PUBACK), and give the lease
    back. Returns whether our lease was still ours (else another worker took over meanwhile)."""
    if current is None:
        return None, False
    payment = copy(current)
    for part_id, code in results.items():
        part = payment.part(part_id)
        if part is None or part.state not in UNCONFIRMED or part.tried_at == now:
            continue  # an ack or a refund got here first (or this very call, retried)
        part.attempts += 1
        part.tried_at = now
        if code is None:
            note(payment, now, "no_puback", part.id)
        elif code == 0:
            part.state, part.reason, part.published_at = PartState.PUBLISHED, "", now
            note(payment, now, "published", part.id)
        else:
            reason = reason_text(code)
            if (part.state, part.reason) != (PartState.UNDELIVERABLE, reason):
                note(payment, now, "undeliverable", part.id, reason)
            part.state, part.reason = PartState.UNDELIVERABLE, reason
    ours = payment.claim_token == token
    if ours:
        payment.claim_token, payment.claim_expires = "", None
    elif not payment.claim_token:  # this very call, retried after a lost response?
        ours = all(p.tried_at == now for p in payment.parts if p.id in results)
    return changed(current, payment), ours


def reason_text(code: int) -> str:
    """`0x10 No matching subscribers`: the reason code and its MQTT 5 name."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    try:
        name = ReasonCode(PacketTypes.PUBACK, identifier=code).getName()
    except Exception:  # a code paho does not know
        name = "unknown reason"
    return f"0x{code:02x} {name}"


ACK_STATES = ("received", "done", "expired", "rejected")


def acked(
    current: Payment | None, machine_id: str, part_id: str, state: str, reason: str, now: float
) -> tuple[Payment | None, str]:
    """A cabinet's ack for one part. Only the payment's own cabinet may ack it; an ack never
    moves a part backwards; an ack after our refund is flagged for the operator."""
    if current is None or current.part(part_id) is None:
        return None, "ack_unknown"
    if current.machine_id != machine_id:
        return None, "ack_wrong_machine"
    payment = copy(current)
    part = payment.part(part_id)
    if state in ("received", "done"):
        if part.state == PartState.REFUNDED:
            part.state = PartState.REFUNDED_BUT_DELIVERED
        elif part.state != PartState.REFUNDED_BUT_DELIVERED and (
            state == "done" or part.state != PartState.DONE
        ):
            part.state = PartState.DONE if state == "done" else PartState.RECEIVED
        if part.received_at is None:
            part.received_at = now
        if state == "done" and part.done_at is None:
            part.done_at = now
    elif state == "expired" and part.state in UNCONFIRMED + (PartState.PUBLISHED,):
        part.state, part.reason, part.refund_at = PartState.EXPIRED, "cabinet: expired", now
    elif state == "rejected" and part.state in UNCONFIRMED + (PartState.PUBLISHED,):
        part.state = PartState.UNDELIVERABLE
        part.reason = f"cabinet: {reason or 'rejected'}"
        part.refund_at = now
    if changed(current, payment) is None:
        return None, state  # a repeated ack: nothing new
    detail = part.reason if state in ("expired", "rejected") else ""
    note(payment, now, state, part.id, detail)
    return payment, state


def stripe_refunded(current: Payment | None, amount_refunded: int, now: float):
    """Stripe's `amount_refunded` (cumulative) for this payment: a partial refund is recorded, a
    full one before delivery cancels what was not yet sent."""
    if current is None or amount_refunded <= current.amount_refunded:
        return None, None
    payment = copy(current)
    payment.amount_refunded = amount_refunded
    note(payment, now, "stripe_refunded", detail=money(amount_refunded, payment.currency))
    return stripe_facts(payment, now), None


def stripe_disputed(current: Payment | None, now: float):
    if current is None or current.disputed:
        return None, None
    payment = copy(current)
    payment.disputed = True
    note(payment, now, "disputed")
    return payment, None


def stripe_facts(payment: Payment, now: float) -> Payment:
    """A full refund made in Stripe (not by us) means the parts not yet sent are never sent."""
    full = payment.amount is not None and payment.amount_refunded >= payment.amount
    if full and payment.amount_refunded > payment.refunded_by_us:
        for part in payment.parts:
            if part.state in UNCONFIRMED:
                part.state, part.reason, part.refunded_at = PartState.REFUNDED, "stripe", now
    return payment


def refund_claim(
    current: Payment | None, part_id: str, token: str, now: float, lease: float, force: bool
):
    """Take one part's refund (so two overlapping sweeps refund it once). `force`: the operator's
    refund, before the part's refund_at."""
    part = current.part(part_id) if current else None
    if part is None or part.state not in REFUNDABLE or current.disputed:
        return None, False
    if not force and (part.refund_at is None or part.refund_at > now):
        return None, False
    if part.refund_token and part.refund_expires and part.refund_expires > now:
        return None, part.refund_token == token
    payment = copy(current)
    held = payment.part(part_id)
    held.refund_token, held.refund_expires = token, now + lease
    return payment, True


def refunded(
    current: Payment | None, part_id: str, token: str, refund_id: str, amount: int, now: float
):
    """Our refund of one part went through in Stripe. If the cabinet confirmed the part
    meanwhile, the money went back anyway: refunded_but_delivered, for the operator."""
    part = current.part(part_id) if current else None
    if part is None or part.state == PartState.REFUNDED:
        return None, None
    if refund_id and part.refund_id == refund_id:
        return None, None  # this very refund, recorded already
    payment = copy(current)
    part = payment.part(part_id)
    if part.state in DELIVERED:
        part.state = PartState.REFUNDED_BUT_DELIVERED
    else:
        part.state = PartState.REFUNDED
    part.refunded_at, part.refund_id, part.refunded_amount = now, refund_id, amount
    part.refund_token, part.refund_expires = "", None
    note(payment, now, "refunded", part.id, f"{money(amount, payment.currency)} {refund_id}")
    return payment, None


def refund_failed(
    current: Payment | None, part_id: str, token: str, error: str, now: float, retry_s: float = 60
):
    """Stripe refused or could not be reached: tried again after `retry_s` (the same failure is
    noted once, not at every sweep)."""
    part = current.part(part_id) if current else None
    if part is None or part.refund_token != token:
        return None, None
    payment = copy(current)
    part = payment.part(part_id)
    part.refund_token, part.refund_expires = "", None
    part.refund_at = now + retry_s
    last = payment.events[-1] if payment.events else None
    if last is None or (last.kind, last.part, last.detail) != ("refund_failed", part_id, error):
        note(payment, now, "refund_failed", part.id, error[:200])
    return payment, None


def noted(current: Payment | None, kind: str, detail: str, now: float):
    """Add one event to the timeline (an operator's action, a failed publish...)."""
    if current is None:
        return None, None
    payment = copy(current)
    note(payment, now, kind, detail=detail)
    return payment, None


def money(cents: int | None, currency: str | None) -> str:
    if cents is None:
        return "-"
    return f"{cents / 100:.2f} {(currency or '').upper()}".strip()


# --- plumbing ----------------------------------------------------------------------------------
def copy(payment: Payment) -> Payment:
    return from_dict(to_dict(payment))


def changed(before: Payment | None, after: Payment) -> Payment | None:
    """`after` if it differs from `before` (else None: nothing to write)."""
    return None if before is not None and to_dict(before) == to_dict(after) else after


def finish(payment: Payment, now: float) -> Payment:
    """Before every write: the derived state and the time."""
    payment.state = summary(payment)
    payment.updated_at = now
    return payment


def to_dict(payment: Payment) -> dict[str, Any]:
    """Plain values (enums are str); shallow copies are enough: every field is a value or a list
    of Part/Event, themselves of values. (dataclasses.asdict deep-copies: ~50x slower.)"""
    raw = dict(vars(payment))
    raw["parts"] = [dict(vars(part)) for part in payment.parts]
    raw["events"] = [dict(vars(event)) for event in payment.events]
    return raw


def from_dict(raw: dict[str, Any]) -> Payment:
    known = {f.name for f in fields(Payment)}
    values = {k: v for k, v in raw.items() if k in known}
    values["state"] = State(values.get("state", State.PENDING))
    part_fields = {f.name for f in fields(Part)}
    values["parts"] = [
        Part(**{k: v for k, v in part.items() if k in part_fields})
        for part in raw.get("parts") or []
    ]
    for part in values["parts"]:
        part.state = PartState(part.state)
    values["events"] = [Event(**event) for event in raw.get("events") or []]
    return Payment(**values)


def dumps(payment: Payment) -> str:
    return json.dumps(to_dict(payment), separators=(",", ":"))


def loads(text: str) -> Payment:
    return from_dict(json.loads(text))
