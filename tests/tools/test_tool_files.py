"""The tools' files that a broker trusts (issue 11, "Why" 7): written whole and private, with
prefixes that cannot inject ACL lines, and listeners that do not evict each other."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import stat
import sys
import threading

import pytest

from api.settings import SettingsError, settings_from_env
from tests.conftest import publish
from tools.broker import api_acl, cabinet_acl, observer_acl
from tools.provision import write_private_text

CABINET_ARGS = ["--ssid", "arcade-wifi", "--wifi-password", "w", "--host", "127.0.0.1",
                "--no-tls"]


@contextlib.contextmanager
def files_opened_for_writing(directory):
    """Names of the files in `directory` opened for writing meanwhile (Python's audit hook sees
    every open()/os.open()). A file written in place is opened under its own name: a reader may
    see it half written, with the mode the umask gave it, until a chmod comes."""
    names: list[str] = []
    active = True

    def hook(event, args):
        if not active or event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2] or 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            flags & (os.O_WRONLY | os.O_RDWR))
        if writing and os.path.dirname(os.path.abspath(path)) == str(directory):
            names.append(os.path.basename(path))

    sys.addaudithook(hook)  # cannot be removed: it goes quiet when the block ends
    try:
        yield names
    finally:
        active = False


def test_broker_files_are_private_from_the_start_whatever_the_umask(arcade, tmp_path):
    old = os.umask(0o000)  # the worst case: write_text would make them world-readable
    try:
        with files_opened_for_writing(tmp_path) as opened:
            result = arcade("provision", "machine_123", *CABINET_ARGS, "--passwd-file", "passwd",
                            "--acl-file", "acl")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    # Only private temporary files were written; the real names appeared by rename, complete.
    assert opened and all(name.startswith(".") for name in opened), opened
    for name in ("passwd", "acl", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_tls_private_keys_are_private_from_the_start_whatever_the_umask(tmp_path):
    from tools.certs import make_tls_files

    old = os.umask(0o000)
    try:
        with files_opened_for_writing(tmp_path) as opened:
            files = make_tls_files(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(files.keyfile.stat().st_mode) == 0o600
    assert files.keyfile.name not in opened, opened
    assert files.keyfile.read_text().startswith("-----BEGIN EC PRIVATE KEY-----")


def test_an_existing_file_keeps_its_mode_but_never_for_others(tmp_path):
    path = tmp_path / "acl"
    path.write_text("old\n")
    path.chmod(0o644)  # e.g. made readable for the mosquitto group by the operator
    write_private_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_reader_sees_the_old_file_or_the_new_one_never_half(tmp_path):
    """What Mosquitto does on SIGHUP while `arcade provision` rewrites its password file."""
    path = tmp_path / "passwd"
    versions = ["".join(f"user{v}-{i}:$7$hash\n" for i in range(2000)) for v in range(2)]
    write_private_text(path, versions[0])
    seen, done = set(), threading.Event()

    def read_all_the_time():
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for round_ in range(60):
            write_private_text(path, versions[round_ % 2])
    finally:
        done.set()
        reader.join(timeout=10)
    assert seen <= set(versions) and seen


BAD_PREFIXES = ["arcade\ntopic readwrite #", "arcade/+", "#", "a//b", "/arcade", "arcade/",
                "ar cade", "x" * 65]


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_provision_refuses_a_prefix_that_would_change_the_acl(arcade, tmp_path, prefix):
    result = arcade("provision", "machine_123", *CABINET_ARGS, "--prefix", prefix,
                    "--acl-file", "acl")
    assert result.exit_code == 2
    assert result.output.startswith("error: topic prefix must be levels of 1-64 letters")
    assert not (tmp_path / "acl").exists()


@pytest.mark.parametrize("prefix", BAD_PREFIXES)
def test_the_same_prefix_from_dotenv_is_refused_by_provision_and_the_api(arcade, tmp_path, prefix):
    result = arcade("provision", "svc", "--role", "api", env={"MQTT_TOPIC_PREFIX": prefix})
    assert result.exit_code == 2 and "topic prefix" in result.output
    with pytest.raises(SettingsError, match="MQTT_TOPIC_PREFIX must be levels"):
        settings_from_env({"STRIPE_WEBHOOK_SECRET": "w", "MQTT_BROKER": "h",
                           "MQTT_TOPIC_PREFIX": prefix})


@pytest.mark.parametrize("acl", [cabinet_acl, api_acl, observer_acl])
def test_acl_blocks_refuse_injected_lines_even_when_called_directly(acl):
    with pytest.raises(ValueError):
        acl("machine_123", "arcade\ntopic readwrite #")
    with pytest.raises(ValueError):
        acl("cab\ntopic readwrite #", "arcade")


def test_a_prefix_of_several_levels_is_fine(arcade, tmp_path):
    result = arcade("provision", "machine_123", *CABINET_ARGS, "--prefix", "site-1/arcade",
                    "--acl-file", "acl")
    assert result.exit_code == 0, result.output
    acl = (tmp_path / "acl").read_text()
    assert "topic read site-1/arcade/machine/machine_123/coinpulse" in acl
    assert json.loads((tmp_path / "config.json").read_text())["mqtt"]["topic_prefix"] == (
        "site-1/arcade")


def test_listeners_of_two_ledgers_both_hear_every_cabinet(own_broker, tmp_path):
    """They used to share one client id: each connection evicted the other, and each message
    went to only one of them."""
    from api.store_sqlite import SQLiteStore
    from tests.api.conftest import api_config
    from tools.listen import listener_client_id, start_listener

    heard = {"a": queue.Queue(), "b": queue.Queue()}
    clients, stores = [], {}
    for name in heard:
        settings = settings_from_env(api_config(own_broker, tmp_path / name))
        stores[name] = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
        clients.append(start_listener(settings, stores[name],
                                      lambda topic, result, q=heard[name]: q.put(result)))
    try:
        ids = {listener.client._client_id for listener in clients}  # the Listener's paho client
        assert len(ids) == 2
        status = json.dumps({"machineId": "cab-a", "state": "online", "firmware": "1.0.0"})
        # Retained, as the firmware sends it: heard whenever each listener's subscription lands.
        publish(own_broker, "arcade/machine/cab-a/status", status, "cab-a", "pw-cab-a",
                retain=True)
        assert heard["a"].get(timeout=10) == "online" and heard["b"].get(timeout=10) == "online"
        assert all(listener.client.is_connected() for listener in clients)
    finally:
        for listener in clients:
            listener.stop()
    # The same ledger on the same machine keeps its id: a restart finds its queued acks.
    again = settings_from_env(api_config(own_broker, tmp_path / "a"))
    assert listener_client_id(again).encode() in ids
