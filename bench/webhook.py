"""Benchmark: signed webhooks through one API process → QoS 1 coinpulse PUBACKed by Mosquitto.

Prints a table: throughput and latency (request → response, which is after the broker's PUBACK
and the ledger write) for the in-process WSGI app and for gunicorn over HTTP, plus the cold import
time of the Lambda entry module. Run by hand or with `make bench`; loopback only.

    .venv/bin/python bench/webhook.py [--count 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.broker import Broker, api_acl, cabinet_acl, free_port  # noqa: E402

SECRET = "whsec_bench"


def signed_webhook(machine_id: str) -> tuple[bytes, dict[str, str]]:
    session = {
        "id": f"cs_bench_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "amount_total": 100,
        "currency": "usd",
        "metadata": {"machine_id": machine_id, "credits": "1"},
        "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
        "payment_status": "paid",
        "status": "complete",
    }
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "data": {"object": session},
    }
    body = json.dumps(event).encode()
    stamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={stamp},v1={digest}", "Content-Type": "application/json"}


def settings_env(broker: Broker, workdir: Path) -> dict[str, str]:
    return {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "MQTT_BROKER": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": "api",
        "MQTT_PASSWORD": "bench",
        "STORE_URL": f"sqlite:///{workdir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
    }


def summarise(name: str, latencies: list[float], elapsed: float) -> dict:
    ordered = sorted(latencies)
    return {
        "mode": name,
        "requests": len(ordered),
        "per_s": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


@contextlib.contextmanager
def cabinet_subscribed(broker: Broker, machine_id: str = "bench") -> Iterator[None]:
    """A session subscribed to the cabinet's coinpulses: without one, the broker (MQTT 5)
    answers "no matching subscribers" and every credit is undeliverable: another code path."""
    import threading

    import paho.mqtt.client as mqtt

    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{machine_id}")
    client.username_pw_set(machine_id, "bench")
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(f"arcade/machine/{machine_id}/coinpulse", 1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("the bench cabinet could not subscribe")
        yield
    finally:
        client.disconnect()
        client.loop_stop()


def bench_in_process(broker: Broker, workdir: Path, count: int) -> dict:
    from api import create_app

    client = create_app(settings_env(broker, workdir)).test_client()
    for _ in range(20):  # warm up: imports, broker connection, SQLite pages
        client.post("/webhook", data=signed_webhook("bench")[0], headers=signed_webhook("x")[1])
    requests = [signed_webhook("bench") for _ in range(count)]
    latencies = []
    started = time.perf_counter()
    for body, headers in requests:
        t0 = time.perf_counter()
        response = client.post("/webhook", data=body, headers=headers)
        latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200 and response.json["result"] == "published", (
            response.json)
    return summarise("in-process WSGI", latencies, time.perf_counter() - started)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workdir: Path, workers: int, threads: int = 8) -> Iterator[str]:
    """The API under gunicorn on a free port; yields its URL once /status answers."""
    import requests

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
         str(workers), "--threads", str(threads), "api:create_app()"],
        env={**os.environ, **env}, cwd=workdir,  # not the repo: its .env must not apply
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/status", timeout=5)
                break
            except (requests.ConnectionError, requests.Timeout):  # still starting (busy machine)
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # waiting for gunicorn to listen, bounded by the deadline
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def bench_gunicorn(broker: Broker, workdir: Path, count: int, workers: int) -> dict:
    import requests

    with gunicorn(settings_env(broker, workdir), workdir, workers, threads=4) as url:
        session = requests.Session()
        for _ in range(20 * workers):
            body, headers = signed_webhook("bench")
            session.post(f"{url}/webhook", data=body, headers=headers)
        deliveries = [signed_webhook("bench") for _ in range(count)]
        latencies = []
        started = time.perf_counter()
        for body, headers in deliveries:
            t0 = time.perf_counter()
            response = session.post(f"{url}/webhook", data=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200 and response.json()["result"] == "published", (
                response.text)
        elapsed = time.perf_counter() - started
    return summarise(f"gunicorn HTTP, {workers} worker(s)", latencies, elapsed)


def cold_import_ms(module: str, runs: int = 5) -> float:
    """Best of `runs` fresh interpreters importing `module`, minus an empty interpreter."""

    def best(code: str) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
        return min(times)

    return (best(f"import {module}") - best("pass")) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "mosquitto")
        broker.add_user("api", "bench", api_acl("api"))
        broker.add_user("bench", "bench", cabinet_acl("bench"))
        broker.start()
        try:
            with cabinet_subscribed(broker):
                rows = [
                    bench_in_process(broker, workdir, args.count),
                    bench_gunicorn(broker, workdir, args.count, 1),
                ]
        finally:
            broker.stop()
    print(f"\nSigned webhook → ledger → QoS 1 PUBACK, {args.count} sequential requests, loopback")
    print(f"| {'mode':<28} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for row in rows:
        print(
            f"| {row['mode']:<28} | {row['per_s']:>7.0f} | {row['p50_ms']:>7.2f} |"
            f" {row['p99_ms']:>7.2f} | {row['max_ms']:>7.2f} |"
        )
    print("\nCold import (fresh interpreter, best of 5, minus `python -c pass`)")
    for module in ("api.lambda_handler", "api"):
        try:
            print(f"| {module:<28} | {cold_import_ms(module):>7.1f} ms |")
        except subprocess.CalledProcessError:
            print(f"| {module:<28} | import failed |")


if __name__ == "__main__":
    main()
