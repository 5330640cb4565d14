"""The sweep: every payment with something left to do gets it done — a part the broker has not
taken is published again before its deadline; a part neither received nor done by its refund time
(deadline + REFUND_GRACE_S) is refunded.

It runs in `arcade listen` every SWEEP_INTERVAL_S locally, and on AWS from an EventBridge
schedule invoking the same Lambda function (api/lambda_handler.py). Runs may overlap (a slow
Stripe, two schedules): every step takes the ledger's lease or refund claim first, so each part is
published by one worker at a time and refunded once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from api import crediting, ledger, refunds
from api.ledger import REFUNDABLE, Payment
from api.services import Services
from api.store import Heartbeat

log = logging.getLogger("arcade.sweep")


@dataclass
class SweepReport:
    looked_at: int = 0
    republished: int = 0
    refunded: int = 0
    failed: int = 0
    results: list[str] = field(default_factory=list)


def sweep(services: Services, now: float | None = None, limit: int = 100) -> SweepReport:
    now = time.time() if now is None else now
    report = SweepReport()
    for payment in services.store.due(now, limit):
        report.looked_at += 1
        try:
            sweep_payment(services, payment, now, report)
        except Exception:  # one bad record must not stop the others; the log says which
            log.exception("sweep of %s failed", payment.session_id)
            report.failed += 1
    send_alerts(services, now)
    services.store.heartbeat(Heartbeat("sweep", time.time(), asdict(report) | {"results": []}))
    return report


def send_alerts(services: Services, now: float) -> None:
    """The console's alerts (api/alerts.py) ride on the same schedule; never fatal here."""
    from api import alerts

    try:
        alerts.sweep(services.store, services.settings, now)
    except Exception:
        log.exception("the alert sweep failed")


def sweep_payment(services: Services, payment: Payment, now: float, report: SweepReport) -> None:
    if payment.disputed:
        return
    if any(retry_due(payment, part, now) for part in payment.parts):
        outcome = crediting.credit(services, payment)
        report.republished += outcome.result == "published"
        report.results.append(f"{payment.session_id}: {outcome.result}")
        payment = services.store.get(payment.session_id)
    if not services.settings.refund_undelivered_after_s:
        return  # REFUND_UNDELIVERED_AFTER_S=0: never refund, only report
    for part in payment.parts:
        if part.state in REFUNDABLE and part.refund_at is not None and part.refund_at <= now:
            result = refunds.refund_part(services, payment.session_id, part.id, now=now)
            report.refunded += result in ("refunded", "nothing_charged")
            report.failed += result == "failed"
            report.results.append(f"{part.id}: {result}")


def retry_due(payment: Payment, part: ledger.Part, now: float) -> bool:
    last = part.tried_at or payment.paid_at or 0.0
    return ledger.publishable(part, now) and last + ledger.RETRY_AFTER_S <= now
