"""`arcade provision`: a cabinet's config.json, its broker login and its /gameover token."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from tools.errors import UserError
from tools.settings import flag, load_env, require_machine_id, text

# Name of the CA certificate on the board, next to config.json.
BOARD_CA_FILE = "ca.crt"
ROLES = ("cabinet", "api", "monitor")


@dataclass(frozen=True)
class BrokerEntry:
    """What an operator adds to Mosquitto for one user."""

    user: str
    password_line: str
    acl: str


def broker_entry(role: str, user: str, password: str, prefix: str) -> BrokerEntry:
    from tools.broker import api_acl, cabinet_acl, observer_acl, password_line

    acl_for = {"cabinet": cabinet_acl, "api": api_acl, "monitor": observer_acl}[role]
    return BrokerEntry(user, password_line(user, password), acl_for(user, prefix))


def cabinet_config(
    machine_id: str,
    wifi: Mapping[str, str],
    mqtt: Mapping[str, object],
    hardware: Mapping[str, Mapping[str, int]],
) -> dict:
    """config.json in the firmware's shape, with the firmware's defaults filled in."""
    from tools.firmware_files import config_with_defaults

    config: dict = {"machine_id": machine_id, "wifi": dict(wifi), "mqtt": dict(mqtt)}
    for section, values in hardware.items():
        if values:
            config[section] = dict(values)
    return config_with_defaults(config)


def hardware_sections(
    relay_pin: int | None,
    pulse_ms: int | None,
    gap_ms: int | None,
    pulses_per_credit: int | None,
    gameover_pin: int | None,
    lockout_pin: int | None,
) -> dict[str, dict[str, int]]:
    """Only what the operator chose; everything else comes from the firmware's defaults."""
    relay = {
        "pin": relay_pin,
        "pulse_ms": pulse_ms,
        "gap_ms": gap_ms,
        "pulses_per_credit": pulses_per_credit,
    }
    return {
        "relay": {key: value for key, value in relay.items() if value is not None},
        "gameover": {"pin": gameover_pin} if gameover_pin is not None else {},
        "lockout": {"pin": lockout_pin} if lockout_pin is not None else {},
    }


def check_config(config: dict) -> None:
    from tools.firmware_files import config_problems

    problems = config_problems(config)
    if problems:
        raise UserError("the firmware would reject this config: " + "; ".join(problems))


def write_private_text(path: Path, text_: str) -> None:
    """Write a file that holds secrets (or rules a broker trusts) safely.

    Created with its final mode, readable by the owner only (never world-readable, not even for
    a moment; a file that exists keeps its owner and mode, less any access for others), then
    swapped in atomically: a reader such as Mosquitto on SIGHUP sees the old file or the new one,
    never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            if path.exists():
                current = path.stat()
                os.fchmod(handle.fileno(), stat.S_IMODE(current.st_mode) & ~0o007)
                with contextlib.suppress(PermissionError):  # only root may give files away
                    os.fchown(handle.fileno(), current.st_uid, current.st_gid)
            handle.write(text_)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: dict) -> None:
    """config.json holds the WiFi and broker passwords: readable by the owner only."""
    write_private_text(path, json.dumps(data, indent=2) + "\n")


def user_in_password_file(path: Path, user: str) -> bool:
    if not path.is_file():
        return False
    return any(line.split(":", 1)[0] == user for line in path.read_text().splitlines())


def user_in_acl_file(path: Path, user: str) -> bool:
    if not path.is_file():
        return False
    return f"user {user}" in (line.strip() for line in path.read_text().splitlines())


def without_password_line(text_: str, user: str) -> str:
    kept = [line for line in text_.splitlines() if line.split(":", 1)[0] != user]
    return "".join(line + "\n" for line in kept)


def without_acl_block(text_: str, user: str) -> str:
    """The ACL file minus the block that starts at `user <user>` (up to the next `user` line)."""
    kept, skipping = [], False
    for line in text_.splitlines():
        if line.strip().startswith("user "):
            skipping = line.strip() == f"user {user}"
        if not skipping:
            kept.append(line)
    return "".join(line + "\n" for line in kept)


def add_to_password_file(path: Path, entry: BrokerEntry) -> None:
    current = path.read_text() if path.is_file() else ""
    write_private_text(path, without_password_line(current, entry.user) + entry.password_line
                       + "\n")


def add_to_acl_file(path: Path, entry: BrokerEntry) -> None:
    current = without_acl_block(path.read_text(), entry.user).rstrip() if path.is_file() else ""
    separator = "\n\n" if current else ""
    write_private_text(path, current + separator + entry.acl + "\n")


def checked_prefix(prefix: str) -> str:
    """The topic prefix goes into topics and into the broker's ACL file: validated like the
    API's MQTT_TOPIC_PREFIX (a newline would add an ACL line, '#' widen one)."""
    from api.machines import topic_prefix_problem

    problem = topic_prefix_problem(prefix)
    if problem:
        raise UserError(f"topic prefix {problem}")
    return prefix


