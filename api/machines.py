"""Cabinet identity: which machine ids are valid, and the per-cabinet bearer token."""

from __future__ import annotations

import hashlib
import hmac
import re

# Only these characters: anything else could inject "/", "+" or "#" into MQTT topics.
MACHINE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_valid_machine_id(machine_id: object) -> bool:
    return isinstance(machine_id, str) and MACHINE_ID_PATTERN.fullmatch(machine_id) is not None


def topic_prefix_problem(prefix: str) -> str | None:
    """Why a topic prefix is unsafe, or None: levels like machine ids, joined by single '/'.

    It is written into topics and into Mosquitto's ACL file: '+', '#', spaces or a newline
    there would widen a rule or add one.
    """
    levels = prefix.split("/")
    if len(prefix) <= 128 and all(is_valid_machine_id(level) for level in levels):
        return None
    return (
        f"must be levels of 1-64 letters, digits, '_' or '-' joined by '/' (no wildcards, "
        f"spaces or newlines), got {prefix!r}"
    )


def machine_token(secret: str, machine_id: str) -> str:
    """The cabinet's `/gameover` bearer token: HMAC-SHA256 of its id under the server secret.

    An operator can compute it anywhere the secret is known (`arcade provision` prints it), and
    the API needs no table of tokens.
    """
    return hmac.new(secret.encode(), f"gameover:{machine_id}".encode(), hashlib.sha256).hexdigest()


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time; a non-ASCII token is simply wrong (compare_digest raises TypeError on it)."""
    return bool(expected) and presented.isascii() and hmac.compare_digest(presented, expected)


def token_matches(secret: str, machine_id: str, presented: str) -> bool:
    return same_secret(presented, machine_token(secret, machine_id))
