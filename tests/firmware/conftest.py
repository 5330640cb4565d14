"""Fixtures for the firmware: the real MicroPython (unix port v1.27.0: scenarios in virtual time and
whole boards against Mosquitto, see real_board.py), its WebAssembly port (Node.js + npm), CPython,
and the host cabinet (`arcade simulate` as a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The host cabinet (`arcade simulate` as a subprocess) is shared with tests/e2e: see
# tests/conftest.py. Re-exported for the firmware tests' imports.
from tests.conftest import Cabinet, cabinet_config  # noqa: F401
from tests.firmware.ntp_server import NtpServer
from tests.firmware.real_board import (
    SETTING,
    RealCabinet,
    micropython_binary,
    micropython_dir,
    umqtt_1_8_dir,
)

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


def run_unix(script: str, root: Path, timeout: float = 300) -> str:
    """stdout of scenarios.main() on the real MicroPython (unix port v1.27.0)."""
    binary = require_micropython()
    result = subprocess.run(
        [str(binary), "-X", "heapsize=4M", "-c", script],
        cwd=root, capture_output=True, text=True, timeout=timeout,
        env={"MICROPYPATH": f"{FIRMWARE}:{HERE}:.frozen", "PATH": os.environ.get("PATH", "")},
    )
    assert result.returncode == 0, f"MicroPython failed:\n{result.stdout[-3000:]}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def unix_results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("unix")
    return parse_results(run_unix(
        f"import scenarios\nscenarios.main(root={str(root)!r}, firmware={str(FIRMWARE)!r})", root))


@pytest.fixture(scope="session")
def wasm_results() -> dict[str, dict]:
    stdout = run_micropython("import scenarios\nscenarios.main(root='/tmp/s', firmware='/fw')",
                             dirs=[FIRMWARE, HERE])
    return parse_results(stdout)


@pytest.fixture(scope="session")
def cpython_results(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("scenarios")
    result = subprocess.run(
        [sys.executable, str(HERE / "run_cpython.py"), str(FIRMWARE), str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return parse_results(result.stdout)


@pytest.fixture(params=["unix", "wasm", "cpython"])
def results(request) -> dict[str, dict]:
    """The scenario observations from one interpreter; every test runs against each: the real
    MicroPython (unix port), its WebAssembly port (npm: runs in a clone without ../shared) and
    CPython (what `arcade simulate` runs the firmware on)."""
    return request.getfixturevalue(f"{request.param}_results")


# --- the real MicroPython (unix port v1.27.0, see tests/firmware/real_board.py) ------------------
def require_micropython(variant: str = "micropython"):
    binary = micropython_binary(variant)
    if binary is None:
        missing(f"the MicroPython unix port ({variant}) is not in {micropython_dir()}: set "
                f"{SETTING} to the folder holding micropython, micropython-32 and "
                "micropython-esp32sock (see ../shared/micropython/README.md)")
    return binary


@pytest.fixture(params=["umqtt-1.7.0", pytest.param("umqtt-1.8.0", marks=pytest.mark.slow)])
def umqtt_dir(request):
    """None: the umqtt.simple frozen into the binary (1.7.0, as ESP32_GENERIC v1.27.0 has it);
    else the folder of the newest one (1.8.0), put before .frozen."""
    if request.param == "umqtt-1.7.0":
        return None
    require_micropython()
    folder = umqtt_1_8_dir()
    if folder is None:
        missing(f"umqtt.simple 1.8.0 is not in {micropython_dir().parent / 'lib'}")
    return folder


@pytest.fixture
def real_cabinet(tmp_path):
    """real_cabinet(config, name=..., variant=..., **options) -> a started RealCabinet.

    The heap is 256 KB: the 64-bit build's objects are ~1.6 x an ESP32's. Heap figures (and the
    backlog at 100 KB) come from the 32-bit build, variant="micropython-32"."""
    made: list[RealCabinet] = []

    def factory(config, *, name="cab", variant="micropython", start=True, **options):
        options.setdefault("heap", "256k")
        cabinet = RealCabinet(tmp_path / name, config, require_micropython(variant), **options)
        made.append(cabinet)
        return cabinet.start() if start else cabinet

    yield factory
    for cabinet in made:
        cabinet.stop()


@pytest.fixture(scope="session")
def ntp():
    server = NtpServer()
    yield server
    server.close()


def real_config(broker, machine_id: str, ntp: NtpServer | None = None, **relay) -> dict:
    """A cabinet's config.json for a board on this machine's loopback broker (and NTP)."""
    config = cabinet_config(broker, machine_id, **relay)
    config["mqtt"]["timeout_s"] = 3
    config["ntp_server"] = ntp.address if ntp else "127.0.0.1:9"
    return config


@pytest.fixture
def tls_broker(tmp_path):
    """A Mosquitto of this test's own with TLS (the local CA: tools/certs.py)."""
    from tests.conftest import make_broker
    from tools.certs import make_tls_files

    broker = make_broker(tmp_path / "mosquitto")
    broker.tls = make_tls_files(tmp_path / "tls")
    broker.start()
    yield broker
    broker.stop()


def tls_config(broker, machine_id: str, ntp: NtpServer | None, host: str = "127.0.0.1",
               **relay) -> dict:
    """real_config over TLS, the CA as ca.der on the board's flash (the unix port reads DER)."""
    config = real_config(broker, machine_id, ntp, **relay)
    config["mqtt"].update(tls=True, ca_file="ca.der", host=host)
    return config
