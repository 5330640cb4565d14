"""Runs scenarios.py on CPython, as run_mpy.mjs does on MicroPython.

    python run_cpython.py FIRMWARE_DIR STATE_ROOT NET_DIR [SCENARIO ...]

NET_DIR holds the genuine umqtt/simple.py and fake_net.py as usocket.py (see conftest.py).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [sys.argv[1], str(HERE), sys.argv[3], str(HERE.parents[1])]

from tools.umqtt_host import install_micropython_shims  # noqa: E402

install_micropython_shims()
import scenarios  # noqa: E402

sys.modules.setdefault("ustruct", __import__("struct"))  # MicroPython's old names
sys.modules.setdefault("ubinascii", __import__("binascii"))
scenarios.main(root=sys.argv[2], firmware=sys.argv[1], only=sys.argv[4:] or None)
