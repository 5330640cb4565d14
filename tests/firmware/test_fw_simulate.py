"""`arcade simulate`: N credits -> N pulses printed, settings from the environment, game over by
key and by timer, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import API_PASSWORD, API_USER, publish
from tests.firmware.conftest import REPO, cabinet_config
from tools.cli import cli


def run_cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["simulate", *args], env=env, catch_exceptions=False)


def test_help_has_an_example():
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "arcade simulate --config" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: give either --config FILE or --machine-id ID"),
        (["--config", "nowhere.json"], "nowhere.json: no such file"),
        (["--config", "c.json", "--machine-id", "m"], "error: give either --config"),
    ],
)
def test_usage_mistakes_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_config_names_every_problem(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"machine_id": "m", "wifi": {"ssid": "x"},
                                "mqtt": {"host": "h"}, "relay": {"pin": 7, "pulse_ms": 1}}))
    result = run_cli("--config", str(path))
    assert result.exit_code == 2
    assert "relay.pin: GPIO 7 is wired to the flash chip" in result.output
    assert "relay.pulse_ms: must be an integer from 20 to 2000" in result.output
    path.write_text("{")
    result = run_cli("--config", str(path))
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_machine_id_must_be_valid(monkeypatch):
    monkeypatch.setenv("MQTT_BROKER", "127.0.0.1")
    result = run_cli("--machine-id", "a/b")
    assert result.exit_code == 2 and "invalid machine id" in result.output


@pytest.mark.slow
def test_n_credits_print_n_pulses(broker, host_cabinet, subscribe):
    acks = subscribe("arcade/machine/cab06/ack")
    cab = host_cabinet(cabinet_config(broker, "cab06", pulse_ms=20, gap_ms=20,
                                      pulses_per_credit=2))
    cab.wait_count("connected", 1)
    publish(broker, "arcade/machine/cab06/coinpulse",
            json.dumps({"machineId": "cab06", "credits": 4, "id": "cs_printed"}),
            API_USER, API_PASSWORD)
    acks.next(timeout=15)
    assert cab.stop() == 0
    lines = cab.console.read_text().splitlines()
    pulse_lines = [line for line in lines if " pulse " in line]
    assert len(pulse_lines) == 8  # 4 credits x 2 pulses per credit
    assert pulse_lines[-1].endswith("cab06 pulse 8/8  id=cs_printed")
    assert any("online: connected to" in line for line in lines)
    assert any("ack sent  id=cs_printed" in line for line in lines)
    state = cab.workdir / "cab06.state"
    assert (state / "journal.dat").exists() and (state / "ids.bin").exists()


@pytest.mark.slow
def test_machine_id_from_environment_with_timed_game_over(broker, tmp_path, subscribe):
    gameovers = subscribe("arcade/machine/cab07/gameover")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_")}
    env.update(MQTT_BROKER=broker.host, MQTT_PORT=str(broker.port), MQTT_USERNAME="cab07",
               MQTT_PASSWORD="pw-cab07", MQTT_TOPIC_PREFIX="arcade")
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-c", "from tools.cli import main; main()", "simulate",
         "--machine-id", "cab07", "--state", str(state), "--gameover-every", "0.5"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True,
    )
    try:
        reports = [gameovers.next(timeout=15).json() for _ in range(2)]
        assert all(r["status"] == "game_over" and r["machineId"] == "cab07" for r in reports)
        assert reports[0]["id"] != reports[1]["id"]
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "game over reported" in output
    assert json.loads((state / "config.json").read_text())["mqtt"]["user"] == "cab07"


@pytest.mark.slow
def test_key_press_signals_game_over(broker, host_cabinet, subscribe, tmp_path):
    gameovers = subscribe("arcade/machine/cab08/gameover")
    config = cabinet_config(broker, "cab08")
    config["gameover"] = {"pin": 27, "active_low": True, "debounce_ms": 20,
                          "min_interval_ms": 0}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-c", "from tools.cli import main; main()", "simulate",
         "--config", str(path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
        text=True,
    )
    try:
        for line in process.stdout:  # the loop samples the input once it is online
            if "online: connected" in line:
                break
        process.stdin.write("g\n")
        process.stdin.flush()
        assert gameovers.next(timeout=15).json()["machineId"] == "cab08"
    finally:
        process.send_signal(2)  # Ctrl-C
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "stopped" in output
