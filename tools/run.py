"""`arcade run` (`make run`): the whole system on this machine.

Mosquitto on loopback with a generated config (per-cabinet passwords and ACL, as `arcade provision`
makes them), the API with its SQLite ledger, the delivery listener, and simulated cabinets running
the unchanged firmware. Without Stripe keys in `.env` the API runs in test checkout mode.

Start-up is checked, not assumed: the ports are free before anything starts, the broker that
answers is ours (our login in, an anonymous one refused), the API that answers is the process we
started, and `ready` is printed only once every cabinet is online and the listener hears it.
Every child is watched until the end; Ctrl-C, SIGTERM and SIGHUP stop everything, cabinets first,
broker last, and on Linux the children also stop when `arcade run` itself is killed.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import click

from tools import ports
from tools.broker import Broker, api_acl, cabinet_acl, find_mosquitto, observer_acl
from tools.errors import UserError
from tools.run_files import (
    API_USER,
    MONITOR_USER,
    activate_line,
    api_environment,
    banner,
    child_environment,
    listener_environment,
    local_secrets,
    machine_ids,
    tool_settings,
    write_cabinet_configs,
    write_tool_settings,
)
from tools.settings import load_env, without_settings

STARTUP_TIMEOUT_S = 60.0
LAST_LINES = 15  # of a child's output, shown when it stops unexpectedly


class Stopped(Exception):
    """A stop was asked for (signal) before start-up finished."""


class Console:
    """Our output. Once it is gone (the terminal closed, `| tee` interrupted) the run goes on
    stopping its children quietly instead of dying on its first write and leaving them behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.gone = False

    def say(self, text: str) -> None:
        with self._lock:
            if self.gone:
                return
            try:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # EPIPE, EIO after a hang-up, a closed stream
                self.gone = True
                self._silence()

    @staticmethod
    def _silence() -> None:
        # Python flushes stdout again at exit: point it at /dev/null so that cannot fail either.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass


class Child:
    """A process we started, its output relayed with a `[name]` prefix."""

    def __init__(self, name: str, process: subprocess.Popen, stack: Stack) -> None:
        self.name, self.process = name, process
        self.last: deque[str] = deque(maxlen=LAST_LINES)
        self.startup_lines: list[str] | None = []  # kept until `ready`, to wait on
        self.output = threading.Thread(target=self._relay, args=(stack,), daemon=True)
        self.output.start()

    def _relay(self, stack: Stack) -> None:
        # Always drained, even once our own output is gone: a child blocked on a full pipe
        # would never see its SIGTERM.
        for raw in self.process.stdout:
            line = raw.rstrip()
            with stack.changed:
                self.last.append(line)
                if self.startup_lines is not None:
                    self.startup_lines.append(line)
                stack.changed.notify_all()
            stack.console.say(f"[{self.name}] {line}")
        stack.child_ended(self)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.startup_lines or ())

    def last_words(self) -> str:
        return "\n".join(f"  [{self.name}] {line}" for line in self.last) or "  (no output)"


class Stack:
    def __init__(self, workdir: Path, machines: list[str], host: str, port: int,
                 mqtt_port: int, plain_env: dict[str, str] | None = None) -> None:
        self.workdir, self.machines = workdir, machines
        # The environment without any project setting: what children other than the API get.
        self.plain_env = plain_env if plain_env is not None else without_settings(os.environ)
        self.host, self.port, self.mqtt_port = host, port, mqtt_port
        self.broker: Broker | None = None
        self.children: list[Child] = []
        self.console = Console()
        self.changed = threading.Condition()  # any child said something or ended
        self.stopping = threading.Event()  # a child died (set by its output thread)
        # A stop signal: a plain store, no lock (handle_stop_signals says why).
        self.signalled = False
        self.shutting_down = False
        self.failure: str | None = None
        self.test_checkout = False

    @property
    def api_url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else self.host}:{self.port}"

    def child_ended(self, child: Child) -> None:
        code = child.process.wait()
        self.fail(f"{child.name} stopped unexpectedly (exit code {code}); its last lines:\n"
                  + child.last_words())

    def fail(self, reason: str) -> None:
        with self.changed:
            if not self.shutting_down and self.failure is None:
                self.failure = reason
            self.changed.notify_all()
        self.stopping.set()

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Until `ready()`; False after `timeout`. Raises Stopped, or UserError if a child died."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not ready():
                self.raise_if_stopping()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # Short slices: a signal handler only sets `signalled` (it cannot notify safely).
                self.changed.wait(min(left, 0.2))
        return True

    def raise_if_stopping(self) -> None:
        if self.failure:
            raise UserError(self.failure)
        if self.signalled or self.stopping.is_set():
            raise Stopped


