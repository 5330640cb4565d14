"""`arcade provision`: configs the firmware accepts, broker lines that really confine a cabinet."""

from __future__ import annotations

import json
import stat
import sys
import uuid

import pytest

from api.machines import machine_token
from tests.conftest import Subscriber, publish, require_mosquitto
from tests.tools.conftest import ProvisionedBroker
from tools.firmware_files import FIRMWARE_DIR

CABINET_ARGS = ["--ssid", "arcade-wifi", "--wifi-password", "wifi-secret-1",
                "--host", "127.0.0.1", "--no-tls"]


def load_firmware_config_module():
    sys.path.insert(0, str(FIRMWARE_DIR))
    try:
        import config  # the firmware's own loader, exactly as boot runs it
    finally:
        sys.path.remove(str(FIRMWARE_DIR))
    return config


def test_provision_writes_a_config_the_firmware_accepts(arcade, tmp_path):
    result = arcade("provision", "machine_123", *CABINET_ARGS, "--relay-pin", "23",
                    "--gameover-pin", "27")

    assert result.exit_code == 0, result.output
    path = tmp_path / "config.json"
    config, problems = load_firmware_config_module().load(str(path))
    assert problems == []
    assert config["machine_id"] == "machine_123"
    assert config["wifi"] == {"ssid": "arcade-wifi", "password": "wifi-secret-1", "timeout_s": 20}
    assert config["mqtt"]["user"] == "machine_123"
    assert config["mqtt"]["host"] == "127.0.0.1" and config["mqtt"]["port"] == 1883
    assert config["relay"]["pin"] == 23 and config["gameover"]["pin"] == 27
    assert "lockout" not in config
    assert len(config["mqtt"]["password"]) >= 20
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds two passwords
    # The operator sees the broker lines but never the passwords themselves.
    assert "machine_123:$7$101$" in result.output
    assert "topic read arcade/machine/machine_123/coinpulse" in result.output
    assert "wifi-secret-1" not in result.output
    assert config["mqtt"]["password"] not in result.output


def test_provision_with_tls_copies_the_ca_file_for_the_board(arcade, tmp_path):
    ca = tmp_path / "my-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")

    result = arcade("provision", "cab-a", "--ssid", "w", "--wifi-password", "",
                    "--host", "broker.example.com", "--tls", "--ca-file", str(ca),
                    "--out", "cab-a/config.json")

    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "cab-a" / "config.json").read_text())
    assert config["mqtt"]["tls"] is True and config["mqtt"]["port"] == 8883
    assert config["mqtt"]["ca_file"] == "ca.crt"
    assert (tmp_path / "cab-a" / "ca.crt").read_text() == ca.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad/id", *CABINET_ARGS], "error: invalid machine id 'bad/id': use 1-64 letters, "
                                    "digits, '_' or '-'"),
        (["cab-a", *CABINET_ARGS, "--relay-pin", "6"],
         "error: the firmware would reject this config: relay.pin: GPIO 6 is wired to the "
         "flash chip (6-11)"),
        (["cab-a", "--ssid", "w", "--wifi-password", "x", "--host", "h", "--tls"],
         "error: the firmware would reject this config: mqtt.ca_file: required when mqtt.tls "
         "is true (the board has no CA store)"),
        (["cab-a", "--wifi-password", "x", "--host", "h", "--no-tls"],
         "error: --ssid is required (no terminal to ask on)"),
    ],
)
def test_provision_mistakes_give_one_line(arcade, tmp_path, args, message):
    result = arcade("provision", *args)

    assert result.exit_code == 2
    assert result.output == message + "\n"
    assert not (tmp_path / "config.json").exists()


