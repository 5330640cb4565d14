"""Fixtures for the firmware: the MicroPython VM (Node.js + the npm WebAssembly port), the host
cabinet (`arcade simulate` as a subprocess) and its event stream."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
HERE = Path(__file__).resolve().parent
WASM_PACKAGE = REPO / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


def missing(message: str) -> None:
    """In CI a missing tool is a failure, never a silent skip."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (apt-get install nodejs npm)")
    if not WASM_PACKAGE.exists():
        npm = shutil.which("npm")
        if npm is None:
            missing("npm is not installed (apt-get install npm)")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=REPO, check=True, timeout=300)
    return node


def run_micropython(*codes: str, dirs: list[Path] | None = None, timeout: float = 120) -> str:
    """stdout of running each code string (one runPython call each) on the MicroPython VM."""
    node = require_node()
    dirs = dirs or [FIRMWARE, HERE]
    result = subprocess.run(
        [node, str(HERE / "run_mpy.mjs"), ",".join(str(d) for d in dirs), *codes],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"MicroPython failed:\n{result.stdout[-3000:]}\n{result.stderr}"
    return result.stdout


def parse_results(stdout: str) -> dict[str, dict]:
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, body = line.split(" ", 2)
            results[name] = json.loads(body)
    results["_stdout"] = stdout  # type: ignore[assignment]
    return results


@pytest.fixture(scope="session")
def micropython_results() -> dict[str, dict]:
    stdout = run_micropython("import scenarios\nscenarios.main(root='/tmp/s', firmware='/fw')")
    return parse_results(stdout)


@pytest.fixture(scope="session")
def cpython_results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("scenarios")
    result = subprocess.run(
        [sys.executable, str(HERE / "run_cpython.py"), str(FIRMWARE), str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return parse_results(result.stdout)


@pytest.fixture(params=["micropython", "cpython"])
def results(request) -> dict[str, dict]:
    """The scenario observations from one interpreter; every test runs against both."""
    return request.getfixturevalue(f"{request.param}_results")


# --- the host cabinet ---------------------------------------------------------------------------
class Cabinet:
    """`arcade simulate` in a subprocess, with its --events file read as it grows."""

    def __init__(self, workdir: Path, config: dict, extra: list[str] | None = None):
        self.workdir = workdir
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.events_path = workdir / "events.jsonl"
        self.extra = extra or []
        self.process: subprocess.Popen | None = None
        self.console = workdir / "console.txt"
        self._offset = 0
        self.events: list[dict] = []

    def start(self) -> Cabinet:
        command = [sys.executable, "-c", "from tools.cli import main; main()", "simulate",
                   "--config", str(self.config_path), "--events", str(self.events_path),
                   *self.extra]
        self._console = self.console.open("ab")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._console,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def read(self) -> list[dict]:
        if self.events_path.exists():
            with self.events_path.open() as f:
                f.seek(self._offset)
                while True:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break  # a line still being written: read it next time
                    self._offset += len(line.encode())
                    self.events.append(json.loads(line))
        return self.events

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "event"):
        """Poll the events file until predicate(events) is truthy; fail with the console."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(self.read())
            if found:
                return found
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"simulator exited ({self.process.returncode}) waiting for "
                                     f"{what}:\n{self.console.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; console:\n"
                                     f"{self.console.read_text()[-3000:]}")
            time.sleep(0.02)  # polling a file for an event, bounded by the deadline

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.read() if e["event"] == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    def wait_count(self, kind: str, n: int, timeout: float = 15.0) -> list[dict]:
        self.wait_for(lambda events: self.count(kind) >= n, timeout, f"{n} x {kind}")
        return self.of(kind)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process:
            self._console.close()
            return self.process.returncode
        return None


def cabinet_config(broker, machine_id: str, **relay) -> dict:
    return {
        "machine_id": machine_id,
        "wifi": {"ssid": "host", "password": ""},
        "mqtt": {"host": broker.host, "port": broker.port, "user": machine_id,
                 "password": f"pw-{machine_id}", "keepalive": 10, "backoff_max_s": 2},
        "relay": {"pin": 26, "active_high": True, "pulse_ms": 100, "gap_ms": 200,
                  "pulses_per_credit": 1, **relay},
        "status_interval_s": 60,
    }


@pytest.fixture
def host_cabinet(tmp_path):
    """host_cabinet(config, *extra_args) -> a started Cabinet; stopped after the test."""
    made: list[Cabinet] = []

    def factory(config: dict, *extra: str, name: str = "cab") -> Cabinet:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        cabinet = Cabinet(workdir, config, list(extra)).start()
        made.append(cabinet)
        return cabinet

    yield factory
    for cabinet in made:
        cabinet.stop()
