"""The ledger in one SQLite file: safe for several gunicorn workers and threads.

Each payment is one row: the record as JSON (`doc`, see api/ledger.py) and the columns its
indexes need (machine, state, created_at, payment intent, sweep_at). A change is one
`BEGIN IMMEDIATE` transaction (read, apply, write), so two workers can never both claim, and a
release can never slip between a claim's read and its write.

WAL, with `synchronous=FULL` for every write someone outside hears about (Stripe's answer, a
refund): that commit is on disk, with every earlier one, before we answer. NORMAL alone may lose
the last commits on a power cut (e.g. a `published` mark after Stripe stopped retrying). The
claim before a publish is not synced: one fsync per webhook, after the publish.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from api import ledger
from api.store import Cabinet, Change, Heartbeat, IntentNote, LedgerOps, Link, Payment, State, T
from api.store_console_sqlite import ConsoleSQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    session_id     TEXT PRIMARY KEY,
    machine_id     TEXT NOT NULL,
    state          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    payment_intent TEXT,
    sweep_at       REAL,
    version        INTEGER NOT NULL,
    doc            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_by_machine ON payments (machine_id, created_at);
CREATE INDEX IF NOT EXISTS payments_by_state ON payments (state, created_at);
CREATE INDEX IF NOT EXISTS payments_by_created ON payments (created_at);
CREATE INDEX IF NOT EXISTS payments_by_intent ON payments (payment_intent);
CREATE INDEX IF NOT EXISTS payments_by_sweep ON payments (sweep_at) WHERE sweep_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS intents (
    payment_intent  TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL DEFAULT '',
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    disputed        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cabinets (
    machine_id      TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    last_seen       REAL NOT NULL,
    firmware        TEXT NOT NULL DEFAULT '',
    pending_credits INTEGER NOT NULL DEFAULT 0,
    problem         TEXT NOT NULL DEFAULT '',
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS heartbeats (
    name   TEXT PRIMARY KEY,
    at     REAL NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    machine_id TEXT NOT NULL,
    price_id   TEXT NOT NULL,
    url        TEXT NOT NULL,
    created_at REAL NOT NULL,
    link_id    TEXT NOT NULL DEFAULT '',
    checked_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, price_id)
);
"""
# Columns added since the first release, for ledgers created before them.
_ADDED_COLUMNS = {
    "links": ("link_id TEXT NOT NULL DEFAULT ''", "checked_at REAL NOT NULL DEFAULT 0"),
    "cabinets": ("problem TEXT NOT NULL DEFAULT ''", "detail TEXT NOT NULL DEFAULT ''"),
}

_UPSERT = """
INSERT INTO payments (session_id, machine_id, state, created_at, updated_at, payment_intent,
                      sweep_at, version, doc)
VALUES (:session_id, :machine_id, :state, :created_at, :updated_at, :payment_intent,
        :sweep_at, :version, :doc)
ON CONFLICT (session_id) DO UPDATE SET
    machine_id = excluded.machine_id, state = excluded.state, updated_at = excluded.updated_at,
    payment_intent = excluded.payment_intent, sweep_at = excluded.sweep_at,
    version = excluded.version, doc = excluded.doc
"""

_CABINET_COLUMNS = "machine_id, state, last_seen, firmware, pending_credits, problem, detail"


_BUSY_TIMEOUT_S = 10.0


