"""Every benchmark of issue 5 in ONE table (`make bench`); loopback only, this machine's clock.

- webhook received → relay edge on a host cabinet (`arcade simulate`, the unchanged firmware):
  p50 / p99 / max over --payments payments, pulse time excluded: each payment goes to a cabinet
  whose previous pulse train (and gap) is over, and is measured from the HTTP request's start to
  the relay closing for that id. The cabinet's events carry `mono_ms` = time.monotonic() of the
  simulator process; on Linux that is CLOCK_MONOTONIC, one clock for every process on the
  machine, so it is compared directly with this process's time.monotonic() (the events' `t` is
  wall-clock time, which NTP may step: not used).
- sustained signed webhooks/s into gunicorn with 1 and with 4 workers (SQLite ledger, QoS 1,
  answered after the PUBACK), --clients concurrent senders; then every coinpulse is counted on a
  subscriber and every row in the ledger: no duplicate, no loss.
- cold import of the Lambda entry (`api.lambda_handler`) and wall time of `arcade --help`.
- firmware heap on the real 32-bit MicroPython (bench/firmware_heap.py, 2,000 messages here; run
  it alone for the 10,000-message table), when the binary is there (ARCADE_MICROPYTHON).
- the console's fleet and money pages: server time with 1,000 cabinets and 200,000 payments
  (SQLite), DynamoDB requests per page view (bench/console.py).

    .venv/bin/python bench/run_all.py [--payments 1000] [--webhooks 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.store_sqlite import SQLiteStore  # noqa: E402
from bench.console import console_rows  # noqa: E402
from bench.webhook import (  # noqa: E402
    cold_import_ms,
    gunicorn,
    settings_env,
    signed_webhook,
    summarise,
)
from tests.conftest import (  # noqa: E402
    OBSERVER_PASSWORD,
    OBSERVER_USER,
    Cabinet,
    Subscriber,
    cabinet_config,
    make_broker,
)
from tools.broker import Broker, api_acl  # noqa: E402

PULSE_MS = GAP_MS = 20  # the firmware's minimum: the pulse train itself is not what we measure


# --- processes ----------------------------------------------------------------------------------
def bench_broker(workdir: Path) -> Broker:
    """The tests' broker (cabinet logins, observer) plus bench/webhook.py's API login."""
    broker = make_broker(workdir / "mosquitto")
    broker.add_user("api", "bench", api_acl("api"))
    broker.start()
    return broker


def session_id(body: bytes) -> str:
    return json.loads(body)["data"]["object"]["id"]


# --- webhook → relay edge -----------------------------------------------------------------------
class Timed:
    """One cabinet under measurement: what was last sent to it and when."""

    def __init__(self, cabinet: Cabinet, machine_id: str) -> None:
        self.cabinet = cabinet
        self.machine_id = machine_id
        self.last: str | None = None

    def wait_idle(self) -> None:
        """Until its previous payment is pulsed and the gap after it is over (the firmware will
        not close the relay before then, and that wait is pulse time, not latency)."""
        if self.last is None:
            return
        last = self.last
        paid = self.cabinet.wait_for(
            lambda events: [e for e in events if e["event"] == "paid" and e["id"] == last],
            timeout=30, what=f"paid {last}")[0]
        ready_at = (paid["mono_ms"] + GAP_MS) / 1000
        time.sleep(max(0.0, ready_at - time.monotonic()))  # the gap's deadline, not a guess


def relay_edges(events: list[dict]) -> dict[str, float]:
    """Monotonic seconds at which the relay first closed for each id."""
    edges, closed_at = {}, None
    for event in events:
        if event["event"] == "relay" and event["closed"]:
            closed_at = event["mono_ms"] / 1000
        elif event["event"] == "pulse" and event["n"] == 1 and event["id"] not in edges:
            edges[event["id"]] = closed_at
    return edges


def bench_relay_latency(workdir: Path, payments: int, cabinets: int) -> dict:
    broker = bench_broker(workdir)
    cabs = []
    try:
        for index in range(cabinets):
            machine_id = f"cab{index:02d}"
            folder = workdir / machine_id
            folder.mkdir()
            config = cabinet_config(broker, machine_id, pulse_ms=PULSE_MS, gap_ms=GAP_MS)
            cabs.append(Timed(Cabinet(folder, config).start(), machine_id))
        for timed in cabs:
            timed.cabinet.wait_count("connected", 1, timeout=30)
        with gunicorn(settings_env(broker, workdir), workdir, workers=1) as url:
            http = requests.Session()
            started = send_timed(http, url, cabs, 2 * cabinets)  # warm-up, not measured
            started = send_timed(http, url, cabs, payments)
            for timed in cabs:
                timed.wait_idle()
        edges = {}
        for timed in cabs:
            edges.update(relay_edges(timed.cabinet.read()))
    finally:
        for timed in cabs:
            timed.cabinet.stop()
        broker.stop()
    latencies = [edges[sid] - t0 for sid, t0 in started.items()]
    row = summarise("webhook → relay edge", latencies, 1.0)
    row["detail"] = f"{payments} payments over {cabinets} host cabinets, gunicorn 1 worker"
    return row


def send_timed(http: requests.Session, url: str, cabs: list[Timed], count: int) -> dict:
    started = {}
    for index in range(count):
        timed = cabs[index % len(cabs)]
        timed.wait_idle()
        body, headers = signed_webhook(timed.machine_id)
        t0 = time.monotonic()
        answer = http.post(f"{url}/webhook", data=body, headers=headers)
        assert answer.status_code == 200, answer.text
        timed.last = session_id(body)
        started[timed.last] = t0
    return started


# --- sustained webhooks/s -----------------------------------------------------------------------
def bench_throughput(workdir: Path, workers: int, count: int, clients: int) -> dict:
    broker = bench_broker(workdir)
    env = settings_env(broker, workdir)
    coins = Subscriber(broker, "arcade/machine/+/coinpulse", OBSERVER_USER, OBSERVER_PASSWORD)
    try:
        with gunicorn(env, workdir, workers) as url:
            warm = [signed_webhook(f"m{i % 20}") for i in range(20 * workers)]
            post_all(url, warm, clients)
            deliveries = [signed_webhook(f"m{i % 20}") for i in range(count)]
            t0 = time.perf_counter()
            statuses = post_all(url, deliveries, clients)
            elapsed = time.perf_counter() - t0
        received = coins.wait_for(len(warm) + count, timeout=120)
        received += coins.nothing_more()  # anything beyond that would be a duplicate
    finally:
        coins.close()
        broker.stop()
    sent = {session_id(body) for body, _ in warm + deliveries}
    ids = [m.json()["id"] for m in received]
    rows = SQLiteStore(env["STORE_URL"].removeprefix("sqlite:///")).payments(limit=10**7)
    published = {p.session_id for p in rows if p.published_at is not None}
    return {
        "mode": f"gunicorn, {workers} worker{'s' if workers > 1 else ''}",
        "per_s": count / elapsed,
        "ok": statuses.count(200) == count,
        "duplicates": len(ids) - len(set(ids)),
        "lost": len(sent - set(ids)),
        "ledger": f"{len(published & sent)}/{len(sent)} published, {len(rows)} rows",
        "clean": len(ids) == len(sent) == len(rows) == len(published & sent),
    }


def post_all(url: str, deliveries: list[tuple[bytes, dict]], clients: int) -> list[int]:
    local = threading.local()  # one keep-alive connection per sender, as Stripe's are

    def post(delivery: tuple[bytes, dict]) -> int:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        return local.http.post(f"{url}/webhook", data=delivery[0], headers=delivery[1]).status_code

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, deliveries))


# --- start-up and firmware ----------------------------------------------------------------------
def command_ms(argv: list[str], runs: int = 5) -> float:
    """Best wall time of `runs` runs: what a user waits for."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


