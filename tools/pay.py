"""`arcade pay`: a paid Checkout Session delivered to our webhook exactly as Stripe would.

A local stand-in for `stripe trigger`: same event shape, same `Stripe-Signature`, so the API
takes the very path a real payment takes (signature check, ledger, coinpulse).
"""

from __future__ import annotations

from collections.abc import Mapping

import click

from api.stripe_events import checkout_session, completed_event, signed_delivery
from tools.errors import UserError
from tools.http import ApiRefused, endpoint, post
from tools.settings import integer, load_env, require_machine_id, run_settings_hint, text

DEFAULT_API = "http://127.0.0.1:5000"


def signing_secret(env: Mapping[str, str]) -> str:
    """The first STRIPE_WEBHOOK_SECRET (the API accepts any in the list; Stripe signs with one)."""
    secrets = [item.strip() for item in text(env, "STRIPE_WEBHOOK_SECRET").split(",")]
    if not secrets[0]:
        raise UserError("STRIPE_WEBHOOK_SECRET is not set (the API's webhook secret, from .env; "
                        f"{run_settings_hint()})")
    return secrets[0]


def purchase(
    credits: int | None, amount: int | None, cents_per_credit: int
) -> tuple[int, int | None]:
    """(amount in cents, credits for the metadata): --amount leaves the credits to the API."""
    if credits is not None and amount is not None:
        raise UserError("give --credits or --amount, not both")
    if amount is not None:
        return amount, None
    credits = 1 if credits is None else credits
    return credits * cents_per_credit, credits


@click.command(
    epilog="""\b
Examples:
  arcade pay machine_123                      # one credit
  arcade pay machine_123 --credits 3
  arcade pay machine_123 --amount 250 --api http://127.0.0.1:5000
"""
)
@click.argument("machine_id")
@click.option("--credits", type=click.IntRange(min=1), help="Credits bought [default: 1].")
@click.option(
    "--amount",
    type=click.IntRange(min=1),
    help="Amount paid in cents, without credits metadata (the API divides by CENTS_PER_CREDIT).",
)
@click.option(
    "--api",
    "api_url",
    envvar="ARCADE_API_URL",
    default=DEFAULT_API,
    show_default=True,
    help="Base URL of the API [env: ARCADE_API_URL].",
)
def pay(machine_id: str, credits: int | None, amount: int | None, api_url: str) -> None:
    """Send the local API a signed checkout.session.completed, as Stripe would after a payment.

    Signed with STRIPE_WEBHOOK_SECRET from .env, so no Stripe account or `stripe` CLI is needed.
    """
    env = load_env()
    require_machine_id(machine_id)
    secret = signing_secret(env)
    amount, credits = purchase(credits, amount, integer(env, "CENTS_PER_CREDIT", 100))
    session = checkout_session(machine_id, amount, credits)
    body, headers = signed_delivery(completed_event(session), secret)
    headers["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks) arcade-pay"
    bought = f"{credits} credit(s)" if credits is not None else "credits from the amount"
    click.echo(
        f"paying {amount / 100:.2f} USD for {machine_id} ({bought}), session {session['id']}"
    )
    answer = post(endpoint(api_url, "/webhook"), body, headers)
    if not 200 <= answer.status < 300:
        raise ApiRefused(f"the API answered {answer.status}: {answer.reason()}")
    click.echo(f"the API answered {answer.status}: {answer.text.strip()}")
