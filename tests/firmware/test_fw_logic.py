"""The firmware's logic on the real MicroPython VM and on CPython: the same scripted scenarios
(tests/firmware/scenarios.py), the same expectations for both interpreters."""

from __future__ import annotations

import json

MACHINE = "machine_123"


def pulses(edges: list) -> list[tuple[int, int]]:
    """(start, width) of every pulse; a pulse cut by a power loss has width None."""
    out, start = [], None
    for t, closed in edges:
        if closed:
            if start is not None:
                out.append((start, None))
            start = t
        else:
            out.append((start, t - start))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def published(obs: dict, kind: str) -> list[dict]:
    return [json.loads(p[2]) for p in obs["published"] if p[1].endswith("/" + kind)]


def events(obs: dict, kind: str) -> list[dict]:
    return [e[2] for e in obs["events"] if e[1] == kind]


def test_both_interpreters_ran_every_scenario(micropython_results, cpython_results):
    names = {"pulses", "instant", "dedupe", "resume", "cut_everywhere", "lockout", "gameover",
             "malformed", "config_errors", "boot", "unreadable_journal", "recent_upgrade",
             "recent_unreadable", "link"}
    assert names <= set(micropython_results)
    assert names <= set(cpython_results)


def test_pulse_count_and_timing(results):
    obs = results["pulses"]
    trains = pulses(obs["edges"])
    assert len(trains) == 6  # 3 credits x 2 pulses per credit
    assert all(width == 100 for _, width in trains)
    starts = [start for start, _ in trains]
    assert all(b - a == 300 for a, b in zip(starts, starts[1:], strict=False))  # pulse + gap


def test_credit_arriving_mid_wait_pulses_at_once(results):
    """The loop waits on the broker's socket, not blindly: a credit that reaches it 3 ms into a
    10 ms idle wait closes the relay at that same virtual millisecond (journaled first)."""
    obs = results["instant"]
    idle_at = obs["idle_at"]
    credit = [e for e in obs["events"] if e[1] == "credit" and e[2]["id"] == "cs_idle"][0]
    assert credit[0] == idle_at
    assert obs["edges"][0] == [idle_at, True]
    assert obs["durable_before_puback"] == [True]


def test_closed_relay_never_waits_on_the_network(results):
    """A credit reaching the socket mid-pulse is read once the relay has opened (pulse exact);
    one reaching it in the gap is read at once, and the pulse train keeps its rhythm."""
    obs = results["instant"]
    trains = pulses(obs["edges"])
    assert [w for _, w in trains] == [100] * 4
    starts = [start for start, _ in trains]
    assert all(b - a == 300 for a, b in zip(starts, starts[1:], strict=False))
    credits = {e[2]["id"]: e[0] for e in obs["events"] if e[1] == "credit"}
    assert credits["cs_mid_pulse"] == trains[0][0] + 100  # the release, not mid_pulse_at
    assert credits["cs_mid_pulse"] > obs["mid_pulse_at"]
    assert credits["cs_gap"] == obs["gap_at"]
    assert len(published(obs, "ack")) == 3


def test_credit_is_on_flash_before_the_puback(results):
    assert results["pulses"]["durable_before_puback"] == [True]


def test_ack_after_the_last_pulse(results):
    obs = results["pulses"]
    acks = [p for p in obs["published"] if p[1].endswith("/ack")]
    assert len(acks) == 1
    last_release = obs["edges"][-1][0]
    assert acks[0][0] >= last_release
    body = json.loads(acks[0][2])
    assert body["id"] == "cs_test_pulses" and body["credits"] == 3
    assert body["machineId"] == MACHINE and body["timestamp"].endswith("Z")
    assert acks[0][3] is False  # acks are not retained


def test_status_retained_on_connect_on_change_and_periodically(results):
    obs = results["pulses"]
    statuses = [p for p in obs["published"] if p[1].endswith("/status")]
    assert statuses[0][0] == 0 and statuses[0][3] is True
    first = json.loads(statuses[0][2])
    for key in ("machineId", "state", "firmware", "uptime_s", "pending_credits", "timestamp",
                "free_mem", "rssi"):
        assert key in first
    assert first["state"] == "online"
    assert json.loads(statuses[-1][2])["pending_credits"] == 0
    assert obs["periodic"].count(f"arcade/machine/{MACHINE}/status") == 2  # 25 s at 10 s
    assert obs["steps_fed_25s"] > 0  # the healthy loop feeds the watchdog


