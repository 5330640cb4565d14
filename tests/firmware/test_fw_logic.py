"""The firmware's logic in virtual time: the same scripted scenarios (tests/firmware/scenarios.py)
and expectations on the real MicroPython (unix port v1.27.0), its WebAssembly port and CPython."""

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


def acks(obs: dict, state: str | None = None) -> list[dict]:
    return [a for a in published(obs, "ack") if state is None or a.get("state") == state]


def test_every_interpreter_ran_every_scenario(results):
    names = {"pulses", "instant", "dedupe", "resume", "cut_everywhere", "lockout", "gameover",
             "malformed", "config_errors", "boot", "unreadable_journal", "recent_upgrade",
             "recent_unreadable", "ack_states", "backlog", "repeat_cap", "lockout_instant",
             "gameover_latched", "tick_wrap", "stripe_retry", "rename_error"}
    assert names <= set(results)


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
    assert len(acks(obs, "done")) == 3


def test_credit_is_on_flash_before_the_puback(results):
    assert results["pulses"]["durable_before_puback"] == [True]


def test_ack_after_the_last_pulse(results):
    obs = results["pulses"]
    acks = [p for p in obs["published"] if p[1].endswith("/ack")]
    assert len(acks) == 1
    last_release = obs["edges"][-1][0]
    assert acks[0][0] >= last_release
    body = json.loads(acks[0][2])
    assert body["id"] == "cs_test_pulses" and body["credits"] == 3 and body["state"] == "done"
    assert body["machineId"] == MACHINE and body["timestamp"].endswith("Z")
    assert acks[0][3] is False  # acks are not retained


def test_status_retained_on_connect_on_change_and_periodically(results):
    obs = results["pulses"]
    statuses = [p for p in obs["published"] if p[1].endswith("/status")]
    # in the pass after the connect (one blocking step a pass), retained
    assert statuses[0][0] <= 10 and statuses[0][3] is True
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
    duplicates = [(e["id"], e["state"]) for e in events(obs, "duplicate")]
    assert credited == ["A"] + [f"B{i}" for i in range(63)] + ["C"]
    # pending, acked, 63 later, after a reboot, after 65 others: each re-acked with its state
    assert duplicates == [("A", "received"), ("A", "done"), ("A", "done"), ("A", "done"),
                          ("B5", "done"), ("A", "done")]
    assert len(pulses(obs["edges"])) == 3 + 63 + 1
    # each repeat re-acked with the state known then; the one `done` of the delivery between
    assert [a["state"] for a in acks(obs) if a["id"] == "A"] == [
        "received", "done", "done", "done", "done", "done"]
    assert [a["state"] for a in acks(obs) if a["id"] == "B5"][-2:] == ["done", "done"]


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
    # The pulse in progress finished but does not count (the game locked its input while it was
    # closed): it is given again after the lockout, then the second credit.
    assert obs["edges_after_relock"] == 2
    trains = pulses(obs["edges"])
    assert [w for _, w in trains] == [100, 100, 100]
    assert [e["n"] for e in events(obs, "not_counted")] == [1]


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


def test_micropython_older_than_1_25_is_refused(results):
    """1.22's frozen umqtt (1.3.4) takes `ssl` as a flag and checks no certificate: anyone on the
    venue WiFi could pose as the broker. The board says so on its console and stays off."""
    old, oldest, current, cpython = results["config_errors"]["runtime"]
    assert old.startswith("MicroPython 1.22.2 is too old") and "1.25 or newer" in old
    assert oldest is None and current is None and cpython is None


def test_boot_opens_the_relay_before_anything_else(results):
    boots = results["boot"]["boots"]
    out = 3  # the fake Pin.OUT
    inp = 1  # the fake Pin.IN
    # Polarity known (a config naming it, or defaulting it): driven to the inactive level.
    # Unknown (no file, broken JSON, a polarity that is not true/false, a pin never to drive):
    # left a floating input, which the documented wiring reads as off.
    assert [b["calls"] for b in boots] == [
        [[26, inp, None]], [[4, out, 1]], [[26, inp, None]], [[26, inp, None]],
        [[27, inp, None]], [[26, out, 0]], [[26, inp, None]],
    ]
    assert all(b["imported_ours"] == [] for b in boots)


def test_unreadable_journal_is_kept_aside_without_a_crash_loop(results):
    obs = results["unreadable_journal"]
    assert "journal.dat.bad" in obs["files"]
    [event] = events(obs, "journal_unreadable")
    assert event["kept_as"].endswith("journal.dat.bad")
    assert len(pulses(obs["edges"])) == 1  # the cabinet goes on crediting new payments


def test_recent_ids_of_firmware_1_0_are_converted_and_still_deduplicate(results):
    for obs in results["recent_upgrade"]["runs"]:  # 1.0's JSON ids, 1.0.x's hex digests
        assert "ids.bin" in obs["converted"] and "recent.dat" not in obs["converted"]
        assert "recent.dat.bad" not in obs["files"]
        assert [e["id"] for e in events(obs, "credit")] == ["cs_new"]
        duplicates = [e["id"] for e in events(obs, "duplicate")]
        assert duplicates == ["A", "cs_old", "cs_pending", "A", "cs_old", "cs_pending", "cs_new"]
        assert len(pulses(obs["edges"])) == 2  # the credit owed from before, and cs_new


