"""The unchanged firmware on the real MicroPython (unix port v1.27.0, umqtt.simple 1.7.0 frozen as
in ESP32_GENERIC, and 1.8.0, the newest) against a real Mosquitto: boot.py then main.py, the real
link.py/journal.py/umqtt; stand-ins only for the board's pins, watchdog, WiFi and RTC."""

from __future__ import annotations

import json
import os
import signal
import uuid

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import API_PASSWORD, API_USER, make_broker, publish
from tests.firmware.conftest import real_config, tls_config
from tests.firmware.real_board import der_from_pem

TOLERANCE_MS = 15


def coinpulse(broker, machine_id: str, credits: int, credit_id: str | None = None,
              **extra) -> None:
    body = {"machineId": machine_id, "credits": credits, "timestamp": "2026-11-27T16:29:15Z"}
    if credit_id is not None:
        body["id"] = credit_id
    body.update(extra)
    publish(broker, f"arcade/machine/{machine_id}/coinpulse", json.dumps(body), API_USER,
            API_PASSWORD)


def online(cabinet, count: int = 1):
    """Subscribed and announced: the first status follows the SUBACK."""
    cabinet.wait_event("status", count)
    return cabinet


def test_credits_give_exact_pulses(broker, real_cabinet, subscribe, umqtt_dir, ntp):
    acks = subscribe("arcade/machine/cab10/ack")
    cab = online(real_cabinet(real_config(broker, "cab10", ntp, pulse_ms=100, gap_ms=200),
                              umqtt_dir=umqtt_dir))
    coinpulse(broker, "cab10", 3, "cs_real_3")
    ack = acks.next(timeout=15).json()
    assert ack == {**ack, "id": "cs_real_3", "credits": 3, "state": "done",
                   "machineId": "cab10"}
    # The ack came over MQTT; the console lines behind it may still be in the pipe.
    cab.wait_for(lambda: len(cab.pulses()) >= 3, what="3 pulses on the console")
    widths = cab.pulses()
    assert len(widths) == 3, cab.console()
    assert all(abs(w - 100) <= TOLERANCE_MS for w in widths), widths
    closes = [e.ticks for e in cab.edges if e.closed]
    opens = [e.ticks for e in cab.edges if not e.closed]
    gaps = [c - o for o, c in zip(opens, closes[1:], strict=False)]
    assert all(g >= 200 for g in gaps), gaps
    assert cab.of("clock_set")  # NTP (the loopback server) set the RTC stand-in
    assert not cab.resets


def test_same_id_twice_pulses_once_and_each_repeat_hears_its_state(broker, real_cabinet,
                                                                    subscribe, umqtt_dir, ntp):
    acks = subscribe("arcade/machine/cab11/ack")
    cab = online(real_cabinet(real_config(broker, "cab11", ntp, pulse_ms=50, gap_ms=50),
                              umqtt_dir=umqtt_dir))
    coinpulse(broker, "cab11", 3, "cs_twice")
    coinpulse(broker, "cab11", 3, "cs_twice")  # the API's retry while pulses are under way
    states = []
    while "done" not in states:
        states.append(acks.next(timeout=15).json()["state"])
    assert "received" in states  # the repeat hears what the cabinet knows then: received
    coinpulse(broker, "cab11", 3, "cs_twice")  # a late retry after the ack
    assert acks.next(timeout=15).json() | {"timestamp": None} == {
        "machineId": "cab11", "id": "cs_twice", "credits": 3, "state": "done", "timestamp": None}
    duplicates = cab.wait_event("duplicate", 2)  # logged before the ack, read through a pipe
    assert len(cab.pulses()) == 3
    assert [e["id"] for e in duplicates] == ["cs_twice", "cs_twice"]


def test_seed_format_without_id_is_credited_every_time(broker, real_cabinet, subscribe, ntp,
                                                       umqtt_dir):
    cab = online(real_cabinet(real_config(broker, "cab12", ntp, pulse_ms=30, gap_ms=30),
                              umqtt_dir=umqtt_dir))
    coinpulse(broker, "cab12", 1)
    coinpulse(broker, "cab12", 1)
    cab.wait_event("paid", 2)
    assert len(cab.pulses()) == 2
    assert subscribe("arcade/machine/cab12/ack").nothing_more() == []  # nobody to ack


def test_broker_restart_delivers_what_was_queued(own_broker, real_cabinet, umqtt_dir, ntp):
    cab = online(real_cabinet(real_config(own_broker, "cab13", ntp, pulse_ms=30, gap_ms=30),
                              umqtt_dir=umqtt_dir))
    own_broker.stop()
    cab.wait_event("disconnected")
    cab.wait_event("connect_failed")  # now waiting out its backoff
    own_broker.start()
    coinpulse(own_broker, "cab13", 2, "cs_while_away")  # queued in its persistent session
    cab.wait_event("paid", timeout=20)
    connects = cab.of("connected")
    assert len(connects) == 2 and connects[1]["session"] is True  # no re-subscribe needed
    coinpulse(own_broker, "cab13", 1, "cs_after")
    cab.wait_event("paid", 2)
    assert len(cab.pulses()) == 3


