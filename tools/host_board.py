"""The firmware's `board` on a PC: a virtual relay that records its edges, software inputs, and
an event stream (readable console lines, JSON lines) instead of a serial console.

It has the same functions as firmware/board.py, so the unchanged firmware runs as a host cabinet
(`arcade simulate`, the broker tests).
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import ssl
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from tools.umqtt_host import use_tls

# One readable console line per event worth a human's attention; the rest go to --events only.
_CONSOLE = {
    "pulse": "pulse {n}/{of}  id={id}",
    "paid": "paid  {credits} credit(s)  id={id}",
    "credit": "credit received: {credits} credit(s)  id={id}",
    "duplicate": "duplicate ignored  id={id}",
    "rejected": "message ignored: {reason}",
    "ack": "ack sent  id={id}",
    "resume": "resuming after restart: {pending} credit(s) still owed",
    "connected": "online: connected to {host}:{port}",
    "disconnected": "offline: {reason}",
    "connect_failed": "connect failed: {reason} (retry in {retry_ms} ms)",
    "gameover": "game over  id={id}",
    "gameover_sent": "game over reported  id={id}",
    "lockout": "coin lockout {state}",
    "status": "status: {pending} pending, {lock}",
    "config_error": "config.json is not usable: {problems}",
    "crash": "crashed: {error}",
    "stopped": "stopped",
}


class EventLog:
    """Writes each event as a console line and, with --events, as one JSON object per line."""

    def __init__(self, console: IO[str] | None, events: Path | None, name: str) -> None:
        self._console = console
        self._events = events.open("a", buffering=1) if events else None
        self._name = name
        self._lock = threading.Lock()

    def emit(self, kind: str, fields: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            if self._events:
                record = {"event": kind, **fields, "t": round(now, 4),
                          "mono_ms": round(time.monotonic() * 1000, 2)}
                self._events.write(json.dumps(record) + "\n")
            template = _CONSOLE.get(kind)
            if self._console and template:
                clock = time.strftime("%H:%M:%S", time.localtime(now))
                clock += f".{int(now % 1 * 1000):03d}"
                text = template.format(**_readable(fields))
                self._console.write(f"{clock} {self._name} {text}\n")
                self._console.flush()

    def close(self) -> None:
        if self._events:
            self._events.close()
            self._events = None


def _readable(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    out.setdefault("id", None)
    if out["id"] is None:
        out["id"] = "(none: seed format)"
    if "locked" in out:
        out["lock"] = "coin lockout on" if out["locked"] else "accepting coins"
        out["state"] = "on: credits wait" if out["locked"] else "off"
    if "problems" in out:
        out["problems"] = "; ".join(out["problems"])
    return out


class _HostWatchdog:
    """machine.WDT's promise on the host: a loop that stops feeding it ends the process."""

    def __init__(self, timeout_ms: int, log: EventLog) -> None:
        self._timeout_s = timeout_ms / 1000
        self._fed = time.monotonic()
        self._log = log
        threading.Thread(target=self._watch, daemon=True, name="watchdog").start()

    def feed(self) -> None:
        self._fed = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(self._timeout_s / 4)  # a watchdog's own tick
            if time.monotonic() - self._fed > self._timeout_s:
                self._log.emit("crash", {"error": "watchdog: main loop stalled"})
                os._exit(3)


