"""Runs scenarios.py on CPython, as run_mpy.mjs does on MicroPython.

    python run_cpython.py FIRMWARE_DIR STATE_ROOT [SCENARIO ...]
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [sys.argv[1], str(HERE), str(HERE.parents[1])]

from tools.umqtt_host import install_micropython_shims  # noqa: E402

install_micropython_shims()
import scenarios  # noqa: E402

scenarios.main(root=sys.argv[2], firmware=sys.argv[1], only=sys.argv[3:] or None)
