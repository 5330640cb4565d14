"""What `arcade run` generates: local secrets, each process's settings, the cabinets' configs, the
settings file and `activate` script for another terminal, and the banner that explains them."""

from __future__ import annotations

import json
import secrets
import shlex
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from tools.errors import UserError
from tools.provision import write_private_json, write_private_text

if TYPE_CHECKING:
    from tools.run import Stack

API_USER = "arcade-api"
MONITOR_USER = "monitor"
SEED_CABINET = "machine_123"  # the seed README's example cabinet: its curl lines work as written


def machine_ids(count: int) -> list[str]:
    return [SEED_CABINET, *(f"demo-{index}" for index in range(2, count + 1))]


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


def broker_settings(stack: Stack, known: dict) -> dict[str, str]:
    """The API's login on the generated broker, and the cabinets' topic prefix and limit.

    Whatever `.env` says, the API publishes on the topics and within the per-message limit of the
    cabinets and ACLs generated here: else the broker would drop a coinpulse after its PUBACK, or
    a cabinet ignore it, and a paid credit would be lost.
    """
    from tools.firmware_files import load_config_rules

    cabinet = load_config_rules().DEFAULTS  # what write_cabinet_configs gives every cabinet
    return {
        "MQTT_BROKER": "127.0.0.1",
        "MQTT_PORT": str(stack.mqtt_port),
        "MQTT_USERNAME": API_USER,
        "MQTT_PASSWORD": known["passwords"][API_USER],
        "MQTT_TLS": "false",
        "MQTT_TOPIC_PREFIX": cabinet["mqtt"]["topic_prefix"],
        "MAX_CREDITS_PER_MESSAGE": str(cabinet["max_credits_per_message"]),
        "STORE_URL": f"sqlite:///{stack.workdir / 'arcade.db'}",
    }


def api_environment(stack: Stack, known: dict, env: dict[str, str]) -> dict[str, str]:
    """The API's settings (over `.env`'s): real Stripe when `.env` has its keys, else test
    checkout."""
    real_stripe = bool(env.get("STRIPE_API_KEY") and env.get("STRIPE_WEBHOOK_SECRET"))
    settings = {
        **broker_settings(stack, known),
        "MACHINE_TOKEN_SECRET": env.get("MACHINE_TOKEN_SECRET") or known["token_secret"],
        "MACHINE_IDS": ",".join(stack.machines),
    }
    if real_stripe:
        settings["STRIPE_WEBHOOK_SECRET"] = env["STRIPE_WEBHOOK_SECRET"]
    else:
        settings["STRIPE_WEBHOOK_SECRET"] = known["webhook_secret"]
        settings["TEST_CHECKOUT"] = "true"
        settings["STRIPE_API_KEY"] = ""
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


def child_environment(stack: Stack) -> dict[str, str]:
    """For the broker and the cabinets: no setting at all (they read their generated files)."""
    return {**stack.plain_env, "PYTHONUNBUFFERED": "1"}


def listener_environment(stack: Stack, api_env: dict[str, str], known: dict) -> dict[str, str]:
    """The listener needs the broker and the ledger. It checks the API's settings as a whole, so
    it also gets a webhook secret: the local one, which it never uses, never the real one."""
    return {
        **child_environment(stack),
        **broker_settings(stack, known),
        "STRIPE_WEBHOOK_SECRET": known["webhook_secret"],
    }


def tool_settings(stack: Stack, api_env: dict[str, str], known: dict,
                  env: dict[str, str]) -> dict[str, str]:
    """For `arcade pay / ledger / monitor / publish / provision --token-only` and mosquitto_sub
    in another terminal: the API's logins and secrets they use, never the Stripe API key."""
    names = ("MQTT_BROKER", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_TLS",
             "MQTT_TOPIC_PREFIX", "MAX_CREDITS_PER_MESSAGE", "STORE_URL", "MACHINE_TOKEN_SECRET",
             "STRIPE_WEBHOOK_SECRET")
    settings = {name: api_env[name] for name in names}
    settings.update(
        MQTT_MONITOR_USERNAME=MONITOR_USER,
        MQTT_MONITOR_PASSWORD=known["passwords"][MONITOR_USER],
        ARCADE_API_URL=stack.api_url,
    )
    if env.get("CENTS_PER_CREDIT"):
        settings["CENTS_PER_CREDIT"] = env["CENTS_PER_CREDIT"]
    return settings


