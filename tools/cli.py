"""The `arcade` command line. Each subcommand lives in its own module and is loaded on use."""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute"; modules import their heavy dependencies inside the command.
COMMANDS = {
    "provision": "tools.provision:provision",
    "publish": "tools.publish:publish",
    "monitor": "tools.monitor:monitor",
    "qr": "tools.qr:qr",
    "pay": "tools.pay:pay",
    "flash": "tools.flash:flash",
    "console": "tools.console:console",
    "files": "tools.console:files",
    "serve": "tools.serve:serve",
    "listen": "tools.listen:listen",
    "ledger": "tools.ledger:ledger",
    "run": "tools.run:run",
    "simulate": "tools.simulate:simulate",
    "operator": "tools.operator:operator",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="""\b
Example:
  arcade run               # the whole system on this machine (make run)
""")
@click.version_option(package_name="arcade-stem")
def cli() -> None:
    """Arcade STEM: cashless payments for arcade cabinets."""


def main() -> None:
    try:
        cli.main(prog_name="arcade")
    except KeyboardInterrupt:
        sys.exit(130)