def test_unreadable_recent_ids_are_set_aside_keeping_the_credits_owed(results):
    for obs in results["recent_unreadable"]["runs"]:
        assert "recent.dat.bad" in obs["files"] and "journal.dat.bad" not in obs["files"]
        assert "ids.bin" in obs["files"]  # a fresh id store, the journal's ids in it
        [event] = events(obs, "recent_ids_unreadable")
        assert event["error"]
        assert [e["id"] for e in events(obs, "duplicate")] == ["cs_pending"]
        assert [e["id"] for e in events(obs, "credit")] == ["cs_after"]
        assert len(pulses(obs["edges"])) == 2  # the credit owed, then cs_after


def test_expires_rejects_and_repeats_are_acked_with_a_state(results):
    obs = results["ack_states"]
    assert obs["acks_valid_clock"] == [
        ["cs_late", "expired", None, 1],  # deadline passed against a valid clock: not pulsed
        ["cs_too_many", "rejected", "credits must be an integer from 1 to 20", 21],
        ["cs_fresh", "done", None, 1],
        ["cs_bad_expiry", "rejected", "expires must be a UTC time like 2026-12-01T20:05:00Z", 1],
        ["cs_late", "expired", None, 1],  # the resend hears the same answer
        ["cs_fresh", "done", None, 1],  # a repeat of a delivered one: done again, not pulsed
    ]
    assert obs["pulses_valid_clock"] == 1
    # With the clock unset (no NTP yet) a deadline cannot be checked: the broker's message expiry
    # is the guard, the credit is pulsed, and the status says why.
    assert obs["acks_unset_clock"] == [["cs_late_unset", "done", None, 1]]
    assert obs["pulses_unset_clock"] == 1
    assert obs["status_unset_clock"][-1]["problem"] == "clock_unset"
    # require_id: a message without an id is refused (it could double on a lost PUBACK).
    assert obs["strict_pulses"] == 0
    assert obs["strict_rejected"][0]["reason"].startswith("no id")


def test_a_backlog_waits_on_flash_and_hears_received_before_its_train(results):
    obs = results["backlog"]
    assert obs["used_inbox"] and obs["most_in_ram"] <= 32  # RAM holds at most 32 messages
    assert not [f for f in obs["files"] if f.startswith("inbox")]  # consumed, removed
    credits = {f"cs_backlog_{i:03d}": 1 + i % 2 for i in range(100)}
    assert len(pulses(obs["edges"])) == sum(credits.values())  # every credit once
    done = {a["id"] for a in acks(obs, "done")}
    assert done == set(credits)
    # Each message hears `received` no later than the start of its own train (the first one
    # of an idle cabinet starts at once and hears `done` after it).
    first_pulse = {}
    for e in obs["events"]:
        if e[1] == "pulse" and e[2]["id"] not in first_pulse:
            first_pulse[e[2]["id"]] = e[0]
    told = {}
    for p in obs["published"]:
        body = json.loads(p[2])
        if p[1].endswith("/ack") and body["state"] == "received":
            told.setdefault(body["id"], p[0])
    late = [i for i in credits if i != "cs_backlog_000" and told.get(i, 1e12) > first_pulse[i]]
    assert late == []
    # and acks go out between trains, not all after the last one
    last_release = obs["edges"][-1][0]
    assert [a for a in obs["published"] if a[1].endswith("/ack")][0][0] < last_release / 10


def test_a_pulse_repeated_by_resets_is_capped_and_held(results):
    obs = results["repeat_cap"]
    # The relay closed once at arrival and twice more after resets: then the message is held.
    assert obs["boots"] == 3
    assert obs["held_edges"] == 0  # the fourth boot does not close the relay
    held = obs["held_status"][-1]
    assert held["problem"] == "pulse_repeat_cap" and "cs_brownout" in held["detail"]
    assert [e["id"] for e in events(obs, "pulse_repeat_cap")] == ["cs_brownout"]
    assert obs["released"] == ["cs_brownout"]  # the operator's recovery.release()
    assert [a["id"] for a in acks(obs, "done")] == ["cs_brownout"]


def test_lockout_counts_at_once_on_the_way_in(results):
    obs = results["lockout_instant"]
    assert obs["edges_while_locked"] == 0
    assert [w for _, w in pulses(obs["edges"])] == [100]


def test_a_game_over_pulse_missed_by_the_loop_is_reported_from_the_latch(results):
    obs = results["gameover_latched"]
    assert obs["latched_reports"] == 1
    assert obs["total_reports"] == 2  # the long one the poll saw is not counted twice


def test_ticks_that_wrap_do_not_stop_reports_or_retries(results):
    obs = results["tick_wrap"]
    assert obs["reports"] == 2
    assert obs["link"]["attempts_within_10s"] >= 1


def test_a_stripe_retry_after_1000_other_messages_is_dropped(results):
    obs = results["stripe_retry"]
    assert obs["duplicates"] == ["cs_live_first"]
    assert obs["pulses_after"] == 0
    assert obs["acks_after"] == [["cs_live_first", "done", None, 1]]


def test_a_failed_rename_never_deletes_the_good_journal(results):
    obs = results["rename_error"]
    assert obs["raised"] == 5  # the write fails: no PUBACK, the broker sends it again
    assert "journal.dat" in obs["files"]
    assert obs["after_reboot"] == ["cs_kept"]  # the credit owed before is still owed
