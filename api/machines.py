"""Cabinet identity: which machine ids are valid, and the per-cabinet bearer token."""

from __future__ import annotations

import hashlib
import hmac
import re

# Only these characters: anything else could inject "/", "+" or "#" into MQTT topics.
MACHINE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_valid_machine_id(machine_id: object) -> bool:
    return isinstance(machine_id, str) and MACHINE_ID_PATTERN.fullmatch(machine_id) is not None


def machine_token(secret: str, machine_id: str) -> str:
    """The cabinet's `/gameover` bearer token: HMAC-SHA256 of its id under the server secret.

    An operator can compute it anywhere the secret is known (`arcade provision` prints it), and
    the API needs no table of tokens.
    """
    return hmac.new(secret.encode(), f"gameover:{machine_id}".encode(), hashlib.sha256).hexdigest()


def token_matches(secret: str, machine_id: str, presented: str) -> bool:
    # compare_digest raises TypeError on non-ASCII text: such a token is simply wrong.
    return presented.isascii() and hmac.compare_digest(machine_token(secret, machine_id), presented)