class _HostReadable:
    """firmware/board.py's socket wait on CPython: select.poll on the socket under HostSocket,
    registered once per connection."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._poll = select.poll()
        self._poll.register(raw.fileno(), select.POLLIN)
        self._pending = getattr(raw, "pending", None)  # an SSLSocket

    def wait_readable(self, ms: int) -> bool:
        # TLS: bytes already decrypted into the SSL buffer leave the socket itself quiet.
        if self._pending is not None and self._pending():
            return True
        return bool(self._poll.poll(ms))


class HostBoard:
    """firmware/board.py's functions for the unchanged firmware, on this computer."""

    def __init__(self, config_path: Path, state_dir: Path, log: EventLog) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.STATE_DIR = str(state_dir)
        self.CONFIG_PATH = str(config_path)
        self.log = log
        self.loop = None
        self.relay_closed = False
        self.edges: list[tuple[float, bool]] = []
        self._relay_active_high = True
        self._levels: dict[str, int] = {"gameover": 1, "lockout": 1}
        self._active_level: dict[str, int] = {"gameover": 0, "lockout": 0}
        self._start = time.monotonic()
        self._ntp_host: str | None = None

    # --- pins --------------------------------------------------------------------------------
    def setup(self, cfg: dict) -> None:
        self._relay_active_high = cfg["relay"]["active_high"]
        self._ntp_host = cfg["ntp_server"].rpartition(":")[0] or cfg["ntp_server"]
        for name in ("gameover", "lockout"):
            if name in cfg:
                self._active_level[name] = 0 if cfg[name]["active_low"] else 1
                self._levels[name] = 1 - self._active_level[name]

    def relay(self, on: bool) -> None:
        if on == self.relay_closed:
            return
        self.relay_closed = on
        self.edges.append((time.monotonic(), on))
        self.log.emit("relay", {"closed": on})

    def gameover_level(self) -> int:
        return self._levels["gameover"]

    def lockout_level(self) -> int:
        return self._levels["lockout"]

    @staticmethod
    def gameover_pulses() -> int:
        return 0  # no pin interrupt: the loop samples the software input every 10 ms

    def set_input(self, name: str, active: bool) -> None:
        level = self._active_level[name]
        self._levels[name] = level if active else 1 - level

    def press_gameover(self, hold_ms: int = 150) -> None:
        """A game-over signal held for hold_ms (longer than any sane debounce)."""
        self.set_input("gameover", True)
        timer = threading.Timer(hold_ms / 1000, self.set_input, ("gameover", False))
        timer.daemon = True
        timer.start()

    # --- time --------------------------------------------------------------------------------
    def ticks_ms(self) -> int:
        return int((time.monotonic() - self._start) * 1000)

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return a - b

    @staticmethod
    def ticks_add(a: int, delta: int) -> int:
        return a + delta

    @staticmethod
    def sleep_ms(ms: int) -> None:
        time.sleep(ms / 1000)

    @staticmethod
    def utc_now() -> time.struct_time:
        return time.gmtime()

    @staticmethod
    def clock_valid() -> bool:
        return True  # the computer keeps its own time

    @staticmethod
    def set_clock(address: tuple, timeout_ms: int) -> None:
        """The firmware's NTP step: nothing to do, the computer's clock is already set."""

    @staticmethod
    def random_bits() -> int:
        return random.getrandbits(32)

    # --- health & log --------------------------------------------------------------------------
    def watchdog(self, timeout_ms: int) -> _HostWatchdog:
        return _HostWatchdog(timeout_ms, self.log)

    @staticmethod
    def free_mem() -> None:
        return None  # not meaningful on a PC: left out of the status

    @staticmethod
    def rssi() -> None:
        return None

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        self.log.emit(kind, fields)

    def started(self, loop: Any) -> None:
        self.loop = loop

    @staticmethod
    def print_exception(error: BaseException) -> None:
        traceback.print_exception(error, file=sys.stderr)

    @staticmethod
    def reset() -> None:
        raise SystemExit(3)  # a board would reboot; the simulator stops (restart it to resume)

    # --- network -------------------------------------------------------------------------------
    @staticmethod
    def readable(sock: Any) -> _HostReadable:
        """umqtt's socket here is a tools.umqtt_host.HostSocket: poll the CPython socket in it."""
        return _HostReadable(sock.raw)

    @staticmethod
    def wait_readable(readable: _HostReadable, ms: int) -> bool:
        return readable.wait_readable(ms)

    @staticmethod
    def wifi_ready(wifi: dict, now: int) -> bool:
        return True

    def resolve(self, host: str, port: int) -> tuple:
        if host == self._ntp_host:
            return ("0.0.0.0", port)  # see set_clock: the host asks no NTP server
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]

    def tls_context(self, ca_file: str | None, host: str) -> ssl.SSLContext:
        # On a board ca_file is relative to its flash root; here, to the config's folder.
        if ca_file:
            ca_file = str(Path(self.CONFIG_PATH).parent / ca_file)
        context = ssl.create_default_context(cafile=ca_file or None)
        use_tls(context, host)
        return context
