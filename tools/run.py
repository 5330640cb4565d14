"""`arcade run` (`make run`): the whole system on this machine.

Mosquitto on loopback with a generated config (per-cabinet passwords and ACL, as `arcade provision`
makes them), the API with its SQLite ledger, the delivery listener, and simulated cabinets running
the unchanged firmware. Without Stripe keys in `.env` the API runs in test checkout mode.
Ctrl-C (or SIGTERM) stops everything, cabinets first, broker last.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from tools.broker import Broker, api_acl, cabinet_acl, find_mosquitto, observer_acl
from tools.errors import UserError
from tools.provision import write_private_json
from tools.settings import load_env

API_USER = "arcade-api"
MONITOR_USER = "monitor"


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    output: threading.Thread | None = None


@dataclass
class Stack:
    workdir: Path
    machines: list[str]
    host: str
    port: int
    mqtt_port: int
    broker: Broker | None = None
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def api_url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"


def read_known_secrets(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        known = json.loads(path.read_text())
    except ValueError:
        known = None
    if not isinstance(known, dict) or not isinstance(known.get("passwords", {}), dict):
        raise UserError(f"{path} is damaged: delete it (new local passwords are then generated)")
    return known


def local_secrets(workdir: Path, machines: list[str]) -> dict:
    """Generated once and kept in the run folder, so a restart keeps logins, ledger and tokens."""
    path = workdir / "secrets.json"
    known = read_known_secrets(path)
    known.setdefault("webhook_secret", f"whsec_local_{secrets.token_hex(16)}")
    known.setdefault("token_secret", secrets.token_hex(24))
    passwords = known.setdefault("passwords", {})
    for user in [API_USER, MONITOR_USER, *machines]:
        passwords.setdefault(user, secrets.token_urlsafe(18))
    write_private_json(path, known)
    return known


def api_environment(stack: Stack, known: dict, env: dict[str, str]) -> dict[str, str]:
    """The API's settings; real Stripe when `.env` has its keys, else test checkout.

    Whatever `.env` says, the API publishes on the topics and within the per-message limit of the
    cabinets and ACLs generated here: else the broker would drop a coinpulse after its PUBACK, or
    a cabinet ignore it, and a paid credit would be lost.
    """
    from tools.firmware_files import load_config_rules

    cabinet = load_config_rules().DEFAULTS  # what write_cabinet_configs gives every cabinet
    real_stripe = bool(env.get("STRIPE_API_KEY") and env.get("STRIPE_WEBHOOK_SECRET"))
    settings = {
        "MQTT_BROKER": "127.0.0.1",
        "MQTT_PORT": str(stack.mqtt_port),
        "MQTT_USERNAME": API_USER,
        "MQTT_PASSWORD": known["passwords"][API_USER],
        "MQTT_TLS": "false",
        "MQTT_TOPIC_PREFIX": cabinet["mqtt"]["topic_prefix"],
        "MAX_CREDITS_PER_MESSAGE": str(cabinet["max_credits_per_message"]),
        "MQTT_MONITOR_USERNAME": MONITOR_USER,
        "MQTT_MONITOR_PASSWORD": known["passwords"][MONITOR_USER],
        "STORE_URL": f"sqlite:///{(stack.workdir / 'arcade.db').resolve()}",
        "MACHINE_TOKEN_SECRET": env.get("MACHINE_TOKEN_SECRET") or known["token_secret"],
        "MACHINE_IDS": ",".join(stack.machines),
        "ARCADE_API_URL": stack.api_url,
    }
    if real_stripe:
        settings["STRIPE_WEBHOOK_SECRET"] = env["STRIPE_WEBHOOK_SECRET"]
    else:
        settings["STRIPE_WEBHOOK_SECRET"] = known["webhook_secret"]
        settings["TEST_CHECKOUT"] = "true"
        settings["STRIPE_API_KEY"] = ""
        # The test page's links and who may use it (--host 0.0.0.0: set both in .env).
        settings["PUBLIC_URL"] = env.get("PUBLIC_URL") or stack.api_url
        settings["TEST_CHECKOUT_NETWORK"] = env.get("TEST_CHECKOUT_NETWORK", "")
    return settings


def write_cabinet_configs(stack: Stack, known: dict) -> dict[str, Path]:
    """config.json per cabinet, built and validated exactly as `arcade provision` does."""
    from tools.provision import cabinet_config, check_config

    paths = {}
    for machine_id in stack.machines:
        mqtt = {
            "host": "127.0.0.1",
            "port": stack.mqtt_port,
            "user": machine_id,
            "password": known["passwords"][machine_id],
            "tls": False,
        }
        config = cabinet_config(machine_id, {"ssid": "simulated"}, mqtt, {})
        check_config(config)
        path = stack.workdir / "cabinets" / machine_id / "config.json"
        write_private_json(path, config)
        paths[machine_id] = path
    return paths


def start_broker(stack: Stack, known: dict) -> Broker:
    if find_mosquitto() is None:
        raise UserError("mosquitto is not installed: `make run` installs it, or apt-get install it")
    broker = Broker(stack.workdir / "mosquitto", port=stack.mqtt_port)
    passwords = known["passwords"]
    broker.add_user(API_USER, passwords[API_USER], api_acl(API_USER))
    broker.add_user(MONITOR_USER, passwords[MONITOR_USER], observer_acl(MONITOR_USER))
    for machine_id in stack.machines:
        broker.add_user(machine_id, passwords[machine_id], cabinet_acl(machine_id))
    try:
        broker.start()
    except (RuntimeError, TimeoutError) as error:
        raise UserError(f"mosquitto did not start on port {stack.mqtt_port}: {error}") from None
    return broker


def arcade_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools", *args]


def spawn(stack: Stack, name: str, argv: list[str], env: dict[str, str]) -> Child:
    # Own session: Ctrl-C reaches only us, and we stop the children in order.
    process = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    child = Child(name, process)
    child.output = threading.Thread(target=relay_output, args=(child,), daemon=True)
    child.output.start()
    stack.children.append(child)
    return child


def relay_output(child: Child) -> None:
    for line in child.process.stdout:
        click.echo(f"[{child.name}] {line.rstrip()}")


def wait_for_api(stack: Stack, api: Child, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise UserError("the API stopped at start (see the [api] lines above)")
        try:
            with urllib.request.urlopen(f"{stack.api_url}/status", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            stack.stopping.wait(0.1)  # polling the port until gunicorn listens
    raise UserError(f"the API did not answer on {stack.api_url} within {timeout:.0f}s")


def stop_all(stack: Stack) -> None:
    """Cabinets and listener first, then the API, then the broker; nothing left running."""
    for child in reversed(stack.children):
        if child.process.poll() is None:
            child.process.terminate()
    for child in reversed(stack.children):
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        if child.output is not None:
            child.output.join(timeout=5)
    if stack.broker is not None:
        stack.broker.stop()


def write_env_file(stack: Stack, api_env: dict[str, str]) -> Path:
    """Settings for `arcade pay / ledger / monitor` in another terminal."""
    path = stack.workdir / "arcade.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in api_env.items()))
    path.chmod(0o600)
    return path


def banner(stack: Stack, api_env: dict[str, str], env_file: Path) -> str:
    test_mode = api_env.get("TEST_CHECKOUT") == "true"
    first = stack.machines[0]
    mode = (
        "test checkout mode (no Stripe account needed)" if test_mode else "real Stripe (test keys)"
    )
    pay = (
        f"  open {stack.api_url}/test-checkout/{first}  and press 'Pay (test)'\n"
        if test_mode
        else "  scan the cabinet's payment link (arcade qr) and pay with a test card\n"
    )
    return (
        f"\nArcade STEM is running — {mode}\n"
        f"  broker    mqtt://127.0.0.1:{stack.mqtt_port}   (config in {stack.broker.workdir})\n"
        f"  API       {stack.api_url}   (ledger {stack.workdir / 'arcade.db'})\n"
        f"  cabinets  {', '.join(stack.machines)}   (simulated, unchanged firmware)\n"
        f"Pay:\n{pay}"
        f"  or, in another terminal:  set -a; . {env_file}; set +a; arcade pay {first}\n"
        f"Watch:  arcade monitor   |   arcade ledger   (same settings file)\n"
        f"Stop:   Ctrl-C\n"
        f"ready"
    )


@click.command("run")
@click.option(
    "--dir",
    "workdir",
    default="run",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the broker, ledger, cabinets' journals and generated secrets.",
)
@click.option(
    "--cabinets",
    default=2,
    show_default=True,
    type=click.IntRange(1, 50),
    help="How many simulated cabinets (demo-1, demo-2, ...).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="API address; 0.0.0.0 lets a phone on the same network open the test page.",
)
@click.option("--port", default=5000, show_default=True, help="API port.")
@click.option("--mqtt-port", default=1883, show_default=True, help="Broker port (loopback).")
def run(workdir: Path, cabinets: int, host: str, port: int, mqtt_port: int) -> None:
    """Start the whole system on this machine and show a credit travel to a coin line.

    \b
    Examples:
      arcade run
      arcade run --cabinets 3 --host 0.0.0.0     # pay from a phone on this network
    """
    env = dict(load_env())
    workdir.mkdir(parents=True, exist_ok=True)
    machines = [f"demo-{index}" for index in range(1, cabinets + 1)]
    stack = Stack(workdir.resolve(), machines, host, port, mqtt_port)
    known = local_secrets(stack.workdir, machines)
    api_env = api_environment(stack, known, env)
    configs = write_cabinet_configs(stack, known)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *args: stack.stopping.set())
    try:
        stack.broker = start_broker(stack, known)
        api = spawn(
            stack,
            "api",
            arcade_command("serve", "--host", host, "--port", str(port), "--workers", "2"),
            api_env,
        )
        wait_for_api(stack, api)
        spawn(stack, "listener", arcade_command("listen"), api_env)
        for machine_id, config in configs.items():
            events = config.parent / "events.jsonl"
            spawn(
                stack,
                machine_id,
                arcade_command("simulate", "--config", str(config), "--events", str(events)),
                {"PYTHONUNBUFFERED": "1"},
            )
        click.echo(banner(stack, api_env, write_env_file(stack, api_env)))
        while not stack.stopping.wait(0.5):
            dead = [c for c in stack.children if c.process.poll() is not None]
            if dead:
                raise UserError(f"{dead[0].name} stopped unexpectedly (see its lines above)")
    finally:
        click.echo("stopping: cabinets, listener, API, broker")
        stop_all(stack)
    click.echo("stopped")
