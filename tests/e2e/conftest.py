"""The end-to-end rig: each part of a site is its own process, as in production — Mosquitto, the
API under gunicorn (`arcade serve`) on a SQLite ledger file, `arcade listen` recording acks, and
host cabinets (`arcade simulate`, the unchanged firmware) writing their --events files.

Every scenario ends with `assert_credited`: per cabinet, relay pulses == credits paid (within the
firmware's power-cut bound where a kill is involved) and the ledger agrees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from api.store import Payment, State
from api.store_sqlite import SQLiteStore
from tests.api.conftest import WEBHOOK_SECRET, checkout_session, signed, stripe_event
from tests.conftest import Cabinet, api_env, cabinet_config, make_broker
from tools.broker import Broker, free_port
from tools.settings import without_settings


def process_env(settings: dict[str, str]) -> dict[str, str]:
    """A setting in the developer's own environment must never change what a scenario sees."""
    return {**without_settings(os.environ), **settings, "PYTHONUNBUFFERED": "1"}


def arcade_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools", *args]


class Output:
    """A process's output lines, collected by a thread; tests wait for lines, never sleep."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def count(self, text: str) -> int:
        with self._changed:
            return self._count(text)

    def wait_count(self, text: str, n: int, timeout: float = 15.0) -> None:
        """Until `n` lines contain `text`; AssertionError with the whole output otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count(text) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise AssertionError(
                        f"{self._count(text)} of {n} lines with {text!r}:\n"
                        + "\n".join(self.lines[-60:])
                    )
                self._changed.wait(left)

    def _count(self, text: str) -> int:  # with the lock held
        return sum(text in line for line in self.lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        self.wait_count(text, 1, timeout)

    def wait_line(self, line: str, timeout: float = 15.0) -> None:
        """Until a line is exactly `line` (not merely containing it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while line not in self.lines:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise AssertionError(f"no line {line!r} in:\n" + "\n".join(self.lines[-60:]))
                self._changed.wait(left)

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


class Service:
    """A long-running `python -m tools ...` in its own process group (so a kill takes it all)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv, env=process_env(env), cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        self.output = Output(self.process.stdout)

    def signal_group(self, signum: int) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL to the whole group: gunicorn's master and workers die as in a power cut."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


class Api(Service):
    """The API under gunicorn (`arcade serve`) on a free loopback port."""

    def __init__(self, env: dict[str, str], cwd: Path, workers: int = 1, threads: int = 8):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            arcade_argv("serve", "--port", str(self.port), "--workers", str(workers),
                        "--threads", str(threads)),
            env, cwd,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        # Every worker logs "Booting worker" before it loads the app; /status answers once one
        # has. The retries below only span the app's import, bounded by the deadline.
        self.output.wait_for("Booting worker", timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/status", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # still importing the app (slow on a busy machine): ask again
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the API did not start:\n{self.output.text}")
            time.sleep(0.05)

    def post(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(f"{self.url}/webhook", data=body, headers=headers, timeout=60)

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def webhook(session: dict, event_type: str = "checkout.session.completed") -> tuple[bytes, dict]:
    """A delivery signed as Stripe signs it; re-sending the same bytes is a Stripe retry."""
    return signed(stripe_event(event_type, session), secret=WEBHOOK_SECRET)


def e2e_cabinet_config(broker: Broker, machine_id: str, **relay) -> dict:
    """Fast pulses by default (20 ms / 20 ms) so hundreds of credits take seconds."""
    config = cabinet_config(broker, machine_id, **{"pulse_ms": 20, "gap_ms": 20, **relay})
    if broker.tls:
        config["mqtt"].update(tls=True, ca_file=str(broker.tls.cafile), port=broker.port)
    return config


@dataclass
class Site:
    """One site: broker, API, listener and cabinets, plus what the test paid (the truth)."""

    workdir: Path
    broker: Broker
    settings: dict[str, str]
    cabinets: dict[str, Cabinet] = field(default_factory=dict)
    apis: list[Api] = field(default_factory=list)
    listener: Service | None = None
    paid: dict[str, dict[str, int]] = field(default_factory=dict)  # machine -> session -> credits
    refunded: dict[str, set[str]] = field(default_factory=dict)  # machine -> sessions refunded

    # --- parts ---------------------------------------------------------------------------------
    def start_api(self, workers: int = 1, threads: int = 8, **overrides: str) -> Api:
        api = Api({**self.settings, **overrides}, self.workdir, workers, threads)
        self.apis.append(api)
        return api

    @property
    def api(self) -> Api:
        return self.apis[-1]

    def start_cabinets(self, machine_ids: list[str], **relay) -> list[Cabinet]:
        started = []
        for machine_id in machine_ids:
            workdir = self.workdir / "cabinets" / machine_id
            workdir.mkdir(parents=True, exist_ok=True)
            config = e2e_cabinet_config(self.broker, machine_id, **relay)
            started.append(Cabinet(workdir, config).start())
            self.cabinets[machine_id] = started[-1]
        for cabinet in started:  # started together, waited for together
            cabinet.wait_count("connected", 1, timeout=30)
        return started

    def start_listener(self) -> Service:
        """`arcade listen`; subscribed once it has recorded every running cabinet's retained
        status (acks sent before its first subscription would not be queued for it)."""
        self.listener = Service(arcade_argv("listen"), self.settings, self.workdir)
        online = sum(c.process.poll() is None for c in self.cabinets.values())
        self.listener.output.wait_count('"recorded":"online"', online, timeout=20)
        return self.listener

    def store(self) -> SQLiteStore:
        return SQLiteStore(self.settings["STORE_URL"].removeprefix("sqlite:///"))

    # --- paying ----------------------------------------------------------------------------------
    def session(self, machine_id: str, credits: int = 1) -> dict:
        """A paid Checkout Session, remembered as owed to `machine_id`."""
        session = checkout_session(machine_id=machine_id, credits=credits, amount=100 * credits)
        self.paid.setdefault(machine_id, {})[session["id"]] = credits
        return session

    def pay(self, machine_id: str, credits: int = 1, api: Api | None = None) -> dict:
        """One payment delivered once; asserts the API published it. Returns the session."""
        session = self.session(machine_id, credits)
        answer = (api or self.api).post(*webhook(session))
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == "published", answer.text
        return session

    def stop(self) -> None:
        for cabinet in self.cabinets.values():
            cabinet.stop()
        if self.listener is not None:
            self.listener.stop()
        for api in self.apis:
            api.stop()
        self.broker.stop()


@pytest.fixture
def stripe_server():
    """The recording Stripe stand-in (tests/api/conftest.py) for the API's and the listener's
    refund calls; `refund_settings()` points a site at it."""
    from tests.api.conftest import running_stripe_stub

    with running_stripe_stub() as server:
        yield server


def refund_settings(stripe, deadline: int, grace: int, sweep_every: int = 1) -> dict[str, str]:
    return {
        "STRIPE_API_KEY": "sk_test_e2e",
        "STRIPE_API_BASE": stripe.url,
        "REFUND_UNDELIVERED_AFTER_S": str(deadline),
        "REFUND_GRACE_S": str(grace),
        "SWEEP_INTERVAL_S": str(sweep_every),
    }


def wait_until(condition, timeout: float, what: str):
    """Poll what only the ledger or the OS can tell (a state, a socket queue) until a deadline."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return found


@pytest.fixture
def make_site(tmp_path):
    """make_site(tls=None, **api_settings) -> a Site with its own broker (started); the test
    starts the API, cabinets and listener it needs. Everything is stopped afterwards."""
    sites: list[Site] = []

    def factory(tls=None, **overrides: str) -> Site:
        workdir = tmp_path / f"site{len(sites)}"
        broker = make_broker(workdir / "mosquitto")
        broker.tls = tls
        broker.start()
        site = Site(workdir, broker,
                    api_env(broker, workdir / "ledger.db", WEBHOOK_SECRET, **overrides))
        sites.append(site)
        return site

    yield factory
    for site in sites:
        site.stop()


# --- the verdict ----------------------------------------------------------------------------------
def wait_delivered(site: Site, timeout: float = 60.0) -> None:
    """Every paid session acked by its cabinet, and the ledger says done."""
    for machine_id, sessions in site.paid.items():
        cabinet = site.cabinets[machine_id]
        cabinet.wait_for(lambda events, s=sessions: set(s) <= acked_ids(events), timeout,
                         f"acks for {len(sessions)} payments")
    # The ledger itself, not a count of the listener's lines: a cabinet acks a repeated
    # coinpulse again, so one payment may be recorded `done` more than once.
    store = site.store()
    owed = [sid for sessions in site.paid.values() for sid in sessions]
    wait_until(lambda: all((p := store.get(sid)) and p.state == State.DONE for sid in owed),
               timeout, "the listener to record every payment done")


def acked_ids(events: list[dict]) -> set[str]:
    return {e["id"] for e in events if e["event"] == "ack"}


def relay_closings(events: list[dict]) -> int:
    return sum(1 for e in events if e["event"] == "relay" and e["closed"])


def assert_credited(site: Site, bound: int = 0) -> None:
    """Per cabinet: relay pulses == credits paid (each message may repeat at most `bound` pulse
    after a power cut, never skip one), every pulse for a paid id, and the ledger agrees."""
    wait_delivered(site)
    store = site.store()
    for machine_id, cabinet in site.cabinets.items():
        owed = site.paid.get(machine_id, {})
        events = cabinet.read()
        pulses = Counter(e["id"] for e in events if e["event"] == "pulse")
        assert set(pulses) == set(owed), f"{machine_id}: pulsed for {pulses}, paid {owed}"
        for session_id, credits in owed.items():
            assert credits <= pulses[session_id] <= credits + bound, (machine_id, session_id)
        closings = relay_closings(events)
        paid = sum(owed.values())
        assert paid <= closings <= paid + bound * len(owed), (machine_id, closings, paid)
        refunded = site.refunded.get(machine_id, set())
        assert_ledger(store.payments(machine_id, limit=10_000), owed, refunded, machine_id)


def assert_ledger(
    rows: list[Payment], owed: dict[str, int], refunded: set[str], machine_id: str
) -> None:
    """One row per paid session (no more): each done with the credits paid, or refunded."""
    assert sorted(p.session_id for p in rows) == sorted([*owed, *refunded]), machine_id
    for payment in rows:
        if payment.session_id in refunded:
            assert payment.state == State.REFUNDED, payment
            continue
        assert payment.state == State.DONE, payment
        assert payment.credits == owed[payment.session_id], payment
        assert sum(part.credits for part in payment.parts) == payment.credits, payment
        assert payment.done_at is not None, payment


def ledger_command(site: Site, *args: str) -> str:
    """What `arcade ledger` prints for this site (what an operator would read)."""
    result = subprocess.run(
        arcade_argv("ledger", *args), env=process_env(site.settings), cwd=site.workdir,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout

