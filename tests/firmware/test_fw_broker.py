"""The unchanged firmware as a host cabinet (`arcade simulate`, genuine umqtt.simple) against a
real Mosquitto: pulses and timing, dedupe, broker restarts, SIGKILL mid-train, fuzzed payloads,
the last will."""

from __future__ import annotations

import json
import uuid

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import API_PASSWORD, API_USER, publish
from tests.firmware.conftest import Cabinet, cabinet_config

pytestmark = pytest.mark.slow

TIMING_TOLERANCE_MS = 20
FUZZ_ID = "cab19"


def coin_topic(machine_id: str) -> str:
    return f"arcade/machine/{machine_id}/coinpulse"


def coinpulse(broker, machine_id: str, credits: int, credit_id: str | None = None) -> None:
    body = {"machineId": machine_id, "credits": credits, "timestamp": "2026-11-27T16:29:15Z"}
    if credit_id is not None:
        body["id"] = credit_id
    publish(broker, coin_topic(machine_id), json.dumps(body), API_USER, API_PASSWORD)


def relay_pulses(events: list[dict]) -> list[float | None]:
    """Width in ms of each closing of the relay (None: the process died while it was closed)."""
    widths, closed_at = [], None
    for event in events:
        if event["event"] == "relay":
            if event["closed"]:
                if closed_at is not None:
                    widths.append(None)
                closed_at = event["mono_ms"]
            elif closed_at is not None:
                widths.append(event["mono_ms"] - closed_at)
                closed_at = None
        elif event["event"] == "stopped" and closed_at is not None:
            widths.append(None)
            closed_at = None
    if closed_at is not None:
        widths.append(None)
    return widths


def started(cabinet):
    cabinet.wait_count("connected", 1)
    return cabinet


def test_coinpulse_gives_exact_pulses_with_timing(broker, host_cabinet, subscribe):
    acks = subscribe("arcade/machine/cab00/ack")
    cab = started(host_cabinet(cabinet_config(broker, "cab00", pulse_ms=100, gap_ms=200)))
    coinpulse(broker, "cab00", 3, "cs_timing")
    ack = acks.next(timeout=15).json()
    assert ack["id"] == "cs_timing" and ack["credits"] == 3 and ack["machineId"] == "cab00"
    widths = relay_pulses(cab.read())
    assert len(widths) == 3
    assert all(abs(w - 100) <= TIMING_TOLERANCE_MS for w in widths), widths
    closes = [e["mono_ms"] for e in cab.of("relay") if e["closed"]]
    opens = [e["mono_ms"] for e in cab.of("relay") if not e["closed"]]
    gaps = [c - o for o, c in zip(opens, closes[1:], strict=False)]
    assert all(g >= 200 - TIMING_TOLERANCE_MS for g in gaps), gaps
    console = cab.console.read_text()
    for n in (1, 2, 3):  # one readable line per pulse
        assert f"cab00 pulse {n}/3  id=cs_timing" in console


def test_same_id_twice_pulses_once(broker, host_cabinet, subscribe):
    acks = subscribe("arcade/machine/cab01/ack")
    cab = started(host_cabinet(cabinet_config(broker, "cab01", pulse_ms=30, gap_ms=30)))
    coinpulse(broker, "cab01", 2, "cs_twice")
    coinpulse(broker, "cab01", 2, "cs_twice")  # the API's retry while pulses are under way
    acks.next(timeout=15)
    coinpulse(broker, "cab01", 2, "cs_twice")  # a late retry after the ack
    coinpulse(broker, "cab01", 1, "cs_sentinel")
    assert acks.next(timeout=15).json()["id"] == "cs_sentinel"
    assert len(relay_pulses(cab.read())) == 3
    assert [e["id"] for e in cab.of("duplicate")] == ["cs_twice", "cs_twice"]


def test_broker_restart_reconnects_and_delivers_what_was_queued(own_broker, host_cabinet,
                                                               subscribe):
    config = cabinet_config(own_broker, "cab02", pulse_ms=30, gap_ms=30)
    cab = started(host_cabinet(config))
    own_broker.stop()
    cab.wait_count("disconnected", 1)
    cab.wait_count("connect_failed", 1)  # it is now waiting out its backoff
    own_broker.start()
    coinpulse(own_broker, "cab02", 2, "cs_while_away")  # queued in its persistent session
    published_at = len(cab.read())
    cab.wait_count("paid", 1, timeout=20)
    connects = [i for i, e in enumerate(cab.events) if e["event"] == "connected"]
    assert len(connects) == 2 and connects[1] >= published_at  # it was offline when published
    coinpulse(own_broker, "cab02", 1, "cs_after")  # the subscription is live again
    cab.wait_count("paid", 2)
    assert len(relay_pulses(cab.read())) == 3