def test_provision_never_overwrites_without_force(arcade, tmp_path):
    assert arcade("provision", "cab-a", *CABINET_ARGS).exit_code == 0
    first = (tmp_path / "config.json").read_text()

    refused = arcade("provision", "cab-a", *CABINET_ARGS)

    assert refused.exit_code == 2
    assert refused.output == "error: config.json already exists (use --force to replace it)\n"
    assert (tmp_path / "config.json").read_text() == first

    forced = arcade("provision", "cab-a", *CABINET_ARGS, "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads((tmp_path / "config.json").read_text())["mqtt"]["password"] != \
        json.loads(first)["mqtt"]["password"]


def test_provision_prints_the_gameover_token_the_api_accepts(arcade):
    result = arcade("provision", "cab-a", *CABINET_ARGS, env={"MACHINE_TOKEN_SECRET": "s3"})

    assert result.exit_code == 0, result.output
    assert f"POST /gameover): {machine_token('s3', 'cab-a')}" in result.output


def test_provision_says_when_it_cannot_make_a_token(arcade):
    result = arcade("provision", "cab-a", *CABINET_ARGS)

    assert result.exit_code == 0, result.output
    assert "gameover token: not printed, MACHINE_TOKEN_SECRET is not set" in result.output

    only = arcade("provision", "cab-a", "--token-only", env={"MACHINE_TOKEN_SECRET": "s3"})
    assert only.exit_code == 0, only.output
    # The token alone: `curl -H "Authorization: Bearer $(arcade provision … --token-only)"`.
    assert only.output == machine_token("s3", "cab-a") + "\n"

    without = arcade("provision", "cab-a", "--token-only")
    assert without.exit_code == 2
    assert without.output.startswith("error: MACHINE_TOKEN_SECRET is not set")


def test_provision_refuses_a_user_already_in_the_broker_files(arcade, tmp_path):
    files = ["--passwd-file", "passwd", "--acl-file", "acl"]
    assert arcade("provision", "cab-a", *CABINET_ARGS, "--out", "a.json", *files).exit_code == 0

    again = arcade("provision", "cab-a", *CABINET_ARGS, "--out", "b.json", *files)

    assert again.exit_code == 2
    assert again.output == "error: passwd already has user cab-a (use --force to replace it)\n"
    forced = arcade("provision", "cab-a", *CABINET_ARGS, "--out", "b.json", *files, "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "passwd").read_text().count("cab-a:") == 1
    assert (tmp_path / "acl").read_text().count("user cab-a") == 1


# --- the provisioned lines in a real Mosquitto -------------------------------------------------


def env_value(output: str, name: str) -> str:
    lines = output.splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith(name + "="))


@pytest.fixture
def provisioned(arcade, tmp_path):
    """Two cabinets, the API and a monitor, provisioned into files; a broker using only those."""
    require_mosquitto()
    files = ["--passwd-file", "passwd", "--acl-file", "acl"]
    logins = {}
    for machine in ("cab-x", "cab-y"):
        result = arcade("provision", machine, *CABINET_ARGS, "--out", f"{machine}.json", *files)
        assert result.exit_code == 0, result.output
        mqtt = json.loads((tmp_path / f"{machine}.json").read_text())["mqtt"]
        logins[machine] = (mqtt["user"], mqtt["password"])
    for role, user in (("api", "the-api"), ("monitor", "watcher")):
        result = arcade("provision", user, "--role", role, *files)
        assert result.exit_code == 0, result.output
        logins[role] = (user, env_value(result.output, "MQTT_PASSWORD" if role == "api"
                                        else "MQTT_MONITOR_PASSWORD"))
    broker = ProvisionedBroker(tmp_path / "mosquitto", tmp_path / "passwd", tmp_path / "acl")
    broker.start()
    subscribers: list[Subscriber] = []

    def subscribe(topics, login):
        subscriber = Subscriber(broker, topics, *logins[login])
        subscribers.append(subscriber)
        return subscriber

    yield broker, logins, subscribe
    for subscriber in subscribers:
        subscriber.close()
    broker.stop()


def coin(machine: str, credit_id: str) -> str:
    return json.dumps({"machineId": machine, "credits": 1, "timestamp": "2026-01-01T00:00:00Z",
                       "id": credit_id})


def messages_until(subscriber: Subscriber, sentinel_id: str) -> list:
    """Everything received before the message with id `sentinel_id`."""
    got = []
    while (message := subscriber.next()).json()["id"] != sentinel_id:
        got.append(message)
    return got


def test_provisioned_cabinet_gets_its_coinpulse_and_reports_gameover(provisioned):
    broker, logins, subscribe = provisioned
    cabinet = subscribe("arcade/machine/cab-x/coinpulse", "cab-x")
    monitor = subscribe("arcade/#", "monitor")

    publish(broker, "arcade/machine/cab-x/coinpulse", coin("cab-x", "paid-1"), *logins["api"])
    publish(broker, "arcade/machine/cab-x/gameover", '{"machineId":"cab-x"}', *logins["cab-x"])

    assert cabinet.next().json()["id"] == "paid-1"
    seen = [message.topic for message in monitor.wait_for(2)]
    assert seen == ["arcade/machine/cab-x/coinpulse", "arcade/machine/cab-x/gameover"]


def test_a_cabinet_cannot_credit_another_cabinet(provisioned):
    broker, logins, subscribe = provisioned
    victim = subscribe("arcade/machine/cab-y/coinpulse", "cab-y")
    forged, sentinel = f"forged-{uuid.uuid4().hex}", f"sentinel-{uuid.uuid4().hex}"

    publish(broker, "arcade/machine/cab-y/coinpulse", coin("cab-y", forged), *logins["cab-x"])
    publish(broker, "arcade/machine/cab-y/coinpulse", coin("cab-y", sentinel), *logins["api"])

    # The broker keeps order: had the forged message been accepted it would arrive first.
    assert victim.next().json()["id"] == sentinel


def test_a_cabinet_cannot_read_another_cabinets_coinpulse(provisioned):
    broker, logins, subscribe = provisioned
    snoop = subscribe(["arcade/machine/cab-y/coinpulse", "arcade/machine/cab-x/coinpulse"],
                      "cab-x")

    publish(broker, "arcade/machine/cab-y/coinpulse", coin("cab-y", "not-yours"), *logins["api"])
    publish(broker, "arcade/machine/cab-x/coinpulse", coin("cab-x", "sentinel"), *logins["api"])

    # Both come from one publisher, so "not-yours" would arrive before the sentinel.
    assert [message.json()["id"] for message in messages_until(snoop, "sentinel")] == []


def test_the_monitor_login_cannot_publish(provisioned):
    broker, logins, subscribe = provisioned
    cabinet = subscribe("arcade/machine/cab-x/coinpulse", "cab-x")

    publish(broker, "arcade/machine/cab-x/coinpulse", coin("cab-x", "free"), *logins["monitor"])
    publish(broker, "arcade/machine/cab-x/coinpulse", coin("cab-x", "sentinel"), *logins["api"])

    assert cabinet.next().json()["id"] == "sentinel"
