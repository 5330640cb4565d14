"""`arcade publish` and `arcade monitor` against a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from tests.conftest import API_PASSWORD, API_USER, OBSERVER_PASSWORD, OBSERVER_USER, publish
from tests.tools.conftest import arcade_process


def test_publish_coinpulse_reaches_the_cabinet_topic(arcade, api_login_env, subscribe):
    cabinet = subscribe("arcade/machine/machine_123/coinpulse", user="machine_123",
                        password="pw-machine_123")

    result = arcade("publish", "coinpulse", "machine_123", "--credits", "3", "--id", "t-1",
                    env=api_login_env)

    assert result.exit_code == 0, result.output
    assert "PUBACK received" in result.output
    message = cabinet.next().json()
    assert message["machineId"] == "machine_123"
    assert message["credits"] == 3
    assert message["id"] == "t-1"
    assert message["timestamp"].endswith("Z")


def test_publish_coinpulse_without_id_gets_a_fresh_one(arcade, api_login_env, subscribe):
    cabinet = subscribe("arcade/machine/machine_123/coinpulse", user="machine_123",
                        password="pw-machine_123")

    for _ in range(2):
        result = arcade("publish", "coinpulse", "machine_123", env=api_login_env)
        assert result.exit_code == 0, result.output

    first, second = (message.json() for message in cabinet.wait_for(2))
    assert first["credits"] == second["credits"] == 1
    assert first["id"].startswith("cli-") and first["id"] != second["id"]


def test_publish_gameover(arcade, api_login_env, subscribe):
    watcher = subscribe("arcade/machine/cab-a/gameover")

    result = arcade("publish", "gameover", "cab-a", env=api_login_env)

    assert result.exit_code == 0, result.output
    message = watcher.next().json()
    assert message["machineId"] == "cab-a"
    assert message["status"] == "game_over"
    assert message["id"]


def test_publish_with_a_wrong_password_says_the_broker_refused(arcade, api_login_env):
    env = {**api_login_env, "MQTT_PASSWORD": "wrong"}

    result = arcade("publish", "coinpulse", "machine_123", env=env)

    assert result.exit_code == 2
    assert result.output.startswith("error: the broker at ")
    assert "refused arcade-api" in result.output
    assert "wrong" not in result.output  # never echo a secret


def test_publish_to_a_closed_port_says_it_cannot_reach_the_broker(arcade, api_login_env):
    from tools.broker import free_port

    env = {**api_login_env, "MQTT_PORT": str(free_port())}

    result = arcade("publish", "gameover", "cab-a", env=env)

    assert result.exit_code == 2
    assert "error: cannot reach the broker at 127.0.0.1:" in result.output


def test_publish_needs_a_broker_setting(arcade):
    result = arcade("publish", "gameover", "cab-a")

    assert result.exit_code == 2
    assert result.output == "error: MQTT_BROKER is not set (put it in .env or the environment)\n"


@pytest.fixture
def quiet(own_broker):
    """(broker, monitor settings) of a broker of this test's own: no retained status left by
    other tests can reach the monitor before the messages a test counts on."""
    return own_broker, {
        "MQTT_BROKER": own_broker.host,
        "MQTT_PORT": str(own_broker.port),
        "MQTT_USERNAME": API_USER,
        "MQTT_PASSWORD": API_PASSWORD,
        "MQTT_MONITOR_USERNAME": OBSERVER_USER,
        "MQTT_MONITOR_PASSWORD": OBSERVER_PASSWORD,
    }


def test_monitor_prints_published_messages_and_cabinet_states(arcade, quiet, tmp_path):
    broker, monitor_login_env = quiet
    # A retained status, as a cabinet leaves it; the monitor must show it on arrival.
    publish(broker, "arcade/machine/cab-b/status",
            json.dumps({"machineId": "cab-b", "state": "offline"}), "cab-b", "pw-cab-b",
            retain=True)
    monitor = arcade_process(["monitor", "--count", "3", "--timeout", "20"],
                             monitor_login_env, tmp_path)
    try:
        assert "listening on arcade/machine/+/+" in monitor.stderr.readline()

        for args in (["coinpulse", "machine_456", "--credits", "2", "--id", "mon-1"],
                     ["gameover", "machine_456"]):
            result = arcade("publish", *args, env=monitor_login_env)
            assert result.exit_code == 0, result.output

        out, err = monitor.communicate(timeout=20)
    finally:
        monitor.kill()
    assert monitor.returncode == 0, err
    lines = out.splitlines()
    # the retained status first, then the two messages in order, then the cabinet list
    status = next(line for line in lines if "cab-b" in line and "status" in line)
    assert "offline" in status and "(retained)" in status
    coin = next(line for line in lines if "machine_456" in line and "coinpulse" in line)
    assert "2 credit(s)" in coin and "id=mon-1" in coin
    assert any("machine_456" in line and "game over" in line for line in lines)
    assert lines.index(coin) < next(i for i, line in enumerate(lines) if "game over" in line)
    assert "cab-b offline" in lines[-1]


def test_monitor_of_one_machine_ignores_the_others(arcade, quiet, tmp_path):
    broker, monitor_login_env = quiet
    monitor = arcade_process(["monitor", "cab07", "--count", "1", "--timeout", "20"],
                             monitor_login_env, tmp_path)
    try:
        assert "listening on arcade/machine/cab07/+" in monitor.stderr.readline()
        for machine in ("cab08", "cab07"):
            publish(broker, f"arcade/machine/{machine}/gameover",
                    json.dumps({"machineId": machine, "status": "game_over", "id": machine}),
                    API_USER, API_PASSWORD)
        out, err = monitor.communicate(timeout=20)
    finally:
        monitor.kill()
    assert monitor.returncode == 0, err
    assert "cab07" in out and "cab08" not in out


def test_monitor_times_out_when_too_few_messages_arrive(arcade, quiet):
    _, monitor_login_env = quiet
    result = arcade("monitor", "cab09", "--count", "1", "--timeout", "0.5",
                    env=monitor_login_env)

    assert result.exit_code == 1
    assert "timed out after 0.5s with 0 of 1 messages" in result.output


def test_monitor_shows_unreadable_payloads(arcade, quiet, tmp_path):
    broker, monitor_login_env = quiet
    monitor = arcade_process(["monitor", "cab10", "--count", "1", "--timeout", "20"],
                             monitor_login_env, tmp_path)
    try:
        monitor.stderr.readline()
        publish(broker, "arcade/machine/cab10/gameover", b"not json", API_USER, API_PASSWORD)
        out, err = monitor.communicate(timeout=20)
    finally:
        monitor.kill()
    assert "unreadable payload b'not json'" in out


def test_on_a_terminal_the_cabinet_list_stays_under_the_messages(capsys):
    from datetime import datetime

    from tools.monitor import Cabinets, Received, Screen, format_line

    screen, cabinets = Screen(live=True), Cabinets("arcade")
    at = datetime(2026, 11, 27, 16, 29, 15)
    for machine, state in (("cab-a", "online"), ("cab-b", "offline")):
        item = Received(f"arcade/machine/{machine}/status",
                        json.dumps({"machineId": machine, "state": state}).encode(), True, at)
        cabinets.update(item)
        screen.message(format_line("arcade", item), cabinets.table())

    out = capsys.readouterr().out
    first, second = out.split("\x1b[2F\x1b[J")  # the first list (2 lines) is wiped and redrawn
    assert first.splitlines()[0].startswith("16:29:15  cab-a")
    assert second.splitlines() == [
        "16:29:15  cab-b            status     offline  (retained)",
        "── cabinets: 1 online of 2 ────────────────────",
        "  cab-a            online",
        "  cab-b            offline",
    ]
