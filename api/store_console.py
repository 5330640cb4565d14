"""What the operators' console keeps in the ledger, beside the payments: operator accounts,
sign-in failures (rate limit), the audit log, alert incidents, retired cabinets, game-over counts
and precomputed money totals per cabinet and period.

Totals are kept up to date by `count_money(payment)`, which is idempotent: the ledger remembers
what it has already counted for each payment (gross, refunded, disputed) and adds only the
difference, in one transaction with the totals. Calling it again after any change of a payment's
money (paid, refunded, disputed) — or twice, from two workers — never counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from api.store import Payment

COMP_PREFIX = "comp_"  # manual credits from the console: their own id space, never a Stripe id
GRANULARITIES = ("day", "week", "month")
# States in which the player's money was taken (a failed or unpaid checkout took nothing).
UNPAID = ("pending", "failed")
# Payments an operator must look at (the alert sweep and the fleet's problems).
PROBLEM_STATES = ("undeliverable", "refunded_but_delivered", "disputed")
# Parts paid and not on the cabinet yet: credits the fleet still owes.
UNDELIVERED_PARTS = ("paid", "published", "undeliverable")
UNDELIVERED_STATES = ("paid", "published", "undeliverable")


@dataclass
class Operator:
    name: str
    created_at: float
    source: str = "ledger"  # or "setting" (CONSOLE_OPERATORS)


@dataclass
class AuditEntry:
    at: float
    operator: str
    action: str  # resend / refund / comp / retire / unretire / sign_in / sign_out
    subject: str  # a session id, comp id or machine id
    reason: str = ""
    result: str = ""


@dataclass
class Incident:
    key: str  # one incident, one key: an alert is sent once per key
    kind: str  # offline_owed / undeliverable / refunded_but_delivered / disputed
    subject: str  # machine id or session id
    message: str
    opened_at: float
    sent_at: float | None = None
    send_error: str = ""


@dataclass
class LastPayment:
    machine_id: str
    at: float
    session_id: str
    amount: int | None
    currency: str


@dataclass
class Total:
    """Money and counts of one cabinet (or "*" for the fleet) in one period and currency."""

    machine_id: str
    period: str  # 2026-12-01 (day), 2026-11-30 (week: its Monday), 2026-12 (month)
    currency: str  # "" for rows without money (comp credits, game overs)
    gross: int = 0  # cents
    refunded: int = 0
    disputed: int = 0
    payments: int = 0
    credits: int = 0  # paid credits
    comp_credits: int = 0
    gameovers: int = 0

    @property
    def net(self) -> int:
        return self.gross - self.refunded - self.disputed


@dataclass(frozen=True)
class Money:
    """What one payment contributes to the totals, now."""

    currency: str
    gross: int = 0
    refunded: int = 0
    disputed: int = 0
    payments: int = 0
    credits: int = 0
    comp_credits: int = 0

    def minus(self, other: Money) -> Money:
        return Money(
            self.currency,
            *(getattr(self, name) - getattr(other, name) for name in MONEY_FIELDS),
        )

    def is_zero(self) -> bool:
        return all(getattr(self, name) == 0 for name in MONEY_FIELDS)


MONEY_FIELDS = ("gross", "refunded", "disputed", "payments", "credits", "comp_credits")


@dataclass(frozen=True)
class Periods:
    """The day, week and month a moment falls in, in the console's time zone."""

    day: str
    week: str
    month: str
    day_start: float  # epoch seconds of the day's start (DynamoDB's sort key for series)
    week_start: float
    month_start: float

    def key(self, granularity: str) -> str:
        return getattr(self, granularity)

    def start(self, granularity: str) -> float:
        return getattr(self, f"{granularity}_start")


def periods_of(timestamp: float, tz: ZoneInfo) -> Periods:
    local = datetime.fromtimestamp(timestamp, UTC).astimezone(tz)
    day = local.date()
    monday = day - timedelta(days=day.weekday())
    first = day.replace(day=1)
    return Periods(
        day=day.isoformat(),
        week=monday.isoformat(),
        month=first.strftime("%Y-%m"),
        day_start=start_of(day, tz),
        week_start=start_of(monday, tz),
        month_start=start_of(first, tz),
    )


