"""The walkthrough of docs/tools.md on this computer: provision → broker lines → a cabinet (the
firmware under `arcade simulate`, standing in for the flashed board) → publish and pay → monitor."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require_mosquitto
from tests.tools.conftest import WEBHOOK_SECRET, Lines, ProvisionedBroker, arcade_process


def output_value(output: str, name: str) -> str:
    return next(line.split("=", 1)[1] for line in output.splitlines()
                if line.startswith(name + "="))


@pytest.fixture
def site(arcade, tmp_path):
    """A broker holding only what `arcade provision` wrote, and the .env settings for the tools."""
    require_mosquitto()
    files = ["--passwd-file", "passwd", "--acl-file", "acl"]
    api = arcade("provision", "arcade-api", "--role", "api", *files)
    watcher = arcade("provision", "watcher", "--role", "monitor", *files)
    assert api.exit_code == 0 and watcher.exit_code == 0, api.output + watcher.output
    broker = ProvisionedBroker(tmp_path / "mosquitto", tmp_path / "passwd", tmp_path / "acl")
    cabinet = arcade("provision", "machine_777", "--ssid", "none", "--wifi-password", "x",
                     "--host", broker.host, "--port", str(broker.port), "--no-tls",
                     "--out", "machine_777/config.json", *files)
    assert cabinet.exit_code == 0, cabinet.output
    broker.start()
    env = {
        "MQTT_BROKER": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": output_value(api.output, "MQTT_USERNAME"),
        "MQTT_PASSWORD": output_value(api.output, "MQTT_PASSWORD"),
        "MQTT_MONITOR_USERNAME": output_value(watcher.output, "MQTT_MONITOR_USERNAME"),
        "MQTT_MONITOR_PASSWORD": output_value(watcher.output, "MQTT_MONITOR_PASSWORD"),
    }
    yield broker, env
    broker.stop()


@pytest.fixture
def running(tmp_path):
    """start(args, env) -> (process, stdout Lines); every process is stopped after the test."""
    started = []

    def start(args: list[str], env: dict[str, str]):
        process = arcade_process(args, env, tmp_path)
        started.append(process)
        return process, Lines(process.stdout)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()


def test_from_provision_to_first_credit(arcade, site, running, tmp_path, serve_api):
    broker, env = site
    cabinet, cabinet_out = running(["simulate", "--config", "machine_777/config.json",
                                    "--events", "events.jsonl"], {})
    cabinet_out.wait_for("online: connected")
    monitor, monitor_out = running(["monitor"], env)
    monitor_out.wait_for("machine_777      status")  # the retained online status comes first

    published = arcade("publish", "coinpulse", "machine_777", "--credits", "3", "--id", "first",
                       env=env)
    assert published.exit_code == 0, published.output
    cabinet_out.wait_for("ack sent  id=first")
    assert "coinpulse  3 credit(s)  id=first" in monitor_out.wait_for("coinpulse")
    assert "3 credit(s) delivered  id=first" in monitor_out.wait_for("ack")

    api = serve_api(MQTT_BROKER=broker.host, MQTT_PORT=str(broker.port),
                    MQTT_USERNAME=env["MQTT_USERNAME"], MQTT_PASSWORD=env["MQTT_PASSWORD"])
    paid = arcade("pay", "machine_777", "--credits", "2", "--api", api,
                  env={"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})
    assert paid.exit_code == 0, paid.output
    session = paid.output.split("session ")[1].split()[0]
    cabinet_out.wait_for(f"ack sent  id={session}")
    assert f"2 credit(s) delivered  id={session}" in monitor_out.wait_for("ack")

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    pulses = [event["id"] for event in events if event["event"] == "pulse"]
    assert pulses == ["first"] * 3 + [session] * 2  # every credit pulsed, none twice
