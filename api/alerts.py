"""Alerts: what an operator must hear about, sent once per incident as JSON to ALERT_WEBHOOK_URL.

Incidents: a cabinet offline longer than ALERT_OFFLINE_MINUTES while credits are owed to it; a
payment that is undeliverable, refunded but delivered anyway, or disputed. Each incident has a
key (an outage is keyed by the moment the cabinet was last seen, a payment by its id and state),
stored once in the ledger; sending is claimed in the ledger first, so two sweeps never send the
same alert twice, and a failed send is tried again by the next sweep.

The body works with Slack and Mattermost (`text`), Discord (`content`) and ntfy's JSON publishing
(`topic`, `title`, `message`; set ALERT_WEBHOOK_URL to the ntfy server's root and
ALERT_WEBHOOK_TOPIC to the topic), and carries the facts under `alert` for anything else.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from api.settings import Settings
from api.store import Payment
from api.store_console import PROBLEM_STATES, Incident

log = logging.getLogger("arcade.alerts")

PROBLEM_LOOKBACK_SECONDS = 7 * 86400
OWED_LOOKBACK_SECONDS = 86400
SEND_TIMEOUT_SECONDS = 5
MESSAGES = {
    "undeliverable": "Payment {id} for {machine} could not be delivered: {detail}",
    "refunded_but_delivered": "Payment {id} for {machine} was refunded, but the cabinet"
                              " received it anyway",
    "disputed": "Payment {id} for {machine} is disputed by the card holder",
}


def payment_incident(payment: Payment, now: float) -> Incident | None:
    state = str(payment.state)
    if state not in PROBLEM_STATES:
        return None
    detail = getattr(payment, "reason", "") or "the broker refused it"
    message = MESSAGES[state].format(id=payment.session_id, machine=payment.machine_id,
                                     detail=detail)
    return Incident(f"payment:{payment.session_id}:{state}", state, payment.session_id,
                    message, now)


def open_payment_incident(store, payment: Payment, now: float) -> bool:
    incident = payment_incident(payment, now)
    return incident is not None and store.open_incident(incident)


def open_offline_incidents(store, settings: Settings, now: float) -> list[Incident]:
    """Cabinets offline longer than the setting while the ledger or the cabinet owes credits."""
    opened = []
    retired = store.retired()
    limit = settings.alert_offline_minutes * 60
    for cabinet in store.cabinets():
        if cabinet.state == "online" or cabinet.machine_id in retired:
            continue
        if now - cabinet.last_seen < limit:
            continue
        owed = cabinet.pending_credits + store.owed_credits(
            cabinet.machine_id, now - OWED_LOOKBACK_SECONDS)
        if owed <= 0:
            continue
        minutes = int((now - cabinet.last_seen) // 60)
        incident = Incident(
            f"offline:{cabinet.machine_id}:{cabinet.last_seen!r}", "offline_owed",
            cabinet.machine_id,
            f"Cabinet {cabinet.machine_id} is offline for {minutes} min with {owed} credit(s)"
            " owed to players",
            now,
        )
        if store.open_incident(incident):
            opened.append(incident)
    return opened


def alert_body(incident: Incident, settings: Settings) -> dict:
    title = f"Arcade STEM: {incident.kind.replace('_', ' ')}"
    body = {
        "text": f"{title} — {incident.message}",
        "content": f"{title} — {incident.message}",
        "title": title,
        "message": incident.message,
        "alert": {"kind": incident.kind, "subject": incident.subject, "key": incident.key,
                  "message": incident.message, "opened_at": incident.opened_at},
    }
    if settings.alert_webhook_topic:
        body["topic"] = settings.alert_webhook_topic
    return body


def post_json(url: str, body: dict) -> None:
    """POST the alert; raises OSError (urllib's errors are OSErrors) when it is not accepted."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "arcade-stem-alerts"},
    )
    with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as answer:
        if answer.status >= 300:
            raise OSError(f"HTTP {answer.status}")


def send_pending(store, settings: Settings, now: float,
                 post: Callable[[str, dict], None] = post_json) -> list[str]:
    """Send each incident not sent yet, once; returns the keys sent."""
    if not settings.alert_webhook_url:
        return []
    sent = []
    for incident in store.incidents(limit=100):
        if incident.sent_at is not None or not store.claim_incident(incident.key, now):
            continue
        try:
            post(settings.alert_webhook_url, alert_body(incident, settings))
        except (OSError, ValueError) as error:
            if isinstance(error, urllib.error.HTTPError):
                reason = f"HTTP {error.code} {error.reason}"
            else:
                reason = getattr(error, "reason", None) or error
            store.incident_failed(incident.key, str(reason)[:200])
            log.warning("alert %s not sent: %s", incident.key, reason)
            continue
        log.info("alert sent: %s", incident.key)
        sent.append(incident.key)
    return sent


def sweep(store, settings: Settings, now: float | None = None) -> list[str]:
    """Open new incidents and send the alerts not sent yet (`arcade listen` every few seconds;
    on AWS the scheduled sweep)."""
    now = time.time() if now is None else now
    open_offline_incidents(store, settings, now)
    for payment in store.problem_payments(now - PROBLEM_LOOKBACK_SECONDS):
        open_payment_incident(store, payment, now)
    return send_pending(store, settings, now)
