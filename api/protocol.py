"""The MQTT contract (docs/protocol.md): topic names and message bodies, in one place."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

COINPULSE = "coinpulse"
GAMEOVER = "gameover"
STATUS = "status"
ACK = "ack"
KINDS = (COINPULSE, GAMEOVER, STATUS, ACK)


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with a Z, as the seed's messages carried it."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def topic(prefix: str, machine_id: str, kind: str) -> str:
    return f"{prefix}/machine/{machine_id}/{kind}"


def parse_topic(prefix: str, name: str) -> tuple[str, str] | None:
    """(machine_id, kind) of a contract topic, or None for anything else. The prefix may have
    several levels (`site1/arcade`)."""
    if not name.startswith(prefix + "/"):
        return None
    parts = name[len(prefix) + 1 :].split("/")
    if len(parts) != 3 or parts[0] != "machine" or parts[2] not in KINDS:
        return None
    return parts[1], parts[2]


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def coinpulse(machine_id: str, credits: int, credit_id: str, expires: float | None = None) -> dict:
    """The coinpulse for one part. `expires` (a part's deadline, UTC) is left out when there is
    none (REFUND_UNDELIVERED_AFTER_S=0); cabinets treat it as optional."""
    message = {
        "machineId": machine_id,
        "credits": credits,
        "timestamp": utc_timestamp(),
        "id": credit_id,
    }
    if expires is not None:
        message["expires"] = utc_timestamp(datetime.fromtimestamp(int(expires), UTC))
    return message


def gameover(machine_id: str, report_id: str | None = None) -> dict:
    return {
        "machineId": machine_id,
        "status": "game_over",
        "timestamp": utc_timestamp(),
        "id": report_id or f"go-{uuid.uuid4().hex[:12]}",
    }
