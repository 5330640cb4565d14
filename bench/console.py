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
    from api.store_sqlite import SQLiteStore

    store = SQLiteStore(str(path))
    rng = random.Random(13)
    db = store._connection()
    db.execute("BEGIN")
    rows = []
    for n in range(payments):
        created = now - rng.random() * 200 * DAY
        state = "acked" if n % 500 else "published"
        amount = rng.choice((100, 200, 500))
        rows.append((f"cs_bench_{n:07d}", machine(rng.randrange(cabinets)), amount // 100, amount,
                     "usd", f"pi_bench_{n:07d}", state, created, created, created,
                     created + 2 if state == "acked" else None))
    db.executemany(
        "INSERT INTO payments (session_id, machine_id, credits, amount, currency, payment_intent,"
        " state, created_at, updated_at, published_at, acked_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # What count_money leaves behind, for every payment at once (UTC days).
    db.execute(
        "INSERT INTO daily_totals (day, machine_id, currency, week, month, gross, payments,"
        " credits) SELECT date(created_at, 'unixepoch'), machine_id, currency,"
        " date(created_at, 'unixepoch', 'weekday 0', '-6 days'),"
        " strftime('%Y-%m', created_at, 'unixepoch'), sum(amount), count(*), sum(credits)"
        " FROM payments GROUP BY 1, 2, 3")
    db.execute(
        "INSERT INTO daily_totals (day, machine_id, currency, week, month, gross, payments,"
        " credits) SELECT day, '*', currency, week, month, sum(gross), sum(payments),"
        " sum(credits) FROM daily_totals GROUP BY day, currency")
    db.execute(
        "INSERT INTO money_counted SELECT session_id, currency, amount, 0, 0, 1, credits, 0"
        " FROM payments")
    db.execute(
        "INSERT INTO last_payments SELECT machine_id, max(created_at), session_id, amount,"
        " currency FROM payments GROUP BY machine_id")
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

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
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
        from zoneinfo import ZoneInfo

        for n in range(payments):
            payment = Payment(f"cs_dyn_{n:06d}", machine(rng.randrange(cabinets)), 1, 100, "usd",
                              f"pi_dyn_{n:06d}")
            store.claim(payment, "t", now - rng.random() * 3600, 60)
            store.mark_published(payment.session_id, "t", now)
            store.count_money(payment.session_id, ZoneInfo("UTC"))
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
    return rows


def console_rows(cabinets: int = 1000, payments: int = 200_000, views: int = 100,
                 dynamo_payments: int = 500) -> list[tuple[str, str, str]]:
    return bench_sqlite(cabinets, payments, views) + bench_dynamodb(cabinets, dynamo_payments)


def main() -> None:
    from bench.run_all import table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cabinets", type=int, default=1000)
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--dynamo-payments", type=int, default=500)
    args = parser.parse_args()
    rows = console_rows(args.cabinets, args.payments, args.views, args.dynamo_payments)
    print(table([("benchmark", "result", "conditions"), *rows]))


if __name__ == "__main__":
    main()
