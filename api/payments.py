"""Stripe Payment Links: one per (cabinet, price), created once and then served from the ledger."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from api.settings import Settings
from api.store import Store

if TYPE_CHECKING:
    import stripe


class PaymentsError(Exception):
    """Stripe refused or could not be reached; the message is Stripe's (safe to show)."""


def stripe_client(settings: Settings) -> stripe.StripeClient:
    import stripe  # imported on first use: it is the slowest import of the API

    if not settings.stripe_api_key:
        raise PaymentsError("STRIPE_API_KEY is not set: payment links cannot be created")
    addresses = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key, base_addresses=addresses, max_network_retries=2
    )


def credits_for_price(client: stripe.StripeClient, price_id: str, settings: Settings) -> int:
    """What one purchase buys: the Price's own `credits` metadata (bundles such as "5 credits
    for $4"), else CREDITS_PER_PURCHASE, else the amount at CENTS_PER_CREDIT."""
    price = client.v1.prices.retrieve(price_id).to_dict()
    from_metadata = str((price.get("metadata") or {}).get("credits", ""))
    if from_metadata.strip().isdigit() and int(from_metadata) > 0:
        return int(from_metadata)
    if settings.credits_per_purchase:
        return settings.credits_per_purchase
    return max(1, (price.get("unit_amount") or 0) // settings.cents_per_credit)


def create_payment_link(
    client: stripe.StripeClient,
    machine_id: str,
    price_id: str,
    credits: int,
    receipt_base: str = "",
) -> str:
    metadata = {"machine_id": machine_id, "credits": str(credits)}
    params: dict = {
        "line_items": [{"price": price_id, "quantity": 1}],
        "metadata": metadata,
        # Also on the PaymentIntent, so refunds and disputes name the cabinet.
        "payment_intent_data": {"metadata": metadata},
    }
    if receipt_base:
        # After paying, the player lands on our receipt page, which follows the credit live.
        # Stripe puts the session id in place of {CHECKOUT_SESSION_ID}.
        url = f"{receipt_base}/receipt/{{CHECKOUT_SESSION_ID}}"
        params["after_completion"] = {"type": "redirect", "redirect": {"url": url}}
    link = client.v1.payment_links.create(
        params=params,
        # The same cabinet and price always make the same request: a retry never makes a twin.
        options={"idempotency_key": f"arcade-link-{machine_id}-{price_id}-{credits}"},
    )
    return link.url


def with_client_reference(url: str, machine_id: str) -> str:
    """The seed's `?client_reference_id=<machine>`: the session names the cabinet even when the
    link's metadata is lost (e.g. a link made by hand in the Stripe dashboard)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urlencode({'client_reference_id': machine_id})}"


def payment_link_for(
    store: Store, settings: Settings, machine_id: str, price_id: str, receipt_base: str = ""
) -> str:
    """The cabinet's link: from the ledger, or created in Stripe on first request (sending the
    player to `receipt_base`/receipt/… afterwards)."""
    url = store.get_link(machine_id, price_id)
    if url is None:
        import stripe

        try:
            client = stripe_client(settings)
            credits = credits_for_price(client, price_id, settings)
            created = create_payment_link(client, machine_id, price_id, credits, receipt_base)
        except stripe.StripeError as error:
            raise PaymentsError(error.user_message or str(error)) from None
        url = store.put_link(machine_id, price_id, created, time.time())
    return with_client_reference(url, machine_id)
