"""Turning low-level failures into one line a user can act on."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