# --- starting -----------------------------------------------------------------------------------
def die_with_parent() -> Callable[[], None] | None:
    """On Linux, a child gets SIGTERM when `arcade run` dies, even by SIGKILL (prctl
    PR_SET_PDEATHSIG). Resolved here, so the child runs no import between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, pr_set_pdeathsig, sigterm = os.getpid(), 1, int(signal.SIGTERM)

    def in_child() -> None:
        prctl(pr_set_pdeathsig, sigterm)
        if os.getppid() != parent:  # we died between fork and prctl
            os._exit(1)

    return in_child


def check_ports_free(stack: Stack) -> None:
    """Before anything starts: one line naming a taken port, who has it, and the flag to use."""
    for host, port, flag in ((stack.host, stack.port, "--port"),
                             ("127.0.0.1", stack.mqtt_port, "--mqtt-port")):
        if ports.port_taken(host, port):
            other = ports.free_port_after(port, host)
            raise UserError(
                f"port {port} is already in use by {ports.holder(port)}: stop it, or choose "
                f"another port with {flag} (make run RUN_ARGS=\"{flag} {other}\", or arcade run "
                f"{flag} {other})")


def start_broker(stack: Stack, known: dict) -> Broker:
    if find_mosquitto() is None:
        raise UserError("mosquitto is not installed: `make run` installs it, or apt-get install "
                        "mosquitto")
    broker = Broker(stack.workdir / "mosquitto", port=stack.mqtt_port)
    broker.spawn_options = {"preexec_fn": die_with_parent(), "env": child_environment(stack)}
    passwords = known["passwords"]
    broker.add_user(API_USER, passwords[API_USER], api_acl(API_USER))
    broker.add_user(MONITOR_USER, passwords[MONITOR_USER], observer_acl(MONITOR_USER))
    for machine_id in stack.machines:
        broker.add_user(machine_id, passwords[machine_id], cabinet_acl(machine_id))
    stack.broker = broker
    try:
        broker.start()
    except (RuntimeError, TimeoutError) as error:
        raise UserError(f"mosquitto did not start on port {stack.mqtt_port}: {error}") from None
    threading.Thread(target=watch_broker, args=(stack, broker), daemon=True).start()
    check_broker_is_ours(stack, broker, passwords[API_USER])
    return broker


def watch_broker(stack: Stack, broker: Broker) -> None:
    process = broker.process
    code = process.wait()
    log = broker.log_path.read_text(errors="replace").splitlines() if (
        broker.log_path.exists()) else []
    last = "\n".join(f"  [broker] {line}" for line in log[-LAST_LINES:]) or "  (no log)"
    stack.fail(f"the broker stopped unexpectedly (exit code {code}); its last log lines:\n{last}")


def check_broker_is_ours(stack: Stack, broker: Broker, api_password: str) -> None:
    """The process on the port is the Mosquitto we started, with our logins and no others."""
    port = stack.mqtt_port
    if not broker.running or ports.held_by(port, broker.process.pid) is False:
        raise UserError(f"another program answers on port {port}, not our broker: choose "
                        "another port with --mqtt-port")
    answer = mqtt_login(port, API_USER, api_password)
    if answer != "accepted":
        raise UserError(f"our broker on port {port} refused the API's login ({answer})")
    anonymous = mqtt_login(port)
    if anonymous == "accepted":
        raise UserError(f"the broker on port {port} lets anyone in: it is not ours")


def mqtt_login(port: int, user: str | None = None, password: str | None = None,
               timeout: float = 10.0) -> str:
    """'accepted', or the broker's reason for refusing this login."""
    import secrets

    import paho.mqtt.client as mqtt

    answered, answers = threading.Event(), []

    def on_connect(client, userdata, flags, reason_code, properties):
        answers.append("accepted" if not reason_code.is_failure else str(reason_code))
        answered.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                         client_id=f"arcade-run-check-{secrets.token_hex(4)}")
    if user:
        client.username_pw_set(user, password)
    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError as error:
        return f"no connection: {error}"
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return answers[0] if answers else "no answer"


def spawn(stack: Stack, name: str, argv: list[str], env: dict[str, str]) -> Child:
    # Own session: Ctrl-C reaches only us, and we stop the children in order. Working folder:
    # the run folder, so no child reads the `.env` here (the Stripe key is the API's alone).
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=stack.workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    child = Child(name, process, stack)
    stack.children.append(child)
    return child


def arcade_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools", *args]


def wait_for_api(stack: Stack, api: Child, timeout: float = 30.0) -> None:
    """/status answers 200, from the process we started (not another program on the port)."""
    import urllib.error
    import urllib.request

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{stack.api_url}/status", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    deadline = time.monotonic() + timeout
    while not answers():
        stack.raise_if_stopping()
        if time.monotonic() > deadline:
            raise UserError(f"the API did not answer on {stack.api_url} within {timeout:.0f}s; "
                            f"its last lines:\n{api.last_words()}")
        time.sleep(0.1)  # polling the port until gunicorn listens
    if ports.held_by(stack.port, api.process.pid) is False:
        raise UserError(f"another program answers on port {stack.port}, not our API: choose "
                        "another port with --port")


