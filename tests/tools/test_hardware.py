"""Opt-in: flash a real ESP32 (never in CI). ARCADE_TEST_PORT=/dev/ttyUSB0
ARCADE_TEST_FIRMWARE=ESP32_GENERIC-….bin pytest -m hardware tests/tools/test_hardware.py"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.hardware

PORT = os.environ.get("ARCADE_TEST_PORT", "")
IMAGE = os.environ.get("ARCADE_TEST_FIRMWARE", "")


@pytest.mark.skipif(not (PORT and IMAGE), reason="needs ARCADE_TEST_PORT and ARCADE_TEST_FIRMWARE")
def test_flash_a_real_board_and_read_its_files(arcade, tmp_path):
    provisioned = arcade("provision", "bench-1", "--ssid", "none", "--wifi-password", "x",
                         "--host", "127.0.0.1", "--no-tls")
    assert provisioned.exit_code == 0, provisioned.output

    flashed = arcade("flash", "--port", PORT, "--firmware", IMAGE, "--config", "config.json",
                     "--mpy")
    assert flashed.exit_code == 0, flashed.output
    assert "Reset the board and show its first console lines" in flashed.output

    listed = arcade("files", "--port", PORT)
    assert listed.exit_code == 0, listed.output