def refuse_overwrites(
    config_path: Path | None, passwd_file: Path | None, acl_file: Path | None, user: str
) -> None:
    """Checked before anything is written: a second run must not lose the first password."""
    if config_path is not None and config_path.exists():
        raise UserError(f"{config_path} already exists (use --force to replace it)")
    if passwd_file is not None and user_in_password_file(passwd_file, user):
        raise UserError(f"{passwd_file} already has user {user} (use --force to replace it)")
    if acl_file is not None and user_in_acl_file(acl_file, user):
        raise UserError(f"{acl_file} already has user {user} (use --force to replace it)")


def gameover_token(env: Mapping[str, str], machine_id: str) -> str | None:
    from api.machines import machine_token

    secret = text(env, "MACHINE_TOKEN_SECRET")
    return machine_token(secret, machine_id) if secret else None


def missing_token_secret(machine_id: str) -> str:
    return ("MACHINE_TOKEN_SECRET is not set (set it to the API's value, then run: arcade "
            f"provision {machine_id} --token-only)")


def gameover_token_line(env: Mapping[str, str], machine_id: str) -> str:
    token = gameover_token(env, machine_id)
    if token is None:
        return f"gameover token: not printed, {missing_token_secret(machine_id)}"
    return f"gameover token (Authorization: Bearer for POST /gameover): {token}"


def ask(value: str | None, prompt: str, option: str, hide: bool = False,
        default: str | None = None) -> str:
    """The option's value, or the user's answer when there is a terminal to ask on."""
    if value is not None:
        return value
    if not sys.stdin.isatty():
        if default is not None:
            return default
        raise UserError(f"{option} is required (no terminal to ask on)")
    return click.prompt(prompt, hide_input=hide, default=default)


def copy_ca_file(ca_file: Path, config_path: Path) -> Path:
    """The CA certificate goes next to config.json, under the name the board will use."""
    target = config_path.parent / BOARD_CA_FILE
    if target.resolve() != ca_file.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_file, target)
    return target


def show_broker_entry(entry: BrokerEntry, passwd_file: Path | None, acl_file: Path | None) -> None:
    if passwd_file is not None:
        add_to_password_file(passwd_file, entry)
        click.echo(f"added {entry.user} to {passwd_file}")
    else:
        click.echo("# Mosquitto password_file line:")
        click.echo(entry.password_line)
    if acl_file is not None:
        add_to_acl_file(acl_file, entry)
        click.echo(f"added the ACL block for {entry.user} to {acl_file}")
    else:
        click.echo("# Mosquitto acl_file block:")
        click.echo(entry.acl)
    click.echo("# Reload Mosquitto to apply: kill -HUP $(pidof mosquitto)  (or systemctl reload)")


EXAMPLE = """\b
Examples:
  arcade provision machine_123 --ssid arcade --host broker.example.com --ca-file ca.pem
  arcade provision machine_123 --out cab1/config.json --passwd-file /etc/mosquitto/passwd \\
      --acl-file /etc/mosquitto/acl
  arcade provision arcade-api --role api        # the API's own broker login
  arcade provision machine_123 --token-only     # just the /gameover token
"""


@click.command(epilog=EXAMPLE)
@click.argument("machine_id")
@click.option("--out", "config_path", type=click.Path(path_type=Path), default="config.json",
              show_default=True, help="Where to write the cabinet's config.json.")
@click.option("--ssid", help="WiFi network name (asked if missing).")
@click.option("--wifi-password", help="WiFi password (asked, hidden, if missing).")
@click.option("--host", help="Broker host the cabinet connects to [default: MQTT_BROKER].")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Broker port [default: 8883 with TLS, else 1883].")
@click.option("--tls/--no-tls", default=None,
              help="TLS to the broker [default: MQTT_TLS, else on].")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate that signed the broker's (copied next to config.json).")
