"""The firmware as the tools see it: its folder, its config rules and the files a board needs.

`arcade provision` validates with the firmware's own `config.py` (the same rules the board applies
at boot), and `arcade flash` copies exactly the files listed here.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"

# Kept as source on the board: MicroPython only runs boot.py and main.py as .py files.
ENTRY_FILES = ("boot.py", "main.py")


class FirmwareMissing(RuntimeError):
    """The firmware folder or one of its files is not where the tools expect it."""


def firmware_dir() -> Path:
    if not FIRMWARE_DIR.is_dir():
        raise FirmwareMissing(f"firmware folder not found at {FIRMWARE_DIR}")
    return FIRMWARE_DIR


@functools.cache
def load_config_rules() -> ModuleType:
    """firmware/config.py, imported by path (it is MicroPython code, not part of a package), once
    per process: provision, run and simulate ask for its rules several times each."""
    path = firmware_dir() / "config.py"
    if not path.is_file():
        raise FirmwareMissing(f"{path} is missing: cannot validate a cabinet config")
    spec = importlib.util.spec_from_file_location("arcade_firmware_config", path)
    module = importlib.util.module_from_spec(spec)
    # Its own imports (sibling firmware modules) resolve from the firmware folder; appended so
    # a firmware module can never shadow the standard library here.
    sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def config_problems(config: dict) -> list[str]:
    """What the firmware would reject in this config (empty list: the board accepts it)."""
    return list(load_config_rules().validate(config))


def config_with_defaults(config: dict) -> dict:
    return load_config_rules().with_defaults(config)


def is_board_file(path: Path) -> bool:
    """Board code is every .py in firmware/ (host-only helpers excepted)."""
    return path.suffix == ".py" and not path.name.startswith(("test_", "host_"))


def board_files() -> list[Path]:
    """Firmware files to copy to a board, relative to firmware/, entry files last.

    boot.py and main.py go last so a board interrupted mid-copy never boots into a half-copied
    firmware.
    """
    root = firmware_dir()
    found = sorted(
        path.relative_to(root)
        for path in root.rglob("*.py")
        if is_board_file(path) and "__pycache__" not in path.parts
    )
    if not found:
        raise FirmwareMissing(f"no firmware files in {root}")
    return sorted(found, key=lambda rel: str(rel) in ENTRY_FILES)