def start_of(day: date, tz: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def is_comp(session_id: str) -> bool:
    return session_id.startswith(COMP_PREFIX)


def money_of(payment: Payment) -> Money:
    """Paid amount, refunds and disputes of a payment as the ledger knows it now."""
    if is_comp(payment.session_id):
        return Money("", comp_credits=payment.credits)
    if payment.paid_at is None or payment.amount is None:
        return Money((payment.currency or "").lower())  # not paid (pending, failed)
    amount = payment.amount
    refunded = min(amount, max(payment.amount_refunded, payment.refunded_by_us))
    disputed = amount - refunded if payment.disputed else 0
    return Money(
        (payment.currency or "").lower(),
        gross=amount,
        refunded=refunded,
        disputed=disputed,
        payments=1,
        credits=payment.credits,
    )


def owed_credits_of(payment: Payment) -> int:
    """Credits of the parts that are paid but not on the cabinet."""
    return sum(part.credits for part in payment.parts if str(part.state) in UNDELIVERED_PARTS)


@dataclass
class PaymentQuery:
    """The payments search: every field optional; newest first."""

    machine_id: str | None = None
    state: str | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 100


class AfterChange:
    """Mixed into both stores: after any change of a payment (store.update), count its money and
    open an incident if it needs an operator. Idempotent; a failure is logged and never fails
    the change itself (the totals can be recounted: `count_money` of the session again)."""

    console_zone: ZoneInfo = ZoneInfo("UTC")  # set from ARCADE_TIMEZONE by services.init_app

    def _after_change(self, session_id: str) -> None:
        import logging
        import time

        from api.alerts import open_payment_incident

        try:
            self.count_money(session_id, self.console_zone)
            payment = self.get(session_id)
            if payment is not None:
                open_payment_incident(self, payment, time.time())
        except Exception as error:
            logging.getLogger("arcade.bookkeeping").error(
                "bookkeeping of %s failed: %s: %s", session_id, type(error).__name__, error)


class PaymentLists:
    """Mixed into both stores: the console's lists of payments, built on the store's own
    `payments(...)` query (its indexes on each store)."""

    owed_scan_limit = 10_000  # payments read per undelivered state for the fleet's owed credits

    def payments_between(self, machine_id: str, start: float, end: float) -> list[Payment]:
        return self.payments(machine_id=machine_id, since=start, until=end, limit=5000)

    def owed_by_cabinet(self, since: float) -> dict[str, int]:
        owed: dict[str, int] = {}
        for state in UNDELIVERED_STATES:
            for payment in self.payments(state=state, since=since, limit=self.owed_scan_limit):
                owed[payment.machine_id] = owed.get(payment.machine_id, 0) + owed_credits_of(
                    payment)
        return {machine: credits for machine, credits in owed.items() if credits}

    def owed_credits(self, machine_id: str, since: float) -> int:
        payments = self.payments(machine_id=machine_id, since=since, limit=1000)
        return sum(owed_credits_of(p) for p in payments if str(p.state) in UNDELIVERED_STATES)

    def search_payments(self, query: PaymentQuery) -> list[Payment]:
        return self.payments(machine_id=query.machine_id, state=query.state, since=query.start,
                             until=query.end, limit=query.limit)

    def problem_payments(self, since: float, limit: int = 200) -> list[Payment]:
        found: list[Payment] = []
        for state in PROBLEM_STATES:
            found += self.payments(state=state, since=since, limit=limit)
        return sorted(found, key=lambda p: p.created_at, reverse=True)[:limit]


class ConsoleStore(Protocol):
    # operators (`arcade operator add`)
    def put_operator(self, name: str, password_hash: str, now: float) -> None: ...
    def operator_hash(self, name: str) -> str | None: ...
    def operators(self) -> list[Operator]: ...
    def remove_operator(self, name: str) -> bool: ...

    # sign-in rate limit: failures per key in a fixed window
    def count_failure(self, key: str, window: int, expires: float) -> int: ...
    def failures(self, key: str, window: int) -> int: ...

    # audit log
    def add_audit(self, entry: AuditEntry) -> None: ...
    def audit_log(self, limit: int = 200) -> list[AuditEntry]: ...

    # alerts: an incident is opened once (False when the key is known)
    def open_incident(self, incident: Incident) -> bool: ...
    def claim_incident(self, key: str, now: float) -> bool:
        """Take the sending of an incident's alert (False: another sweep has it, or it was sent)."""

    def incident_failed(self, key: str, error: str) -> None:
        """The alert could not be sent: the next sweep tries again."""

    def incidents(self, limit: int = 100) -> list[Incident]: ...

    # cabinets
    def set_retired(self, machine_id: str, retired: bool, now: float) -> None: ...
    def retired(self) -> set[str]: ...
    def count_gameover(self, machine_id: str, periods: Periods) -> None: ...

    def payments_between(self, machine_id: str, start: float, end: float) -> list[Payment]: ...
    def last_payments(self) -> dict[str, LastPayment]:
        """Each cabinet's newest paid payment (kept up to date by count_money)."""

    def owed_by_cabinet(self, since: float) -> dict[str, int]:
        """Credits paid since `since` and not delivered yet, per cabinet."""

    def owed_credits(self, machine_id: str, since: float) -> int:
        """Credits of this cabinet's payments since `since` that are paid but not delivered."""

    # money
    def count_money(self, session_id: str, tz: ZoneInfo) -> None:
        """Bring the totals in line with the payment as it is now (idempotent)."""

    def period_totals(self, granularity: str, period: str) -> list[Total]:
        """Every cabinet's totals in one period (one row per cabinet and currency)."""

    def fleet_series(self, granularity: str, first: Periods, last: Periods) -> list[Total]:
        """The fleet's totals per period from first to last (machine_id "*")."""

    def cabinet_series(self, machine_id: str, granularity: str, periods: list[str]) -> list[Total]:
        """One cabinet's totals in the given periods."""

    # payments
    def search_payments(self, query: PaymentQuery) -> list[Payment]: ...
    def problem_payments(self, since: float, limit: int = 200) -> list[Payment]:
        """Payments an operator must look at (undeliverable, refunded but delivered, disputed),
        newest first, created after `since`."""
