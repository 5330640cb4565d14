"""`arcade simulate`: the unchanged firmware as a virtual cabinet on this computer."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import signal
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from tools.errors import UserError
from tools.firmware_files import FIRMWARE_DIR, config_problems
from tools.provision import write_private_json

FIRMWARE_MODULES = ("app", "cabinet", "config", "contract", "gameover", "ids", "journal", "link",
                    "pulser", "recovery")


@click.command(epilog="""\b
Examples:
  arcade simulate --config machine_123/config.json --events events.jsonl
  arcade simulate --machine-id machine_123 --gameover-every 30
""")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="The cabinet's config.json (as `arcade provision` writes it).")
@click.option("--machine-id", help="Simulate this cabinet with the broker settings of .env / "
              "the environment (MQTT_BROKER, MQTT_PORT, ...) instead of a config file.")
@click.option("--user", help="With --machine-id: broker user (default: MQTT_USERNAME).")
@click.option("--password", help="With --machine-id: broker password (default: MQTT_PASSWORD).")
@click.option("--events", "events_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append every event as one JSON object per line to this file.")
@click.option("--state", "state_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the journal and recent ids (default: next to the config).")
@click.option("--gameover-every", type=click.FloatRange(min=0.5), metavar="SECONDS",
              help="Signal game over every SECONDS.")
def simulate(config_path: Path | None, machine_id: str | None, user: str | None,
             password: str | None, events_path: Path | None, state_dir: Path | None,
             gameover_every: float | None) -> None:
    """Run the cabinet firmware on this computer against the configured broker.

    Prints one line per relay pulse and state change. Its journal lives in a state folder, so a
    simulator that is killed and restarted resumes like a board after a power cut. Press g
    (then Enter when stdin is not a terminal) to signal game over; Ctrl-C or SIGTERM stop it.
    """
    if (config_path is None) == (machine_id is None):
        raise UserError("give either --config FILE or --machine-id ID")
    if machine_id is not None:
        cfg, config_path = config_from_env(machine_id, user, password, state_dir)
        state_dir = config_path.parent
    else:
        cfg = read_config(config_path)
        state_dir = state_dir or config_path.parent / f"{cfg['machine_id']}.state"
    with single_instance(state_dir):
        effective = effective_config(cfg, config_path, state_dir)
        run(cfg["machine_id"], effective, state_dir, events_path, gameover_every)


# --- configuration ------------------------------------------------------------------------------
def read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (write one with `arcade provision`)") from None
    except (OSError, UnicodeError) as e:
        raise UserError(f"{path}: cannot read it ({e})") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    check_config(cfg, str(path))
    return cfg


def check_config(cfg: dict[str, Any], where: str) -> None:
    """The board's own rules (firmware/config.py), as `arcade provision` and `flash` apply them."""
    problems = config_problems(cfg)
    if problems:
        raise UserError(f"{where}: " + "; ".join(problems))


def config_from_env(machine_id: str, user: str | None, password: str | None,
                    state_dir: Path | None) -> tuple[dict[str, Any], Path]:
    """A cabinet config from the API's broker settings, kept in the state folder."""
    from tools.mqtt import mqtt_settings
    from tools.settings import load_env, require_machine_id
    from tools.umqtt_host import cache_dir

    require_machine_id(machine_id)
    settings = mqtt_settings(load_env())
    mqtt: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "tls": settings.tls,
        "user": user if user is not None else (settings.username or None),
        "password": password if password is not None else (settings.password or None),
        "topic_prefix": settings.prefix,
    }
    if settings.tls:
        mqtt["ca_file"] = str(Path(settings.ca_cert).resolve()) if settings.ca_cert else (
            system_ca_file())
    cfg = {"machine_id": machine_id, "wifi": {"ssid": "host"}, "mqtt": mqtt}
    check_config(cfg, "settings from the environment")
    folder = state_dir or cache_dir() / "simulate" / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    write_private_json(path, cfg)  # it holds the broker password
    return cfg, path


