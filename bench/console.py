"""The console's server time with a big ledger: 1,000 cabinets and 200,000 payments (SQLite),
and the DynamoDB requests one page view makes (moto server, 1,000 cabinets).

Server time is the WSGI call in-process (Flask test client, signed in): what the page costs the
API, without the network. The SQLite ledger is seeded in bulk with SQL (payments over 200 days,
their day totals and last payments as count_money would have left them); the DynamoDB one through
the store itself. Target: p95 ≤ 150 ms on SQLite; DynamoDB: a fixed number of requests per view.

    .venv/bin/python bench/console.py [--cabinets 1000] [--payments 200000] [--views 100]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from api.console.auth import hash_password  # noqa: E402
from api.store import Cabinet, Payment  # noqa: E402

SECRET_KEY = "bench-console-secret-key-0123456789abcdef"
OPERATOR, PASSWORD = "bench", "bench password 123"
DAY = 86400
PAGES = (("fleet", "/console/"), ("money", "/console/money"),
         ("money by month", "/console/money?by=month"))


def settings(store_url: str) -> dict[str, str]:
    return {"STRIPE_WEBHOOK_SECRET": "whsec_bench", "MQTT_BROKER": "127.0.0.1",
            "STORE_URL": store_url, "CONSOLE_SECRET_KEY": SECRET_KEY}


def machine(i: int) -> str:
    return f"cab{i:04d}"


def seed_sqlite(path: Path, cabinets: int, payments: int, now: float) -> None:
    """Payments over 200 days, as the ledger stores them (a document per payment with its parts,
    delivered), and the totals, counted records and last payments count_money would leave."""
    from dataclasses import replace

    from api import ledger
    from api.store_console import periods_of
    from api.store_sqlite import _UPSERT, SQLiteStore, _columns

    store = SQLiteStore(str(path))
    rng = random.Random(13)
    zone = ZoneInfo("UTC")
    rows, counted, totals, last = [], [], {}, {}
    for n in range(payments):
        created = now - rng.random() * 200 * DAY
        amount = rng.choice((100, 200, 500))
        cabinet = machine(rng.randrange(cabinets))
        session_id = f"cs_bench_{n:07d}"
        parts = ledger.plan_parts(session_id, amount // 100, amount, 20, created, 180, 60)
        delivered = n % 500 != 0  # one in 500 still on its way
        for part in parts:
            part.state = ledger.PartState.DONE if delivered else ledger.PartState.PUBLISHED
            part.published_at = created + 0.01
            part.done_at = created + 2 if delivered else None
        payment = ledger.finish(replace(
            Payment(session_id, cabinet, amount // 100, amount, "usd", f"pi_bench_{n:07d}"),
            parts=parts, paid_at=created, created_at=created, version=1), created)
        rows.append(_columns(payment))
        counted.append((session_id, "usd", amount, 0, 0, 1, amount // 100, 0))
        periods = periods_of(created, zone)
        for owner in (cabinet, "*"):
            key = (periods.day, owner)
            total = totals.setdefault(key, [periods.week, periods.month, 0, 0, 0])
            total[2] += amount
            total[3] += 1
            total[4] += amount // 100
        if created > last.get(cabinet, (0,))[0]:
            last[cabinet] = (created, session_id, amount)
    db = store._connection()
    db.execute("BEGIN")
    db.executemany(_UPSERT, rows)
    db.executemany("INSERT INTO money_counted VALUES (?, ?, ?, ?, ?, ?, ?, ?)", counted)
    db.executemany(
        "INSERT INTO daily_totals (day, machine_id, currency, week, month, gross, payments,"
        " credits) VALUES (?, ?, 'usd', ?, ?, ?, ?, ?)",
        [(day, owner, *values) for (day, owner), values in totals.items()])
    db.executemany("INSERT INTO last_payments VALUES (?, ?, ?, ?, 'usd')",
                   [(cabinet, *values) for cabinet, values in last.items()])
    db.execute("COMMIT")
    db.execute("ANALYZE")
    for i in range(cabinets):
        state = "offline" if i % 20 == 0 else "online"
        store.cabinet_seen(Cabinet(machine(i), state, now - rng.random() * 3600, "1.0.0",
                                   i % 3 if state == "offline" else 0))
    store.put_operator(OPERATOR, hash_password(PASSWORD), now)


def signed_in_client(app):
    from tests.console.conftest import sign_in

    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    assert sign_in(client, OPERATOR, PASSWORD).status_code == 302
    return client


def time_views(client, path: str, views: int) -> tuple[float, float, int]:
    times = []
    for _ in range(views):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.status_code
    size = len(answer.data)
    return statistics.median(times), statistics.quantiles(times, n=20)[18], size


def bench_sqlite(cabinets: int, payments: int, views: int) -> list[tuple[str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        started = time.perf_counter()
        seed_sqlite(path, cabinets, payments, time.time())
        seeded = time.perf_counter() - started
        client = signed_in_client(create_app(settings(f"sqlite:///{path}")))
        for name, page in PAGES:
            p50, p95, size = time_views(client, page, views)
            rows.append((f"console {name} page, SQLite", f"p50 {p50:.1f} / p95 {p95:.1f} ms",
                         f"{cabinets:,} cabinets, {payments:,} payments; {views} views, "
                         f"{size // 1024} KB page; seeded in {seeded:.0f} s (target p95 ≤ 150)"))
    return rows


class Counter:
    """Counts DynamoDB requests and the items they return, through botocore's events."""

    def __init__(self, client) -> None:
        self.calls: dict[str, int] = {}
        self.items = 0
        client.meta.events.register("after-call.dynamodb", self._after)

    def _after(self, http_response, parsed, model, **kwargs) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        self.items += len(parsed.get("Items", [])) + ("Item" in parsed)
        self.items += sum(len(v) for v in parsed.get("Responses", {}).values())

    def reset(self) -> None:
        self.calls, self.items = {}, 0


