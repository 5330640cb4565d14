"""The console's tables in the SQLite ledger (see api/store_console.py), mixed into SQLiteStore.

Money totals are one row per (day, cabinet, currency); weeks and months are sums of days in SQL
(a month of a thousand cabinets is ~31,000 small rows read through an index).
"""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from api.store import Payment
from api.store_console import (
    MONEY_FIELDS,
    AfterChange,
    AuditEntry,
    Incident,
    LastPayment,
    Money,
    Operator,
    PaymentLists,
    Periods,
    Total,
    money_of,
    periods_of,
)

CONSOLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key     TEXT NOT NULL,
    window  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, window)
);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    operator TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    result   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS incidents (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    message    TEXT NOT NULL,
    opened_at  REAL NOT NULL,
    sent_at    REAL,
    send_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS retired (
    machine_id TEXT PRIMARY KEY,
    at         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS money_counted (
    session_id   TEXT PRIMARY KEY,
    currency     TEXT NOT NULL,
    gross        INTEGER NOT NULL,
    refunded     INTEGER NOT NULL,
    disputed     INTEGER NOT NULL,
    payments     INTEGER NOT NULL,
    credits      INTEGER NOT NULL,
    comp_credits INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS daily_totals (
    day          TEXT NOT NULL,
    machine_id   TEXT NOT NULL,
    currency     TEXT NOT NULL,
    week         TEXT NOT NULL,
    month        TEXT NOT NULL,
    gross        INTEGER NOT NULL DEFAULT 0,
    refunded     INTEGER NOT NULL DEFAULT 0,
    disputed     INTEGER NOT NULL DEFAULT 0,
    payments     INTEGER NOT NULL DEFAULT 0,
    credits      INTEGER NOT NULL DEFAULT 0,
    comp_credits INTEGER NOT NULL DEFAULT 0,
    gameovers    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, machine_id, currency)
);
CREATE INDEX IF NOT EXISTS daily_by_machine ON daily_totals (machine_id, day);
CREATE INDEX IF NOT EXISTS daily_by_week ON daily_totals (week);
CREATE INDEX IF NOT EXISTS daily_by_month ON daily_totals (month);
CREATE TABLE IF NOT EXISTS last_payments (
    machine_id TEXT PRIMARY KEY,
    at         REAL NOT NULL,
    session_id TEXT NOT NULL,
    amount     INTEGER,
    currency   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_by_created ON payments (created_at);
CREATE INDEX IF NOT EXISTS payments_by_state ON payments (state, created_at);
"""

FLEET = "*"  # the fleet's own rows: its series is read without summing every cabinet
_SUMS = ", ".join(f"sum({name}) AS {name}" for name in (*MONEY_FIELDS, "gameovers"))
_COUNTERS = (*MONEY_FIELDS, "gameovers")


class ConsoleSQLite(AfterChange, PaymentLists):
    """Mixin for SQLiteStore: needs its `_execute` and `_connection`."""

    def _console_schema(self) -> None:
        self._connection().executescript(CONSOLE_SCHEMA)

    # --- operators --------------------------------------------------------------------------
    def put_operator(self, name: str, password_hash: str, now: float) -> None:
        self._execute(
            "INSERT INTO operators (name, password_hash, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
            (name, password_hash, now),
        )

    def operator_hash(self, name: str) -> str | None:
        row = self._execute(
            "SELECT password_hash FROM operators WHERE name = ?", (name,)
        ).fetchone()
        return row["password_hash"] if row else None

    def operators(self) -> list[Operator]:
        rows = self._execute("SELECT name, created_at FROM operators ORDER BY name")
        return [Operator(row["name"], row["created_at"]) for row in rows]

    def remove_operator(self, name: str) -> bool:
        return self._execute("DELETE FROM operators WHERE name = ?", (name,)).rowcount == 1

    # --- sign-in limit ----------------------------------------------------------------------
    def count_failure(self, key: str, window: int, expires: float) -> int:
        self._execute("DELETE FROM login_failures WHERE expires < ?", (expires - 86400,))
        row = self._execute(
            "INSERT INTO login_failures (key, window, count, expires) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (key, window) DO UPDATE SET count = count + 1 RETURNING count",
            (key, window, expires),
        ).fetchone()
        return row["count"]

    def failures(self, key: str, window: int) -> int:
        row = self._execute(
            "SELECT count FROM login_failures WHERE key = ? AND window = ?", (key, window)
        ).fetchone()
        return row["count"] if row else 0

    # --- audit ------------------------------------------------------------------------------
    def add_audit(self, entry: AuditEntry) -> None:
        self._execute(
            "INSERT INTO audit (at, operator, action, subject, reason, result)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (entry.at, entry.operator, entry.action, entry.subject, entry.reason, entry.result),
        )

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        rows = self._execute(
            "SELECT at, operator, action, subject, reason, result FROM audit"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditEntry(**dict(row)) for row in rows]

    # --- incidents --------------------------------------------------------------------------
    def open_incident(self, incident: Incident) -> bool:
        cursor = self._execute(
            "INSERT INTO incidents (key, kind, subject, message, opened_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING",
            (incident.key, incident.kind, incident.subject, incident.message, incident.opened_at),
        )
        return cursor.rowcount == 1

    def claim_incident(self, key: str, now: float) -> bool:
        cursor = self._execute(
            "UPDATE incidents SET sent_at = ?, send_error = '' WHERE key = ? AND sent_at IS NULL",
            (now, key),
        )
        return cursor.rowcount == 1

    def incident_failed(self, key: str, error: str) -> None:
        self._execute(
            "UPDATE incidents SET sent_at = NULL, send_error = ? WHERE key = ?", (error, key)
        )

    def incidents(self, limit: int = 100) -> list[Incident]:
        rows = self._execute(
            "SELECT key, kind, subject, message, opened_at, sent_at, send_error FROM incidents"
            " ORDER BY opened_at DESC LIMIT ?",
            (limit,),
        )
        return [Incident(**dict(row)) for row in rows]

    # --- cabinets ---------------------------------------------------------------------------
    def set_retired(self, machine_id: str, retired: bool, now: float) -> None:
        if retired:
            self._execute(
                "INSERT INTO retired (machine_id, at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (machine_id, now),
            )
        else:
            self._execute("DELETE FROM retired WHERE machine_id = ?", (machine_id,))

    def retired(self) -> set[str]:
        return {row["machine_id"] for row in self._execute("SELECT machine_id FROM retired")}

    def count_gameover(self, machine_id: str, periods: Periods) -> None:
        self._add_to_day(machine_id, periods, "", {"gameovers": 1})

    # --- money ------------------------------------------------------------------------------
    def count_money(self, session_id: str, tz: ZoneInfo) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")  # the payment is read inside: no stale state
        try:
            payment = self.get(session_id)
            if payment is not None:
                self._count_locked(payment, tz)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _count_locked(self, payment: Payment, tz: ZoneInfo) -> None:
        target = money_of(payment)
        row = self._execute(
            "SELECT * FROM money_counted WHERE session_id = ?", (payment.session_id,)
        ).fetchone()
        before = Money(target.currency) if row is None else _money(row)
        delta = target.minus(before)
        if delta.is_zero():
            return
        periods = periods_of(payment.created_at, tz)
        self._add_to_day(
            payment.machine_id, periods, target.currency,
            {name: getattr(delta, name) for name in MONEY_FIELDS},
        )
        if delta.payments > 0:
            self._execute(
                "INSERT INTO last_payments (machine_id, at, session_id, amount, currency)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET at = excluded.at,"
                " session_id = excluded.session_id, amount = excluded.amount,"
                " currency = excluded.currency WHERE excluded.at > last_payments.at",
                (payment.machine_id, payment.created_at, payment.session_id, payment.amount,
                 target.currency),
            )
        self._execute(
            "INSERT OR REPLACE INTO money_counted (session_id, currency, gross, refunded, disputed,"
            " payments, credits, comp_credits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (payment.session_id, target.currency,
             *(getattr(target, name) for name in MONEY_FIELDS)),
        )

    def _add_to_day(self, machine_id: str, periods: Periods, currency: str, add: dict) -> None:
        """The cabinet's row and the fleet's row ("*") of that day and currency."""
        for owner in (machine_id, FLEET):
            self._add_to_row(owner, periods, currency, add)

    def _add_to_row(self, machine_id: str, periods: Periods, currency: str, add: dict) -> None:
        names = ", ".join(add)
        marks = ", ".join(f":{name}" for name in add)
        updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in add)
        self._execute(
            f"INSERT INTO daily_totals (day, machine_id, currency, week, month, {names})"
            f" VALUES (:day, :machine_id, :currency, :week, :month, {marks})"
            f" ON CONFLICT (day, machine_id, currency) DO UPDATE SET {updates}",
            {"day": periods.day, "machine_id": machine_id, "currency": currency,
             "week": periods.week, "month": periods.month, **add},
        )

    def period_totals(self, granularity: str, period: str) -> list[Total]:
        column = _period_column(granularity)
        rows = self._execute(
            f"SELECT machine_id, currency, {_SUMS} FROM daily_totals WHERE {column} = ?"
            " AND machine_id != ? GROUP BY machine_id, currency ORDER BY machine_id, currency",
            (period, FLEET),
        )
        return [_total(row, period) for row in rows]

    def fleet_series(self, granularity: str, first: Periods, last: Periods) -> list[Total]:
        column = _period_column(granularity)
        rows = self._execute(
            f"SELECT {column} AS period, currency, {_SUMS} FROM daily_totals"
            " INDEXED BY daily_by_machine WHERE machine_id = ? AND day BETWEEN ? AND ?"
            f" AND {column} BETWEEN ? AND ? GROUP BY period, currency ORDER BY period, currency",
            (FLEET, first.key(granularity), _last_day(granularity, last),
             first.key(granularity), last.key(granularity)),
        )
        return [_total(row, row["period"], "*") for row in rows]

    def cabinet_series(self, machine_id: str, granularity: str, periods: list[str]) -> list[Total]:
        if not periods:
            return []
        column = _period_column(granularity)
        marks = ", ".join("?" for _ in periods)
        rows = self._execute(
            f"SELECT {column} AS period, currency, {_SUMS} FROM daily_totals"
            f" WHERE machine_id = ? AND {column} IN ({marks})"
            " GROUP BY period, currency ORDER BY period, currency",
            (machine_id, *periods),
        )
        return [_total(row, row["period"], machine_id) for row in rows]

    # --- payments ---------------------------------------------------------------------------
    def last_payments(self) -> dict[str, LastPayment]:
        rows = self._execute(
            "SELECT machine_id, at, session_id, amount, currency FROM last_payments"
        )
        return {row["machine_id"]: LastPayment(**dict(row)) for row in rows}


def _last_day(granularity: str, last: Periods) -> str:
    """The last day of the period `last` falls in (days sort as text: 'YYYY-MM-31' is safe)."""
    if granularity == "month":
        return f"{last.month}-31"
    if granularity == "week":
        return (date.fromisoformat(last.week) + timedelta(days=6)).isoformat()
    return last.day


def _period_column(granularity: str) -> str:
    if granularity not in ("day", "week", "month"):
        raise ValueError(f"unknown period {granularity!r}")
    return granularity


def _money(row: sqlite3.Row) -> Money:
    return Money(row["currency"], *(row[name] for name in MONEY_FIELDS))


def _total(row: sqlite3.Row, period: str, machine_id: str | None = None) -> Total:
    return Total(
        machine_id=machine_id or row["machine_id"],
        period=period,
        currency=row["currency"],
        **{name: row[name] or 0 for name in _COUNTERS},
    )
