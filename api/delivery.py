"""The delivery record: what reached the cabinet. Independent of how messages arrive — an MQTT
subscription here (`arcade listen`), an AWS IoT rule on Lambda later — it takes (topic, payload)."""

from __future__ import annotations

import json
import logging

from api import protocol
from api.machines import is_valid_machine_id
from api.store import Cabinet, State, Store

log = logging.getLogger("arcade.delivery")


def session_of(credit_id: str) -> str:
    """The Checkout Session behind a credit id (`cs_…` or, for a split purchase, `cs_…:2`)."""
    return credit_id.split(":", 1)[0]


def _json_object(payload: bytes) -> dict | None:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def record_message(store: Store, prefix: str, topic: str, payload: bytes, now: float) -> str:
    """Record one cabinet message; returns what was recorded (for logs and tests)."""
    parsed = protocol.parse_topic(prefix, topic)
    body = _json_object(payload)
    if parsed is None or body is None or not is_valid_machine_id(parsed[0]):
        return "ignored"
    machine_id, kind = parsed
    if kind == protocol.ACK:
        credit_id = body.get("id")
        if not isinstance(credit_id, str) or not credit_id:
            return "ignored"
        # A split purchase is marked acked by its first part; each part is its own message.
        found = store.mark(session_of(credit_id), State.ACKED, now)
        return "acked" if found else "ack_unknown"
    if kind == protocol.STATUS:
        state = body.get("state")
        if state not in ("online", "offline"):
            return "ignored"
        pending = body.get("pending_credits")
        store.cabinet_seen(
            Cabinet(
                machine_id=machine_id,
                state=state,
                last_seen=now,
                firmware=str(body.get("firmware") or ""),
                pending_credits=pending if isinstance(pending, int) else 0,
            )
        )
        return state
    return "ignored"