def test_duplicate_ids_are_not_credited_again(results):
    obs = results["dedupe"]
    credited = [e["id"] for e in events(obs, "credit")]
    duplicates = [e["id"] for e in events(obs, "duplicate")]
    # A, B0..B62, C, then A again once it fell out of the 64 remembered ids.
    assert credited == ["A"] + [f"B{i}" for i in range(63)] + ["C", "A"]
    assert duplicates == ["A", "A", "A", "A", "B5"]  # pending, acked, 63 later, after reboot
    assert len(pulses(obs["edges"])) == len(credited)


def test_power_cut_mid_pulse_resumes_within_the_bound(results):
    obs = results["resume"]
    assert obs["closed_at_cut"] is True
    trains = pulses(obs["edges"])
    full = [p for p in trains if p[1] == 100]
    assert len(full) == 3  # every paid pulse delivered in full
    assert len(trains) == 4  # plus the one cut short: paid + 1 at most
    assert len(published(obs, "ack")) == 1


def test_power_cut_at_every_instant(results):
    runs = results["cut_everywhere"]["runs"]
    assert len(runs) > 10 and runs[-1]["cut"] is False
    for run in runs:
        trains = pulses(run["edges"])
        full = [p for p in trains if p[1] is not None and p[1] >= 20]
        assert len(full) >= 2, run  # never fewer than paid
        assert len(trains) <= 3, run  # at most paid + 1
        assert run["acks"] >= 1, run


def test_lockout_holds_pending_credits(results):
    obs = results["lockout"]
    assert obs["edges_while_locked"] == 0
    assert obs["locked_status"] and obs["locked_status"][-1]["pending_credits"] == 2
    assert obs["locked_status"][-1]["locked"] is True
    assert obs["edges_after_relock"] == 2  # the pulse in progress finished, the next one waits
    trains = pulses(obs["edges"])
    assert [w for _, w in trains] == [100, 100]


def test_gameover_debounce_interval_and_offline_queue(results):
    obs = results["gameover"]
    reports = published(obs, "gameover")
    queued = events(obs, "gameover")
    # glitch ignored, second press inside min_interval ignored: 4 reports, then 20 offline
    # presses of which the newest 16 are kept.
    assert len(queued) == 4 + 20
    assert obs["published_while_offline"] == 2
    assert len(reports) == 4 + 16
    ids = [r["id"] for r in reports]
    assert len(set(ids)) == len(ids)
    assert ids[4:] == [e["id"] for e in queued[-16:]]
    for report in reports:
        assert report["status"] == "game_over" and report["machineId"] == MACHINE


def test_malformed_messages_are_ignored(results):
    obs = results["malformed"]
    assert obs["pulses_after_bad"] == 0
    assert len(events(obs, "rejected")) == obs["sent_bad"]
    assert len(pulses(obs["edges"])) == 4  # the seed format without id, sent twice: credited twice


def test_invalid_config_prints_every_problem_and_retries(results):
    obs = results["config_errors"]
    assert obs["retried"] is True
    assert obs["relay_edges"] == [] and obs["relay_calls_closed"] is False
    expected = [
        "colour: unknown key",
        "machine_id: must be 1-64 characters of A-Z a-z 0-9 _ -",
        "wifi.ssid: must be a non-empty string",
        "mqtt.port: must be an integer from 1 to 65535",
        "relay.pulse_ms: must be an integer from 20 to 2000",
        "relay.pin: GPIO 34 is input-only (34-39) and cannot drive a relay",
        "lockout.pin: GPIO 7 is wired to the flash chip (6-11)",
    ]
    assert obs["problems"] == [expected, expected]
    assert "  relay.pin: GPIO 34 is input-only (34-39) and cannot drive a relay" in (
        results["_stdout"]
    )
    [[not_json]] = obs["problems_not_json"]
    assert not_json.endswith(")") and "config.json: not valid JSON (" in not_json


