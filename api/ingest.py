"""POST /ingest/mqtt: the delivery record without a long-lived process (the API on Lambda).

A broker's rule forwards each cabinet ack and status to this route (EMQX's HTTP data
integration, an AWS IoT rule's HTTP action; see README "Acks on AWS"), authenticated with
`Authorization: Bearer <INGEST_TOKEN>`. The body is what such a rule sends by default:

    {"topic": "arcade/machine/cab01/ack", "payload": "{\\"id\\": \\"cs_…\\", …}"}

`payload` may be the message text or, with a body template such as `"payload": ${payload}`, the
JSON object itself; a JSON list of up to 100 such messages is accepted too. Each message goes
through the same recorder as `arcade listen` (api/delivery.py). The answer is 200 with what was
recorded per message, even for a message it drops (a retry would not make it better); 5xx only
when the ledger could not be written, so the broker retries.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, jsonify, request

from api.delivery import record_message
from api.errors import error_response
from api.logs import note
from api.machines import same_secret
from api.security import bearer_token
from api.services import services

bp = Blueprint("ingest", __name__)

MAX_MESSAGES = 100


def authorised(token: str) -> bool:
    return same_secret(bearer_token(), token)


def messages_of(body: object) -> list[tuple[str, bytes]] | None:
    """[(topic, payload)] from one message or a list of them; None if the shape is wrong."""
    items = body if isinstance(body, list) else [body]
    if not 1 <= len(items) <= MAX_MESSAGES:
        return None
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            return None
        payload = item.get("payload")
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if not isinstance(payload, str):
            return None
        found.append((item["topic"], payload.encode()))
    return found


@bp.post("/ingest/mqtt")
def ingest():
    svc = services()
    token = svc.settings.ingest_token
    if not token:
        return error_response(503, "INGEST_TOKEN is not set on the server")
    if not authorised(token):
        return error_response(401, "a valid 'Authorization: Bearer <INGEST_TOKEN>' is required")
    body = request.get_json(silent=True)
    messages = messages_of(body)
    if messages is None:
        return error_response(
            400, f'body must be {{"topic", "payload"}} or a list of 1-{MAX_MESSAGES} of them'
        )
    prefix = svc.settings.mqtt_topic_prefix
    now = time.time()
    recorded = [record_message(svc.store, prefix, topic, data, now) for topic, data in messages]
    note(result=",".join(sorted(set(recorded))))
    return jsonify(recorded=recorded if isinstance(body, list) else recorded[0])
