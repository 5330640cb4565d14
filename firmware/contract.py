# The cabinet's side of docs/protocol.md: topic names, coinpulse validation, outgoing bodies.
import json

from micropython import const

FIRMWARE_VERSION = "1.1.0"

# Larger payloads are rejected before parsing: a real coinpulse is ~150 bytes.
_MAX_PAYLOAD = const(512)
_MAX_ID_LEN = const(128)
_DAYS_TO_2000 = const(730426)  # days() of 2000-01-01: times count seconds from there


def topic(prefix, machine_id, kind):
    return prefix + "/machine/" + machine_id + "/" + kind


def timestamp(t):
    """ISO-8601 UTC with a Z from a (year, month, day, hour, minute, second, ...) tuple."""
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (t[0], t[1], t[2], t[3], t[4], t[5])


def seconds(t):
    """Seconds since 2000-01-01 00:00 UTC of a (year, month, day, hour, minute, second) tuple;
    our own arithmetic, so the board (epoch 2000) and the unix port (epoch 1970) agree."""
    y, m = t[0], t[1]
    if m < 3:
        y -= 1
        m += 12
    days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (m - 3) + 2) // 5 + t[2]
    return (days - _DAYS_TO_2000) * 86400 + t[3] * 3600 + t[4] * 60 + t[5]


def parse_time(text):
    """Seconds since 2000 of "YYYY-MM-DDTHH:MM:SSZ" (whole seconds, UTC), else None."""
    if not isinstance(text, str) or len(text) != 20 or text[19] != "Z":
        return None
    for at, sep in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")):
        if text[at] != sep:
            return None
    parts = []
    for start, end in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19)):
        digits = text[start:end]
        if not digits.isdigit():
            return None
        parts.append(int(digits))
    if not (1 <= parts[1] <= 12 and 1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60
            and parts[5] < 60):
        return None
    return seconds(parts)


def parse_coinpulse(payload, machine_id, max_credits):
    """(credit_id, credits, expires, problem) for a coinpulse, or a str saying why it is not one.

    problem is None for a message to credit; otherwise it says why the message (whose id, when
    it has a usable one, is acked `rejected`) is refused. expires: seconds since 2000, or None.
    """
    if len(payload) > _MAX_PAYLOAD:
        return "payload too large (%d bytes)" % len(payload)
    try:
        msg = json.loads(payload)
    except Exception:  # ValueError, UnicodeError, deep nesting: all mean "not a coinpulse"
        return "not JSON"
    if not isinstance(msg, dict):
        return "not a JSON object"
    credit_id = msg.get("id")
    if credit_id is not None:
        if not isinstance(credit_id, str) or not 0 < len(credit_id) <= _MAX_ID_LEN:
            return "id must be a string of 1 to %d characters" % _MAX_ID_LEN
    if "machineId" in msg and msg["machineId"] != machine_id:
        return "machineId is not " + machine_id  # not ours to answer
    credits = msg.get("credits")
    expires = msg.get("expires")
    problem = None
    # type() rather than isinstance(): CPython counts True as an int, and so would we.
    if type(credits) is not int or not 1 <= credits <= max_credits:
        problem = "credits must be an integer from 1 to %d" % max_credits
    elif expires is not None:
        expires = parse_time(expires)
        if expires is None:
            problem = "expires must be a UTC time like 2026-12-01T20:05:00Z"
    if problem is not None and credit_id is None:
        return problem
    return (credit_id, credits, expires, problem)


def encode(fields):
    return json.dumps(fields).encode()


def gameover(machine_id, report_id, stamp):
    return encode(
        {"machineId": machine_id, "status": "game_over", "timestamp": stamp, "id": report_id}
    )


def ack(machine_id, credit_id, credits, state, stamp, reason=None):
    fields = {"machineId": machine_id, "id": credit_id, "credits": credits, "state": state,
              "timestamp": stamp}
    if reason is not None:
        fields["reason"] = reason
    return encode(fields)


def status(machine_id, online, stamp, uptime_s=0, pending=0, free_mem=None, rssi=None,
           locked=False, problem=None, detail=None):
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
    if problem is not None:
        fields["problem"] = problem
        if detail is not None:
            fields["detail"] = detail
    return encode(fields)