def write_tool_settings(stack: Stack, settings: dict[str, str]) -> dict[str, str]:
    """run/arcade.env (a dotenv file) and run/activate, which puts `arcade` on PATH and exports
    those settings: `. run/activate` in another terminal."""
    env_file = stack.workdir / "arcade.env"
    write_private_text(env_file, "".join(f"{key}={shlex.quote(value)}\n"
                                         for key, value in settings.items()))
    scripts = sysconfig.get_path("scripts")  # where `arcade` is installed (.venv/bin)
    write_private_text(stack.workdir / "activate", (
        "# Source it (. run/activate): `arcade` on PATH and the settings of this `arcade run`.\n"
        f'export PATH={shlex.quote(scripts)}:"$PATH"\n'
        f"set -a\n. {shlex.quote(str(env_file))}\nset +a\n"))
    return settings


def activate_line(workdir: Path) -> str:
    """`. run/activate` from here when the run folder is below, else its absolute path."""
    path = workdir / "activate"
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return f". {shlex.quote(str(shown))}"


def seed_examples(stack: Stack, settings: dict[str, str]) -> list[str]:
    """The seed README's commands, with the logins they need here (anonymous is refused)."""
    machine = stack.machines[0]
    port = "" if stack.mqtt_port == 1883 else f" -p {stack.mqtt_port}"
    prefix = settings["MQTT_TOPIC_PREFIX"]
    api = stack.api_url.replace("127.0.0.1", "localhost")
    return [
        f"curl -X POST {api}/create-payment-link -H 'Content-Type: application/json' "
        f"-d '{{\"machine_id\":\"{machine}\"}}'",
        f"mosquitto_sub -h localhost{port} -u \"$MQTT_MONITOR_USERNAME\" "
        f"-P \"$MQTT_MONITOR_PASSWORD\" -t \"{prefix}/machine/+/coinpulse\"",
        f"mosquitto_pub -h localhost{port} -u \"$MQTT_USERNAME\" -P \"$MQTT_PASSWORD\" -q 1 "
        f"-t \"{prefix}/machine/{machine}/coinpulse\" "
        f"-m '{{\"machineId\":\"{machine}\",\"credits\":1}}'",
    ]


def banner(stack: Stack, settings: dict[str, str], activate: str) -> str:
    test_mode = stack.test_checkout
    first = stack.machines[0]
    mode = (
        "test checkout mode (no Stripe account needed)" if test_mode else "real Stripe (test keys)"
    )
    pay = (
        f"  open {stack.api_url}/test-checkout/{first}  and press 'Pay (test)'\n"
        if test_mode
        else "  scan the cabinet's payment link (arcade qr) and pay with a test card\n"
    )
    examples = "".join(f"  {line}\n" for line in seed_examples(stack, settings))
    return (
        f"\nArcade STEM is running — {mode}\n"
        f"  broker    mqtt://localhost:{stack.mqtt_port}   (config in {stack.broker.workdir})\n"
        f"  API       {stack.api_url}   (ledger {stack.workdir / 'arcade.db'})\n"
        f"  cabinets  {', '.join(stack.machines)}   (simulated, unchanged firmware)\n"
        f"Pay:\n{pay}"
        f"In another terminal, first:  {activate}   (arcade on PATH, with this run's settings)\n"
        f"  arcade pay {first}   |   arcade monitor   |   arcade ledger\n"
        f"The seed's examples (anonymous MQTT is refused: every login has its own ACL, and\n"
        f"the monitor login '{MONITOR_USER}' may read every topic but write none):\n"
        f"{examples}"
        f"Stop:   Ctrl-C\n"
        f"ready"
    )