def bench_dynamodb(cabinets: int, payments: int) -> list[tuple[str, str, str]]:
    from moto.server import ThreadedMotoServer

    from api.store_dynamodb import create_table
    from tests.moto_atomic import atomic_dynamodb

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    serialised = atomic_dynamodb()  # moto applies a transaction without a lock (see there)
    serialised.__enter__()
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}")
    rows = []
    try:
        create_table("arcade-bench")
        app = create_app(settings("dynamodb://arcade-bench"))
        store = app.extensions["arcade"].store
        now = time.time()
        rng = random.Random(13)
        for i in range(cabinets):
            store.cabinet_seen(Cabinet(machine(i), "online", now - 60, "1.0.0", 0))
        from dataclasses import replace

        from api.ledger import plan_parts

        for n in range(payments):
            payment = Payment(f"cs_dyn_{n:06d}", machine(rng.randrange(cabinets)), 1, 100, "usd",
                              f"pi_dyn_{n:06d}")
            paid = now - rng.random() * 3600
            parts = plan_parts(payment.session_id, 1, 100, 20, paid, 180, 60)
            store.claim(replace(payment, parts=parts, paid_at=paid), "t", paid, 60)
            store.published(payment.session_id, "t", {p.id: 0 for p in parts}, paid)
        store.put_operator(OPERATOR, hash_password(PASSWORD), now)
        client = signed_in_client(app)
        counter = Counter(store.client)
        for name, page in PAGES:
            client.get(page)  # warm
            counter.reset()
            assert client.get(page).status_code == 200
            calls = ", ".join(f"{count} {call}" for call, count in sorted(counter.calls.items()))
            rows.append((f"console {name} page, DynamoDB reads",
                         f"{sum(counter.calls.values())} requests, {counter.items:,} items",
                         f"moto server, {cabinets:,} cabinets, {payments:,} payments in the"
                         f" last hour; {calls}; no Scan"))
            assert "Scan" not in counter.calls
    finally:
        server.stop()
        serialised.__exit__(None, None, None)
    return rows


def console_rows(cabinets: int = 1000, payments: int = 200_000, views: int = 100,
                 dynamo_payments: int = 200) -> list[tuple[str, str, str]]:
    return bench_sqlite(cabinets, payments, views) + bench_dynamodb(cabinets, dynamo_payments)


def main() -> None:
    from bench.run_all import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cabinets", type=int, default=1000)
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--dynamo-payments", type=int, default=200)
    args = parser.parse_args()
    rows = console_rows(args.cabinets, args.payments, args.views, args.dynamo_payments)
    print(table([("benchmark", "result", "conditions"), *rows]))


if __name__ == "__main__":
    main()
