# The cabinet's side of docs/protocol.md: topic names, coinpulse validation, outgoing bodies.
import json

from micropython import const

FIRMWARE_VERSION = "1.0.0"

# Larger payloads are rejected before parsing: a real coinpulse is ~150 bytes.
_MAX_PAYLOAD = const(512)
_MAX_ID_LEN = const(128)


def topic(prefix, machine_id, kind):
    return prefix + "/machine/" + machine_id + "/" + kind


def timestamp(t):
    """ISO-8601 UTC with a Z from a (year, month, day, hour, minute, second, ...) tuple."""
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (t[0], t[1], t[2], t[3], t[4], t[5])


def parse_coinpulse(payload, machine_id, max_credits):
    """(credit_id or None, credits) for a valid coinpulse, or a str saying why it is ignored."""
    if len(payload) > _MAX_PAYLOAD:
        return "payload too large (%d bytes)" % len(payload)
    try:
        msg = json.loads(payload)
    except Exception:  # ValueError, UnicodeError, deep nesting: all mean "not a coinpulse"
        return "not JSON"
    if not isinstance(msg, dict):
        return "not a JSON object"
    if "machineId" in msg and msg["machineId"] != machine_id:
        return "machineId is not " + machine_id
    credits = msg.get("credits")
    # type() rather than isinstance(): CPython counts True as an int, and so would we.
    if type(credits) is not int or not 1 <= credits <= max_credits:
        return "credits must be an integer from 1 to %d" % max_credits
    credit_id = msg.get("id")
    if credit_id is not None:
        if not isinstance(credit_id, str) or not 0 < len(credit_id) <= _MAX_ID_LEN:
            return "id must be a string of 1 to %d characters" % _MAX_ID_LEN
    return (credit_id, credits)


def encode(fields):
    return json.dumps(fields).encode()


def gameover(machine_id, report_id, stamp):
    return encode(
        {"machineId": machine_id, "status": "game_over", "timestamp": stamp, "id": report_id}
    )


def ack(machine_id, credit_id, credits, stamp):
    return encode(
        {"machineId": machine_id, "id": credit_id, "credits": credits, "timestamp": stamp}
    )


def status(machine_id, online, stamp, uptime_s=0, pending=0, free_mem=None, rssi=None,
           locked=False):
    fields = {
        "machineId": machine_id,
        "state": "online" if online else "offline",
        "firmware": FIRMWARE_VERSION,
        "uptime_s": uptime_s,
        "pending_credits": pending,
        "timestamp": stamp,
        "locked": locked,
    }
    if free_mem is not None:
        fields["free_mem"] = free_mem
    if rssi is not None:
        fields["rssi"] = rssi
    return encode(fields)
