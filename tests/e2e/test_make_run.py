"""`make run` itself (`arcade run`): it starts everything, prints `ready` only when all of it is
up, a payment made with the printed settings pulses the cabinet, the seed README's commands work
as our README prints them, a taken port is named with the flag that avoids it, and every way of
stopping it (Ctrl-C, `kill`, `kill -9`, a closed terminal, `make run | tee` interrupted, a child
that dies) leaves no process behind."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from tests.conftest import IN_CI, REPO, require_mosquitto
from tests.e2e.conftest import Output, arcade_argv, process_env
from tools.broker import find_mosquitto, free_port
from tools.ports import descendants

pytestmark = pytest.mark.slow


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_all_gone(pids: set[int], timeout: float = 60.0) -> list[str]:
    """Waits (pidfd: woken when each one exits) and returns what is still running."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    return [f"{pid}: {command_line(pid)}" for pid in pids if alive(pid)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Run:
    process: subprocess.Popen
    out: Output | None  # None on a terminal of its own (the test reads the terminal)
    workdir: Path
    port: int
    mqtt_port: int

    def family(self) -> set[int]:
        """arcade run and everything it started (gunicorn's workers included)."""
        return descendants(self.process.pid)

    def settings(self) -> dict[str, str]:
        return dotenv_values(self.workdir / "arcade.env")


def run_args(workdir: Path, port: int, mqtt_port: int) -> list[str]:
    return ["--dir", str(workdir), "--port", str(port), "--mqtt-port", str(mqtt_port)]


