"""The ledger's storage: one durable record per Checkout Session (with its part plan, part states
and timeline), plus cabinets, payment links, what Stripe said about a payment intent, and the
delivery processes' heartbeats.

A store provides ONE primitive for payments, `update(session_id, change, now)`: read the record,
apply the pure function `change` (api/ledger.py), write the result if it changed — atomically
(SQLite: one IMMEDIATE transaction; DynamoDB: a conditional write on the record's version,
retried). Everything else a payment goes through (claim, publish results, acks, refunds) is that
primitive with one of ledger.py's transitions, here in `LedgerOps`, shared by both stores.

Reads for the operator (`payments`, `get`, `events`, `undelivered`, `cabinets`, `heartbeats`)
use indexes on both stores: no scan of the whole ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from api import ledger
from api.ledger import (  # noqa: F401  (the ledger's vocabulary, importable from here)
    OPEN_STATES,
    Claim,
    Event,
    Part,
    PartState,
    Payment,
    State,
    planned,
)

T = TypeVar("T")
Change = Callable[[Payment | None], tuple[Payment | None, T]]


@dataclass
class Link:
    """A cabinet's Stripe Payment Link for one price, and when Stripe last confirmed it."""

    url: str
    link_id: str = ""  # plink_…; empty for links cached before ids were kept
    checked_at: float = 0.0


@dataclass
class Cabinet:
    """What the ledger last heard from a cabinet: its retained status, and any message since."""

    machine_id: str
    state: str  # "online" / "offline"
    last_seen: float
    firmware: str = ""
    pending_credits: int = 0
    problem: str = ""  # e.g. "pulse_repeat_cap", from the cabinet's status
    detail: str = ""


@dataclass
class Heartbeat:
    """A delivery process saying it is alive (`listener`, `sweep`), with its counters."""

    name: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntentNote:
    """What Stripe told us about a payment intent, kept even before its session is known (a
    refund or dispute may arrive before `checkout.session.completed`)."""

    payment_intent: str
    session_id: str = ""
    amount_refunded: int = 0
    disputed: bool = False


