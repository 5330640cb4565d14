"""Fixtures for the firmware: the MicroPython VM (Node.js + the npm WebAssembly port), the host
cabinet (`arcade simulate` as a subprocess) and its event stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
def net_dir(tmp_path_factory) -> Path:
    """The genuine umqtt/simple.py (from PyPI, see tools/umqtt_host.py) and a scripted broker
    behind a fake `usocket`, for link.py on either interpreter."""
    from tools.umqtt_host import umqtt_simple_path

    folder = tmp_path_factory.mktemp("net")
    (folder / "umqtt").mkdir()
    (folder / "umqtt" / "__init__.py").write_text("")
    shutil.copyfile(umqtt_simple_path(), folder / "umqtt" / "simple.py")
    shutil.copyfile(HERE / "fake_net.py", folder / "usocket.py")
    return folder


@pytest.fixture(scope="session")
def micropython_results(net_dir) -> dict[str, dict]:
    stdout = run_micropython("import scenarios\nscenarios.main(root='/tmp/s', firmware='/fw')",
                             dirs=[FIRMWARE, HERE, net_dir])
    return parse_results(stdout)


@pytest.fixture(scope="session")
def cpython_results(tmp_path_factory, net_dir) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("scenarios")
    result = subprocess.run(
        [sys.executable, str(HERE / "run_cpython.py"), str(FIRMWARE), str(root), str(net_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return parse_results(result.stdout)


@pytest.fixture(params=["micropython", "cpython"])
def results(request) -> dict[str, dict]:
    """The scenario observations from one interpreter; every test runs against both."""
    return request.getfixturevalue(f"{request.param}_results")


# The host cabinet (`arcade simulate` as a subprocess) is shared with tests/e2e: see
# tests/conftest.py. Re-exported for the firmware tests' imports.
from tests.conftest import Cabinet, cabinet_config  # noqa: E402, F401