def test_frozen_broker_is_noticed_and_left(own_broker, real_cabinet, umqtt_dir, ntp):
    """SIGSTOP: the TCP connection stays up but nothing answers (a hung broker, a dead NAT)."""
    config = real_config(own_broker, "cab14", ntp, pulse_ms=30, gap_ms=30)
    config["mqtt"]["keepalive"] = 10
    cab = online(real_cabinet(config, umqtt_dir=umqtt_dir))
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    try:
        cab.wait_event("disconnected", timeout=30)  # keepalive 10 s + timeout 3 s
    finally:
        os.kill(own_broker.process.pid, signal.SIGCONT)
    coinpulse(own_broker, "cab14", 1, "cs_after_freeze")
    cab.wait_event("paid", timeout=30)
    assert not cab.resets, cab.console()  # no watchdog reset on the way


def test_power_cut_mid_train_resumes_within_the_bound(broker, real_cabinet, subscribe, ntp,
                                                      umqtt_dir):
    acks = subscribe("arcade/machine/cab15/ack")
    cab = online(real_cabinet(real_config(broker, "cab15", ntp, pulse_ms=150, gap_ms=100),
                              umqtt_dir=umqtt_dir))
    coinpulse(broker, "cab15", 5, "cs_cut")
    cab.wait_for(lambda: len([e for e in cab.edges if e.closed]) >= 2, what="the second pulse")
    cab.power_cut()  # in the middle of the second pulse (150 ms long)
    cab.start()
    while (ack := acks.next(timeout=20).json())["state"] != "done":
        pass
    assert ack["id"] == "cs_cut"
    cab.wait_event("paid")  # logged before the ack, read through a pipe
    widths = cab.pulses()
    full = [w for w in widths if w is not None and w >= 150 - TOLERANCE_MS]
    assert len(full) >= 5, widths  # never fewer than paid
    assert len(widths) <= 6, widths  # at most paid + 1
    assert cab.of("resume")


def test_game_over_and_lockout_inputs(broker, real_cabinet, subscribe, ntp, umqtt_dir):
    reports = subscribe("arcade/machine/cab16/gameover")
    config = real_config(broker, "cab16", ntp, pulse_ms=30, gap_ms=30)
    config["gameover"] = {"pin": 27, "active_low": True, "debounce_ms": 30, "min_interval_ms": 0}
    config["lockout"] = {"pin": 25, "active_low": True, "debounce_ms": 30}
    cab = online(real_cabinet(config, umqtt_dir=umqtt_dir))
    cab.set_input(27, 0)  # game over: pulled low through the optocoupler
    assert reports.next(timeout=10).json()["status"] == "game_over"
    cab.set_input(27, 1)
    cab.set_input(25, 0)  # the game refuses coins
    cab.wait_event("lockout")
    coinpulse(broker, "cab16", 1, "cs_locked")
    cab.wait_for(lambda: [e for e in cab.of("status") if e["pending"] == 1], what="the status")
    status = subscribe("arcade/machine/cab16/status").next(timeout=10).json()  # retained
    assert status["locked"] is True and status["pending_credits"] == 1
    assert cab.pulses() == []
    cab.set_input(25, 1)
    cab.wait_event("paid")
    assert len(cab.pulses()) == 1


def test_last_will_is_a_retained_offline_status(broker, real_cabinet, subscribe, ntp, umqtt_dir):
    live = subscribe("arcade/machine/cab17/status")
    cab = online(real_cabinet(real_config(broker, "cab17", ntp), umqtt_dir=umqtt_dir))
    while live.next(timeout=10).json()["state"] != "online":
        pass  # a retained offline status from an earlier run comes first
    cab.power_cut()
    will = live.next(timeout=30).json()
    assert will["state"] == "offline" and will["machineId"] == "cab17"


def test_tls_with_the_cabinet_ca_file(tls_broker, real_cabinet, subscribe, umqtt_dir, ntp):
    acks = subscribe("arcade/machine/cab18/ack", on=tls_broker)
    cab = real_cabinet(tls_config(tls_broker, "cab18", ntp, pulse_ms=30, gap_ms=30),
                       umqtt_dir=umqtt_dir, start=False)
    der_from_pem(tls_broker.tls.cafile, cab.file("ca.der"))
    online(cab.start())
    coinpulse(tls_broker, "cab18", 2, "cs_tls")
    assert acks.next(timeout=15).json()["id"] == "cs_tls"
    assert len(cab.pulses()) == 2


