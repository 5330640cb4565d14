"""`arcade ledger`: every payment with its state — "they paid but got no credit: where is it?" —
and the two actions on one payment: publish its undelivered parts again, or refund them now."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from api.ledger import REFUNDABLE, money
from api.store import Cabinet, Heartbeat, PartState, Payment
from tools.errors import UserError
from tools.settings import load_env, require_machine_id, run_settings_hint, text

STALE_AFTER_S = 60  # a heartbeat older than this (the listener beats every 15 s) is stale


def when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def delivered_parts(payment: Payment) -> str:
    done = sum(part.state == PartState.DONE for part in payment.parts)
    return f"{done}/{len(payment.parts)}" if payment.parts else "-"


def refunded_amount(payment: Payment) -> str:
    refunded = max(payment.amount_refunded, payment.refunded_by_us)
    return money(refunded, payment.currency) if refunded else "-"


PAYMENT_HEADER = (
    f"{'created (UTC)':<19}  {'machine':<16} {'credits':>7}  {'amount':>12}  {'state':<22}"
    f"  {'parts done':>10}  {'refunded':>12}  session"
)


def payment_row(payment: Payment) -> str:
    return (
        f"{when(payment.created_at):<19}  {payment.machine_id:<16} {payment.credits:>7}"
        f"  {money(payment.amount, payment.currency):>12}  {payment.state:<22}"
        f"  {delivered_parts(payment):>10}  {refunded_amount(payment):>12}  {payment.session_id}"
    )


def cabinet_row(cabinet: Cabinet) -> str:
    problem = f"  problem: {cabinet.problem}" if cabinet.problem else ""
    return (
        f"{cabinet.machine_id:<16} {cabinet.state:<7}  {when(cabinet.last_seen):<19}"
        f"  {cabinet.pending_credits:>7}  {cabinet.firmware}{problem}"
    )


def health_row(beat: Heartbeat, now: float) -> str:
    age = now - beat.at
    fresh = "ok" if age <= STALE_AFTER_S else "STALE"
    counts = ", ".join(f"{k} {v}" for k, v in beat.detail.items() if isinstance(v, int | bool))
    return f"{beat.name:<9} {fresh:<5}  last heard {age:.0f} s ago  ({counts})"


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


@click.group(invoke_without_command=True, epilog="""\b
Examples:
  arcade ledger
  arcade ledger --machine machine_123 --undelivered
  arcade ledger show cs_test_a1B2c3
