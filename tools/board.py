"""A board on a serial port: finding it, checking it is free, and the esptool/mpremote commands.

Commands are plain lists (printable with --dry-run, testable); they run the venv's own esptool
and mpremote (`python -m …`), so no PATH setup is needed.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Callable

from tools.errors import UserError

# USB vendor ids of ESP32 boards' serial adapters: Espressif's own USB, Silicon Labs CP210x,
# WCH CH340/CH9102.
BOARD_USB_VENDORS = {0x303A: "Espressif", 0x10C4: "CP210x", 0x1A86: "CH340"}
CONSOLE_BAUD = 115200


def esptool(chip: str, port: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, *args]


def mpremote(port: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mpremote", "connect", port, *args]


def candidate_ports() -> list[tuple[str, str]]:
    """(device, adapter name) of every serial port that looks like an ESP32 board."""
    from serial.tools import list_ports

    return [
        (port.device, BOARD_USB_VENDORS[port.vid])
        for port in list_ports.comports()
        if port.vid in BOARD_USB_VENDORS
    ]


def choose_port(port: str, found: Callable[[], list[tuple[str, str]]] = candidate_ports) -> str:
    """`port` itself, or for "auto" the one board plugged in (an error for none or several)."""
    if port != "auto":
        return port
    boards = found()
    if not boards:
        raise UserError("no ESP32 board found on USB (looked for Espressif, CP210x and CH340 "
                        "adapters): plug it in with a data cable, or pass --port")
    if len(boards) > 1:
        listed = ", ".join(f"{device} ({name})" for device, name in boards)
        raise UserError(f"several boards found: {listed}; pick one with --port")
    return boards[0][0]


def port_problem(port: str) -> str | None:
    """Why the port cannot be used right now (missing, busy, no permission), or None."""
    import serial

    link = serial.Serial()
    link.port = port
    link.exclusive = True  # fails if another program (a monitor, mpremote) holds the port
    link.dtr = link.rts = False  # leave the board's reset and boot lines alone
    try:
        link.open()
    except serial.SerialException as error:
        return explain_open_error(port, error.errno, str(error))
    except OSError as error:  # raised directly for a device that vanished while opening
        return explain_open_error(port, error.errno, str(error))
    link.close()
    return None


def explain_open_error(port: str, code: int | None, text: str) -> str:
    if code == errno.ENOENT or "No such file" in text or "FileNotFoundError" in text:
        return f"no board at {port} (is it plugged in? `arcade flash --port auto` finds it)"
    if code in (errno.EACCES, errno.EPERM):
        return (f"no permission to open {port} (on Linux: sudo usermod -aG dialout $USER, "
                "then log in again)")
    if code in (errno.EBUSY, errno.EAGAIN) or "lock" in text.lower() or "busy" in text.lower():
        return f"{port} is busy: another program (a serial monitor, mpremote, an IDE) has it open"
    return f"cannot open {port}: {text}"


def require_free_port(port: str) -> None:
    problem = port_problem(port)
    if problem:
        raise UserError(problem)


# Known last words of esptool and mpremote, and what the user should do about them.
FAILURE_HINTS = (
    ("Wrong --chip argument", "the board is not a {chip}: pass the right --chip"),
    ("No such file or directory", "no board at {port} (is it plugged in? --port auto finds it)"),
    ("Permission denied", "no permission to open {port} (on Linux: sudo usermod -aG dialout "
                          "$USER, then log in again)"),
    ("port is busy", "cannot open {port}: is another program (a serial monitor) using it?"),
    ("Failed to connect", "no ESP32 answered on {port}: hold BOOT, tap EN/RESET, release "
                          "BOOT, then try again (or try a data cable)"),
    ("No serial data received", "no ESP32 answered on {port}: hold BOOT, tap EN/RESET, release "
                                "BOOT, then try again"),
    ("could not open port", "cannot open {port}: is it the right port, and free?"),
    ("it may be in use by another program", "cannot open {port}: is it the right port, and is "
                                            "no other program using it?"),
    ("could not enter raw repl", "the board on {port} does not answer as MicroPython: "
                                 "flash MicroPython first (arcade flash)"),
)


def explain_failure(output: str, port: str, chip: str = "esp32") -> str:
    """One line a user can act on, from a failed esptool/mpremote run's output."""
    for marker, hint in FAILURE_HINTS:
        if marker.lower() in output.lower():
            return hint.format(port=port, chip=chip)
    last = [line.strip() for line in output.splitlines() if line.strip()]
    return last[-1] if last else "the command failed without saying why"


def run_streaming(command: list[str], indent: str = "    ") -> tuple[int, str]:
    """Run a command, showing its output as it comes (progress), and return (code, output)."""
    import click

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace")
    seen = []
    for line in process.stdout:
        seen.append(line)
        click.echo(indent + line.rstrip("\n"))
    return process.wait(), "".join(seen)


def wait_until_answers(command: list[str], timeout: float, attempt_timeout: float = 10.0) -> bool:
    """Retry `command` until it succeeds (the board is back) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = subprocess.run(command, capture_output=True, timeout=attempt_timeout)
        except subprocess.TimeoutExpired:
            continue
        if done.returncode == 0:
            return True
        time.sleep(0.5)  # the board is still booting (first boot formats its filesystem)
    return False


def open_console(port: str):
    import serial

    link = serial.Serial()
    link.port, link.baudrate, link.timeout = port, CONSOLE_BAUD, 0.2
    link.dtr = link.rts = False  # released: the board runs (asserted RTS holds it in reset)
    link.open()
    return link


def hard_reset(link) -> None:
    """Pulse EN through RTS, as esptool's hard reset does, with the console already listening."""
    link.rts = True
    time.sleep(0.1)  # EN must stay low long enough for the chip to notice
    link.rts = False


def read_lines(link, max_lines: int, seconds: float) -> list[str]:
    """Lines the board prints, shown as they arrive, until `max_lines` or `seconds` passed."""
    import click

    lines: list[str] = []
    deadline = time.monotonic() + seconds
    pending = b""
    while len(lines) < max_lines and time.monotonic() < deadline:
        pending += link.read(256)
        while b"\n" in pending and len(lines) < max_lines:
            raw, pending = pending.split(b"\n", 1)
            line = raw.decode(errors="replace").rstrip("\r")
            lines.append(line)
            click.echo("    " + line)
    return lines


def reset_and_read_console(port: str, max_lines: int, seconds: float) -> list[str]:
    """The board's first lines after a reset: its boot messages from the very start."""
    link = open_console(port)
    try:
        hard_reset(link)
        return read_lines(link, max_lines, seconds)
    finally:
        link.close()