class Store(Protocol):
    # --- payments: the one primitive, and reads ----------------------------------------------
    def update(self, session_id: str, change: Change[T], now: float, durable: bool = True) -> T:
        """Apply `change` to the record atomically; write what it returns unless None. With
        `durable` (the default) the write is on disk before this returns; without, it may be
        lost on a power cut until the next durable write (only for writes that nobody outside
        hears about before a durable one follows: the claim)."""

    def insert_new(self, payment: Payment, now: float) -> bool:
        """Write `payment` only if there is no record yet (one request, not synced: the claim's
        fast path); False if one exists."""

    def get(self, session_id: str) -> Payment | None: ...

    def payments(
        self,
        machine_id: str | None = None,
        state: State | str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        """Newest first, filtered by cabinet, state and created_at in [since, until)."""

    def due(self, now: float, limit: int = 100) -> list[Payment]:
        """Payments the sweep should look at now (a part to publish again or to refund)."""

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None: ...

    def note_intent(
        self,
        payment_intent: str,
        session_id: str = "",
        amount_refunded: int = 0,
        disputed: bool = False,
    ) -> IntentNote:
        """Merge facts about a payment intent (first session id wins, the largest refund, a
        dispute stays) and return everything known."""

    # --- links, cabinets, heartbeats --------------------------------------------------------
    def link(self, machine_id: str, price_id: str) -> Link | None: ...

    def save_link(
        self, machine_id: str, price_id: str, link: Link, replacing: str | None = None
    ) -> Link:
        """Store a link if there is none (replacing=None) or if the stored one still has the url
        `replacing`; returns the stored link (of two concurrent writers, the first wins)."""

    def cabinet_seen(self, cabinet: Cabinet) -> None:
        """Remember a cabinet's latest status (one record per cabinet, last write wins)."""

    def cabinet_heard(self, machine_id: str, now: float) -> None:
        """Any message from the cabinet (an ack): it is alive now; keep the rest."""

    def cabinets(self) -> list[Cabinet]:
        """Every cabinet heard from, by machine id."""

    def heartbeat(self, beat: Heartbeat) -> None: ...

    def heartbeats(self) -> list[Heartbeat]: ...

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


class LedgerOps:
    """What happens to a payment, for both stores: each operation is `update` with one of
    ledger.py's transitions. Mixed into SQLiteStore and DynamoDBStore."""

    def update(
        self, session_id: str, change: Change[T], now: float, durable: bool = True
    ) -> T:  # pragma: no cover
        raise NotImplementedError

    def insert_new(self, payment: Payment, now: float) -> bool:  # pragma: no cover
        raise NotImplementedError

    def get(self, session_id: str) -> Payment | None:  # pragma: no cover
        raise NotImplementedError

    def payments(self, *args, **kwargs) -> list[Payment]:  # pragma: no cover
        raise NotImplementedError

    # --- crediting ------------------------------------------------------------------------
    def claim(self, payment: Payment, token: str, now: float, lease_seconds: float) -> Claim:
        """Create the record with its plan if new, then take the lease if a part may be
        published now. `payment` carries the plan (ledger.plan_parts); an existing record keeps
        the plan it has."""
        return self.take(payment, token, now, lease_seconds)[0]

    def take(
        self, payment: Payment, token: str, now: float, lease_seconds: float,
        resend: bool = False,
    ) -> tuple[Claim, Payment | None]:
        """`claim`, and the record as it is after it (no second read before publishing)."""
        # Not synced: if a power cut takes the claim, Stripe has had no answer and retries; the
        # publish results that end this delivery are (api/crediting.py).
        new, (answer, record) = ledger.claimed(None, payment, token, now, lease_seconds, resend)
        if new is not None and self.insert_new(ledger.finish(new, now), now):
            # The first delivery: one write before the publish. The console's totals wait for
            # the publish's update (or, if we die first, for Stripe's retry's).
            return answer, record
        return self.update(
            payment.session_id,
            lambda current: ledger.claimed(current, payment, token, now, lease_seconds, resend),
            now,
            durable=False,
        )

    def published(
        self, session_id: str, token: str, results: dict[str, int | None], now: float
    ) -> bool:
        """The broker's reason code per part sent (None: no PUBACK); gives the lease back.
        False if the lease had been lost to another worker."""
        return self.update(
            session_id, lambda current: ledger.published(current, token, results, now), now
        )

    def release(self, session_id: str, token: str, now: float) -> None:
        """Give the lease back at once (publishing failed) so the retry need not wait."""
        self.update(session_id, lambda current: ledger.release(current, token, now), now)

    def record(self, payment: Payment, now: float) -> bool:
        """Insert a record that is not being credited now (awaiting payment, or a paid one that
        can reach no cabinet); never overwrites. True if it was new."""

        def insert(current: Payment | None):
            if current is not None:
                return None, False
            new = replace(payment, created_at=now, events=[])
            detail = new.parts[0].reason if new.parts else ""
            ledger.note(new, now, "paid" if new.parts else str(new.state), detail=detail)
            return new, True

        return self.update(payment.session_id, insert, now)

    def never_deliverable(self, payment: Payment, reason: str, now: float) -> None:
        """Paid, but it can reach no cabinet: one undeliverable part, refunded at once."""
        self.update(
            payment.session_id,
            lambda current: ledger.never_deliverable(current, payment, reason, now),
            now,
        )

    def mark_failed(self, session_id: str, now: float) -> bool:
        """An async payment failed: recorded, unless something was already sent."""

        def fail(current: Payment | None):
            if current is None or current.parts:
                return None, False
            payment = ledger.copy(current)
            payment.state = State.FAILED
            ledger.note(payment, now, "failed")
            return payment, True

        return self.update(session_id, fail, now)

    # --- delivery ---------------------------------------------------------------------------
    def ack(self, machine_id: str, part_id: str, state: str, reason: str, now: float) -> str:
        session_id = part_id.split(":", 1)[0]
        return self.update(
            session_id,
            lambda current: ledger.acked(current, machine_id, part_id, state, reason, now),
            now,
        )

    # --- what Stripe says ---------------------------------------------------------------------
    def stripe_refunded(self, session_id: str, amount_refunded: int, now: float) -> None:
        self.update(
            session_id, lambda current: ledger.stripe_refunded(current, amount_refunded, now), now
        )

    def stripe_disputed(self, session_id: str, now: float) -> None:
        self.update(session_id, lambda current: ledger.stripe_disputed(current, now), now)

    # --- refunds ------------------------------------------------------------------------------
    def refund_claim(
        self,
        session_id: str,
        part_id: str,
        token: str,
        now: float,
        lease_seconds: float,
        force: bool = False,
    ) -> bool:
        """Take one part's refund; False if it is not due, not refundable or another sweep
        holds it."""
        return self.update(
            session_id,
            lambda current: ledger.refund_claim(current, part_id, token, now, lease_seconds, force),
            now,
        )

    def refunded(
        self, session_id: str, part_id: str, token: str, refund_id: str, amount: int, now: float
    ) -> None:
        self.update(
            session_id,
            lambda current: ledger.refunded(current, part_id, token, refund_id, amount, now),
            now,
        )

    def refund_failed(
        self, session_id: str, part_id: str, token: str, error: str, now: float
    ) -> None:
        self.update(
            session_id,
            lambda current: ledger.refund_failed(current, part_id, token, error, now),
            now,
        )

    def noted(self, session_id: str, kind: str, detail: str, now: float) -> None:
        """One event on the payment's timeline (an operator's action, ...)."""
        self.update(session_id, lambda current: ledger.noted(current, kind, detail, now), now)

    # --- reads built on the others ------------------------------------------------------------
    def events(self, session_id: str) -> list[Event]:
        payment = self.get(session_id)
        return payment.events if payment else []

    def undelivered(self, machine_id: str | None = None, limit: int = 1000) -> list[Payment]:
        """Everything paid and not done (nor refunded), newest first."""
        found: list[Payment] = []
        for state in OPEN_STATES:
            found += self.payments(machine_id=machine_id, state=state, limit=limit)
        found.sort(key=lambda payment: payment.created_at, reverse=True)
        return found[:limit]

    def heartbeat_of(self, name: str) -> Heartbeat | None:
        return next((beat for beat in self.heartbeats() if beat.name == name), None)


def open_store(url: str) -> Store:
    """`sqlite:///path/arcade.db` or `dynamodb://TABLE` (boto3 reads AWS settings itself)."""
    if url.startswith("sqlite:///"):
        from api.store_sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith("dynamodb://"):
        from api.store_dynamodb import DynamoDBStore

        return DynamoDBStore(url.removeprefix("dynamodb://"))
    raise ValueError(f"unknown STORE_URL {url!r}: use sqlite:///PATH or dynamodb://TABLE")