@pytest.mark.parametrize("mistake", ["another CA", "another name"])
def test_tls_refuses_a_broker_it_cannot_verify(tls_broker, real_cabinet, tmp_path, ntp,
                                               mistake):
    """Anyone on the venue WiFi could pose as the broker: the cabinet checks the certificate
    against its CA and the name it dials (umqtt 1.7: an SSLContext with server_hostname)."""
    from tools.certs import make_tls_files

    broker = tls_broker
    if mistake == "another name":  # a certificate for broker.example (and 127.0.0.1) only
        broker = make_broker(tmp_path / "named")
        broker.tls = make_tls_files(tmp_path / "named-tls", hostnames=("broker.example",))
        broker.start()
    host = "127.0.0.1" if mistake == "another CA" else "localhost"  # resolves to loopback
    cab = real_cabinet(tls_config(broker, "cab19", ntp, host=host), start=False)
    ca = broker.tls.cafile if mistake == "another name" else (
        make_tls_files(tmp_path / "other").cafile)
    der_from_pem(ca, cab.file("ca.der"))
    cab.start()
    if broker is not tls_broker:
        cab.wait_event("connect_failed", timeout=20)
        broker.stop()
    failed = cab.wait_event("connect_failed", timeout=20)
    assert not cab.of("connected")
    assert "certificate" in failed[0]["reason"].lower() or "verif" in failed[0]["reason"].lower()


# --- fuzzing ------------------------------------------------------------------------------------
FUZZ_ID = "cab09"


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
_bad_credits = (st.integers(max_value=0) | st.integers(min_value=21) | st.floats()
                | st.text(max_size=4) | st.booleans() | st.none() | st.lists(st.integers()))
_bad_coinpulses = st.one_of(
    st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")),
    _json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    st.fixed_dictionaries({"machineId": st.just(FUZZ_ID), "credits": _bad_credits,
                           "id": st.text(min_size=1, max_size=20)}).map(json.dumps),
    st.fixed_dictionaries({"machineId": st.text(max_size=10).filter(lambda m: m != FUZZ_ID),
                           "credits": st.integers(1, 20)}).map(json.dumps),
    st.fixed_dictionaries({"credits": st.integers(1, 20),
                           "id": st.integers() | st.just("") | st.lists(st.text())}).map(
                               json.dumps),
    st.text(max_size=20).map(lambda t: '{"credits": 1' + t).filter(_not_json),
)


def worth_on_the_board(payloads: list[bytes]) -> list[int]:
    """Credits each payload is worth per docs/protocol.md, read with MicroPython's own json (laxer
    than CPython's: it takes '{"credits": 1,}', '{"credits": 1]' and a missing comma). The rules
    are this test's, independent of the firmware."""
    import subprocess

    from tests.firmware.conftest import require_micropython

    script = f"""import sys, json, binascii
for line in sys.stdin:
    try:
        m = json.loads(binascii.unhexlify(line.strip()))
    except Exception:
        m = None
    worth = 0
    if type(m) is dict and m.get("machineId", {FUZZ_ID!r}) == {FUZZ_ID!r}:
        c, i = m.get("credits"), m.get("id")
        if (i is None or (type(i) is str and 0 < len(i) <= 128)) and type(c) is int:
            worth = c if 1 <= c <= 20 else 0
    print(worth)
"""
    done = subprocess.run([str(require_micropython()), "-c", script], capture_output=True,
                          input="".join(p.hex() + "\n" for p in payloads), text=True,
                          timeout=60, check=True)
    return [int(line) for line in done.stdout.split()]


@pytest.mark.slow
def test_fuzzed_payloads_never_crash_and_pulse_only_what_is_valid(broker, real_cabinet, ntp):
    cab = online(real_cabinet(real_config(broker, FUZZ_ID, ntp, pulse_ms=20, gap_ms=20)))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex}")
    client.username_pw_set(API_USER, API_PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = []
    try:
        @settings(max_examples=500, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(payload=_bad_coinpulses)
        def publish_one(payload):
            data = payload.encode() if isinstance(payload, str) else payload
            client.publish(f"arcade/machine/{FUZZ_ID}/coinpulse", data,
                           qos=1).wait_for_publish(timeout=10)
            sent.append(data)

        publish_one()
        client.publish(f"arcade/machine/{FUZZ_ID}/coinpulse",
                       json.dumps({"credits": 1, "id": "sentinel"}),
                       qos=1).wait_for_publish(timeout=10)
        cab.wait_for(lambda: [e for e in cab.of("credit") if e["id"] == "sentinel"], 120,
                     "the sentinel")
        cab.wait_for(lambda: not cab.of("credit") or cab.of("paid")[-1:] and
                     cab.of("paid")[-1]["id"] == "sentinel", 120, "the last pulse")
    finally:
        client.loop_stop()
        client.disconnect()
    worth = worth_on_the_board(sent)
    assert len(worth) == len(sent)
    assert cab.running and not cab.resets and not cab.of("crash")
    assert len(cab.of("rejected")) == worth.count(0)
    assert len(cab.pulses()) == 1 + sum(worth), cab.console(20)
