"""`arcade operator`: the console's operator accounts (salted Argon2id hashes in the ledger, or
a CONSOLE_OPERATORS line for a deployment whose operators live in a setting, e.g. Lambda)."""

from __future__ import annotations

import sys
import time

import click

from tools.errors import UserError
from tools.settings import load_env, text

MIN_PASSWORD = 10


def ledger():
    from api.store import open_store

    try:
        return open_store(text(load_env(), "STORE_URL", "sqlite:///arcade.db"))
    except ValueError as error:
        raise UserError(str(error)) from None


def check_name(name: str) -> str:
    from api.settings import OPERATOR_NAME_CHARS

    if not 1 <= len(name) <= 64 or set(name) - OPERATOR_NAME_CHARS:
        raise UserError(f"invalid operator name {name!r}: use 1-64 letters, digits, . _ - @")
    return name


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


@click.group(epilog="""\b
Examples:
  arcade operator add ana
  arcade operator add ana --print     # a CONSOLE_OPERATORS entry instead (Lambda)
  arcade operator list
""")
def operator() -> None:
    """Operator accounts of the console (/console): add, list, remove."""


@operator.command(epilog="""\b
Examples:
  arcade operator add ana
  arcade operator add ana --print    # for CONSOLE_OPERATORS (Lambda)
""")
@click.argument("name")
@click.option("--print", "print_only", is_flag=True,
              help="Print a CONSOLE_OPERATORS entry instead of writing to the ledger.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add(name: str, print_only: bool, password_stdin: bool) -> None:
    """Add an operator (or change their password); asks for the password twice."""
    from api.console.auth import hash_password

    check_name(name)
    password_hash = hash_password(read_password(password_stdin))
    if print_only:
        click.echo(f"{name}:{password_hash}")
        click.echo("# CONSOLE_OPERATORS holds such entries separated by spaces", err=True)
        return
    ledger().put_operator(name, password_hash, time.time())
    click.echo(f"operator {name} can now sign in at /console")


@operator.command(name="list", epilog="""\b
Example:
  arcade operator list
""")
def list_operators() -> None:
    """List the operators stored in the ledger (and those of CONSOLE_OPERATORS)."""
    from api.settings import SettingsError, parse_operators

    try:
        from_setting = [name for name, _ in parse_operators(text(load_env(),
                                                                 "CONSOLE_OPERATORS"))]
    except SettingsError as error:
        raise UserError(str(error)) from None
    for entry in ledger().operators():
        added = time.strftime("%Y-%m-%d", time.gmtime(entry.created_at))
        click.echo(f"{entry.name}  (ledger, added {added})")
    for name in from_setting:
        click.echo(f"{name}  (CONSOLE_OPERATORS)")


@operator.command(epilog="""\b
Example:
  arcade operator remove ana
""")
@click.argument("name")
def remove(name: str) -> None:
    """Remove an operator from the ledger; their open sessions end at their next click."""
    if not ledger().remove_operator(check_name(name)):
        raise UserError(f"no operator {name} in the ledger")
    click.echo(f"removed operator {name}")
