"""`arcade console` and `arcade files`: the board's REPL, files, journal and status over serial."""

from __future__ import annotations

import subprocess

import click

from tools.board import choose_port, explain_failure, mpremote, require_free_port
from tools.errors import UserError

# Runs on the board (MicroPython) and on CPython alike: lists every file, prints the state files
# the firmware keeps (journal, recent ids, status…) and the config with its passwords hidden.
BOARD_REPORT = r"""
import os, json
SHOW = ('.json', '.jsonl', '.dat', '.bad', '.log', '.txt')  # .bad: a journal kept aside
LIMIT = 4000
def walk(folder):
    for name in sorted(os.listdir(folder)):
        path = (folder.rstrip('/') + '/' + name) if folder != '.' else name
        if os.stat(path)[0] & 0x4000:
            yield from walk(path)
        else:
            yield path, os.stat(path)[6]
def hide(cfg):
    for section in ('wifi', 'mqtt'):
        if isinstance(cfg.get(section), dict) and cfg[section].get('password'):
            cfg[section]['password'] = '***'
    return cfg
files = list(walk('.'))
print('== files on the board')
for path, size in files:
    print('%8d  %s' % (size, path))
for path, size in files:
    if path.endswith(SHOW):
        with open(path) as f:
            text = f.read(LIMIT)
        if path.split('/')[-1] == 'config.json':
            try:
                text = json.dumps(hide(json.loads(text)))
                path += ' (passwords hidden)'
            except ValueError:
                text = '(not valid JSON: not shown, it may hold passwords)'
        print('== ' + path)
        print(text + ('\n(... %d more bytes)' % (size - LIMIT) if size > LIMIT else ''))
"""


def console_command(port: str) -> list[str]:
    return mpremote(port, "repl")


def files_command(port: str) -> list[str]:
    return mpremote(port, "exec", BOARD_REPORT)


def run_on_board(command: list[str], port: str) -> None:
    """Run mpremote attached to this terminal; a failure becomes one line with a hint."""
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True, errors="replace")
    if done.returncode != 0:
        raise UserError(explain_failure(done.stderr, port))


PORT_OPTION = click.option("--port", required=True,
                           help="Serial port of the board, or `auto` to find it.")


@click.command(epilog="""\b
Examples:
  arcade console --port /dev/ttyUSB0
  arcade console --port auto
""")
@PORT_OPTION
def console(port: str) -> None:
    """Open the board's MicroPython console (REPL): boot messages, logs, Ctrl-C to stop main.py.

    Ctrl-] leaves; Ctrl-D soft-resets the board and runs main.py again.
    """
    port = choose_port(port)
    require_free_port(port)
    click.echo(f"connecting to {port} (Ctrl-] to leave)", err=True)
    run_on_board(console_command(port), port)


@click.command(epilog="""\b
Examples:
  arcade files --port /dev/ttyUSB0
  arcade files --port auto > board-report.txt
""")
@PORT_OPTION
def files(port: str) -> None:
    """List the board's files and print its journal, recent ids and status files.

    config.json is shown with its passwords hidden. Stops main.py while it reads (Ctrl-C over
    serial); reset the board afterwards (`mpremote connect PORT reset`).
    """
    port = choose_port(port)
    require_free_port(port)
    run_on_board(files_command(port), port)