def start_run(tmp_path: Path, *, mqtt_port: int | None = None, wait_ready: bool = True,
              argv: list[str] | None = None, **popen) -> Run:
    require_mosquitto()
    port, mqtt_port = free_port(), mqtt_port or free_port()
    workdir = tmp_path / "run"
    argv = argv or arcade_argv("run", *run_args(workdir, port, mqtt_port))
    options = dict(cwd=tmp_path, env=process_env({}), stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
    options.update(popen)
    process = subprocess.Popen(argv, **options)
    run = Run(process, Output(process.stdout) if process.stdout else None, workdir, port,
              mqtt_port)
    if wait_ready:
        run.out.wait_line("ready", timeout=90)  # the banner's last line
    return run


def assert_nothing_left(run: Run, family: set[int]) -> None:
    assert wait_all_gone(family) == []
    assert not listening(run.port) and not listening(run.mqtt_port)


def test_arcade_run_pays_a_cabinet_and_stops_cleanly_on_ctrl_c(tmp_path):
    run = start_run(tmp_path)
    family = run.family()
    try:
        # `ready` means every cabinet is online and the listener has heard it.
        for machine in ("machine_123", "demo-2"):
            assert any(line.startswith(f"[{machine}] ") and "online: connected" in line
                       for line in run.out.lines)
            assert any(f'/machine/{machine}/status","recorded":"online"' in line
                       for line in run.out.lines)
        assert "Stop:   Ctrl-C" in run.out.text
        paid = subprocess.run(arcade_argv("pay", "machine_123", "--credits", "2"),
                              env=process_env(run.settings()), cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert paid.returncode == 0, paid.stdout + paid.stderr
        session = paid.stdout.split("session ")[1].split()[0]
        run.out.wait_for(f"machine_123 pulse 2/2  id={session}")
        run.out.wait_for(f"machine_123 ack sent  id={session}")
        pulses = [line for line in run.out.lines if " pulse " in line]
        assert len(pulses) == 2 and all(line.startswith("[machine_123] ") for line in pulses)
        page = requests.get(f"http://127.0.0.1:{run.port}/test-checkout/machine_123", timeout=10)
        assert page.status_code == 200
        assert "TEST MODE" in page.text and 'id="pay"' in page.text
    finally:
        run.process.send_signal(signal.SIGINT)  # Ctrl-C
        returncode = run.process.wait(timeout=60)
    run.out.wait_line("stopped")  # the output thread may still be catching up
    assert returncode == 0, run.out.text
    assert run.out.lines[-1] == "stopped"
    assert_nothing_left(run, family)


def test_children_get_only_their_settings(tmp_path):
    """The Stripe key in .env reaches the API alone; no child reads the .env of this folder."""
    (tmp_path / ".env").write_text("STRIPE_API_KEY=sk_test_in_dotenv\nPRICE_ID=price_x\n")
    run = start_run(tmp_path)
    try:
        by_name = {}
        for child in descendants(run.process.pid) - {run.process.pid}:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            names = {item.split(b"=", 1)[0].decode() for item in environ if item}
            by_name[command_line(child)] = names
        holders = [command for command, names in by_name.items() if "STRIPE_API_KEY" in names]
        assert holders and all("gunicorn" in command for command in holders), holders
        for command, names in by_name.items():
            if "mosquitto -c" in command or " simulate " in command:
                assert not {n for n in names if n.startswith(("STRIPE_", "MQTT_"))}, command
    finally:
        run.process.send_signal(signal.SIGINT)
        run.process.wait(timeout=60)


def foreign_mosquitto(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """What Debian's `mosquitto` service is: a broker already on the port, letting anyone in."""
    port = free_port()
    config = tmp_path / "system-mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                      + ("user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([find_mosquitto(), "-c", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not listening(port):
        assert broker.poll() is None and time.monotonic() < deadline, broker.stderr.read()
        time.sleep(0.02)  # polling for the port; bounded by the deadline above
    return broker, port


def test_a_port_taken_by_another_mosquitto_is_named_and_one_flag_gives_a_working_stack(tmp_path):
    require_mosquitto()
    other, taken = foreign_mosquitto(tmp_path)
    try:
        refused = start_run(tmp_path, mqtt_port=taken, wait_ready=False)
        assert refused.process.wait(timeout=60) == 2
        refused.out.wait_for("error:")
        assert "ready" not in refused.out.lines
        [message] = [line for line in refused.out.lines if line.startswith("error:")]
        assert f"port {taken} is already in use by mosquitto (pid {other.pid})" in message
        flag = re.search(r'RUN_ARGS="(--mqtt-port (\d+))"', message)
        assert flag, message
        assert not (tmp_path / "run" / "mosquitto" / "mosquitto.conf").exists()  # nothing began

        run = start_run(tmp_path, mqtt_port=int(flag.group(2)))
        family = run.family()
        paid = subprocess.run(arcade_argv("pay", "machine_123"), env=process_env(run.settings()),
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert paid.returncode == 0, paid.stdout + paid.stderr
        run.out.wait_for("machine_123 ack sent")
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(timeout=60) == 0, run.out.text
        assert wait_all_gone(family) == []
        assert other.poll() is None  # the other broker was left alone
    finally:
        other.terminate()
        other.wait(timeout=10)


# --- every way of stopping it ---------------------------------------------------------------------
def stop_with_signal(signum: int):
    def stop(tmp_path: Path) -> tuple[Run, set[int]]:
        run = start_run(tmp_path)
        family = run.family()
        os.kill(run.process.pid, signum)
        return run, family

    return stop


def close_the_terminal(tmp_path: Path) -> tuple[Run, set[int]]:
    """`arcade run` on a terminal of its own, which is then closed: the kernel hangs it up."""
    controller, terminal = os.openpty()

    def take_terminal() -> None:  # after setsid: the pty becomes our controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    run = start_run(tmp_path, wait_ready=False, stdin=terminal, stdout=terminal,
                    stderr=terminal, preexec_fn=take_terminal)
    os.close(terminal)
    seen, deadline = b"", time.monotonic() + 90
    while b"\nready" not in seen.replace(b"\r", b""):
        left = deadline - time.monotonic()
        assert left > 0 and select.select([controller], [], [], left)[0], seen.decode()[-3000:]
        seen += os.read(controller, 65536)
    family = run.family()
    os.close(controller)  # the terminal window is closed
    return run, family


def interrupt_make_run_piped_to_tee(tmp_path: Path) -> tuple[Run, set[int]]:
    """`make run | tee log`, then Ctrl-C: SIGINT to make, arcade run and tee at once."""
    if shutil.which("make") is None:
        pytest.fail("make is missing") if IN_CI else pytest.skip("make is missing")
    port, mqtt_port = free_port(), free_port()
    args = " ".join(run_args(tmp_path / "run", port, mqtt_port))
    line = f"make --no-print-directory -C {REPO} run RUN_ARGS='{args}' | tee {tmp_path / 'log'}"
    run = start_run(tmp_path, argv=["bash", "-c", line])
    run.port, run.mqtt_port = port, mqtt_port
    family = run.family()
    os.killpg(run.process.pid, signal.SIGINT)  # the terminal sends it to the whole job
    return run, family


@pytest.mark.parametrize(
    "stop",
    [stop_with_signal(signal.SIGTERM), stop_with_signal(signal.SIGKILL), close_the_terminal,
     interrupt_make_run_piped_to_tee],
    ids=["kill", "kill-9", "terminal-closed", "make-run-tee-ctrl-c"],
)
def test_no_process_is_left_behind(tmp_path, stop):
    run, family = stop(tmp_path)
    assert len(family) >= 8  # arcade run, broker, gunicorn + 2 workers, listener, 2 cabinets
    run.process.wait(timeout=90)
    assert_nothing_left(run, family)


def test_a_child_that_dies_stops_the_run_with_its_last_lines(tmp_path):
    run = start_run(tmp_path)
    family = run.family()
    [cabinet] = [pid for pid in family if "demo-2/config.json" in command_line(pid)]
    os.kill(cabinet, signal.SIGKILL)

    assert run.process.wait(timeout=60) == 2
    run.out.wait_for("error: demo-2 stopped unexpectedly (exit code -9); its last lines:")
    text = run.out.text.split("error: demo-2 stopped unexpectedly")[1]
    assert "[demo-2] " in text and "online: connected" in text
    assert_nothing_left(run, family)


# --- the seed's own examples, as our README prints them ------------------------------------------
def readme_seed_examples() -> list[tuple[str, list[str]]]:
    """(command, the output the README shows for it) from the README's seed-examples block."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- seed-examples -->")[1].split("```console\n")[1].split("```")[0]
    examples: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            examples.append((line[2:], []))
        elif examples:
            examples[-1][1].append(line)
    return examples


def for_this_run(command: str, run: Run) -> str:
    """The README shows the default ports; this run uses free ones (the banner shows them)."""
    command = command.replace("localhost:5000", f"localhost:{run.port}")
    return command.replace("-h localhost ", f"-h localhost -p {run.mqtt_port} ")


def matches(shown: list[str], output: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in "\n".join(shown).split("…"))
    return re.fullmatch(pattern, output.strip(), re.DOTALL) is not None


def test_the_seed_readme_examples_work_as_our_readme_prints_them(tmp_path):
    for tool in ("curl", "mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None:
            message = f"{tool} is missing (make test installs mosquitto-clients)"
            pytest.fail(message) if IN_CI else pytest.skip(message)
    examples = readme_seed_examples()
    assert examples[0][0] == ". run/activate"
    run = start_run(tmp_path)
    background: list[tuple[str, subprocess.Popen, Output, list[str]]] = []
    try:
        for command, shown in examples[1:]:
            command = for_this_run(command, run)
            if "gameover" not in command:  # the banner shows the same lines
                assert f"  {command.removesuffix(' &')}" in run.out.lines, command
            script = f"{examples[0][0]}\n{command.removesuffix(' &')}"
            if command.endswith(" &"):
                process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, text=True,
                                           env=process_env({}), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                background.append((command, process, Output(process.stdout), shown))
                wait_subscribed(run, command.split(' -t "')[1].split('"')[0])
                continue
            done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=process_env({}),
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            assert matches(shown, done.stdout), (command, done.stdout, shown)
        for command, _, out, shown in background:
            out.wait_count(shown[-1].split("…")[0], 1, timeout=20)
            assert matches(shown, out.text), (command, out.text, shown)
        run.out.wait_for("machine_123 pulse 1/1  id=(none: seed format)")
    finally:
        for _, process, _, _ in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        run.process.send_signal(signal.SIGINT)
        run.process.wait(timeout=60)


def wait_subscribed(run: Run, topic: str, timeout: float = 20.0) -> None:
    """Until the broker logs a subscription to `topic` (a message sent before would be missed)."""
    log = run.workdir / "mosquitto" / "mosquitto.log"
    deadline = time.monotonic() + timeout
    while f" {topic}" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"nobody subscribed to {topic}"
        time.sleep(0.02)  # polling the broker's log; bounded by the deadline above