def effective_config(cfg: dict[str, Any], config_path: Path, state_dir: Path) -> Path:
    """The config the simulated board boots with: the given one, plus a game-over input when it
    has none (so the g key and --gameover-every work), and ca_file made absolute."""
    cfg = json.loads(json.dumps(cfg))
    if "gameover" not in cfg:
        used = {section.get("pin") for section in (cfg.get("relay", {}), cfg.get("lockout", {}))}
        pin = next(p for p in (27, 32, 33, 14, 13, 4) if p not in used)
        cfg["gameover"] = {"_doc": "added by arcade simulate", "pin": pin, "active_low": True}
    mqtt = cfg["mqtt"]
    if mqtt.get("ca_file"):
        mqtt["ca_file"] = str((config_path.parent / mqtt["ca_file"]).resolve())
    check_config(cfg, str(config_path))
    path = state_dir / "effective-config.json"
    write_private_json(path, cfg)  # it holds the broker password
    return path


def system_ca_file() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise UserError("MQTT_TLS is on but MQTT_CA_CERT is not set and no system CA file was found")


@contextlib.contextmanager
def single_instance(state_dir: Path) -> Iterator[None]:
    """Two simulators on one journal would both pulse it (and kick each other off the broker)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "simulate.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another simulator is running on {state_dir}") from None
        yield


# --- running --------------------------------------------------------------------------------------
def load_firmware() -> ModuleType:
    """Import firmware/app.py and its modules as the board would, with umqtt.simple on the host."""
    from tools.umqtt_host import install_umqtt

    install_umqtt()
    for name in FIRMWARE_MODULES:
        loaded = sys.modules.get(name)
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").parent != (
                FIRMWARE_DIR):
            del sys.modules[name]  # a same-named module of someone else's
    if str(FIRMWARE_DIR) not in sys.path:
        sys.path.insert(0, str(FIRMWARE_DIR))
    return importlib.import_module("app")


def run(machine_id: str, config_path: Path, state_dir: Path, events_path: Path | None,
        gameover_every: float | None) -> None:
    from tools.host_board import EventLog, HostBoard

    app = load_firmware()
    log = EventLog(sys.stdout, events_path, machine_id)
    board = HostBoard(config_path, state_dir, log)
    stop = threading.Event()
    restore = install_stop_handlers(board)
    start_gameover_sources(board, stop, gameover_every)
    click.echo(f"simulating cabinet {machine_id} (state in {state_dir}); "
               "g = game over, Ctrl-C = stop")
    try:
        with keys_without_enter():
            app.main(board)
    finally:
        stop.set()
        restore()
        board.relay(False)
        log.emit("stopped", {})
        log.close()


def install_stop_handlers(board: Any):
    """SIGTERM and Ctrl-C finish the current loop step, then say offline and disconnect.
    The handler takes no lock (it runs between two bytecodes of the main thread, which may hold
    that very lock): run() sets its stop event once the loop has ended."""
    asked: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        asked.append(signum)
        if board.loop is not None:
            board.loop.running = False
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def start_gameover_sources(board: Any, stop: threading.Event, every: float | None) -> None:
    def periodic() -> None:
        while not stop.wait(every):
            board.press_gameover()

    def keys() -> None:
        for line in iter_keys():
            if stop.is_set():
                return
            if "g" in line.lower():
                board.press_gameover()

    if every:
        threading.Thread(target=periodic, daemon=True, name="gameover-every").start()
    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=keys, daemon=True, name="keys").start()


def iter_keys() -> Iterator[str]:
    """Single key presses on a terminal (see keys_without_enter), else lines from stdin."""
    stream = sys.stdin
    if not stream.isatty():
        yield from stream
        return
    while True:
        key = stream.read(1)
        if not key:
            return
        yield key


@contextlib.contextmanager
def keys_without_enter() -> Iterator[None]:
    """On a terminal, deliver key presses at once (cbreak); always restore the terminal."""
    if sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
