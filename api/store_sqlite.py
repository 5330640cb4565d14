"""The ledger in one SQLite file: safe for several gunicorn workers (WAL, one atomic statement
per state change, a busy timeout instead of failing on a locked database)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from api.store import Cabinet, Claim, Payment, State, why_not_claimed
from api.store_console_sqlite import ConsoleSQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    session_id     TEXT PRIMARY KEY,
    machine_id     TEXT NOT NULL,
    credits        INTEGER NOT NULL,
    amount         INTEGER,
    currency       TEXT,
    payment_intent TEXT,
    state          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    published_at   REAL,
    acked_at       REAL,
    claim_token    TEXT,
    claim_expires  REAL
);
CREATE INDEX IF NOT EXISTS payments_by_intent ON payments (payment_intent);
CREATE INDEX IF NOT EXISTS payments_by_machine ON payments (machine_id, created_at);
CREATE TABLE IF NOT EXISTS cabinets (
    machine_id      TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    last_seen       REAL NOT NULL,
    firmware        TEXT NOT NULL DEFAULT '',
    pending_credits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS links (
    machine_id TEXT NOT NULL,
    price_id   TEXT NOT NULL,
    url        TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (machine_id, price_id)
);
"""

_COLUMNS = (
    "session_id, machine_id, credits, amount, currency, payment_intent, state,"
    " created_at, updated_at, published_at, acked_at"
)

# Insert a new session already claimed, or take the lease of one that may still be credited and
# whose lease is free or expired. One statement, so two workers can never both succeed.
_CLAIM = """
INSERT INTO payments (session_id, machine_id, credits, amount, currency, payment_intent, state,
                      created_at, updated_at, claim_token, claim_expires)
VALUES (:session_id, :machine_id, :credits, :amount, :currency, :payment_intent, 'claimed',
        :now, :now, :token, :expires)
ON CONFLICT (session_id) DO UPDATE SET
    state = 'claimed', claim_token = :token, claim_expires = :expires, updated_at = :now,
    payment_intent = coalesce(payments.payment_intent, :payment_intent)
WHERE payments.state IN ('pending', 'claimed')
  AND (payments.claim_expires IS NULL OR payments.claim_expires <= :now)
"""


class SQLiteStore(ConsoleSQLite):
    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)
        self._console_schema()

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared between threads.
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def _execute(self, sql: str, params: dict | tuple = ()) -> sqlite3.Cursor:
        return self._connection().execute(sql, params)

    def claim(self, payment: Payment, token: str, now: float, lease_seconds: float) -> Claim:
        params = {
            "session_id": payment.session_id,
            "machine_id": payment.machine_id,
            "credits": payment.credits,
            "amount": payment.amount,
            "currency": payment.currency,
            "payment_intent": payment.payment_intent,
            "now": now,
            "token": token,
            "expires": now + lease_seconds,
        }
        if self._execute(_CLAIM, params).rowcount == 1:
            return Claim.CLAIMED
        current = self.get(payment.session_id)
        return why_not_claimed(current)

    def mark_published(self, session_id: str, token: str, now: float) -> bool:
        cursor = self._execute(
            "UPDATE payments SET published_at = ?, updated_at = ?, claim_token = NULL,"
            " claim_expires = NULL,"
            " state = CASE WHEN acked_at IS NULL THEN 'published' ELSE 'acked' END"
            " WHERE session_id = ? AND claim_token = ? AND state = 'claimed'",
            (now, now, session_id, token),
        )
        return cursor.rowcount == 1

    def release(self, session_id: str, token: str, now: float) -> None:
        self._execute(
            "UPDATE payments SET state = 'pending', claim_token = NULL, claim_expires = NULL,"
            " updated_at = ? WHERE session_id = ? AND claim_token = ? AND state = 'claimed'",
            (now, session_id, token),
        )

    def record(self, payment: Payment, now: float) -> None:
        self._execute(
            "INSERT INTO payments (session_id, machine_id, credits, amount, currency,"
            " payment_intent, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
            (
                payment.session_id,
                payment.machine_id,
                payment.credits,
                payment.amount,
                payment.currency,
                payment.payment_intent,
                str(payment.state),
                now,
                now,
            ),
        )

    def mark(self, session_id: str, state: State, now: float) -> bool:
        if state == State.ACKED:
            # The ack may beat mark_published: keep the time, the state follows on publish.
            sql = (
                "UPDATE payments SET acked_at = coalesce(acked_at, :now), updated_at = :now,"
                " state = CASE WHEN state = 'published' THEN 'acked' ELSE state END"
                " WHERE session_id = :id"
            )
        elif state == State.FAILED:
            # A failed async payment cannot undo a credit already given.
            sql = (
                "UPDATE payments SET state = 'failed', updated_at = :now"
                " WHERE session_id = :id AND published_at IS NULL"
            )
        else:
            sql = "UPDATE payments SET state = :state, updated_at = :now WHERE session_id = :id"
        cursor = self._execute(sql, {"id": session_id, "state": str(state), "now": now})
        return cursor.rowcount == 1

    def get(self, session_id: str) -> Payment | None:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM payments WHERE session_id = ?", (session_id,)
        ).fetchone()
        return _payment(row) if row else None

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None:
        row = self._execute(
            f"SELECT {_COLUMNS} FROM payments WHERE payment_intent = ?", (payment_intent,)
        ).fetchone()
        return _payment(row) if row else None

    def payments(self, machine_id: str | None = None, limit: int = 100) -> list[Payment]:
        if machine_id is None:
            rows = self._execute(
                f"SELECT {_COLUMNS} FROM payments ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = self._execute(
                f"SELECT {_COLUMNS} FROM payments WHERE machine_id = ?"
                " ORDER BY created_at DESC LIMIT ?",
                (machine_id, limit),
            )
        return [_payment(row) for row in rows]

    def get_link(self, machine_id: str, price_id: str) -> str | None:
        row = self._execute(
            "SELECT url FROM links WHERE machine_id = ? AND price_id = ?", (machine_id, price_id)
        ).fetchone()
        return row["url"] if row else None

    def put_link(self, machine_id: str, price_id: str, url: str, now: float) -> str:
        self._execute(
            "INSERT INTO links (machine_id, price_id, url, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (machine_id, price_id) DO NOTHING",
            (machine_id, price_id, url, now),
        )
        return self.get_link(machine_id, price_id) or url

    def cabinet_seen(self, cabinet: Cabinet) -> None:
        self._execute(
            "INSERT INTO cabinets (machine_id, state, last_seen, firmware, pending_credits)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (machine_id) DO UPDATE SET state = excluded.state,"
            " last_seen = excluded.last_seen, firmware = excluded.firmware,"
            " pending_credits = excluded.pending_credits",
            (
                cabinet.machine_id,
                cabinet.state,
                cabinet.last_seen,
                cabinet.firmware,
                cabinet.pending_credits,
            ),
        )

    def cabinets(self) -> list[Cabinet]:
        rows = self._execute(
            "SELECT machine_id, state, last_seen, firmware, pending_credits FROM cabinets"
            " ORDER BY machine_id"
        )
        return [Cabinet(**dict(row)) for row in rows]

    def ping(self) -> None:
        self._execute("SELECT 1").fetchone()


def _payment(row: sqlite3.Row) -> Payment:
    values = dict(row)
    values["state"] = State(values["state"])
    return Payment(**values)
