"""The ledger: one durable record per Checkout Session, and the payment links we created.

Exactly-once publishing rests on `claim`: a worker may publish a session's coinpulse only while it
holds an unexpired claim (a lease) on a session that is not yet published. Two implementations
share this contract and its tests: SQLite (default, one machine) and DynamoDB (Lambda).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class State(enum.StrEnum):
    PENDING = "pending"  # completed but not paid yet (async payment methods)
    CLAIMED = "claimed"  # a worker is publishing it now
    PUBLISHED = "published"  # the broker confirmed the coinpulse (PUBACK)
    ACKED = "acked"  # the cabinet reported its pulses done
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    FAILED = "failed"  # async payment failed: nothing to credit
    NOT_CREDITED = "not_credited"  # paid, but CURRENCY / ALLOW_FREE_CREDITS credit nothing


# States in which a coinpulse may (still) be published.
CREDITABLE = (State.PENDING, State.CLAIMED)


class Claim(enum.StrEnum):
    CLAIMED = "claimed"  # the caller holds the lease and must publish, then mark or release
    DUPLICATE = "duplicate"  # already published: do nothing
    BUSY = "busy"  # another worker holds a live lease: tell Stripe to retry later
    REFUSED = "refused"  # refunded/disputed/failed before it was credited: never publish


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
    published_at: float | None = None
    acked_at: float | None = None


@dataclass
class Link:
    """A cabinet's Stripe Payment Link for one price, and when Stripe last confirmed it."""

    url: str
    link_id: str = ""  # plink_…; empty for links cached before ids were kept
    checked_at: float = 0.0


@dataclass
class Cabinet:
    """What the ledger last heard from a cabinet (its retained status)."""

    machine_id: str
    state: str  # "online" / "offline"
    last_seen: float
    firmware: str = ""
    pending_credits: int = 0


class Store(Protocol):
    def claim(self, payment: Payment, token: str, now: float, lease_seconds: float) -> Claim:
        """Create the record if new, then take the lease if the session may be published."""

    def mark_published(self, session_id: str, token: str, now: float) -> bool:
        """Published under our lease; False if the lease was lost (someone else took over)."""

    def release(self, session_id: str, token: str, now: float) -> None:
        """Give the lease back at once (publishing failed) so the retry need not wait."""

    def record(self, payment: Payment, now: float) -> None:
        """Insert or refresh a record that is not being credited now (e.g. awaiting payment)."""

    def mark(self, session_id: str, state: State, now: float) -> bool:
        """Refunded / disputed / failed / acked; False if there is no such session."""

    def get(self, session_id: str) -> Payment | None: ...

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None: ...

    def payments(self, machine_id: str | None = None, limit: int = 100) -> list[Payment]: ...

    def link(self, machine_id: str, price_id: str) -> Link | None: ...

    def save_link(
        self, machine_id: str, price_id: str, link: Link, replacing: str | None = None
    ) -> Link:
        """Store a link if there is none (replacing=None) or if the stored one still has the url
        `replacing`; returns the stored link (of two concurrent writers, the first wins)."""

    def cabinet_seen(self, cabinet: Cabinet) -> None:
        """Remember a cabinet's latest status (one record per cabinet, last write wins)."""

    def cabinets(self) -> list[Cabinet]:
        """Every cabinet heard from, by machine id."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


def why_not_claimed(current: Payment | None) -> Claim:
    """Why a claim did not succeed, from the record as it is now (both stores agree on this)."""
    if current is None or current.state == State.CLAIMED:
        return Claim.BUSY
    if current.published_at is not None:
        return Claim.DUPLICATE
    return Claim.REFUSED


def open_store(url: str) -> Store:
    """`sqlite:///path/arcade.db` or `dynamodb://TABLE` (boto3 reads AWS settings itself)."""
    if url.startswith("sqlite:///"):
        from api.store_sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith("dynamodb://"):
        from api.store_dynamodb import DynamoDBStore

        return DynamoDBStore(url.removeprefix("dynamodb://"))
    raise ValueError(f"unknown STORE_URL {url!r}: use sqlite:///PATH or dynamodb://TABLE")
