"""`arcade ledger`: every payment with its state — "they paid but got no credit: where is it?"."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from api.store import Cabinet, Payment, State
from tools.errors import UserError
from tools.settings import load_env, require_machine_id, run_settings_hint, text

# Paid, but the cabinet has not confirmed the pulses yet.
UNDELIVERED = (State.CLAIMED, State.PUBLISHED)


def when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def payment_row(payment: Payment) -> str:
    amount = "-" if payment.amount is None else f"{payment.amount / 100:.2f}"
    currency = (payment.currency or "").upper()
    return (
        f"{when(payment.created_at):<19}  {payment.machine_id:<16} {payment.credits:>7}"
        f"  {amount:>8} {currency:<3}  {payment.state:<9}  {when(payment.published_at):<19}"
        f"  {when(payment.acked_at):<19}  {payment.session_id}"
    )


def cabinet_row(cabinet: Cabinet) -> str:
    return (
        f"{cabinet.machine_id:<16} {cabinet.state:<7}  {when(cabinet.last_seen):<19}"
        f"  {cabinet.pending_credits:>7}  {cabinet.firmware}"
    )


def open_ledger(store_url: str):
    from api.store import open_store

    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserError(f"no ledger at {path} (STORE_URL): has the API run here? "
                            f"({run_settings_hint()})")
    try:
        return open_store(store_url)
    except ValueError as error:
        raise UserError(str(error)) from None


@click.command(epilog="""\b
Examples:
  arcade ledger
  arcade ledger --machine machine_123 --undelivered
""")
@click.option("--machine", "machine_id", help="Only this cabinet's payments.")
@click.option("--undelivered", is_flag=True, help="Only payments not yet confirmed by the cabinet.")
@click.option("--limit", default=100, show_default=True, help="At most this many payments.")
def ledger(machine_id: str | None, undelivered: bool, limit: int) -> None:
    """Print payments (newest first) with their delivery state, and the cabinets' last status.

    States: pending (awaiting payment), claimed (being published), published (the broker has
    it), acked (the cabinet pulsed it), refunded, disputed, failed.
    """
    if machine_id is not None:
        require_machine_id(machine_id)
    env = load_env()
    store = open_ledger(text(env, "STORE_URL", "sqlite:///arcade.db"))
    payments = store.payments(machine_id=machine_id, limit=limit)
    if undelivered:
        payments = [p for p in payments if p.state in UNDELIVERED]
    click.echo(
        f"{'created (UTC)':<19}  {'machine':<16} {'credits':>7}  {'amount':>12}  {'state':<9}"
        f"  {'published':<19}  {'acked':<19}  session"
    )
    for payment in payments:
        click.echo(payment_row(payment))
    if not payments:
        click.echo("(no payments)")
    cabinets = [c for c in store.cabinets() if machine_id in (None, c.machine_id)]
    click.echo(f"\n{'cabinet':<16} {'state':<7}  {'last seen (UTC)':<19}  {'pending':>7}  firmware")
    for cabinet in cabinets:
        click.echo(cabinet_row(cabinet))
    if not cabinets:
        click.echo("(no cabinet has reported yet)")