@click.option("--prefix", help="Topic prefix [default: MQTT_TOPIC_PREFIX, else arcade].")
@click.option("--relay-pin", type=int, help="GPIO driving the coin relay.")
@click.option("--pulse-ms", type=int, help="How long the coin line is closed per pulse.")
@click.option("--gap-ms", type=int, help="Pause between pulses.")
@click.option("--pulses-per-credit", type=int, help="Coin pulses the game needs per credit.")
@click.option("--gameover-pin", type=int, help="GPIO of the game-over signal (optional).")
@click.option("--lockout-pin", type=int, help="GPIO of the coin-lockout signal (optional).")
@click.option("--passwd-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Add the password line to this Mosquitto password_file instead of printing it.")
@click.option("--acl-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Add the ACL block to this Mosquitto acl_file instead of printing it.")
@click.option("--role", type=click.Choice(ROLES), default="cabinet", show_default=True,
              help="api/monitor: a broker login for the API or `arcade monitor` (no config.json).")
@click.option("--token-only", is_flag=True, help="Only print the cabinet's /gameover token.")
@click.option("--force", is_flag=True, help="Replace an existing config / broker user.")
def provision(machine_id: str, config_path: Path, ssid: str | None, wifi_password: str | None,
              host: str | None, port: int | None, tls: bool | None, ca_file: Path | None,
              prefix: str | None, relay_pin: int | None, pulse_ms: int | None, gap_ms: int | None,
              pulses_per_credit: int | None, gameover_pin: int | None, lockout_pin: int | None,
              passwd_file: Path | None, acl_file: Path | None, role: str, token_only: bool,
              force: bool) -> None:
    """Set up a cabinet: config.json, its broker login and ACL, its /gameover token.

    Generates a new broker password for the cabinet, writes it into config.json (readable by you
    only) and prints the Mosquitto lines that let the cabinet read only its own coinpulse and
    write only its own gameover/status/ack.
    """
    env = load_env()
    require_machine_id(machine_id)
    prefix = checked_prefix(prefix or text(env, "MQTT_TOPIC_PREFIX", "arcade"))
    if token_only:  # the token alone, for `curl -H "Authorization: Bearer $(…)"`
        token = gameover_token(env, machine_id)
        if token is None:
            raise UserError(missing_token_secret(machine_id))
        click.echo(token)
        return
    if role != "cabinet":
        provision_service_user(role, machine_id, prefix, passwd_file, acl_file, force)
        return
    if not force:
        refuse_overwrites(config_path, passwd_file, acl_file, machine_id)

    from tools.broker import new_password

    tls = flag(env, "MQTT_TLS", True) if tls is None else tls
    mqtt_password = new_password()
    mqtt = {
        "host": ask(host or text(env, "MQTT_BROKER") or None, "Broker host", "--host"),
        "port": port or (8883 if tls else 1883),
        "user": machine_id,
        "password": mqtt_password,
        "tls": tls,
        "topic_prefix": prefix,
    }
    if ca_file is not None:
        mqtt["ca_file"] = BOARD_CA_FILE
    wifi = {
        "ssid": ask(ssid, "WiFi network (SSID)", "--ssid"),
        "password": ask(wifi_password, "WiFi password", "--wifi-password", hide=True, default=""),
    }
    hardware = hardware_sections(relay_pin, pulse_ms, gap_ms, pulses_per_credit, gameover_pin,
                                 lockout_pin)
    config = cabinet_config(machine_id, wifi, mqtt, hardware)
    check_config(config)

    write_private_json(config_path, config)
    click.echo(f"wrote {config_path} for {machine_id} "
               f"(broker {mqtt['host']}:{mqtt['port']}, {'TLS' if tls else 'no TLS'})")
    if ca_file is not None:
        click.echo(f"copied the CA certificate to {copy_ca_file(ca_file, config_path)}")
    elif not tls:
        click.echo("warning: no TLS, the cabinet's broker password crosses the network in clear")
    show_broker_entry(broker_entry("cabinet", machine_id, mqtt_password, prefix), passwd_file,
                      acl_file)
    click.echo(gameover_token_line(env, machine_id))


def provision_service_user(role: str, user: str, prefix: str, passwd_file: Path | None,
                           acl_file: Path | None, force: bool) -> None:
    """A broker login for the API or the monitor: its password goes into that side's .env."""
    from tools.broker import new_password

    if not force:
        refuse_overwrites(None, passwd_file, acl_file, user)
    password = new_password()
    show_broker_entry(broker_entry(role, user, password, prefix), passwd_file, acl_file)
    names = ("MQTT_USERNAME", "MQTT_PASSWORD") if role == "api" else (
        "MQTT_MONITOR_USERNAME", "MQTT_MONITOR_PASSWORD")
    click.echo(f"# Put in the {role}'s .env (this password is shown only now):")
    click.echo(f"{names[0]}={user}")
    click.echo(f"{names[1]}={password}")
