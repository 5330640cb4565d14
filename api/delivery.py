"""The delivery record: what reached the cabinet. Independent of how messages arrive — an MQTT
subscription (`arcade listen`) or the authenticated HTTP ingest route a broker's rule calls on AWS
(api/ingest.py) — it takes (topic, payload).

The machine is the topic's (the broker's ACL lets a cabinet write only its own topics), an ack
counts only for a part of that machine's own payment, and every field is checked and bounded: a
bad message is dropped with a reason, never an exception for the caller to die of.
"""

from __future__ import annotations

import json
import logging
import re

from api import protocol
from api.ledger import ACK_STATES
from api.machines import is_valid_machine_id
from api.store import Cabinet, Store

log = logging.getLogger("arcade.delivery")

MAX_PAYLOAD = 2048  # a real ack or status is ~200 bytes
MAX_ID = 128  # the firmware's own limit on a credit id
MAX_PENDING_CREDITS = 1_000_000
_CODE = re.compile(r"^[a-z0-9_]{1,48}$")


class Dropped(ValueError):
    """The message is not one we record; the text says why (for the log)."""


def record_message(store: Store, prefix: str, topic: str, payload: bytes, now: float) -> str:
    """Record one cabinet message; returns what was recorded (for logs and tests): an ack's state,
    `online`/`offline`, `ack_unknown`, `ack_wrong_machine`, `ignored` (not a topic we record) or
    `dropped` (malformed)."""
    parsed = protocol.parse_topic(prefix, topic)
    if parsed is None or parsed[1] not in (protocol.ACK, protocol.STATUS):
        return "ignored"
    machine_id, kind = parsed
    try:
        if not is_valid_machine_id(machine_id):
            raise Dropped("machine id in the topic is not valid")
        body = json_object(payload)
        named = body.get("machineId", machine_id)
        if named != machine_id:
            raise Dropped(f"machineId {str(named)[:64]!r} is not the topic's")
        if kind == protocol.ACK:
            result = record_ack(store, machine_id, body, now)
        else:
            result = record_status(store, machine_id, body, now)
    except Dropped as why:
        log.warning("dropped a message on %s: %s", topic[:200], why)
        return "dropped"
    return result


def record_ack(store: Store, machine_id: str, body: dict, now: float) -> str:
    credit_id = text(body, "id", MAX_ID, required=True)
    state = body.get("state", "done")  # firmware 1.0 acks only when done, without a state
    if state not in ACK_STATES:
        raise Dropped(f"ack state {str(state)[:32]!r} is not one of {', '.join(ACK_STATES)}")
    reason = text(body, "reason", 200)
    if "credits" in body and not small_int(body["credits"], MAX_PENDING_CREDITS):
        raise Dropped("credits is not a whole number")
    result = store.ack(machine_id, credit_id, state, reason, now)
    if result != "ack_wrong_machine":
        store.cabinet_heard(machine_id, now)
    return result


def record_status(store: Store, machine_id: str, body: dict, now: float) -> str:
    state = body.get("state")
    if state not in ("online", "offline"):
        raise Dropped("status state is not online or offline")
    pending = body.get("pending_credits", 0)
    if not small_int(pending, MAX_PENDING_CREDITS):
        raise Dropped(f"pending_credits must be 0..{MAX_PENDING_CREDITS}")
    problem = text(body, "problem", 48)
    if problem and not _CODE.fullmatch(problem):
        raise Dropped("problem must be a short code like pulse_repeat_cap")
    store.cabinet_seen(
        Cabinet(
            machine_id=machine_id,
            state=state,
            last_seen=now,
            firmware=text(body, "firmware", 32),
            pending_credits=pending,
            problem=problem,
            detail=text(body, "detail", 200, cut=True),
        )
    )
    return state


def json_object(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD:
        raise Dropped(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Dropped("payload is not JSON") from None
    if not isinstance(body, dict):
        raise Dropped("payload is not a JSON object")
    return body


def text(body: dict, name: str, longest: int, required: bool = False, cut: bool = False) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise Dropped(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise Dropped(f"{name} is not text")
    if len(value) > longest and not cut:
        raise Dropped(f"{name} is longer than {longest} characters")
    return value[:longest]


def small_int(value: object, largest: int) -> bool:
    return type(value) is int and 0 <= value <= largest