def wait_until_online(stack: Stack, cabinets: list[Child], listener: Child) -> None:
    """Every cabinet connected, and the listener has heard each one's status."""

    def waiting_for() -> list[Child]:
        late = [c for c in cabinets if not c.said("online: connected")]
        if any(not listener.said(f'/machine/{c.name}/status"') for c in cabinets):
            late.append(listener)
        return late

    if not stack.wait_until(lambda: not waiting_for(), STARTUP_TIMEOUT_S):
        late = waiting_for()
        raise UserError(f"not ready after {STARTUP_TIMEOUT_S:.0f}s: "
                        f"{', '.join(c.name for c in late)}; last lines:\n"
                        + "\n".join(c.last_words() for c in late))
    with stack.changed:
        for child in stack.children:
            child.startup_lines = None


def start_all(stack: Stack, env: dict[str, str], known: dict) -> dict[str, str]:
    """Broker, API, listener, cabinets; returns the tools' settings once all of it is ready."""
    api_env = api_environment(stack, known, env)
    stack.test_checkout = api_env.get("TEST_CHECKOUT") == "true"
    configs = write_cabinet_configs(stack, known)
    start_broker(stack, known)
    api = spawn(stack, "api",
                arcade_command("serve", "--host", stack.host, "--port", str(stack.port),
                               "--workers", "2"),
                {**env, **api_env})
    wait_for_api(stack, api)
    listener = spawn(stack, "listener", arcade_command("listen"),
                     listener_environment(stack, api_env, known))
    cabinets = [
        spawn(stack, machine_id,
              arcade_command("simulate", "--config", str(config), "--events",
                             str(config.parent / "events.jsonl")),
              child_environment(stack))
        for machine_id, config in configs.items()
    ]
    wait_until_online(stack, cabinets, listener)
    return write_tool_settings(stack, tool_settings(stack, api_env, known, env))


# --- stopping -----------------------------------------------------------------------------------
def stop_all(stack: Stack) -> None:
    """Cabinets and listener first, then the API, then the broker; nothing left running."""
    with stack.changed:
        stack.shutting_down = True
    for child in reversed(stack.children):
        if child.process.poll() is None:
            child.process.terminate()
    for child in reversed(stack.children):
        try:
            child.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        child.output.join(timeout=5)
    if stack.broker is not None:
        stack.broker.stop()


def handle_stop_signals(stack: Stack) -> None:
    # SIGHUP: the terminal was closed. Each only asks; the main thread stops everything. The
    # handler takes no lock: it runs between two bytecodes of the main thread, which may hold
    # one (Event.set() inside that event's own wait() never returns).
    def ask_to_stop(signum: int, frame: object) -> None:
        stack.signalled = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, ask_to_stop)


def lock_run_folder(workdir: Path):
    """One `arcade run` per folder: two would share one ledger, broker store and journals."""
    lock = (workdir / "arcade-run.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid = lock.read().strip() or "?"
        raise UserError(f"another `arcade run` (pid {pid}) is using {workdir}: stop it first "
                        "(Ctrl-C in its terminal), or give this one another --dir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


@click.command("run", epilog="""\b
Examples:
  arcade run
  arcade run --mqtt-port 1884                # another Mosquitto already has 1883
  arcade run --cabinets 3 --host 0.0.0.0     # pay from a phone on this network
""")
@click.option(
    "--dir",
    "workdir",
    default="run",
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the broker, ledger, cabinets' journals and generated secrets.",
)
@click.option(
    "--cabinets",
    default=2,
    show_default=True,
    type=click.IntRange(1, 50),
    help="How many simulated cabinets (machine_123, demo-2, demo-3, ...).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="API address; 0.0.0.0 lets a phone on the same network open the test page.",
)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="API port.")
@click.option("--mqtt-port", "--broker-port", "mqtt_port", default=1883, show_default=True,
              type=click.IntRange(1, 65535), help="Broker port (loopback).")
def run(workdir: Path, cabinets: int, host: str, port: int, mqtt_port: int) -> None:
    """Start the whole system on this machine and show a credit travel to a coin line."""
    plain_env = without_settings(os.environ)  # before .env is read into the environment
    env = dict(load_env())
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir.resolve(), machine_ids(cabinets), host, port, mqtt_port, plain_env)
    lock = lock_run_folder(stack.workdir)
    check_ports_free(stack)
    known = local_secrets(stack.workdir, stack.machines)
    handle_stop_signals(stack)
    try:
        tool_settings = start_all(stack, env, known)
        stack.console.say(banner(stack, tool_settings, activate_line(stack.workdir)))
        stack.wait_until(lambda: False, math.inf)  # raises Stopped (a signal, a dead child)
    except Stopped:
        pass
    finally:
        stack.console.say("stopping: cabinets, listener, API, broker")
        stop_all(stack)
        lock.close()
    stack.console.say("stopped")
