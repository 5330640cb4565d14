"""`make run` itself (`arcade run`): it starts everything, prints `ready`, a payment made with the
printed settings pulses the cabinet, the test-checkout page is served, and Ctrl-C stops it all
with nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from tests.conftest import require_mosquitto
from tests.e2e.conftest import Output, arcade_argv, process_env
from tools.broker import free_port

pytestmark = pytest.mark.slow


def processes_under(folder: Path) -> list[str]:
    """Processes (not us) whose command line or working folder is inside `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if str(folder) in command or cwd.startswith(str(folder)):
            found.append(f"{entry.name}: {command}")
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_arcade_run_pays_a_cabinet_and_stops_cleanly_on_ctrl_c(tmp_path):
    require_mosquitto()
    port, mqtt_port = free_port(), free_port()
    workdir = tmp_path / "run"
    run = subprocess.Popen(
        arcade_argv("run", "--dir", str(workdir), "--cabinets", "2", "--port", str(port),
                    "--mqtt-port", str(mqtt_port)),
        cwd=tmp_path, env=process_env({}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(run.stdout)
    try:
        out.wait_line("ready", timeout=60)  # the banner's last line
        assert "Stop:   Ctrl-C" in out.text
        settings = dotenv_values(workdir / "arcade.env")
        paid = subprocess.run(arcade_argv("pay", "machine_123", "--credits", "2"),
                              env=process_env(settings), cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert paid.returncode == 0, paid.stdout + paid.stderr
        session = paid.stdout.split("session ")[1].split()[0]
        out.wait_for(f"machine_123 pulse 2/2  id={session}")
        out.wait_for(f"machine_123 ack sent  id={session}")
        pulses = [line for line in out.lines if " pulse " in line]
        assert len(pulses) == 2 and all(line.startswith("[machine_123] ") for line in pulses)
        page = requests.get(f"http://127.0.0.1:{port}/test-checkout/machine_123", timeout=10)
        assert page.status_code == 200
        assert "TEST MODE" in page.text and 'id="pay"' in page.text
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C
        returncode = run.wait(timeout=60)
    out.wait_line("stopped")  # the output thread may still be catching up
    assert returncode == 0, out.text
    assert out.lines[-1] == "stopped"
    assert processes_under(tmp_path) == []
    assert not listening(port) and not listening(mqtt_port)
