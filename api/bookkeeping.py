"""After a payment changes: count its money into the totals and open an incident if it needs an
operator. Both are idempotent, so calling this again (a Stripe retry, a second worker) is safe;
a failure here is logged and never fails the payment's own handling."""

from __future__ import annotations

import logging
import time
from zoneinfo import ZoneInfo

from api.alerts import open_payment_incident
from api.services import Services

log = logging.getLogger("arcade.bookkeeping")


def after_change(services: Services, session_id: str) -> None:
    store = services.store
    try:
        store.count_money(session_id, ZoneInfo(services.settings.timezone))
        payment = store.get(session_id)
        if payment is not None:
            open_payment_incident(store, payment, time.time())
    except Exception as error:  # the totals can be recounted; the credit must not suffer
        log.error("bookkeeping of %s failed: %s: %s", session_id, type(error).__name__, error)