def test_boot_opens_the_relay_before_anything_else(results):
    boots = results["boot"]["boots"]
    out = 3  # the fake Pin.OUT
    # no config: default wiring; config: its pin and polarity; flash pin or broken JSON: default
    assert [b["calls"] for b in boots] == [
        [[26, out, 0]], [[4, out, 1]], [[26, out, 0]], [[26, out, 0]]
    ]
    assert all(b["imported_ours"] == [] for b in boots)


def test_unreadable_journal_is_kept_aside_without_a_crash_loop(results):
    obs = results["unreadable_journal"]
    assert "journal.dat.bad" in obs["files"]
    [event] = events(obs, "journal_unreadable")
    assert event["kept_as"].endswith("journal.dat.bad")
    assert len(pulses(obs["edges"])) == 1  # the cabinet goes on crediting new payments


def test_recent_ids_of_firmware_1_0_are_converted_and_still_deduplicate(results):
    obs = results["recent_upgrade"]
    head, *digests, end, _ = obs["converted"]
    assert head == "v2 sha256/96" and end == "end"
    # A and cs_old from the old file, cs_pending from the journal: 96-bit digests in hex.
    assert len(digests) == 3 and all(len(d) == 24 for d in digests)
    assert "recent.dat.bad" not in obs["files"]
    assert [e["id"] for e in events(obs, "credit")] == ["cs_new"]
    duplicates = [e["id"] for e in events(obs, "duplicate")]
    assert duplicates == ["A", "cs_old", "cs_pending", "A", "cs_old", "cs_pending", "cs_new"]
    assert len(pulses(obs["edges"])) == 2  # the credit owed from before the upgrade, and cs_new


def test_unreadable_recent_ids_are_set_aside_keeping_the_credits_owed(results):
    for obs in results["recent_unreadable"]["runs"]:
        assert "recent.dat.bad" in obs["files"] and "journal.dat.bad" not in obs["files"]
        assert obs["recent"] == "v2 sha256/96"  # a fresh list, rebuilt from the journal
        [event] = events(obs, "recent_ids_unreadable")
        assert event["kept_as"].endswith("recent.dat.bad")
        assert [e["id"] for e in events(obs, "duplicate")] == ["cs_pending"]
        assert [e["id"] for e in events(obs, "credit")] == ["cs_after"]
        assert len(pulses(obs["edges"])) == 2  # the credit owed, then cs_after


def test_link_with_genuine_umqtt_simple(results):
    """link.py + the real umqtt.simple (1.3.4 from PyPI) over a scripted broker."""
    obs = results["link"]
    flags = obs["connect_flags"]
    assert flags & 0x02 == 0  # clean_session=False: the broker keeps our session
    assert flags & 0x04 and flags & 0x20 and (flags >> 3) & 3 == 1  # retained QoS 1 last will
    assert flags & 0xC0 == 0xC0  # user and password
    assert obs["client_id"] == MACHINE and obs["keepalive"] == 30
    assert obs["subscribe_topic"] == f"arcade/machine/{MACHINE}/coinpulse"
    assert obs["subscribe_qos"] == 1
    assert obs["seen_at_puback"] == [[7, True]]  # the PUBACK left only after the journal write
    assert len(pulses(obs["edges"])) == 2
    retained_status, ack = obs["publishes"][0], obs["publishes"][1]
    assert retained_status == [0x03, f"arcade/machine/{MACHINE}/status"]  # QoS 1, retained
    assert ack == [0x02, f"arcade/machine/{MACHINE}/ack"]  # QoS 1, not retained
    assert obs["pings"] == 1  # our own keepalive: one ping per keepalive/2
    # A silent broker is noticed within keepalive + timeout (or a publish's timeout), not never.
    assert obs["silent_drop"] and obs["silent_drop"][0][0] <= (30 + 5) * 1000
    assert obs["connects_after_silence"] == 2
    assert obs["broken_drop"] and obs["connects"] == 3 and obs["subscribes"] == 3
    assert all(timeout == 5 for timeout in obs["socket_timeouts"])  # never fully blocking
    assert obs["socket_waits"] > 0  # the connected loop waits on the socket, not blindly
