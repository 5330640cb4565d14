"""What a real ESP32 would meet in the field, reproduced on the real MicroPython (unix port v1.27.0)
against Mosquitto: one test per fault of issue 9 (each failed before its fix, see
/work/notes/issue-9.md), with the board's behaviour taken from the ESP32 port's sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import API_PASSWORD, API_USER, make_broker
from tests.firmware.conftest import real_config, require_micropython, tls_config
from tests.firmware.ntp_server import NtpServer
from tests.firmware.real_board import FAKETIME_LIB, STANDINS, Wiring, der_from_pem
from tests.firmware.test_real_cabinet import coinpulse, online
from tools.broker import Broker

Y2000 = 946684800  # 2000-01-01T00:00:00Z: the ESP32's RTC after power-on


def at_2000(cab) -> None:
    """libfaketime: the board's clock reads 2000-01-01 until the RTC stand-in sets it (as NTP
    does on the board); ticks_ms (CLOCK_MONOTONIC) stays real."""
    if not FAKETIME_LIB.exists():
        pytest.fail("libfaketime is missing: apt-get install faketime (make test installs it)")
    control = cab.workdir / "faketime"
    control.write_text(f"{int(Y2000 - time.time()):+d}\n")
    cab.env.update(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(control),
                   FAKETIME_NO_CACHE="1", DONT_FAKE_MONOTONIC="1")


# --- 1. TLS after a failed NTP --------------------------------------------------------------------
def test_clock_at_2000_with_ntp_failing_then_recovering(tls_broker, real_cabinet, subscribe):
    """The RTC reads 2000 after power-on; certificate dates are checked against it. One lost NTP
    answer must not leave every TLS connect failing until WiFi drops: NTP is retried."""
    ntp = NtpServer()
    ntp.drop = 2  # UDP 123 blocked for a while at the venue
    try:
        acks = subscribe("arcade/machine/cab20/ack", on=tls_broker)
        cab = real_cabinet(tls_config(tls_broker, "cab20", ntp, pulse_ms=30, gap_ms=30),
                           start=False)
        der_from_pem(tls_broker.tls.cafile, cab.file("ca.der"))
        at_2000(cab)
        online(cab.start())
        assert len(cab.of("ntp_failed")) == 2 and cab.of("clock_set")
        assert cab.saw("@RTC 20")  # the RTC was set to this year
        coinpulse(tls_broker, "cab20", 1, "cs_after_ntp", expires="2099-01-01T00:00:00Z")
        assert acks.next(timeout=15).json()["state"] == "done"
    finally:
        ntp.close()


def test_expires_waits_for_a_valid_clock(broker, real_cabinet, subscribe):
    """Plain MQTT connects with the clock at 2000: a deadline cannot be checked then, so the
    credit is pulsed (the broker's message expiry is the guard) and the status says why."""
    ntp = NtpServer()
    ntp.drop = 10**6  # no NTP at all
    try:
        status = subscribe("arcade/machine/cab21/status")
        cab = real_cabinet(real_config(broker, "cab21", ntp, pulse_ms=30, gap_ms=30),
                           start=False)
        at_2000(cab)
        online(cab.start())
        assert status.next(timeout=10).json()["problem"] == "clock_unset"
        coinpulse(broker, "cab21", 1, "cs_no_clock", expires="2026-01-01T00:00:00Z")
        cab.wait_event("paid")
    finally:
        ntp.close()


# --- 2. No read timeout on TLS (ESP32 socket semantics) -------------------------------------------
def test_frozen_broker_over_tls_on_the_esp32_socket_semantics(tls_broker, real_cabinet, ntp,
                                                              subscribe):
    """On the ESP32 setblocking(True) drops a socket's timeout, and an SSLSocket passes it to the
    raw socket: a PUBACK wait on a frozen broker would block until the watchdog bit."""
    config = tls_config(tls_broker, "cab22", ntp, pulse_ms=30, gap_ms=30)
    config["mqtt"].update(timeout_s=1, keepalive=30)
    config["watchdog_s"] = 14
    config["gameover"] = {"pin": 27, "active_low": True, "debounce_ms": 20, "min_interval_ms": 0}
    cab = real_cabinet(config, variant="micropython-esp32sock", start=False)
    der_from_pem(tls_broker.tls.cafile, cab.file("ca.der"))
    online(cab.start())
    os.kill(tls_broker.process.pid, signal.SIGSTOP)
    try:
        cab.set_input(27, 0)  # game over: a QoS 1 publish, waiting for its PUBACK
        cab.wait_event("gameover")
        cab.wait_event("disconnected", timeout=20)
        cab.set_input(27, 1)
    finally:
        os.kill(tls_broker.process.pid, signal.SIGCONT)
    reports = subscribe("arcade/machine/cab22/gameover", on=tls_broker)
    cab.wait_event("connected", 2, timeout=30)
    assert reports.next(timeout=15).json()["status"] == "game_over"  # sent once it is back
    assert not cab.resets, cab.console()


# --- 4. A broken config.json with active-low relay wiring -----------------------------------------
def test_broken_config_never_closes_an_active_low_relay(broker, real_cabinet, ntp):
    """An interrupted `mpremote cp` truncates config.json. The relay is an active-low opto module
    (as the docs recommend): driving its pin low is ON. Nothing may close the coin line."""
    config = real_config(broker, "cab23", ntp, pulse_ms=30, gap_ms=30)
    config["relay"]["active_high"] = False
    text = json.dumps(config)
    cab = real_cabinet(text[: len(text) // 2], wiring=Wiring(26, active_high=False))
    cab.wait_line("not valid JSON")
    assert cab.saw("@PIN 26 IN")  # left floating: the module reads that as off
    assert cab.edges == [], cab.console()
    cab.power_cut()
    cab.write_config(config)  # fixed with mpremote cp, then a reset
    online(cab.start())
    coinpulse(broker, "cab23", 1, "cs_fixed")
    cab.wait_event("paid")
    assert len(cab.pulses()) == 1


# --- 5. A missing or bad CA file ------------------------------------------------------------------
@pytest.mark.parametrize("ca", ["missing", "garbage"])
def test_missing_ca_is_reported_without_a_reset_loop(tls_broker, real_cabinet, ntp, subscribe,
                                                     ca):
    status = subscribe("arcade/machine/cab24/status", on=tls_broker)
    cab = real_cabinet(tls_config(tls_broker, "cab24", ntp, pulse_ms=30, gap_ms=30),
                       start=False)
    if ca == "garbage":
        cab.file("ca.der").write_bytes(b"-----BEGIN nonsense")
    cab.start()
    cab.wait_event("tls_ca_missing", 3, timeout=20)  # retried with backoff, reported each time
    assert not cab.resets and cab.boots == 1, cab.console()
    der_from_pem(tls_broker.tls.cafile, cab.file("ca.der"))  # the operator copies it in
    online(cab)
    assert "problem" not in status.next(timeout=10).json()


# --- 6. A pulse repeated without limit ------------------------------------------------------------
def test_reset_loop_between_relay_close_and_record_is_capped(broker, real_cabinet, ntp,
                                                             subscribe):
    """The relay coil browns the supply out: the board resets the moment the relay closes, before
    the pulse is recorded, on every boot. The pulse is given at most 3 times, then held."""
    status = subscribe("arcade/machine/cab25/status")
    cab = real_cabinet(real_config(broker, "cab25", ntp, pulse_ms=30, gap_ms=30), start=False)
    cab.env["STANDIN_BROWNOUT"] = "26:1"
    online(cab.start())
    coinpulse(broker, "cab25", 2, "cs_brownout")
    cab.wait_event("pulse_repeat_cap", timeout=60)
    assert cab.resets == ["@BROWNOUT"] * 3
    assert len([e for e in cab.edges if e.closed]) == 3
    while (body := status.next(timeout=15).json()).get("problem") != "pulse_repeat_cap":
        pass
    assert "cs_brownout" in body["detail"]
    cab.power_cut()
    # The operator fixes the supply, then releases the held message at the REPL.
    del cab.env["STANDIN_BROWNOUT"]
    released = subprocess.run(
        [str(require_micropython()), "-c", "import recovery; recovery.release()"],
        cwd=cab.flash, capture_output=True, text=True, timeout=30,
        env={"MICROPYPATH": f":{STANDINS}:.frozen"})
    assert "released: ['cs_brownout']" in released.stdout, released
    cab.start()
    cab.wait_event("paid", timeout=20)
    assert len(cab.pulses()) >= 2


# --- 8. Passes longer than the watchdog ---------------------------------------------------------
class SlowLink:
    """A TCP proxy in front of the broker that holds every reply for `delay` seconds (a slow
    broker or path): CONNACK, SUBACK and each PUBACK come just before the socket timeout."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        import socket
        import threading

        self.target = target
        self.delay = delay
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.sockets: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._copy, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._copy, args=(upstream, client, self.delay),
                             daemon=True).start()

    def _copy(self, source, sink, delay: float) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)  # the slowness under test, not a wait for an event
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            sock.close()

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


def test_no_pass_adds_up_blocking_steps(broker, real_cabinet):
    """Every step that may block gets a pass of its own (DNS, NTP, connect, subscribe, a publish's
    PUBACK wait): with a silent NTP server (1 s a query) and a broker whose every reply takes 1 s,
    no pass between two watchdog feeds is longer than one such step. (It was NTP + connect +
    SUBACK + status publish in one pass: on a board, with DNS, longer than the watchdog.)"""
    ntp = NtpServer()
    ntp.drop = 10**6
    slow = SlowLink((broker.host, broker.port), 1.0)
    try:
        config = real_config(broker, "cab26", ntp)
        config["mqtt"].update(port=slow.port, timeout_s=3)
        cab = real_cabinet(config)
        online(cab)
        cab.wait_event("ntp_failed")
        assert 900 <= cab.longest_pass_ms() < 1500, cab.console()
    finally:
        ntp.close()
        slow.close()


# --- 9 and 7. A backlog of 1,000 at a 100 KB heap; a Stripe retry after 1,000 others ------------
class InflightBroker(Broker):
    """Mosquitto sending a whole queued backlog at once (max_inflight_messages 0)."""

    def write_config(self):
        path = super().write_config()
        path.write_text(path.read_text() + "max_inflight_messages 0\n")
        return path


@pytest.mark.slow
@pytest.mark.parametrize("inflight", ["mosquitto default (20)", "unlimited"])
def test_backlog_of_1000_at_100kb_heap_then_a_stripe_retry(tmp_path, real_cabinet, ntp,
                                                           subscribe, inflight):
    broker = make_broker(tmp_path / "mosquitto")
    if inflight == "unlimited":
        broker = InflightBroker(broker.workdir, broker.users, broker.acl_blocks, broker.port)
    broker.start()
    try:
        acks = subscribe("arcade/machine/cab27/ack", on=broker)
        config = real_config(broker, "cab27", ntp, pulse_ms=20, gap_ms=20)
        cab = online(real_cabinet(config, variant="micropython-32", heap="100k"))
        coinpulse(broker, "cab27", 1, "cs_live_first")
        assert acks.next(timeout=15).json()["state"] == "done"
        cab.power_cut()  # offline: the broker queues what is paid meanwhile
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="backlog-publisher")
        client.username_pw_set(API_USER, API_PASSWORD)
        client.connect(broker.host, broker.port)
        client.loop_start()
        topic = "arcade/machine/cab27/coinpulse"
        for i in range(1000):
            body = {"machineId": "cab27", "credits": 1, "id": f"cs_live_queued_{i:04d}"}
            client.publish(topic, json.dumps(body), qos=1)
        client.publish(topic, json.dumps({"machineId": "cab27", "credits": 1,
                                          "id": "cs_live_first"}), qos=1).wait_for_publish(30)
        client.loop_stop()
        client.disconnect()
        cab.start()
        done = set()
        received = set()
        repeat = None
        while len(done) < 1000:
            body = acks.next(timeout=60).json()
            if body["id"] == "cs_live_first":
                repeat = body["state"]
            elif body["state"] == "done":
                done.add(body["id"])
                if len(done) == 1:  # acks go out between trains, not after the backlog
                    assert len(cab.pulses()) < 100
            else:
                received.add(body["id"])
        assert repeat == "done"  # the Stripe retry of the first id: dropped, re-acked
        assert len(received) > 900  # `received` ahead of the trains
        assert len(cab.pulses()) == 1 + 1000, cab.console(20)
        assert not cab.of("crash") and not cab.resets and cab.running
    finally:
        broker.stop()


# --- minor ----------------------------------------------------------------------------------------
def test_user_without_password_is_refused_clearly(broker, real_cabinet, ntp):
    config = real_config(broker, "cab28", ntp)
    del config["mqtt"]["password"]
    cab = real_cabinet(config)
    cab.wait_line("mqtt.password: give both mqtt.user and mqtt.password, or neither")
    assert not cab.of("connect_failed") and cab.edges == []


def test_a_config_too_large_for_memory_keeps_the_board_in_the_retry_loop(broker, real_cabinet,
                                                                         ntp):
    """A MemoryError while reading config.json used to end main.py at the REPL, with no watchdog
    armed: a cabinet that never came back."""
    config = real_config(broker, "cab29", ntp)
    config["_doc"] = "x" * 200_000
    cab = real_cabinet(config, variant="micropython-32", heap="100k")
    cab.wait_line("too large for the board's memory")
    assert not cab.saw("@REPL"), cab.console()


def test_a_short_game_over_during_a_connect_is_reported(broker, real_cabinet, ntp, subscribe):
    """The loop is blocked in a connect (a broker that does not answer): a 150 ms game-over pulse
    then is latched by the pin interrupt and reported once the broker is back."""
    config = real_config(broker, "cab30", ntp)
    config["mqtt"].update(timeout_s=3, backoff_max_s=1)
    config["gameover"] = {"pin": 27, "active_low": True, "debounce_ms": 50, "min_interval_ms": 0}
    reports = subscribe("arcade/machine/cab30/gameover")
    os.kill(broker.process.pid, signal.SIGSTOP)  # TCP connects, CONNACK never comes
    try:
        cab = real_cabinet(config)
        failed = cab.wait_event("connect_failed")[0]
        # The next attempt starts retry_ms after that and blocks for 3 s: pulse in its middle.
        cab.pulse_input(27, 0, 150, failed["retry_ms"] + 1500)
        cab.wait_event("connect_failed", 2, timeout=15)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert reports.next(timeout=20).json()["status"] == "game_over"
