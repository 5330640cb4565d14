"""Fixtures for the `arcade` command tests: run a command as a user would, with chosen settings."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import API_PASSWORD, API_USER, api_env
from tools.broker import Broker
from tools.cli import cli

REPO = Path(__file__).resolve().parents[2]

# Every setting a command may read: unset unless a test gives it, so a developer's own
# environment never changes what a test sees.
SETTING_NAMES = (
    "MQTT_BROKER", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_TLS", "MQTT_CA_CERT",
    "MQTT_TOPIC_PREFIX", "MQTT_MONITOR_USERNAME", "MQTT_MONITOR_PASSWORD",
    "MQTT_PUBLISH_TIMEOUT_MS", "MAX_CREDITS_PER_MESSAGE", "MACHINE_TOKEN_SECRET",
    "STRIPE_WEBHOOK_SECRET", "CENTS_PER_CREDIT", "ARCADE_API_URL", "OPERATOR_TOKEN",
    "TEST_CHECKOUT", "TEST_CHECKOUT_NETWORK", "PUBLIC_URL", "STRIPE_API_KEY", "MACHINE_IDS",
)


def settings_env(**given: str) -> dict[str, str | None]:
    env: dict[str, str | None] = dict.fromkeys(SETTING_NAMES)
    env.update(given)
    return env


@pytest.fixture(autouse=True)
def no_dotenv_here(tmp_path, monkeypatch):
    """Commands read .env from the current folder: run them in an empty one."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def arcade():
    """arcade(*args, env={...}, input=None) -> click Result, as the user would see it."""

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
        return CliRunner().invoke(cli, list(args), env=settings_env(**(env or {})), input=input,
                                  prog_name="arcade")

    return invoke


@pytest.fixture
def api_login_env(broker) -> dict[str, str]:
    """Settings of the API's broker login on the test broker."""
    return {
        "MQTT_BROKER": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USERNAME": API_USER,
        "MQTT_PASSWORD": API_PASSWORD,
    }


def arcade_process(args: list[str], env: dict[str, str], cwd: Path,
                   argv: list[str] | None = None) -> subprocess.Popen:
    """`arcade ARGS` as a separate process (for commands that keep running, like monitor);
    `argv`: what python runs instead of the plain CLI (a harness around it)."""
    full_env = {key: value for key, value in os.environ.items() if key not in SETTING_NAMES}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(REPO)
    full_env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, *(argv or ["-c", "from tools.cli import main; main()"]), *args],
        env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


WEBHOOK_SECRET = "whsec_tools_test"
OPERATOR_TOKEN = "operator-token-tools-test"


@pytest.fixture
def serve_api(broker, tmp_path):
    """serve_api(**settings) -> base URL of the real API over HTTP on loopback.

    Stripe's own API is replaced by the API tests' stand-in; the API publishes to the session's
    Mosquitto with the API login.
    """
    from werkzeug.serving import make_server

    from api import create_app
    from tests.api.conftest import StripeStub

    stripe = StripeStub()
    threading.Thread(target=stripe.serve_forever, daemon=True).start()
    running = []

    def start(**overrides: str) -> str:
        config = api_env(
            broker,
            tmp_path / f"ledger{len(running)}.db",
            f"{WEBHOOK_SECRET},whsec_older",
            **{
                "STRIPE_API_KEY": "sk_test_tools",
                "STRIPE_API_BASE": stripe.url,
                "PRICE_ID": "price_single",
                "OPERATOR_TOKEN": OPERATOR_TOKEN,
                **overrides,
            },
        )
        app = create_app(config)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((server, app))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, app in running:
        server.shutdown()
        server.server_close()
        app.extensions["arcade"].publisher.close()
    stripe.shutdown()
    stripe.server_close()


@pytest.fixture
def api_server(serve_api) -> str:
    return serve_api()


class ProvisionedBroker(Broker):
    """A Mosquitto whose password and ACL files are exactly what `arcade provision` wrote."""

    def __init__(self, workdir: Path, passwd: Path, acl: Path) -> None:
        super().__init__(workdir)
        self.provisioned = (passwd, acl)

    def write_config(self) -> Path:
        path = super().write_config()
        shutil.copyfile(self.provisioned[0], self.workdir / "passwd")
        shutil.copyfile(self.provisioned[1], self.workdir / "acl")
        return path


class Lines:
    """The output of a running process, line by line, waited on with a deadline (no sleeps)."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The first line (from now) containing `text`; AssertionError with all output if none."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line
