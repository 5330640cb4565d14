"""Shared fixtures: a real Mosquitto, MQTT subscribers that wait for messages, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tools.broker import Broker, api_acl, cabinet_acl, find_mosquitto, observer_acl

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

API_USER, API_PASSWORD = "arcade-api", "api-password-for-tests"
OBSERVER_USER, OBSERVER_PASSWORD = "observer", "observer-password-for-tests"
# Test-only superuser: publishes sentinels and messages no real role may send.
TESTER_USER, TESTER_PASSWORD = "tester", "tester-password-for-tests"
# Cabinets the shared broker knows; each one's password is "pw-<machine id>".
TEST_MACHINES = ["machine_123", "machine_456", "cab-a", "cab-b"]
TEST_MACHINES += [f"cab{i:02d}" for i in range(40)]  # cab20-39: the real-MicroPython lane


def require_mosquitto() -> None:
    """In CI a missing broker is a failure, never a silent skip."""
    if find_mosquitto() is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def make_broker(workdir: Path, machines: list[str] = TEST_MACHINES) -> Broker:
    require_mosquitto()
    broker = Broker(workdir)
    # Everyone may hear test sentinels (see Subscriber.nothing_more); patterns come before users.
    broker.acl_blocks.append("pattern read sentinel/#")
    broker.add_user(API_USER, API_PASSWORD, api_acl(API_USER))
    broker.add_user(OBSERVER_USER, OBSERVER_PASSWORD, observer_acl(OBSERVER_USER))
    broker.add_user(TESTER_USER, TESTER_PASSWORD, f"user {TESTER_USER}\ntopic readwrite #")
    for machine_id in machines:
        broker.add_user(machine_id, f"pw-{machine_id}", cabinet_acl(machine_id))
    return broker


def api_env(broker: Broker, store: Path, webhook_secret: str, **overrides: str) -> dict[str, str]:
    """The API's settings with its login on a test broker (TLS when the broker has it); each
    suite adds its own (Stripe stand-in, token secret, ...) as overrides."""
    settings = {
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "MQTT_BROKER": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": API_USER,
        "MQTT_PASSWORD": API_PASSWORD,
        "MQTT_PUBLISH_TIMEOUT_MS": "3000",
        "STORE_URL": f"sqlite:///{store}",
    }
    if broker.tls:
        settings.update(MQTT_TLS="true", MQTT_CA_CERT=str(broker.tls.cafile))
    settings.update(overrides)
    return settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One Mosquitto for the whole test session (tests that stop a broker use `own_broker`)."""
    broker = make_broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(tmp_path):
    """A Mosquitto of this test's own, which the test may stop and restart."""
    broker = make_broker(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


def use_broker_tls(client: mqtt.Client, broker: Broker) -> None:
    """Trust the test CA when the broker speaks TLS."""
    if broker.tls:
        client.tls_set(ca_certs=str(broker.tls.cafile))


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A real MQTT client that records what arrives; tests wait on it with a timeout."""

    def __init__(self, broker: Broker, topics: str | list[str], user: str, password: str):
        self.broker = broker
        # Every subscriber also hears its own sentinel topic (see nothing_more()).
        self.sentinel = f"sentinel/{uuid.uuid4().hex[:12]}"
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        self._subscribed = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}"
        )
        self.client.username_pw_set(user, password)
        use_broker_tls(self.client, broker)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.put(True)
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.topics.append(self.sentinel)
        self.client.on_connect = self._on_connect
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._subscribed.get(timeout=10)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, msg.payload, bool(msg.retain)))

    def next(self, timeout: float = 10.0) -> Message:
        message = self.messages.get(timeout=timeout)
        self.seen.append(message)
        return message

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(got)} of {count} messages: {got}")
            got.append(self.next(remaining))
        return got

    def nothing_more(self, timeout: float = 10.0) -> list[Message]:
        """What arrives before a sentinel published now: `== []` proves nothing else came.

        Callers publish with QoS 1 and wait for the PUBACK first; Mosquitto has then already
        queued the message to us, ahead of the sentinel published afterwards.
        """
        publish(self.broker, self.sentinel, b"sentinel", TESTER_USER, TESTER_PASSWORD)
        deadline = time.monotonic() + timeout
        got = []
        while True:
            message = self.next(max(0.0, deadline - time.monotonic()))
            if message.topic == self.sentinel:
                return got
            got.append(message)

    def close(self) -> None:
        self.client.disconnect()  # first: it wakes the network thread, so loop_stop is quick
        self.client.loop_stop()


@pytest.fixture
def subscribe(broker):
    """subscribe(topics, user=observer) -> Subscriber, closed after the test."""
    made = []

    def factory(topics, user=OBSERVER_USER, password=OBSERVER_PASSWORD, on=None):
        sub = Subscriber(on or broker, topics, user, password)
        made.append(sub)
        return sub

    yield factory
    for sub in made:
        sub.close()


def publish(
    broker: Broker, topic: str, payload: bytes | str, user: str, password: str, retain: bool = False
) -> None:
    """Publish one QoS 1 message and wait for the broker's PUBACK."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}"
    )
    client.username_pw_set(user, password)
    use_broker_tls(client, broker)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic}"
    finally:
        client.disconnect()
        client.loop_stop()


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe-Signature exactly as Stripe builds it: t=…,v1=HMAC-SHA256(secret, "t.body")."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@pytest.fixture(scope="session")
def moto_server():
    """moto's DynamoDB in server mode: the store talks real HTTP to it, as to AWS."""
    from moto.server import ThreadedMotoServer

    from tests.moto_atomic import atomic_dynamodb

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # DynamoDB's per-item atomicity, which moto lacks (see tests/moto_atomic.py).
    with atomic_dynamodb():
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture
def aws_env(monkeypatch, moto_server):
    """Fake credentials and the moto endpoint for boto3 (AWS_ENDPOINT_URL is read by boto3)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_factory(request, tmp_path):
    """A function returning a new handle on one fresh ledger (each handle its own connection)."""
    if request.param == "sqlite":
        from api.store_sqlite import SQLiteStore

        path = str(tmp_path / "ledger.db")
        return lambda: SQLiteStore(path)
    request.getfixturevalue("aws_env")
    from api.store_dynamodb import DynamoDBStore, create_table

    table = f"arcade-{uuid.uuid4().hex[:10]}"
    create_table(table)
    return lambda: DynamoDBStore(table)


@pytest.fixture
def store(store_factory):
    return store_factory()

# --- the host cabinet ---------------------------------------------------------------------------
class Cabinet:
    """`arcade simulate` in a subprocess, with its --events file read as it grows."""

    def __init__(self, workdir: Path, config: dict, extra: list[str] | None = None):
        self.workdir = workdir
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.events_path = workdir / "events.jsonl"
        self.extra = extra or []
        self.process: subprocess.Popen | None = None
        self.console = workdir / "console.txt"
        self._offset = 0
        self.events: list[dict] = []

    def start(self) -> Cabinet:
        command = [sys.executable, "-c", "from tools.cli import main; main()", "simulate",
                   "--config", str(self.config_path), "--events", str(self.events_path),
                   *self.extra]
        self._console = self.console.open("ab")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._console,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def read(self) -> list[dict]:
        if self.events_path.exists():
            with self.events_path.open() as f:
                f.seek(self._offset)
                while True:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break  # a line still being written: read it next time
                    self._offset += len(line.encode())
                    self.events.append(json.loads(line))
        return self.events

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "event"):
        """Poll the events file until predicate(events) is truthy; fail with the console."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(self.read())
            if found:
                return found
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"simulator exited ({self.process.returncode}) waiting for "
                                     f"{what}:\n{self.console.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; console:\n"
                                     f"{self.console.read_text()[-3000:]}")
            time.sleep(0.02)  # polling a file for an event, bounded by the deadline

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.read() if e["event"] == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    def wait_count(self, kind: str, n: int, timeout: float = 15.0) -> list[dict]:
        self.wait_for(lambda events: self.count(kind) >= n, timeout, f"{n} x {kind}")
        return self.of(kind)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process:
            self._console.close()
            return self.process.returncode
        return None


def cabinet_config(broker, machine_id: str, **relay) -> dict:
    return {
        "machine_id": machine_id,
        "wifi": {"ssid": "host", "password": ""},
        "mqtt": {"host": broker.host, "port": broker.port, "user": machine_id,
                 "password": f"pw-{machine_id}", "keepalive": 10, "backoff_max_s": 2},
        "relay": {"pin": 26, "active_high": True, "pulse_ms": 100, "gap_ms": 200,
                  "pulses_per_credit": 1, **relay},
        "status_interval_s": 60,
    }


@pytest.fixture
def host_cabinet(tmp_path):
    """host_cabinet(config, *extra_args) -> a started Cabinet; stopped after the test."""
    made: list[Cabinet] = []

    def factory(config: dict, *extra: str, name: str = "cab") -> Cabinet:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        cabinet = Cabinet(workdir, config, list(extra)).start()
        made.append(cabinet)
        return cabinet

    yield factory
    for cabinet in made:
        cabinet.stop()