def test_sigkill_mid_train_resumes_within_the_bound(broker, host_cabinet, subscribe):
    acks = subscribe("arcade/machine/cab03/ack")
    config = cabinet_config(broker, "cab03", pulse_ms=150, gap_ms=100)
    cab = started(host_cabinet(config))
    coinpulse(broker, "cab03", 5, "cs_killed")
    cab.wait_for(lambda ev: [e for e in ev if e["event"] == "relay" and e["closed"]][1:],
                 what="the second pulse")
    cab.kill()  # in the middle of the second pulse (150 ms long)
    events_before = list(cab.read())
    cab.start()
    ack = acks.next(timeout=20).json()
    assert ack["id"] == "cs_killed"
    events = cab.read()
    widths = relay_pulses(events)
    full = [w for w in widths if w is not None and w >= 150 - TIMING_TOLERANCE_MS]
    assert len(full) >= 5, widths  # never fewer than paid
    assert len(widths) <= 6, widths  # at most paid + 1
    assert any(e["event"] == "resume" for e in events[len(events_before):])


def test_last_will_is_a_retained_offline_status(broker, host_cabinet, subscribe):
    status_topic = "arcade/machine/cab04/status"
    live = subscribe(status_topic)
    cab = started(host_cabinet(cabinet_config(broker, "cab04")))
    assert live.next(timeout=10).json()["state"] == "online"
    cab.kill()
    will = live.next(timeout=15).json()
    assert will["state"] == "offline" and will["machineId"] == "cab04"
    later = subscribe(status_topic).next(timeout=10)  # what a newcomer is told
    assert later.retain and later.json()["state"] == "offline"


def test_sigterm_stops_cleanly_and_says_offline(broker, host_cabinet, subscribe):
    status_topic = "arcade/machine/cab05/status"
    live = subscribe(status_topic)
    cab = started(host_cabinet(cabinet_config(broker, "cab05")))
    assert live.next(timeout=10).json()["state"] == "online"
    assert cab.stop() == 0
    assert live.next(timeout=10).json()["state"] == "offline"
    assert cab.of("stopped")


# --- fuzzing ------------------------------------------------------------------------------------
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


@pytest.fixture(scope="module")
def fuzz_target(broker, tmp_path_factory):


    cab = Cabinet(tmp_path_factory.mktemp("fuzz"),
                  cabinet_config(broker, FUZZ_ID, pulse_ms=20, gap_ms=20)).start()
    cab.wait_count("connected", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex}")
    client.username_pw_set(API_USER, API_PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = []
    yield cab, client, sent
    client.loop_stop()
    client.disconnect()
    cab.stop()


def test_1000_fuzzed_payloads_never_pulse_nor_crash(fuzz_target):
    cab, client, sent = fuzz_target

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(payload=_bad_coinpulses)
    def publish_one(payload):
        data = payload.encode() if isinstance(payload, str) else payload
        client.publish(coin_topic(FUZZ_ID), data, qos=1).wait_for_publish(timeout=10)
        sent.append(data)

    publish_one()
    assert len(sent) >= 1000
    # A valid coinpulse behind them all: processed in order, so when it is paid, every fuzzed
    # payload before it has been seen.
    client.publish(coin_topic(FUZZ_ID), json.dumps({"credits": 1, "id": "sentinel"}),
                   qos=1).wait_for_publish(timeout=10)
    cab.wait_count("paid", 1, timeout=60)
    assert cab.process.poll() is None  # no crash
    assert len(cab.of("rejected")) == len(sent)
    assert len(relay_pulses(cab.read())) == 1
    assert [e["id"] for e in cab.of("credit")] == ["sentinel"]


def test_tls_broker_with_the_cabinet_ca_file(tmp_path, host_cabinet, subscribe):
    from tests.conftest import make_broker
    from tools.certs import make_tls_files

    broker = make_broker(tmp_path / "mosquitto")
    broker.tls = make_tls_files(tmp_path / "tls")
    broker.start()
    try:
        acks = subscribe("arcade/machine/cab09/ack", on=broker)
        config = cabinet_config(broker, "cab09", pulse_ms=20, gap_ms=20)
        config["mqtt"].update(tls=True, ca_file=str(broker.tls.cafile))
        cab = started(host_cabinet(config))
        coinpulse(broker, "cab09", 2, "cs_tls")
        assert acks.next(timeout=15).json()["id"] == "cs_tls"
        assert len(relay_pulses(cab.read())) == 2
        cab.stop()
    finally:
        broker.stop()