def _use_wal(connection: sqlite3.Connection) -> None:
    """WAL, set once per database file. The switch needs an exclusive lock, and SQLite answers
    "database is locked" at once for it, without waiting (its busy handler is not used there),
    when another connection is opening the same new file: several gunicorn workers starting on
    a new ledger. Wait for them instead, as long as any other lock."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # the other connection's switch takes microseconds


class SQLiteStore(ConsoleSQLite, LedgerOps):
    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        connection = self._connection()
        with _transaction(connection):
            _migrate_v1(connection)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            _add_missing_columns(connection)
        self._console_schema()

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared between threads.
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            connection.row_factory = sqlite3.Row
            _use_wal(connection)
            # Synced only where it matters: see _durable.
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def _execute(self, sql: str, params: dict | tuple = ()) -> sqlite3.Cursor:
        return self._connection().execute(sql, params)

    # --- payments -----------------------------------------------------------------------------
    def update(self, session_id: str, change: Change[T], now: float, durable: bool = True) -> T:
        connection = self._connection()
        if not durable:  # WAL: the next synced commit makes this one durable too
            return self._update(connection, session_id, change, now)
        with _durable(connection):
            return self._update(connection, session_id, change, now)

    def _update(self, connection, session_id: str, change: Change[T], now: float) -> T:
        with _transaction(connection):
            row = connection.execute(
                "SELECT doc FROM payments WHERE session_id = ?", (session_id,)
            ).fetchone()
            current = ledger.loads(row["doc"]) if row else None
            payment, answer = change(current)
            if payment is not None:
                payment = ledger.finish(payment, now)
                payment.version = (current.version if current else 0) + 1
                connection.execute(_UPSERT, _columns(payment))
        if payment is not None:
            self._after_change(session_id)  # the console's totals and alerts
        return answer

    def insert_new(self, payment: Payment, now: float) -> bool:
        payment.version = 1
        cursor = self._execute(
            _UPSERT.split("ON CONFLICT")[0] + "ON CONFLICT (session_id) DO NOTHING",
            _columns(payment),
        )
        return cursor.rowcount == 1

    def get(self, session_id: str) -> Payment | None:
        row = self._execute(
            "SELECT doc FROM payments WHERE session_id = ?", (session_id,)
        ).fetchone()
        return ledger.loads(row["doc"]) if row else None

    def payments(
        self,
        machine_id: str | None = None,
        state: State | str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        conditions, params = [], []
        for column, value in (("machine_id", machine_id), ("state", state)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(str(value))
        if since is not None:
            conditions.append("created_at >= ?")
            params.append(since)
        if until is not None:
            conditions.append("created_at < ?")
            params.append(until)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._execute(
            f"SELECT doc FROM payments {where} ORDER BY created_at DESC LIMIT ?",
            (*params, limit),
        )
        return [ledger.loads(row["doc"]) for row in rows]

    def due(self, now: float, limit: int = 100) -> list[Payment]:
        rows = self._execute(
            "SELECT doc FROM payments WHERE sweep_at IS NOT NULL AND sweep_at <= ?"
            " ORDER BY sweep_at LIMIT ?",
            (now, limit),
        )
        return [ledger.loads(row["doc"]) for row in rows]

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None:
        row = self._execute(
            "SELECT doc FROM payments WHERE payment_intent = ?", (payment_intent,)
        ).fetchone()
        return ledger.loads(row["doc"]) if row else None

    def note_intent(
        self,
        payment_intent: str,
        session_id: str = "",
        amount_refunded: int = 0,
        disputed: bool = False,
    ) -> IntentNote:
        if not (amount_refunded or disputed):
            # Only linking a session: here the payments table's own index already does that,
            # consistently (see find_by_payment_intent); read what Stripe said, write nothing.
            row = self._execute(
                "SELECT amount_refunded, disputed FROM intents WHERE payment_intent = ?",
                (payment_intent,),
            ).fetchone()
            found = (row["amount_refunded"], bool(row["disputed"])) if row else (0, False)
            return IntentNote(payment_intent, session_id, *found)
        with _durable(self._connection()):  # Stripe hears 200 after this
            row = self._execute(
                "INSERT INTO intents (payment_intent, session_id, amount_refunded, disputed)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (payment_intent) DO UPDATE SET"
                " session_id = CASE WHEN intents.session_id = '' THEN excluded.session_id"
                "   ELSE intents.session_id END,"
                " amount_refunded = max(intents.amount_refunded, excluded.amount_refunded),"
                " disputed = max(intents.disputed, excluded.disputed)"
                " RETURNING payment_intent, session_id, amount_refunded, disputed",
                (payment_intent, session_id, amount_refunded, int(disputed)),
            ).fetchone()
        found = self.find_by_payment_intent(payment_intent)
        return IntentNote(
            payment_intent,
            found.session_id if found else row["session_id"],
            row["amount_refunded"],
            bool(row["disputed"]),
        )

    # --- links ----------------------------------------------------------------------------------
    def link(self, machine_id: str, price_id: str) -> Link | None:
        row = self._execute(
            "SELECT url, link_id, checked_at FROM links WHERE machine_id = ? AND price_id = ?",
            (machine_id, price_id),
        ).fetchone()
        return Link(row["url"], row["link_id"], row["checked_at"]) if row else None

    def save_link(
        self, machine_id: str, price_id: str, link: Link, replacing: str | None = None
    ) -> Link:
        self._execute(
            "INSERT INTO links (machine_id, price_id, url, created_at, link_id, checked_at)"
            " VALUES (:machine, :price, :url, :now, :link_id, :now)"
            " ON CONFLICT (machine_id, price_id) DO UPDATE SET url = excluded.url,"
            " link_id = excluded.link_id, checked_at = excluded.checked_at"
            " WHERE links.url = :replacing",
            {"machine": machine_id, "price": price_id, "url": link.url, "link_id": link.link_id,
             "now": link.checked_at, "replacing": replacing},
        )
        return self.link(machine_id, price_id) or link

    # --- cabinets and heartbeats ----------------------------------------------------------------
    def cabinet_seen(self, cabinet: Cabinet) -> None:
        self._execute(
            f"INSERT INTO cabinets ({_CABINET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (machine_id) DO UPDATE SET state = excluded.state,"
            " last_seen = excluded.last_seen, firmware = excluded.firmware,"
            " pending_credits = excluded.pending_credits, problem = excluded.problem,"
            " detail = excluded.detail",
            (
                cabinet.machine_id,
                cabinet.state,
                cabinet.last_seen,
                cabinet.firmware,
                cabinet.pending_credits,
                cabinet.problem,
                cabinet.detail,
            ),
        )

    def cabinet_heard(self, machine_id: str, now: float) -> None:
        self._execute(
            "INSERT INTO cabinets (machine_id, state, last_seen) VALUES (?, 'online', ?)"
            " ON CONFLICT (machine_id) DO UPDATE SET"
            " last_seen = max(cabinets.last_seen, excluded.last_seen)",
            (machine_id, now),
        )

    def cabinets(self) -> list[Cabinet]:
        rows = self._execute(f"SELECT {_CABINET_COLUMNS} FROM cabinets ORDER BY machine_id")
        return [Cabinet(**dict(row)) for row in rows]

    def heartbeat(self, beat: Heartbeat) -> None:
        self._execute(
            "INSERT INTO heartbeats (name, at, detail) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET at = excluded.at, detail = excluded.detail",
            (beat.name, beat.at, json.dumps(beat.detail)),
        )

    def heartbeats(self) -> list[Heartbeat]:
        rows = self._execute("SELECT name, at, detail FROM heartbeats ORDER BY name")
        return [Heartbeat(row["name"], row["at"], json.loads(row["detail"])) for row in rows]

    def ping(self) -> None:
        self._execute("SELECT 1").fetchone()


class _durable:
    """synchronous=FULL around one write: its commit is on disk (with every earlier unsynced
    WAL frame) before the caller answers anyone. Other writes stay NORMAL (WAL, no fsync)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("PRAGMA synchronous=FULL")

    def __exit__(self, kind, error, trace) -> None:
        self.connection.execute("PRAGMA synchronous=NORMAL")


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): the write lock is taken before the
    read, so what is read is still true when the write lands."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, trace) -> None:
        self.connection.execute("ROLLBACK" if kind else "COMMIT")