""")
@click.option("--machine", "machine_id", help="Only this cabinet's payments.")
@click.option(
    "--undelivered", is_flag=True, help="Only payments paid and not done (nor refunded)."
)
@click.option("--limit", default=100, show_default=True, help="At most this many payments.")
@click.pass_context
def ledger(ctx: click.Context, machine_id: str | None, undelivered: bool, limit: int) -> None:
    """Print payments (newest first) with their delivery state, the cabinets' last status and
    the health of the delivery processes.

    States: pending (awaiting payment), paid (not yet taken by the broker), undeliverable (the
    broker or the cabinet refused it; see `show`), published (the broker has it), received (the
    cabinet journaled it), done (pulsed), expired (refused by the cabinet as too late),
    refunded, refunded_but_delivered (refunded, then pulsed after all), not_credited (the
    operator's rules credit nothing; refunded), disputed, failed.
    """
    if ctx.invoked_subcommand is not None:
        return
    if machine_id is not None:
        require_machine_id(machine_id)
    store = open_ledger(text(load_env(), "STORE_URL", "sqlite:///arcade.db"))
    if undelivered:
        payments = store.undelivered(machine_id=machine_id, limit=limit)
    else:
        payments = store.payments(machine_id=machine_id, limit=limit)
    click.echo(PAYMENT_HEADER)
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
    beats = store.heartbeats()
    click.echo("\ndelivery")
    for beat in beats:
        click.echo(health_row(beat, time.time()))
    if not beats:
        click.echo("(no listener or sweep has run: start `arcade listen`)")


@ledger.command(epilog="""\b
Example:
  arcade ledger show cs_test_a1B2c3
""")
@click.argument("session_id")
def show(session_id: str) -> None:
    """One payment: its parts and their states, and its timeline."""
    store = open_ledger(text(load_env(), "STORE_URL", "sqlite:///arcade.db"))
    payment = found(store, session_id)
    click.echo(payment_row(payment))
    click.echo(f"\n{'part':<40} {'credits':>7}  {'amount':>12}  {'state':<22}  reason")
    for part in payment.parts:
        click.echo(
            f"{part.id:<40} {part.credits:>7}  {money(part.amount, payment.currency):>12}"
            f"  {part.state:<22}  {part.reason}"
        )
    click.echo("\ntimeline (UTC)")
    for event in payment.events:
        where = f" {event.part}" if event.part and event.part != session_id else ""
        click.echo(f"{when(event.at)}  {event.kind}{where}  {event.detail}".rstrip())


@ledger.command(epilog="""\b
Example:
  arcade ledger resend cs_test_a1B2c3
""")
@click.argument("session_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def resend(session_id: str, yes: bool) -> None:
    """Publish again the parts of one payment the cabinet has not confirmed (same ids: a cabinet
    that has one already drops the repeat), while their deadline allows. Asks first."""
    from api import crediting
    from api import ledger as rules

    services = api_services()
    payment = found(services.store, session_id)
    parts = [p for p in payment.parts if rules.publishable(p, time.time(), resend=True)]
    if not parts:
        raise UserError(
            f"nothing to resend for {session_id}: every part is confirmed, refunded or past its"
            " deadline (see `arcade ledger show`)"
        )
    listed = ", ".join(f"{p.id} ({p.credits} credits)" for p in parts)
    if not yes:
        click.confirm(f"Publish {listed} to {payment.machine_id} again?", abort=True)
    outcome = crediting.credit(services, payment, resend=True)
    services.store.noted(session_id, "operator_resend", outcome.result, time.time())
    services.publisher.close()
    if outcome.status != 200:
        raise UserError(f"not published: {outcome.error}")
    click.echo(f"{outcome.result}: {listed}")


@ledger.command(epilog="""\b
Example:
  arcade ledger refund cs_test_a1B2c3
""")
@click.argument("session_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def refund(session_id: str, yes: bool) -> None:
    """Refund now, through Stripe, the parts of one payment the cabinet has not confirmed.
    Asks first, with the amount."""
    from api import refunds

    services = api_services()
    payment = found(services.store, session_id)
    parts = [p for p in payment.parts if p.state in REFUNDABLE]
    if payment.disputed or not parts:
        raise UserError(
            f"nothing to refund for {session_id}: it is {payment.state}"
            " (see `arcade ledger show`; refund delivered credits in the Stripe dashboard)"
        )
    total = sum(refunds.refund_amount(payment, part) for part in parts)
    if not yes:
        click.confirm(
            f"Refund {money(total, payment.currency)} for {len(parts)} undelivered part(s) of"
            f" {session_id}? A part the cabinet receives later is still pulsed.",
            abort=True,
        )
    results = [refunds.refund_part(services, session_id, part.id, force=True) for part in parts]
    services.store.noted(session_id, "operator_refund", ", ".join(results), time.time())
    for part, result in zip(parts, results, strict=True):
        click.echo(f"{part.id}: {result}")
    if "failed" in results:
        raise UserError("a refund failed; `arcade ledger show` has Stripe's answer")


def found(store, session_id: str) -> Payment:
    payment = store.get(session_id)
    if payment is None:
        raise UserError(f"no payment {session_id!r} in the ledger")
    return payment


def api_services():
    """The API's settings, ledger and publisher, as the API itself builds them."""
    from api.publisher import Publisher
    from api.services import Services
    from tools.settings import api_settings

    settings = api_settings()
    store = open_ledger(settings.store_url)
    return Services(settings, store, Publisher(settings))
