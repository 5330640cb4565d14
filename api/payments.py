"""Stripe Payment Links: one per (cabinet, price), cached in the ledger and checked in Stripe
when stale (LINK_CHECK_SECONDS); Stripe's errors in our own words."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from api.logs import note
from api.settings import Settings
from api.store import Link, Store

if TYPE_CHECKING:
    import stripe


class PaymentsError(Exception):
    """Stripe refused or could not be reached, in our own words (Stripe's text, which can name
    the key's last digits or the request id, goes to our log only)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


# Stripe asks nothing more precise; a few seconds is what its own clients back off.
RETRY_AFTER_S = 10


def stripe_failure(error: stripe.StripeError) -> PaymentsError:
    """Map a Stripe error to what our caller can act on; note its details in our log line."""
    import stripe

    note(stripe_error=type(error).__name__, stripe_code=error.code,
         stripe_status=error.http_status, stripe_request=error.request_id)
    if isinstance(error, stripe.RateLimitError):
        return PaymentsError(503, "Stripe is limiting our requests; retry shortly", RETRY_AFTER_S)
    if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
        return PaymentsError(503, "payments are not configured correctly on the server "
                                  "(Stripe refused its API key)")
    if isinstance(error, stripe.InvalidRequestError):
        return PaymentsError(400, "Stripe refused to make this payment link (the price or the "
                                  "link's settings); the operator can find why in the API's log")
    if isinstance(error, stripe.APIConnectionError):
        return PaymentsError(503, "Stripe cannot be reached; retry shortly", RETRY_AFTER_S)
    return PaymentsError(502, "Stripe answered with an error; retry shortly", RETRY_AFTER_S)


def stripe_client(settings: Settings) -> stripe.StripeClient:
    import stripe  # imported on first use: it is the slowest import of the API

    if not settings.stripe_api_key:
        raise PaymentsError(503, "STRIPE_API_KEY is not set on the server: payment links cannot "
                                 "be created")
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
    replaces: str = "",
    receipt_base: str = "",
) -> Link:
    metadata = {"machine_id": machine_id, "credits": str(credits)}
    # The same cabinet, price and credits always make the same request: a retry never makes a
    # twin. A replacement names the link it replaces, so it is a new request (Stripe would
    # otherwise answer with the old, deactivated link for 24 hours).
    key = f"arcade-link-{machine_id}-{price_id}-{credits}"
    if replaces:
        key += f"-after-{hashlib.sha256(replaces.encode()).hexdigest()[:16]}"
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
    link = client.v1.payment_links.create(params=params, options={"idempotency_key": key})
    return Link(link.url, link.id, time.time())


def still_sells(client: stripe.StripeClient, link: Link, credits: int) -> bool:
    """Stripe still has the link active, selling the Price's current credits."""
    if not link.link_id:  # cached before ids were kept: cannot be checked, so replaced once
        return False
    found = client.v1.payment_links.retrieve(link.link_id).to_dict()
    return bool(found.get("active")) and (found.get("metadata") or {}).get("credits") == str(
        credits
    )


def with_client_reference(url: str, machine_id: str) -> str:
    """The seed's `?client_reference_id=<machine>`: the session names the cabinet even when the
    link's metadata is lost (e.g. a link made by hand in the Stripe dashboard)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urlencode({'client_reference_id': machine_id})}"


def checked_link(
    store: Store,
    settings: Settings,
    machine_id: str,
    price_id: str,
    cached: Link | None,
    receipt_base: str = "",
) -> Link:
    """The cached link confirmed in Stripe, or a new one when it was deactivated (dashboard) or
    its Price's credits changed; created on first request."""
    import stripe

    try:
        client = stripe_client(settings)
        credits = credits_for_price(client, price_id, settings)
        if cached is not None and still_sells(client, cached, credits):
            confirmed = Link(cached.url, cached.link_id, time.time())
            return store.save_link(machine_id, price_id, confirmed, replacing=cached.url)
        created = create_payment_link(client, machine_id, price_id, credits,
                                      replaces=cached.link_id or cached.url if cached else "",
                                      receipt_base=receipt_base)
    except (stripe.StripeError, PaymentsError) as error:
        if cached is not None:
            # Stripe down or refusing: the link it confirmed before is better than no link.
            note(link_check="failed")
            return cached
        raise error if isinstance(error, PaymentsError) else stripe_failure(error) from None
    if cached is not None:
        note(link_replaced=cached.link_id or "unknown")
    return store.save_link(machine_id, price_id, created,
                           replacing=cached.url if cached else None)


def payment_link_for(
    store: Store, settings: Settings, machine_id: str, price_id: str, receipt_base: str = ""
) -> str:
    """The cabinet's link: from the ledger while it is fresh (LINK_CHECK_SECONDS), else checked
    in Stripe first, so a deactivated link or a Price's changed credits are not served on. A new
    link sends the player to `receipt_base`/receipt/… after paying."""
    cached = store.link(machine_id, price_id)
    fresh_for = settings.security.link_check_seconds
    if cached is None or time.time() - cached.checked_at >= fresh_for:
        cached = checked_link(store, settings, machine_id, price_id, cached, receipt_base)
    return with_client_reference(cached.url, machine_id)