HEAP_MESSAGES = 2000


def firmware_heap() -> str:
    from bench.firmware_heap import heap_rows, standin_bytes

    try:
        rows = heap_rows(HEAP_MESSAGES, 200, mpy=True)
        standins = standin_bytes()
    except (SystemExit, AssertionError) as error:  # no binary, or it failed: the table prints
        print(f"firmware heap: {error}", file=sys.stderr)
        return "n/a"
    after = [value for label, value in rows if label.startswith("after ") and "messages" in label]
    connected = rows[1][1] - standins
    return (f"{connected / 1024:.1f} KB connected, {(after[-1] - standins) / 1024:.1f} KB after "
            f"{HEAP_MESSAGES:,} messages (growth {after[-1] - after[0]:+,} B)")


# --- the table ----------------------------------------------------------------------------------
def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"| {' | '.join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))} |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def throughput_row(result: dict, clients: int) -> tuple[str, str, str]:
    verdict = "no duplicate, no loss" if result["clean"] and result["ok"] else "FAILED"
    return (
        f"signed webhooks/s, {result['mode']}",
        f"{result['per_s']:.0f} /s",
        f"{clients} senders, SQLite, QoS 1; {verdict} (duplicates {result['duplicates']}, "
        f"lost {result['lost']}; ledger {result['ledger']})",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--cabinets", type=int, default=10)
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        latency = bench_relay_latency(tmp / "latency", args.payments, args.cabinets)
        one = bench_throughput(tmp / "one", 1, args.webhooks, args.clients)
        four = bench_throughput(tmp / "four", 4, args.webhooks, args.clients)
    arcade = str(Path(sys.executable).parent / "arcade")
    rows = [
        ("benchmark", "result", "conditions"),
        ("webhook received → relay edge",
         f"p50 {latency['p50_ms']:.2f} / p99 {latency['p99_ms']:.2f} / "
         f"max {latency['max_ms']:.2f} ms",
         f"{latency['detail']}; pulse time excluded (target p50 ≤ 3, p99 ≤ 10)"),
        throughput_row(one, args.clients),
        throughput_row(four, args.clients),
        ("cold import api.lambda_handler", f"{cold_import_ms('api.lambda_handler'):.1f} ms",
         "fresh interpreter, best of 5, minus `python -c pass` (target ≤ 150)"),
        ("`arcade --help`", f"{command_ms([arcade, '--help']):.0f} ms",
         "whole command, wall time, best of 5"),
        ("firmware heap (MicroPython 1.27, 32-bit)", firmware_heap(),
         "bench/firmware_heap.py, firmware alone, .mpy as flashed (target ≤ 32 KB)"),
        *console_rows(),  # bench/console.py: the console's pages with a big ledger
    ]
    print(f"\nArcade STEM benchmarks — {os.cpu_count()} CPUs, loopback Mosquitto")
    print(table(rows))
    if not (one["clean"] and one["ok"] and four["clean"] and four["ok"]):
        sys.exit("a credit was lost or doubled under load (see the table)")


if __name__ == "__main__":
    main()
