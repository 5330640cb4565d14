"""A deployed cabinet's state — its credit journal (credits owed) and the ids it already credited —
kept across a re-flash: copied off the board before the erase, written back before boot.py and
main.py. `arcade flash` erases the whole flash; without this a re-flash would forget what the
cabinet owes and which payments it already pulsed."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click

from tools.board import explain_failure, mpremote, run_streaming
from tools.errors import UserError

# Run on the board: the state files (every *.dat and *.bin at the root: journal.dat, inbox0.dat,
# ids.bin — the ids seen, firmware 1.1 — recent.dat on older boards) and the cabinet its config
# names. Never fails, so "it answered" means MicroPython is there.
STATE_SCRIPT = r"""
import os, json
names = sorted(n for n in os.listdir() if n.endswith(('.dat', '.bin')))
machine = None
try:
    with open('config.json') as f:
        machine = json.load(f).get('machine_id')
except Exception:
    pass
print('ARCADE-STATE ' + json.dumps({'machine_id': machine, 'files': names}))
"""
_MARK = "ARCADE-STATE "
READ_TIMEOUT_S = 30.0


@dataclass
class BoardState:
    machine_id: str | None
    files: list[str]


def parse_state(output: str) -> BoardState | None:
    for line in output.splitlines():
        if line.startswith(_MARK):
            found = json.loads(line[len(_MARK):])
            return BoardState(found.get("machine_id"), list(found.get("files") or []))
    return None


@dataclass
class StateKeeper:
    """Backs the board's state up into `folder`, and writes it back unless `wipe`."""

    port: str
    folder: Path
    new_machine_id: str | None
    wipe: bool
    kept: list[str] = field(default_factory=list)

    def describe_backup(self) -> str:
        action = "copy kept, not restored (--wipe-state)" if self.wipe else "restored below"
        return (f"mpremote exec lists the board's *.dat and *.bin files (journal.dat, ids.bin) "
                f"and its config's machine_id, then `fs cp :NAME {self.folder}/NAME` each; "
                f"{action}; nothing on a board without MicroPython")

    def describe_restore(self) -> str:
        return f"mpremote fs cp {self.folder}/*.dat {self.folder}/*.bin : (the files copied above)"

    def backup(self) -> None:
        state = self.read()
        if state is None:
            click.echo(f"    no MicroPython answers on {self.port}: no cabinet state to keep")
            return
        if not state.files:
            click.echo("    the board has no cabinet state (no *.dat files)")
            return
        self.refuse_another_cabinet(state)
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in state.files:
            self.run(mpremote(self.port, "fs", "cp", f":{name}", str(self.folder / name)),
                     f"copying {name} off the board")
        self.kept = state.files
        click.echo(f"    kept {', '.join(state.files)} in {self.folder}")

    def refuse_another_cabinet(self, state: BoardState) -> None:
        other = state.machine_id and self.new_machine_id and (
            state.machine_id != self.new_machine_id)
        if other and not self.wipe:
            raise UserError(
                f"this board is cabinet {state.machine_id} and its journal may owe credits; the "
                f"config is for {self.new_machine_id}, whose game must not get them. Settle "
                f"{state.machine_id}'s credits first (`arcade files`), or pass --wipe-state to "
                "start this board afresh")

    def restore(self) -> None:
        if self.wipe or not self.kept:
            if self.kept:
                click.echo(f"    --wipe-state: not restored (a copy stays in {self.folder})")
            return
        self.run(mpremote(self.port, "fs", "cp", *(str(self.folder / n) for n in self.kept), ":"),
                 f"restoring the cabinet's state (a copy stays in {self.folder})")

    def read(self) -> BoardState | None:
        try:
            done = subprocess.run(mpremote(self.port, "exec", STATE_SCRIPT), capture_output=True,
                                  text=True, errors="replace", timeout=READ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None
        return parse_state(done.stdout) if done.returncode == 0 else None

    def run(self, command: list[str], what: str) -> None:
        code, output = run_streaming(command)
        if code != 0:
            raise UserError(f"{what} failed: {explain_failure(output, self.port)} (nothing "
                            f"erased yet; copies so far are in {self.folder})")