def _columns(payment: Payment) -> dict:
    return {
        "session_id": payment.session_id,
        "machine_id": payment.machine_id,
        "state": str(payment.state),
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "payment_intent": payment.payment_intent,
        "sweep_at": payment.sweep_at(),
        "version": payment.version,
        "doc": ledger.dumps(payment),
    }


# The first ledger (one row per payment, no parts): converted once, in place.
_V1_STATES = {
    "pending": (State.PENDING, None),
    "failed": (State.FAILED, None),
    "claimed": (State.PAID, ledger.PartState.PAID),
    "published": (State.PUBLISHED, ledger.PartState.PUBLISHED),
    "acked": (State.DONE, ledger.PartState.DONE),
    "refunded": (State.REFUNDED, ledger.PartState.DONE),
    "disputed": (State.DISPUTED, ledger.PartState.DONE),
}


def _migrate_v1(connection: sqlite3.Connection) -> None:
    columns = {row[1] for row in connection.execute("PRAGMA table_info(payments)")}
    if "credits" in columns:
        connection.execute("ALTER TABLE payments RENAME TO payments_v1")
        for name in ("payments_by_intent", "payments_by_machine"):
            connection.execute(f"DROP INDEX IF EXISTS {name}")
        for statement in _SCHEMA.split(";")[:6]:
            connection.execute(statement)
        for row in connection.execute("SELECT * FROM payments_v1").fetchall():
            connection.execute(_UPSERT, _columns(_from_v1(dict(row))))


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _from_v1(row: dict) -> Payment:
    """A v1 row as a payment: its credits as one part (v1 did not keep the plan), no deadline
    (never refunded automatically), the state it had."""
    state, part_state = _V1_STATES.get(row["state"], (State.PENDING, None))
    if row["state"] in ("refunded", "disputed") and row["published_at"] is None:
        part_state = None  # refunded or disputed before it was ever sent
    payment = Payment(
        session_id=row["session_id"],
        machine_id=row["machine_id"],
        credits=row["credits"],
        amount=row["amount"],
        currency=row["currency"],
        payment_intent=row["payment_intent"],
        state=state,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disputed=row["state"] == "disputed",
        amount_refunded=(row["amount"] or 0) if row["state"] == "refunded" else 0,
    )
    if part_state is not None:
        payment.paid_at = row["created_at"]
        payment.parts = [
            ledger.Part(
                row["session_id"],
                row["credits"],
                row["amount"],
                part_state,
                published_at=row["published_at"],
                done_at=row["acked_at"],
            )
        ]
    ledger.note(payment, row["updated_at"], "migrated", detail=f"v1 state {row['state']}")
    return ledger.finish(payment, row["updated_at"])
